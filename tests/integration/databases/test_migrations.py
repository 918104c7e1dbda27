"""Schema migrations on PostgreSQL and MariaDB: a state database of schema version 2 is upgraded in place
with nothing lost; a fresh database gets exactly the schema the code declares; three hosts upgrading at
once migrate once. The same on SQLite: tests/unit/test_migrations.py."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import create_engine, inspect

from harvester_cli.state.schema import HEAD
from harvester_cli.state.store import Store
from tests.support.harness import new_state
from tests.support.migrations import TABLES, assert_upgraded_with_nothing_lost, load_legacy_schema_2, schema_differences


def test_schema_2_database_is_upgraded_in_place(server_url):
    load_legacy_schema_2(server_url)
    assert_upgraded_with_nothing_lost(server_url)


def test_fresh_database_has_exactly_the_declared_schema(server_url):
    new_state(server_url)
    assert schema_differences(server_url) == []
    assert set(inspect(create_engine(server_url)).get_table_names()) >= set(TABLES)


def test_two_hosts_upgrading_at_once_migrate_once(server_url):
    load_legacy_schema_2(server_url)
    code = ("import sys; from harvester_cli.state import upgrade; from harvester_cli.state.store import Store; "
            "print(upgrade.upgrade(Store(sys.argv[1], check_schema=False)))")
    runs = [subprocess.Popen([sys.executable, "-c", code, server_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in runs]
    assert all(p.returncode == 0 for p in runs), outputs
    firsts = [out for out, _ in outputs if out.startswith("('0002")]
    assert len(firsts) == 1, outputs   # one migrated; the others waited and found nothing to do
    assert Store(server_url).revision() == HEAD
