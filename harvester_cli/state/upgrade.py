"""`db upgrade`, `db current`, `db history`: the schema's migrations, run with Alembic.

This is the only module that imports Alembic; every other command compares the database's revision with
`schema.HEAD` by reading one row. A database from before migrations (meta.schema_version 1 or 2) is first
stamped with the revision it equals, then upgraded like any other. Two hosts upgrading one database at
once migrate it once: the second waits for the first (SQLite's write lock, a PostgreSQL advisory lock, a
MariaDB named lock) and then finds nothing to do.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError

from harvester_cli.errors import StateError
from harvester_cli.site.logs import make_dirs
from harvester_cli.state.schema import HEAD, REVISIONS
from harvester_cli.state.store import Store, read_revision, schema_problem

log = logging.getLogger(__name__)
# Alembic narrates every step at INFO; the command log gets one line per upgrade from here instead.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).parent / "migrations"
# How long a second host waits for another host's upgrade before it gives up and says so.
LOCK_WAIT_SECONDS = 300
_LOCK_NAME = "harvester_cli_schema_upgrade"


@dataclass
class Revision:
    revision: str
    down_revision: str | None
    description: str


def _config(url: str | None = None, buffer: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=buffer)
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _create_private(path: Path) -> None:
    """The SQLite file, 0600 before SQLite opens it: it holds job dicts with their secrets, and SQLite gives
    its -wal and -shm files the database file's mode."""
    try:
        make_dirs(path.parent, 0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateError(f"state database {path}: cannot create it: {exc.strerror}") from None


def history() -> list[Revision]:
    """Every migration, oldest first."""
    script = ScriptDirectory.from_config(_config())
    # A migration's description is the first paragraph of its docstring, whole (Alembic's .doc is its first line).
    found = [Revision(s.revision, s.down_revision, " ".join((s.module.__doc__ or "").strip().split("\n\n")[0].split()))
             for s in script.walk_revisions()]
    return list(reversed(found))


@contextmanager
def _upgrade_lock(conn: Connection) -> Iterator[None]:
    """Serialise upgrades by several hosts. PostgreSQL's lock is taken inside the transaction (below);
    MariaDB commits every DDL statement on its own, so its lock is a named lock around the whole run."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        yield
        return
    got = conn.execute(text("SELECT GET_LOCK(:name, :wait)"), {"name": _LOCK_NAME, "wait": LOCK_WAIT_SECONDS}).scalar()
    conn.commit()
    if got != 1:
        raise StateError(f"another host has been upgrading this state database for {LOCK_WAIT_SECONDS} s: "
                         "wait for it to finish, then run `harvester-cli db upgrade` again")
    try:
        yield
    finally:
        conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _LOCK_NAME})
        conn.commit()


def upgrade(store: Store) -> tuple[str | None, str]:
    """Bring the database to HEAD; returns (revision before, HEAD). Safe to run on several hosts at once."""
    if store.sqlite_path is None:
        return _upgrade(store)
    _create_private(store.sqlite_path)
    # Two upgrades opening one SQLite file at once: switching it to WAL can answer "database is locked" at
    # once, without the busy timeout. Shortly again; anything else is an error at once.
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random

    def upgrade_then_wal() -> tuple[str | None, str]:
        done = _upgrade(store)
        store.use_wal()   # known to be ours only now
        return done

    locked = retry_if_exception(lambda e: "database is locked" in str(e))
    return Retrying(retry=locked, stop=stop_after_attempt(20), wait=wait_random(0.05, 0.3), reraise=True)(
        upgrade_then_wal)


def _upgrade(store: Store) -> tuple[str | None, str]:
    try:
        with store.engine.connect() as conn, _upgrade_lock(conn):
            with conn.begin():   # SQLite: BEGIN IMMEDIATE, held until the migrations are committed
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": _LOCK_NAME})
                before = read_revision(conn)
                _refuse_unknown(store, before)
                if before == HEAD:
                    return before, HEAD
                config = _config()
                config.attributes["connection"] = conn
                if before not in (None, "base") and not _has_version_table(conn):
                    command.stamp(config, before)   # a database from before migrations
                command.upgrade(config, "head")
            log.info("state database %s: schema revision %s -> %s", store.display_url, before or "(new)", HEAD)
            return before, HEAD
    except DatabaseError as exc:
        raise store.failure(exc, "cannot upgrade") from None


def upgrade_sql(store: Store) -> str:
    """The DDL that `upgrade` would run from where the database stands, for a DBA to apply by hand."""
    before = store.revision()
    _refuse_unknown(store, before)
    buffer = io.StringIO()
    config = _config(store.url, buffer)
    if before == HEAD:
        return ""
    if before in (None, "base"):
        command.upgrade(config, "head", sql=True)
        return buffer.getvalue()
    with store.reading() as tx:
        legacy = not _has_version_table(tx.conn)
    if legacy:
        command.stamp(config, before, sql=True)
    command.upgrade(config, f"{before}:head", sql=True)
    return buffer.getvalue()


def _has_version_table(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table("alembic_version")


def _refuse_unknown(store: Store, revision: str | None) -> None:
    if revision is None or revision in REVISIONS or revision == "base":
        return
    raise StateError(f"state database {store.display_url} {schema_problem(revision)}")


def create(url: str, **options) -> Store:
    """A ready state database at `url` (made or upgraded as `db upgrade` does), opened with `options`."""
    store = Store(url, check_schema=False, timeout=None)   # a migration and the upgrade lock may wait long
    try:
        upgrade(store)
    finally:
        store.close()
    return Store(url, **options)
