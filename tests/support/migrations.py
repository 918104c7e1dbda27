"""A state database written before migrations existed (schema version 2, with jobs, workers and pending
reports in it: data/state-schema2.sqlite), the same on a server, and what an upgrade must keep. For the
migration tests on SQLite (tests/unit) and on PostgreSQL and MariaDB (tests/integration/databases)."""

from __future__ import annotations

import json
import sqlite3

from sqlalchemy import MetaData, create_engine, select, text

from harvester_cli.state import upgrade as migrations
from harvester_cli.state.schema import HEAD, jobs, metadata, reports, workers
from harvester_cli.state.schema import meta as meta_table
from harvester_cli.state.store import Store
from tests.support import DATA

FIXTURE = DATA / "state-schema2.sqlite"
TABLES = ("meta", "locks", "jobs", "workers", "job_workers", "panda_commands", "pending_reports", "worker_targets")


def fixture_rows() -> dict[str, list[dict]]:
    """Every row of the schema-2 fixture, table by table."""
    with sqlite3.connect(FIXTURE) as db:
        db.row_factory = sqlite3.Row
        return {t: [dict(r) for r in db.execute(f"SELECT * FROM {t}")] for t in TABLES}


def schema_differences(url: str) -> list:
    """What differs between the database's schema and the code's tables (Alembic's own comparison)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def load_legacy_schema_2(url: str) -> None:
    """Recreate the fixture on a server: the schema version 2 tables as the code before migrations made
    them (the first two migrations, frozen), no alembic_version, and the fixture's rows."""
    store = Store(url, check_schema=False)
    config = migrations._config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        migrations.command.upgrade(config, "0002_worker_targets")
        conn.execute(text("DROP TABLE alembic_version"))
        reflected = MetaData()
        reflected.reflect(conn)
        for name, rows in fixture_rows().items():
            if rows:
                conn.execute(reflected.tables[name].insert(), rows)
    store.close()


def assert_upgraded_with_nothing_lost(url: str) -> None:
    before = fixture_rows()
    assert before["jobs"] and before["workers"] and before["pending_reports"]   # the fixture holds work
    store = Store(url, check_schema=False)
    assert store.revision() == "0002_worker_targets"
    assert migrations.upgrade(store) == ("0002_worker_targets", HEAD)
    assert store.revision() == HEAD
    Store(url)   # the check every command makes now passes
    with store.reading() as conn:
        for table, rows in before.items():
            if table == "meta":
                continue
            got = [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table}"))]
            key = sorted(rows[0]) if rows else []
            assert sorted((tuple(r[k] for k in key) for r in got), key=repr) == \
                   sorted((tuple(r[k] for k in key) for r in rows), key=repr), table
        meta = dict(conn.execute(select(meta_table.c.key, meta_table.c.ivalue)).all())
        assert meta["schema_version"] == 3   # an older harvester-cli now refuses this database
        assert meta["last_worker_id"] == next(r["ivalue"] for r in before["meta"] if r["key"] == "last_worker_id")
        job = conn.execute(select(jobs).limit(1)).one()
        assert json.loads(job.job_json)["PandaID"] == job.panda_id
        assert conn.execute(select(reports)).all() and conn.execute(select(workers)).all()
    assert schema_differences(url) == []
    store.close()
