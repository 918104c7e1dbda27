"""The state database's connection: the engine, transactions (`Tx`), conflict retries and the schema check.

Every statement of harvester-cli lives in a module of this package named for its table or concern
(`workers`, `jobs`, `outbox`, `commands`, `targets`, `locks`, `claims`, `meta`, `registrations`,
`monitoring`, `views`), as a plain function that takes the open transaction:

    with store.transaction() as tx:
        rows = workers.claim_interrupted(tx, queue, host, 1000)

`tx` is the only thing a step hands down; a step never sees SQL. SQLAlchemy Core only. SQLite (default)
runs in WAL mode with a busy timeout, and every write transaction starts with BEGIN IMMEDIATE so two
commands never deadlock upgrading a read lock. PostgreSQL and MariaDB use the same statements; claims
there add FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Column, create_engine, event, inspect, or_, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, SQLAlchemyError

from harvester_cli.errors import StateError, StateUnreachable
from harvester_cli.state.schema import HEAD, LEGACY_VERSIONS, REVISIONS, meta

T = TypeVar("T")
# What a step catches when the database fails under it (a full disk, a server gone), without knowing the
# database library.
DatabaseFailure = SQLAlchemyError


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        # Only settings of this connection: WAL mode is written into the file, so it waits until the file is
        # known to be a harvester-cli database (Store.use_wal); another application's file stays as it was.
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


class Tx:
    """One open transaction: the connection, and who this run is (the owner its claims carry). It is the one
    thing steps pass down to the functions of this package."""

    __slots__ = ("conn", "store")

    def __init__(self, conn: Connection, store: Store):
        self.conn = conn
        self.store = store

    @property
    def owner(self) -> str:
        return self.store.owner

    @property
    def host(self) -> str:
        return self.store.host

    @property
    def lease_seconds(self) -> int:
        return self.store.lease_seconds

    @property
    def is_sqlite(self) -> bool:
        return self.store.is_sqlite

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def execute(self, statement, parameters=None):
        return self.conn.execute(statement, parameters)

    def scalar(self, statement):
        return self.conn.scalar(statement)

    def scalars(self, statement):
        return self.conn.scalars(statement)


class Store:
    """One state database: its engine, transactions, conflict retries and the schema check. What the
    database holds is read and written by the table modules of this package, inside `transaction()`."""

    def __init__(self, url: str, *, lease_seconds: int = 600, check_schema: bool = True, host: str | None = None,
                 timeout: int | None = 60):
        self.url = url
        self.lease_seconds = lease_seconds
        # The host part is the [instance] host: several hosts may share one machine's name (containers), and a
        # claim's owner says which host may judge whether its process still lives (claims.owner_is_dead).
        self.host = host or socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.dead_checked: set[str] = set()   # tables whose dead claims this process has released (claims)
        # Deadlocks and serialization failures retried (see retrying), and named leases found held by another
        # run (locks.lease), for the command's result.
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
    def transaction(self) -> Iterator[Tx]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite), committed when the block ends."""
        with self.engine.begin() as conn:
            yield Tx(conn, self)

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """A read-only transaction (a plain BEGIN on SQLite: it never waits for a writer)."""
        with self.engine.connect().execution_options(readonly=True) as conn:
            with conn.begin():
                yield Tx(conn, self)

    def close(self) -> None:
        self.engine.dispose()

    def stats(self) -> dict[str, int]:
        return {"connections": self.connections, "statements": self.statements, "conflicts_retried": self.conflicts,
                "leases_busy": self.leases_busy}

    def retrying(self, work: Callable[[Tx], T]) -> T:
        """Run `work(tx)` in a write transaction; a deadlock or serialization failure (another host's
        transaction won) rolls it back and runs it again, a few times, counted in `conflicts`. `work` must
        only read and write the database: everything it did is undone before each new attempt."""
        try:   # the first attempt without tenacity: its import is most of a quiet run's write cost
            with self.transaction() as tx:
                return work(tx)
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
            with attempt, self.transaction() as tx:
                return work(tx)
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
            with self.reading() as tx:
                return read_revision(tx.conn)
        except DatabaseError as exc:   # not a database, unreadable, server refused or not answering
            hint = ""
            if path is not None and not os.access(path.parent, os.W_OK):
                hint = f" ({path.parent} is read-only: SQLite writes its journal beside the database)"
            raise self.failure(exc, "cannot read", hint) from None

    def failure(self, exc: DatabaseError, doing: str, hint: str = "") -> StateError | StateUnreachable:
        """The one-line error for a database error: a server that did not answer is an outage (the next run
        tries again), anything else (a refusal, a file that is not a database) a problem to fix."""
        reason = " ".join(str(exc.orig).split())   # the drivers' messages run over several lines
        if not self.is_sqlite and not _server_answered(exc.orig):
            return StateUnreachable(f"state database {self.display_url}: no answer: {reason} (is the server up? "
                                    "nothing was changed; the next run tries again)")
        return StateError(f"state database {self.display_url}: {doing}: {reason}{hint}")

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
        self.use_wal()

    def use_wal(self) -> None:
        """Put a SQLite file known to be harvester-cli's in WAL mode (readers never wait for a writer). The mode
        is kept in the file, so this changes it once; it is never done to a file before it is known to be ours."""
        if not self.is_sqlite or self.sqlite_path is None:
            return
        connection = self.engine.raw_connection()   # outside any transaction: SQLite switches modes only there
        try:
            cursor = connection.cursor()
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.close()
        finally:
            connection.close()


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


def key_match(columns: list[Column], keys: Sequence[tuple]):
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


# Tables every harvester-cli database has had since its first schema: another application's database may
# have an alembic_version or a meta table too, but not these.
_OWN_TABLES = {"workers", "jobs"}


def read_revision(conn: Connection) -> str | None:
    """See Store.revision (one connection's view, so an upgrade can re-read under its lock)."""
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    if "alembic_version" in tables:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or ""
        return revision if revision in REVISIONS or _OWN_TABLES <= tables else ""
    if "meta" in tables:
        if not {"key", "ivalue"} <= {c["name"] for c in inspector.get_columns("meta")}:
            return ""
        row = conn.execute(select(meta.c.ivalue).where(meta.c.key == "schema_version")).first()
        version = int(row[0]) if row and row[0] is not None else 0
        if version not in LEGACY_VERSIONS and not _OWN_TABLES <= tables:
            return ""
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
