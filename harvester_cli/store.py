"""The shared state database: tables, transactions, claims with leases, the report outbox, schema versions.

SQLAlchemy Core only. SQLite (default) runs in WAL mode with a busy timeout, and every write
transaction starts with BEGIN IMMEDIATE so two commands never deadlock upgrading a read lock.
PostgreSQL and MariaDB use the same statements; claims there add FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, Column, Double, ForeignKey, Index, Integer, MetaData, String, Table, Text,
    create_engine, delete, event, func, inspect, or_, select, update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, SQLAlchemyError

from harvester_cli.errors import StateError
from harvester_cli.model import now

SCHEMA_VERSION = 2

# Epoch seconds need double precision (MariaDB's FLOAT is single: ~2 minutes of resolution today), and
# job dicts and updates outgrow MariaDB's 64 kB TEXT.
Epoch = Double
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255)),
    Column("ivalue", BigInteger),
)

locks = Table(
    "locks", metadata,
    Column("name", String(255), primary_key=True),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
)

jobs = Table(
    "jobs", metadata,
    Column("panda_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("sub_status", String(32), nullable=False),
    Column("attempt_nr", Integer),
    Column("resource_type", String(64)),
    Column("core_count", Integer),
    Column("submit_attempts", Integer, nullable=False, default=0),
    Column("job_json", LongText, nullable=False),   # the PanDA job dict, verbatim
    Column("diag", Text),
    Column("created", Epoch, nullable=False),
    Column("modified", Epoch, nullable=False),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
    Index("ix_jobs_queue_sub", "queue", "sub_status"),
)

workers = Table(
    "workers", metadata,
    Column("worker_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue", String(128), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("mode", String(8), nullable=False),
    Column("resource_type", String(64)),
    Column("job_type", String(64)),
    Column("n_core", Integer),
    Column("memory_mb", Integer),
    Column("status", String(16), nullable=False),
    Column("batch_id", String(255)),
    Column("submission_host", String(255)),
    Column("computing_element", String(255)),
    Column("native_status", String(64)),
    Column("native_exit_code", Integer),
    Column("diag", Text),
    Column("error_code", Integer),
    Column("log_dir", Text),
    Column("stdout_url", Text),
    Column("stderr_url", Text),
    Column("batch_log_url", Text),
    Column("submit_time", Epoch),
    Column("start_time", Epoch),
    Column("end_time", Epoch),
    Column("kill_reason", Text),
    Column("created", Epoch, nullable=False),
    Column("modified", Epoch, nullable=False),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
    Index("ix_workers_queue_status", "queue", "status"),
    # poll and sweep page through a queue's workers by id: without it every page rescans the queue
    Index("ix_workers_queue_id", "queue", "worker_id"),
)

job_workers = Table(
    "job_workers", metadata,
    Column("panda_id", BigInteger, ForeignKey("jobs.panda_id", ondelete="CASCADE"), primary_key=True),
    Column("worker_id", BigInteger, ForeignKey("workers.worker_id", ondelete="CASCADE"), primary_key=True),
    Index("ix_job_workers_worker", "worker_id"),
)

commands = Table(
    "panda_commands", metadata,
    Column("command_id", BigInteger, primary_key=True, autoincrement=False),
    Column("command", String(255), nullable=False),
    Column("params", Text),
    Column("ack_requested", Boolean, nullable=False, default=False),
    Column("queue", String(128)),
    Column("status", String(16), nullable=False),   # new, applied, acked, rejected
    Column("diag", Text),
    Column("received", Epoch, nullable=False),
    Column("applied", Epoch),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
)

# What still has to reach PanDA: one row per job or worker. A newer update of the same item bumps the
# version; after PanDA's success only the version that was sent is deleted, so nothing newer is lost.
reports = Table(
    "pending_reports", metadata,
    Column("kind", String(8), primary_key=True),        # job | worker
    Column("key", BigInteger, primary_key=True, autoincrement=False),
    Column("queue", String(128), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("payload", LongText),                             # jobs: the update; workers: built when sent
    Column("final", Boolean, nullable=False, default=False),
    Column("created", Epoch, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
)


# Pilot streaming: PanDA's SET_N_WORKERS_JOBTYPE numbers still to submit, per PanDA queue, job type and
# resource type. A newer command replaces a queue's rows; submit consumes them.  (schema version 2)
worker_targets = Table(
    "worker_targets", metadata,
    Column("site", String(128), primary_key=True),
    Column("job_type", String(64), primary_key=True),
    Column("resource_type", String(64), primary_key=True),
    Column("remaining", Integer, nullable=False),
    Column("command_id", BigInteger),
    Column("updated", Epoch, nullable=False),
)

SCHEMA_1_TABLES = (meta, locks, jobs, workers, job_workers, commands, reports)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


class Store:
    """One state database. Thin: tables, transactions, claims, ids, outbox. Domain queries live in the steps."""

    def __init__(self, url: str, *, lease_seconds: int = 600, check_schema: bool = True):
        self.url = url
        self.lease_seconds = lease_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        options = {}
        if url.startswith(("mysql", "mariadb")):
            # InnoDB's default REPEATABLE READ makes a claim's UPDATE take next-key locks on rows it does not
            # touch, and another run's SKIP LOCKED then finds nothing to claim. (PostgreSQL's default already.)
            options["isolation_level"] = "READ COMMITTED"
        try:
            self.engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"), **options)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StateError(f"state database {self.display_url}: cannot open: {exc}") from None
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            _sqlite_setup(self.engine)
        if check_schema:
            self._check_schema_when_unlocked()

    @property
    def display_url(self) -> str:
        """The URL without a password, for messages."""
        from harvester_cli.config import display_url

        return display_url(self.url)

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(readonly=True) as conn:
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ------------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        try:
            with self.read() as conn:
                if not inspect(conn).has_table("meta"):
                    return None
                row = conn.execute(select(meta.c.ivalue).where(meta.c.key == "schema_version")).first()
                return int(row[0]) if row else 0
        except DatabaseError as exc:   # not a database, unreadable, server refused
            raise StateError(f"state database {self.display_url}: cannot read: {exc.orig}") from None

    def _check_schema_when_unlocked(self) -> None:
        """Two runs opening a brand-new SQLite file at once: switching it to WAL can answer "database is
        locked" without waiting for the busy timeout. Try again shortly; anything else is an error at once."""
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random

        retrying = Retrying(retry=retry_if_exception(lambda e: "database is locked" in str(e)),
                            stop=stop_after_attempt(30), wait=wait_random(0.05, 0.3), reraise=True)
        retrying(self._check_schema)

    def _check_schema(self) -> None:
        """A new database is created; an older or newer one is refused with what to do."""
        version = self.schema_version()
        if version is None:
            self.upgrade()
            return
        if version < SCHEMA_VERSION:
            raise StateError(
                f"state database {self.display_url} has schema version {version}, this harvester-cli needs "
                f"{SCHEMA_VERSION}: run `harvester-cli db upgrade`"
            )
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state database {self.display_url} has schema version {version}, newer than this "
                f"harvester-cli knows ({SCHEMA_VERSION}): upgrade harvester-cli"
            )

    def upgrade(self) -> tuple[int, int]:
        """Migrate to SCHEMA_VERSION; returns (from, to). Safe to run twice at once."""
        try:
            return self._upgrade()
        except DatabaseError as exc:
            raise StateError(f"state database {self.display_url}: cannot upgrade: {exc.orig}") from None

    def _upgrade(self) -> tuple[int, int]:
        with self.write() as conn:
            has_meta = inspect(conn).has_table("meta")
            row = conn.execute(select(meta.c.ivalue).where(meta.c.key == "schema_version")).first() if has_meta else None
            start = int(row[0]) if row else 0
            if start > SCHEMA_VERSION:
                raise StateError(
                    f"state database {self.display_url} has schema version {start}, newer than this "
                    f"harvester-cli knows ({SCHEMA_VERSION}): upgrade harvester-cli"
                )
            for version in range(start + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](conn)
            if start < SCHEMA_VERSION:
                self._set_meta(conn, "schema_version", SCHEMA_VERSION)
        return start, SCHEMA_VERSION

    def _set_meta(self, conn: Connection, key: str, ivalue: int) -> None:
        changed = conn.execute(update(meta).where(meta.c.key == key).values(ivalue=ivalue)).rowcount
        if not changed:
            conn.execute(meta.insert().values(key=key, ivalue=ivalue))

    def get_meta(self, key: str) -> int | None:
        with self.read() as conn:
            row = conn.execute(select(meta.c.ivalue).where(meta.c.key == key)).first()
            return None if row is None else int(row[0])

    # -- ids ---------------------------------------------------------------------------------

    def allocate_worker_ids(self, count: int, floor: int = 0) -> list[int]:
        """Reserve `count` new worker ids, never reused; `floor` is the highest id PanDA has seen."""
        if count <= 0:
            return []
        with self.write() as conn:
            # FOR UPDATE: two submits for different queues on PostgreSQL/MariaDB must not read the same value.
            row = conn.execute(select(meta.c.ivalue).where(meta.c.key == "last_worker_id").with_for_update()).first()
            last = max(int(row[0]) if row else 0, floor)
            self._set_meta(conn, "last_worker_id", last + count)
        return list(range(last + 1, last + count + 1))

    # -- claims ------------------------------------------------------------------------------

    def _free(self, table: Table, at: float):
        return or_(table.c.lock_owner.is_(None), table.c.lock_expires < at)

    def claim(self, conn: Connection, table: Table, where, limit: int, order_by=None) -> list[Any]:
        """Claim up to `limit` unclaimed (or lease-expired) rows matching `where`; returns the rows we own."""
        key = list(table.primary_key.columns)
        at = now()
        query = select(*key).where(where, self._free(table, at)).limit(limit)
        if order_by is not None:
            query = query.order_by(order_by)
        if not self.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        keys = [tuple(r) for r in conn.execute(query)]
        if not keys:
            return []
        match = _key_match(key, keys)
        conn.execute(
            update(table).where(match, self._free(table, at))
            .values(lock_owner=self.owner, lock_expires=at + self.lease_seconds)
        )
        return list(conn.execute(select(table).where(match, table.c.lock_owner == self.owner)))

    def release(self, conn: Connection, table: Table, keys: Iterable[Any]) -> None:
        key = list(table.primary_key.columns)
        keys = [k if isinstance(k, tuple) else (k,) for k in keys]
        for chunk in chunks(keys, 500):
            conn.execute(
                update(table).where(_key_match(key, chunk), table.c.lock_owner == self.owner)
                .values(lock_owner=None, lock_expires=None)
            )

    def renew(self, conn: Connection, table: Table, keys: Iterable[Any]) -> None:
        """Extend this run's claims (a long submission must not let another run take its rows over)."""
        key = list(table.primary_key.columns)
        keys = [k if isinstance(k, tuple) else (k,) for k in keys]
        for chunk in chunks(keys, 500):
            conn.execute(update(table).where(_key_match(key, chunk), table.c.lock_owner == self.owner)
                         .values(lock_expires=now() + self.lease_seconds))

    def owned(self, table: Table):
        """Condition: the row is still claimed by this run (guards every update of a claimed row)."""
        return table.c.lock_owner == self.owner

    @contextmanager
    def lock(self, name: str) -> Iterator[bool]:
        """A named lease (e.g. "submit:QUEUE"): yields False if another live run holds it."""
        at = now()
        with self.write() as conn:
            holder = conn.execute(select(locks.c.lock_owner).where(locks.c.name == name)).first()
            free = self._free(locks, at)
            if holder is not None and owner_is_dead(holder[0]):
                free = free | (locks.c.lock_owner == holder[0])
            got = conn.execute(
                update(locks).where(locks.c.name == name, free)
                .values(lock_owner=self.owner, lock_expires=at + self.lease_seconds)
            ).rowcount
            if holder is None:
                try:
                    with conn.begin_nested():   # another host may create the same lock at this moment
                        conn.execute(locks.insert().values(name=name, lock_owner=self.owner,
                                                           lock_expires=at + self.lease_seconds))
                    got = 1
                except IntegrityError:
                    got = 0
        try:
            yield bool(got)
        finally:
            if got:
                with self.write() as conn:
                    conn.execute(update(locks).where(locks.c.name == name, locks.c.lock_owner == self.owner)
                                 .values(lock_owner=None, lock_expires=None))

    # -- outbox ------------------------------------------------------------------------------

    def enqueue_reports(self, conn: Connection, kind: str,
                        items: Sequence[tuple[int, str, dict | None, bool]]) -> None:
        """Queue (key, queue, payload, final) updates for PanDA; a newer one replaces an unsent older one."""
        if not items:
            return
        at = now()
        rows = [{"kind": kind, "key": key, "queue": queue, "version": 1,
                 "payload": None if payload is None else json.dumps(payload), "final": final, "created": at,
                 "attempts": 0} for key, queue, payload, final in items]
        for chunk in chunks(rows, 500):
            conn.execute(self._upsert_reports(conn), chunk)

    def _upsert_reports(self, conn: Connection):
        dialect = conn.dialect.name
        if dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert

            stmt = insert(reports)
            return stmt.on_duplicate_key_update(
                version=reports.c.version + 1, payload=stmt.inserted.payload, final=stmt.inserted.final,
            )
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(reports)
        return stmt.on_conflict_do_update(
            index_elements=[reports.c.kind, reports.c.key],
            set_={"version": reports.c.version + 1, "payload": stmt.excluded.payload, "final": stmt.excluded.final},
        )

    def reports_sent(self, conn: Connection, kind: str, sent: Sequence[tuple[int, int]]) -> None:
        """Forget (key, version) pairs PanDA accepted; a row with a newer version stays, released for the next run."""
        for chunk in chunks(list(sent), 500):
            conn.execute(
                delete(reports).where(reports.c.kind == kind, reports.c.lock_owner == self.owner,
                                      or_(*[(reports.c.key == k) & (reports.c.version == v) for k, v in chunk]))
            )
        self.release(conn, reports, [(kind, k) for k, _ in sent])

    def count_pending_reports(self) -> dict[str, int]:
        with self.read() as conn:
            return {kind: n for kind, n in conn.execute(
                select(reports.c.kind, func.count()).group_by(reports.c.kind))}


def owner_is_dead(owner: str | None) -> bool:
    """A claim owned by a process of this host that no longer exists can be taken over at once."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _key_match(columns: list[Column], keys: Sequence[tuple]):
    if len(columns) == 1:
        return columns[0].in_([k[0] for k in keys])
    return or_(*[(columns[0] == k[0]) & (columns[1] == k[1]) for k in keys])


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _migrate_to_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=list(SCHEMA_1_TABLES), checkfirst=True)


def _migrate_to_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[worker_targets], checkfirst=True)


MIGRATIONS = {1: _migrate_to_1, 2: _migrate_to_2}
