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

A server that goes away (a standby promoted in its place, a restart) is reconnected to within
`reconnect_seconds` ([instance] db_reconnect_seconds): a transaction that had not reached its COMMIT was
rolled back by the server and `retrying` runs it again; one whose COMMIT was on its way when the server went
away raises CommitUnknown (kept or not: nobody can tell without looking), which `retrying` resolves by
looking after reconnecting (`committed`) or by running work that finds its own writes (`rerun_unknown`).
Past the bound: StateUnreachable, one line, exit 1; the next run tries again.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Column, create_engine, event, inspect, or_, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, DBAPIError, DisconnectionError, SQLAlchemyError

from harvester_cli import model
from harvester_cli.errors import CommitUnknown, StateError, StateUnreachable
from harvester_cli.state.schema import HEAD, LEGACY_VERSIONS, REVISIONS, meta

T = TypeVar("T")
log = logging.getLogger(__name__)
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


# The server went away, or does not take writes (yet): a failover, a restart, a standby not yet promoted.
# PostgreSQL: class 08 (connection exception), admin or crash shutdown, "cannot connect now" (starting up,
# shutting down), a read-only transaction (a server fenced read-only, a standby); and libpq's own texts when
# target_session_attrs=read-write turns a standby down. MySQL/MariaDB: the client's "cannot connect", "gone
# away", "lost connection", and the server's shutdown, killed connection and read-only answers.
_PG_GONE = {"57P01", "57P02", "57P03", "25006"}
_PG_NOT_WRITABLE_YET = ("the database system is starting up", "the database system is shutting down",
                        "the database system is in recovery mode", "not yet accepting connections",
                        "not accepting connections", "server is in hot standby mode", "session is read-only",
                        "read-only transaction", "terminating connection due to administrator command")
_MYSQL_GONE = {2002, 2003, 2006, 2013, 2055, 1053, 1927, 1290, 1836, 1792}
_MYSQL_NOT_WRITABLE_YET = {1053, 1290, 1836, 1792}


def server_gone(error: BaseException) -> bool:
    """Whether a driver error says the server went away or does not take writes (worth reconnecting),
    rather than refused this client (a wrong password, an unknown database) or this statement."""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in _PG_GONE
    text = str(error)
    module = type(error).__module__
    if module.startswith("pymysql"):
        code = error.args[0] if error.args else None
        return code in _MYSQL_GONE
    if module.startswith("psycopg"):   # no SQLSTATE: libpq's own text (never answered, or dropped), or at connect time
        return not_writable_yet(error) or "FATAL:" not in text
    return False


def not_writable_yet(error: BaseException) -> bool:
    """Whether a server answered, but does not take writes yet (a standby not yet promoted, a server starting
    or shutting down): worth waiting for even when this command never had a server."""
    if getattr(error, "sqlstate", None) in ("57P03", "25006"):
        return True
    if type(error).__module__.startswith("pymysql"):
        return bool(error.args) and error.args[0] in _MYSQL_NOT_WRITABLE_YET
    text = str(error)
    return any(phrase in text for phrase in _PG_NOT_WRITABLE_YET)


