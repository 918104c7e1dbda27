"""The shared state database: tables, transactions, claims with leases, the report outbox, schema versions.

SQLAlchemy Core only. SQLite (default) runs in WAL mode with a busy timeout, and every write
transaction starts with BEGIN IMMEDIATE so two commands never deadlock upgrading a read lock.
PostgreSQL and MariaDB use the same statements; claims there add FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, SQLAlchemyError

from harvester_cli.errors import StateError, StateUnreachable
from harvester_cli.model import now
from harvester_cli.state import bulk
from harvester_cli.state.schema import (
    HEAD,
    LEGACY_VERSIONS,
    REVISIONS,
    locks,
    meta,
    reports,
)

T = TypeVar("T")


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


# The drivers harvester-cli installs (its extras), which bare postgresql:// and mariadb:// URLs use.
_OWN_DRIVERS = {"psycopg": ("postgres", "psycopg 3"), "pymysql": ("mariadb", "PyMySQL")}


def _missing_driver(url: str, module: str | None) -> str:
    scheme = url.split("://", 1)[0]
    if module in _OWN_DRIVERS:
        extra, driver = _OWN_DRIVERS[module]
        return (f"its driver {driver} is not installed: pip install 'harvester-cli[{extra}]' (or '.[{extra}]' in a "
                "source checkout)")
    base, extra = ("postgresql", "postgres") if scheme.startswith("postgres") else ("mariadb", "mariadb")
    return (f"the driver this URL names ({scheme}) is not installed ({module}): install it, or write {base}:// for the "
            f"driver harvester-cli installs with its [{extra}] extra")


def _server_answered(error: BaseException) -> bool:
    """Whether a database server refused (wrong password, unknown database: a configuration problem) rather
    than never answered (down, unreachable: an outage). A server's refusal carries its own code: an SQLSTATE
    for psycopg (at connection time only libpq's text says so: the server's own severity, "FATAL:"), a
    server error number below 2000 for MySQL/MariaDB (2000 and up are the client's own)."""
    if getattr(error, "sqlstate", None) or "FATAL:" in str(error):
        return True
    code = error.args[0] if getattr(error, "args", None) else None
    return isinstance(code, int) and code < 2000


class Store:
    """One state database. Thin: tables, transactions, claims, ids, outbox. Domain queries live in the steps."""

    def __init__(self, url: str, *, lease_seconds: int = 600, check_schema: bool = True, host: str | None = None,
                 timeout: int | None = 60):
        self.url = url
        self.lease_seconds = lease_seconds
        # The host part is the [instance] host: several hosts may share one machine's name (containers), and a
        # claim's owner says which host may judge whether its process still lives (owner_is_dead).
        self.host = host or socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._dead_checked: set[str] = set()
        # Deadlocks and serialization failures retried (see retrying), and named leases found held by another
        # run (lock), for the command's result.
        self.conflicts = self.leases_busy = 0
        options: dict[str, Any] = {}
        if url.startswith(("mysql", "mariadb")):
            # InnoDB's default REPEATABLE READ makes a claim's UPDATE take next-key locks on rows it does not
            # touch, and another run's SKIP LOCKED then finds nothing to claim. (PostgreSQL's default already.)
            options["isolation_level"] = "READ COMMITTED"
        if timeout and not url.startswith("sqlite"):
            options["connect_args"] = server_timeouts(url, timeout)
        try:
            self.engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"), **options)
        except ImportError as exc:
            raise StateError(f"state database {self.display_url}: {_missing_driver(url, exc.name)}") from None
        except (SQLAlchemyError, ValueError) as exc:
            raise StateError(f"state database {self.display_url}: cannot open: {exc}") from None
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            _sqlite_setup(self.engine)
        # What this process asked of the database: connections opened and statements sent (round trips).
        self.connections = self.statements = 0

        @event.listens_for(self.engine, "connect")
        def connected(_dbapi_connection, _record):
            self.connections += 1

        @event.listens_for(self.engine, "before_cursor_execute")
        def statement(*_args):
            self.statements += 1
        if check_schema:
            self._check_schema_when_unlocked()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, for SQLite (which would create a missing file on first connect)."""
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            return Path(self.url.removeprefix("sqlite:///"))
        return None

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

    def stats(self) -> dict[str, int]:
        return {"connections": self.connections, "statements": self.statements, "conflicts_retried": self.conflicts,
                "leases_busy": self.leases_busy}

    def retrying(self, work: Callable[[Connection], T]) -> T:
        """Run `work(conn)` in a write transaction; a deadlock or serialization failure (another host's
        transaction won) rolls it back and runs it again, a few times, counted in `conflicts`. `work` must
        only read and write the database: everything it did is undone before each new attempt."""
        try:   # the first attempt without tenacity: its import is most of a quiet run's write cost
            with self.write() as conn:
                return work(conn)
        except Exception as exc:
            if not is_conflict(exc):
                raise
            self.conflicts += 1
        import random

        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

        time.sleep(random.uniform(0, 0.02))   # the back-off tenacity would have waited before its second attempt

        def conflict(exc: BaseException) -> bool:
            if is_conflict(exc):
                self.conflicts += 1
                return True
            return False

        for attempt in Retrying(retry=retry_if_exception(conflict), stop=stop_after_attempt(7),
                                wait=wait_random_exponential(multiplier=0.02, max=1.0), reraise=True):
            with attempt, self.write() as conn:
                return work(conn)
        raise AssertionError("unreachable")   # Retrying either returned or raised

    # -- schema ------------------------------------------------------------------------------

    def revision(self) -> str | None:
        """The schema revision this database is at: an Alembic revision, the one a pre-migration
        schema_version equals ("legacy:N" when unknown), "" for a database with no harvester-cli tables,
        None for an empty database."""
        path = self.sqlite_path
        if path is not None and not path.exists():
            if not path.parent.is_dir():
                raise StateError(f"state database {path}: {path.parent} is not a directory: fix `state` "
                                 "(or --state) in the configuration")
            return None
        try:
            with self.read() as conn:
                return read_revision(conn)
        except DatabaseError as exc:   # not a database, unreadable, server refused or not answering
            hint = ""
            if path is not None and not os.access(path.parent, os.W_OK):
                hint = f" ({path.parent} is read-only: SQLite writes its journal beside the database)"
            reason = " ".join(str(exc.orig).split())   # the drivers' messages run over several lines
            if not self.is_sqlite and not _server_answered(exc.orig):
                raise StateUnreachable(f"state database {self.display_url}: no answer: {reason} (is the server up? "
                                       "nothing was changed; the next run tries again)") from None
            raise StateError(f"state database {self.display_url}: cannot read: {reason}{hint}") from None

    def _check_schema_when_unlocked(self) -> None:
        """Two runs opening a brand-new SQLite file at once: switching it to WAL can answer "database is
        locked" without waiting for the busy timeout. Try again shortly; anything else is an error at once."""
        try:
            return self._check_schema()
        except Exception as exc:   # whatever carries SQLite's message: the retry below looks at the text too
            if "database is locked" not in str(exc):
                raise
        from tenacity import (  # only then: it costs every command's start-up a few ms
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_random,
        )

        retrying = Retrying(retry=retry_if_exception(lambda e: "database is locked" in str(e)),
                            stop=stop_after_attempt(30), wait=wait_random(0.05, 0.3), reraise=True)
        retrying(self._check_schema)

    def _check_schema(self) -> None:
        """A database this code cannot use (missing, empty, older, newer, foreign) is refused with what to do:
        only `db upgrade` creates one, so a typo in the state path never starts a new, empty instance."""
        revision = self.revision()
        if revision is None:
            where = "does not exist" if self.sqlite_path else "is empty"
            raise StateError(f"state database {self.display_url} {where}: create it with `harvester-cli db upgrade` "
                             "(or fix `state` / --state if it should exist)")
        problem = schema_problem(revision)
        if problem:
            raise StateError(f"state database {self.display_url} {problem}")

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

    def _release_dead_claims(self, conn: Connection, table: Table) -> None:
        """Claims of a process of this host that died (kill -9, a crash) are free at once, not after their
        lease: the next cron run carries on where it stopped. Looked at once per table and process."""
        if table.name in self._dead_checked:
            return
        self._dead_checked.add(table.name)
        owners = conn.scalars(select(table.c.lock_owner).distinct().where(table.c.lock_owner.is_not(None),
                                                                          table.c.lock_owner != self.owner))
        dead = [o for o in owners if owner_is_dead(o, self.host)]
        for chunk in chunks(dead, 500):
            conn.execute(update(table).where(table.c.lock_owner.in_(chunk)).values(lock_owner=None, lock_expires=None))

    def claim(self, conn: Connection, table: Table, where, limit: int, order_by=None) -> list[Any]:
        """Claim up to `limit` unclaimed (or lease-expired) rows matching `where`; returns the rows we own."""
        self._release_dead_claims(conn, table)
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

    def owner_is_dead(self, owner: str | None) -> bool:
        return owner_is_dead(owner, self.host)

    def owned(self, table: Table):
        """Condition: the row is still claimed by this run (guards every update of a claimed row)."""
        return table.c.lock_owner == self.owner

    def holds(self, conn: Connection, name: str) -> bool:
        """Whether this run still holds the named lease (renewed if so). A host that stalled past its lease
        (cut off, frozen) must not act on what it planned under it: another host may have planned since."""
        at = now()
        return conn.execute(update(locks).where(locks.c.name == name, locks.c.lock_owner == self.owner,
                                                locks.c.lock_expires >= at)
                            .values(lock_expires=at + self.lease_seconds)).rowcount == 1

    @contextmanager
    def lock(self, name: str) -> Iterator[bool]:
        """A named lease (e.g. "submit:QUEUE"): yields False if another live run holds it."""
        at = now()
        with self.write() as conn:
            holder = conn.execute(select(locks.c.lock_owner).where(locks.c.name == name)).first()
            free = self._free(locks, at)
            if holder is not None and owner_is_dead(holder[0], self.host):
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
        self.leases_busy += not got
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
        rows = [(kind, key, queue, None if payload is None else json.dumps(payload), final, at)
                for key, queue, payload, final in items]
        for chunk in chunks(rows, 500):
            bulk.execute_many(conn, _upsert_reports(conn.dialect.name), _UPSERT_NAMES, chunk)

    def reports_sent(self, conn: Connection, kind: str, sent: Sequence[tuple[int, int]]) -> None:
        """Forget (key, version) pairs PanDA accepted; a row with a newer version stays, released for the next run."""
        for chunk in chunks(list(sent), 500):
            # the key list finds the rows by primary key; the pairs keep a newer version of one
            conn.execute(
                delete(reports).where(reports.c.kind == kind, reports.c.lock_owner == self.owner,
                                      reports.c.key.in_([k for k, _ in chunk]),
                                      tuple_(reports.c.key, reports.c.version).in_(list(chunk)))
            )
        self.release(conn, reports, [(kind, k) for k, _ in sent])

    def count_pending_reports(self) -> dict[str, int]:
        with self.read() as conn:
            return {kind: n for kind, n in conn.execute(
                select(reports.c.kind, func.count()).group_by(reports.c.kind))}


_UPSERT_NAMES = ("kind", "key", "queue", "payload", "final", "created")
_upserts: dict[str, Any] = {}


def _upsert_reports(dialect: str):
    """The outbox's upsert for this database, built once: a newer report replaces the unsent one."""
    if dialect not in _upserts:
        # constants as literals: the rows go to the driver as they are (in the table's column order)
        values = {name: bindparam(name) for name in _UPSERT_NAMES} | {"version": literal_column("1"),
                                                                      "attempts": literal_column("0")}
        # `+ 1` as a literal: PyMySQL's executemany formats what follows VALUES (...) without parameters,
        # so a bound 1 there fails every bulk upsert of two rows or more ("format requires a mapping").
        newer = reports.c.version + literal_column("1")
        if dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert

            stmt = insert(reports).values(values)
            _upserts[dialect] = stmt.on_duplicate_key_update(version=newer, payload=stmt.inserted.payload,
                                                             final=stmt.inserted.final)
        else:
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            stmt = insert(reports).values(values)
            _upserts[dialect] = stmt.on_conflict_do_update(
                index_elements=[reports.c.kind, reports.c.key],
                set_={"version": newer, "payload": stmt.excluded.payload, "final": stmt.excluded.final})
    return _upserts[dialect]


def owner_is_dead(owner: str | None, this_host: str | None = None) -> bool:
    """A claim owned by a process of this host that no longer exists can be taken over at once. Another
    host's claims wait for their lease: its processes cannot be seen from here."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != (this_host or socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# Another transaction won: PostgreSQL's serialization failure and deadlock, MariaDB's deadlock and lock wait
# timeout. Worth running the transaction again; anything else is not.
_PG_CONFLICTS = {"40001", "40P01"}
_MYSQL_CONFLICTS = {1213, 1205}


def is_conflict(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _PG_CONFLICTS:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_CONFLICTS and type(orig).__module__.startswith("pymysql")


def server_timeouts(url: str, seconds: int) -> dict[str, Any]:
    """Driver arguments that bound every wait on a PostgreSQL/MariaDB server: a statement, a lock wait, a
    transaction left idle by a stuck client (the server ends it and frees its row locks), a connection
    whose peer went silent (a host cut off from the network fails instead of hanging its cron slot)."""
    if url.startswith("postgres"):
        ms = seconds * 1000
        return {"connect_timeout": min(seconds, 30), "tcp_user_timeout": ms, "keepalives_idle": min(seconds, 30),
                "keepalives_interval": 5, "keepalives_count": 3,
                "options": f"-c statement_timeout={ms} -c lock_timeout={ms} "
                           f"-c idle_in_transaction_session_timeout={ms}"}
    if url.startswith(("mysql", "mariadb")):
        return {"connect_timeout": min(seconds, 30), "read_timeout": seconds + 5, "write_timeout": seconds + 5,
                "init_command": f"SET SESSION innodb_lock_wait_timeout={seconds}, max_statement_time={seconds}, "
                                f"wait_timeout={max(seconds, 60)}"}
    return {}


def _key_match(columns: list[Column], keys: Sequence[tuple]):
    """Rows whose key is one of `keys`. As IN lists (one statement shape whatever the count, so SQLAlchemy
    compiles it once and the server plans an index lookup): an OR of a hundred pairs was compiled again
    for every page and cost PostgreSQL a plan each time."""
    if len(columns) == 1:
        return columns[0].in_([k[0] for k in keys])
    firsts = {k[0] for k in keys}
    if len(firsts) == 1:   # the outbox: one kind per call
        return (columns[0] == next(iter(firsts))) & columns[1].in_([k[1] for k in keys])
    return or_(*[(columns[0] == k[0]) & (columns[1] == k[1]) for k in keys])


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def read_revision(conn: Connection) -> str | None:
    """See Store.revision (one connection's view, so an upgrade can re-read under its lock)."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or ""
    if "meta" in tables:
        row = conn.execute(select(meta.c.ivalue).where(meta.c.key == "schema_version")).first()
        version = int(row[0]) if row else 0
        return LEGACY_VERSIONS.get(version, f"legacy:{version}")
    return "" if tables else None


def schema_problem(revision: str) -> str | None:
    """What is wrong with a database at this revision for this code, as the rest of a one-line error."""
    if revision == HEAD:
        return None
    if revision == "":
        return "holds tables but is not a harvester-cli database: point `state` at another database"
    if revision in REVISIONS or revision == "base":
        return f"has schema revision {revision}, this harvester-cli needs {HEAD}: run `harvester-cli db upgrade`"
    return (f"has schema revision {revision.removeprefix('legacy:')}, newer than this harvester-cli knows "
            f"({HEAD}): upgrade harvester-cli")