def _where(dbapi_connection) -> str | None:
    """host:port of the server a driver connection reached (what the reconnect line names)."""
    info = getattr(dbapi_connection, "info", None)
    host, port = (getattr(info, "host", None), getattr(info, "port", None)) if info is not None else (None, None)
    if host is None:   # PyMySQL
        host, port = getattr(dbapi_connection, "host", None), getattr(dbapi_connection, "port", None)
    if host is None:
        return None
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _reason(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(getattr(error, "orig", None) or error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


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

    def lease_now(self) -> float:
        """Now by the database server's clock: what claims and leases are stamped and compared with. Hosts
        share leases through the database, so one host's wrong clock (an hour behind, a day ahead) must not
        make its leases look expired to the others, or theirs to it."""
        return model.now() + self.store.clock_offset(self.conn)

    def execute(self, statement, parameters=None):
        return self.conn.execute(statement, parameters)

    def scalar(self, statement):
        return self.conn.scalar(statement)

    def scalars(self, statement):
        return self.conn.scalars(statement)


# The server's clock as seconds since the epoch, UTC whatever the session's time zone.
_SERVER_NOW = {
    "postgresql": "SELECT extract(epoch FROM clock_timestamp())",
    "mysql": "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) / 1000000",
}
_SERVER_NOW["mariadb"] = _SERVER_NOW["mysql"]
# A host within CLOCK_TOLERANCE of the server's clock uses its own (NTP keeps hosts far closer); one CLOCK_WARNING
# or more off is told so once.
CLOCK_TOLERANCE = 2.0
CLOCK_WARNING = 60.0


class Store:
    """One state database: its engine, transactions, conflict retries and the schema check. What the
    database holds is read and written by the table modules of this package, inside `transaction()`."""

    def __init__(self, url: str, *, lease_seconds: int = 600, check_schema: bool = True, host: str | None = None,
                 timeout: int | None = 60, reconnect_seconds: int = 0):
        self.url = url
        # How long a command waits for a server that takes writes, after losing one (see the module's text).
        self.reconnect_seconds = reconnect_seconds
        self.reconnects = self.unknown_commits = 0
        self._had_server = False      # this process has been connected: losing it is worth waiting for
        self._gave_up = False         # waited out reconnect_seconds once: the rest of the run does not wait again
        self._lost: tuple[str | None, str, float] | None = None   # (server, why, when) of the connection lost last
        self._disconnect = ""         # the driver's words for the last connection found dead
        self.lease_seconds = lease_seconds
        # The host part is the [instance] host: several hosts may share one machine's name (containers), and a
        # claim's owner says which host may judge whether its process still lives (claims.owner_is_dead).
        self.host = host or socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.dead_checked: set[str] = set()   # tables whose dead claims this process has released (claims)
        self._clock_said = False
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
        def connected(dbapi_connection, record):
            self.connections += 1
            self._had_server = True
            record.info["where"] = _where(dbapi_connection)

        @event.listens_for(self.engine, "handle_error")
        def failed(context):
            if context.is_disconnect or context.is_pre_ping:   # what the invalidation below is about
                self._disconnect = _reason(context.original_exception, 160)

        @event.listens_for(self.engine, "invalidate")
        def invalidated(_dbapi_connection, record, exception):
            if exception is not None:   # not our own close: the server went away under this connection
                # A failed pre-ping invalidates with an empty DisconnectionError: the driver's words are the reason.
                why = self._disconnect if isinstance(exception, DisconnectionError) else _reason(exception, 160)
                self._lost = (record.info.get("where"), why or "the connection was closed", time.monotonic())

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

    def clock_offset(self, conn: Connection) -> float:
        """Seconds the server's clock is ahead of this host's (0 for SQLite, and within CLOCK_TOLERANCE), read
        once per connection: a reconnect may reach another server."""
        if self.is_sqlite:
            return 0.0
        offset = conn.info.get("clock_offset")
        if offset is None:
            sql = _SERVER_NOW.get(conn.dialect.name)
            if sql is None:
                return 0.0
            samples = []   # (round trip, offset): a stalled answer would cache a wrong offset for the connection
            for _ in range(3):
                before = time.time()
                server = float(conn.scalar(text(sql)))
                after = time.time()
                samples.append((after - before, server - (before + after) / 2))
                if after - before < 0.5:
                    break
            offset = min(samples)[1]
            if abs(offset) < CLOCK_TOLERANCE:
                offset = 0.0
            elif abs(offset) >= CLOCK_WARNING and not self._clock_said:
                self._clock_said = True
                log.warning("this host's clock is %s %s the database server's: claims, leases and retention follow the "
                            "server's clock; set this host's time right (chronyd or ntpd)",
                            model.duration(round(abs(offset))), "behind" if offset > 0 else "ahead of")
            conn.info["clock_offset"] = offset
        return offset

    def now(self) -> float:
        """Now by the database server's clock (`Tx.lease_now`): for cut-offs compared with stamps other hosts
        wrote, such as retention's."""
        if self.is_sqlite:
            return model.now()
        with self.reading() as tx:
            return tx.lease_now()

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite), committed when the block ends. A server that
        goes away before the COMMIT rolls it back (the error goes on up: `retrying` runs the work again); one
        that goes away while the COMMIT is on its way leaves its outcome unknown: CommitUnknown."""
        conn = self._connect()
        try:
            transaction = conn.begin()
            try:
                yield Tx(conn, self)
            except BaseException as exc:
                self._rollback(conn, transaction, exc)
                raise
            try:
                transaction.commit()
            except DBAPIError as exc:
                if self.is_sqlite or not server_gone(exc.orig):
                    raise
                self.unknown_commits += 1
                raise CommitUnknown(f"state database {self.display_url}: the server went away while a COMMIT was on "
                                    f"its way ({_reason(exc)}): whether it was kept is unknown") from exc
        finally:
            conn.close()

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """A read-only transaction (a plain BEGIN on SQLite: it never waits for a writer)."""
        conn = self._connect().execution_options(readonly=True)
        try:
            transaction = conn.begin()
            try:
                yield Tx(conn, self)
            except BaseException as exc:
                self._rollback(conn, transaction, exc)
                raise
            try:
                transaction.commit()
            except DBAPIError as exc:   # what was read stands; the next transaction reconnects
                if self.is_sqlite or not server_gone(exc.orig):
                    raise
        finally:
            conn.close()

    def _rollback(self, conn: Connection, transaction, exc: BaseException) -> None:
        """Roll back after `exc`; a session on a server that no longer takes writes (fenced read-only) is
        dropped, so that the next connection goes where writes go (libpq's target_session_attrs)."""
        orig = getattr(exc, "orig", None)
        if not self.is_sqlite and orig is not None and not_writable_yet(orig) and not conn.invalidated:
            conn.invalidate(orig)
        try:
            transaction.rollback()
        except SQLAlchemyError:   # the server is gone: it rolled the transaction back itself
            pass

    def _connect(self) -> Connection:
        """A connection to a server that takes writes. After losing one (or while the one found does not take
        writes yet) try again for up to reconnect_seconds, and say in one line where it is connected now. A
        server that never answered this process is an outage at once."""
        if self.is_sqlite:
            return self.engine.connect()
        waiting_since = None
        pause = 0.25
        while True:
            try:
                conn = self.engine.connect()
            except DBAPIError as exc:
                if not server_gone(exc.orig):
                    raise
                waitable = (self._had_server or not_writable_yet(exc.orig)) and self.reconnect_seconds > 0
                if not waitable:
                    done = "the rest of this run was not done" if self._had_server else "nothing was changed"
                    raise StateUnreachable(f"state database {self.display_url}: no answer: {_reason(exc)} (is the "
                                           f"server up? {done}; the next run tries again)") from None
                now = time.monotonic()
                if waiting_since is None:
                    waiting_since = self._lost[2] if self._lost else now
                    log.info("state database: no server takes writes (%s): trying again for up to %d s",
                             _reason(exc), self.reconnect_seconds)
                if self._gave_up or now - waiting_since >= self.reconnect_seconds:
                    self._gave_up = True
                    lost = f" after losing {self._lost[0]}" if self._lost and self._lost[0] else ""
                    raise StateUnreachable(
                        f"state database {self.display_url}: no server took writes within db_reconnect_seconds="
                        f"{self.reconnect_seconds}{lost} ({_reason(exc)}): the rest of this run was not done; the "
                        "next run tries again") from None
                time.sleep(min(pause, max(0.0, waiting_since + self.reconnect_seconds - now)))
                pause = min(pause * 2, 2.0)
                continue
            if self._lost is not None or waiting_since is not None:
                self._reconnected(conn, waiting_since)
            return conn

    def _reconnected(self, conn: Connection, waiting_since: float | None) -> None:
        where = conn.connection.info.get("where") or "the server"
        since = self._lost[2] if self._lost else waiting_since
        before = (f"{self._lost[0] or 'the server before'} went away: {self._lost[1]}" if self._lost
                  else "none took writes before")
        self.reconnects += 1
        self._lost = None
        log.warning("state database: connected to %s, %.1f s later (%s)", where, time.monotonic() - since, before)

    @property
    def gave_up(self) -> bool:
        """No server took writes within reconnect_seconds: the rest of this run does not wait again."""
        return self._gave_up

    def close(self) -> None:
        self.engine.dispose()

    def stats(self) -> dict[str, int]:
        return {"connections": self.connections, "statements": self.statements, "conflicts_retried": self.conflicts,
                "leases_busy": self.leases_busy, "reconnects": self.reconnects, "unknown_commits": self.unknown_commits}

    def retrying(self, work: Callable[[Tx], T], *, rerun_unknown: bool = False,
                 committed: Callable[[Tx], bool] | None = None) -> T:
        """Run `work(tx)` in a write transaction, and run it again, whole, when it cannot have been kept: a
        deadlock or serialization failure (another host's transaction won; a few times, with back-off, counted
        in `conflicts`), or a server that went away before the COMMIT (after reconnecting). `work` must only
        read and write the database: everything it did is undone before each new attempt.

        A COMMIT whose answer never came (CommitUnknown) is resolved after reconnecting: with `rerun_unknown`
        the work runs again (it must find its own writes and do nothing twice: compare-and-set, inserts that
        skip what exists); with `committed`, a reading transaction asks whether it was kept: if so, what the
        work returned in that attempt is returned, else the work runs again. Without either, CommitUnknown
        goes on up (so it does when the server cannot be asked within reconnect_seconds: StateUnreachable)."""
        conflicts = reruns = 0
        while True:
            try:
                with self.transaction() as tx:
                    value = work(tx)
                return value
            except CommitUnknown:
                if reruns >= 5 or not (rerun_unknown or committed):
                    raise
                reruns += 1
                if committed is not None:
                    with self.reading() as tx:
                        if committed(tx):
                            return value
            except DBAPIError as exc:
                if is_conflict(exc):
                    self.conflicts += 1
                    conflicts += 1
                    if conflicts > 7:
                        raise
                    # tenacity's wait_random_exponential(multiplier=0.02, max=1.0), without importing it
                    time.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** conflicts)))
                elif not self.is_sqlite and server_gone(exc.orig) and reruns < 5:
                    reruns += 1   # rolled back by the server: the next attempt reconnects first
                else:
                    raise

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
        from harvester_cli.config.state_url import servers

        ms = seconds * 1000
        # Each host is tried in turn, each with this timeout: a powered-off host listed first must not cost
        # every new connection half a minute.
        connect = min(seconds, 10 if len(servers(url)) > 1 else 30)
        return {"connect_timeout": connect, "tcp_user_timeout": ms, "keepalives_idle": min(seconds, 30),
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
