"""Schema migrations (Alembic) on SQLite: a state database written before migrations existed (schema
version 2, with jobs, workers and pending reports in it) is upgraded in place with nothing lost; a fresh
database gets exactly the schema the code declares; two upgrades at once migrate once; only `db` commands
import Alembic. The same on PostgreSQL and MariaDB: tests/integration/databases/test_migrations.py."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harvester_cli.state import upgrade as migrations
from harvester_cli.state.schema import HEAD, REVISIONS
from harvester_cli.state.store import Store
from tests.support.harness import new_state
from tests.support.migrations import FIXTURE, assert_upgraded_with_nothing_lost, schema_differences


def test_revisions_known_to_the_code_are_the_migration_scripts():
    assert [r.revision for r in migrations.history()] == list(REVISIONS)
    assert migrations.history()[0].down_revision is None


def test_schema_2_database_is_upgraded_in_place_on_sqlite(tmp_path):
    path = tmp_path / "state.db"
    shutil.copy(FIXTURE, path)
    assert_upgraded_with_nothing_lost(f"sqlite:///{path}")


def test_fresh_database_has_exactly_the_declared_schema_on_sqlite(tmp_path):
    url = new_state(tmp_path / "state.db")
    assert schema_differences(url) == []


def test_two_upgrades_at_once_migrate_once_on_sqlite(tmp_path):
    path = tmp_path / "state.db"
    shutil.copy(FIXTURE, path)
    url = f"sqlite:///{path}"
    results = []

    def run():
        results.append(migrations.upgrade(Store(url, check_schema=False)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == sorted([("0002_worker_targets", HEAD), (HEAD, HEAD)], key=str)


def test_upgrade_sql_prints_the_ddl_and_changes_nothing(tmp_path):
    path = tmp_path / "state.db"
    shutil.copy(FIXTURE, path)
    store = Store(f"sqlite:///{path}", check_schema=False)
    script = migrations.upgrade_sql(store)
    assert "CREATE TABLE alembic_version" in script and "0002_worker_targets" in script
    assert "schema_version" in script and HEAD in script
    assert store.revision() == "0002_worker_targets"   # nothing applied
    fresh = Store(f"sqlite:///{tmp_path / 'new.db'}", check_schema=False)
    assert "CREATE TABLE workers" in migrations.upgrade_sql(fresh)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    config = cwd / "config.toml"
    proxy = cwd / "proxy.pem"   # the work commands check the host's files first, as `config check` does
    proxy.write_text("not a real proxy: PanDA is never reached here")
    proxy.chmod(0o600)
    config.write_text(f'harvester_id = "h"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\nproxy = "{proxy}"\n'
                      '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n')
    return subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_db_commands_through_the_cli(tmp_path):
    path = tmp_path / "state.db"
    shutil.copy(FIXTURE, path)
    current = _cli("--state", str(path), "--json", "db", "current", cwd=tmp_path)
    assert current.returncode == 1 and json.loads(current.stdout)["revision"] == "0002_worker_targets"
    status = _cli("--state", str(path), "status", cwd=tmp_path)
    assert status.returncode == 2 and "harvester-cli db upgrade" in status.stderr
    assert len(status.stderr.strip().splitlines()) == 1
    assert _cli("--state", str(path), "db", "upgrade", cwd=tmp_path).returncode == 0
    current = _cli("--state", str(path), "db", "current", cwd=tmp_path)
    assert current.returncode == 0 and HEAD in current.stdout and "up to date" in current.stdout
    history = _cli("--json", "--state", str(path), "db", "history", cwd=tmp_path)
    assert [r["revision"] for r in json.loads(history.stdout)["revisions"]] == list(REVISIONS)


def test_db_commands_on_a_typo_say_so_describe_migrations_whole_and_keep_their_log(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'harvester_id = "h"\nlog_dir = "{tmp_path / "logs"}"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
                      '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n')

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=120)

    typo = cli("--state", str(tmp_path / "stat.db"), "db", "current")
    assert typo.returncode == 2 and "does not exist" in typo.stderr and "db upgrade" in typo.stderr
    assert not (tmp_path / "stat.db").exists()
    described = {r["revision"]: r["description"] for r in json.loads(cli("--json", "db", "history").stdout)["revisions"]}
    assert all(text.endswith(".") for text in described.values()), described
    assert "refuses this database instead of writing to it" in described["0003_alembic"]
    assert cli("--state", str(tmp_path / "state.db"), "db", "upgrade").returncode == 0
    assert "--state " + str(tmp_path / "state.db") + " db upgrade" in (tmp_path / "logs" / "commands" / "db.log").read_text()


@pytest.mark.parametrize("setup,code,needle", [
    ("UPDATE alembic_version SET version_num = '9999_future'", 2, "newer than this harvester-cli"),
    ("DROP TABLE alembic_version; DROP TABLE meta", 2, "not a harvester-cli database"),
])
def test_a_newer_or_foreign_database_is_refused_with_exit_2(tmp_path, setup, code, needle):
    path = tmp_path / "state.db"
    new_state(path)
    with sqlite3.connect(path) as db:
        db.executescript(setup)
    db.close()
    for args in (("status",), ("cycle",), ("db", "upgrade")):
        result = _cli("--state", str(path), *args, cwd=tmp_path)
        assert result.returncode == code, (args, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


FOREIGN = {   # other applications' SQLite files, each with a table name harvester-cli also uses
    "another Alembic application": "CREATE TABLE alembic_version (version_num TEXT); "
                                   "INSERT INTO alembic_version VALUES ('3f2a9c1b7e');",
    "a meta table of its own": "CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('schema_version', '9');",
    "tables of its own": "CREATE TABLE items (a); CREATE TABLE workers (name TEXT);",
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_another_applications_sqlite_file_is_refused_without_changing_a_byte(tmp_path, kind):
    """db upgrade (and every command) switched another application's file to WAL before refusing it, and
    called it newer than this harvester-cli or failed with an SQL error: now one line, exit 2, the file as it was."""
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as db:
        db.executescript(FOREIGN[kind])
    db.close()
    path.chmod(0o600)   # so that cycle's file checks pass and it opens the database
    before = path.read_bytes()
    for args in (("db", "upgrade"), ("db", "upgrade", "--sql"), ("cycle",), ("status",)):
        result = _cli("--state", str(path), *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().splitlines() == [
            (f"harvester-cli: error: state database sqlite:///{path} holds tables but is not a harvester-cli database: "
             "point `state` at another database")], (args, result.stderr)
    current = _cli("--state", str(path), "db", "current", cwd=tmp_path)
    assert current.returncode == 2 and "not a harvester-cli database" in current.stdout, current
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob("theirs.db*")) == ["theirs.db"]   # no -wal, -shm or journal


def test_a_harvester_database_is_put_in_wal_mode_by_upgrade_and_kept_there(tmp_path):
    """WAL waits until a file is known to be ours: db upgrade makes a new one WAL, and a copy that lost it
    (restored by a tool that wrote it in rollback-journal mode) gets it back from the next command."""
    path = tmp_path / "state.db"
    assert _cli("--state", str(path), "db", "upgrade", cwd=tmp_path).returncode == 0

    def mode() -> str:
        with sqlite3.connect(path) as db:
            found = db.execute("PRAGMA journal_mode").fetchone()[0]
        db.close()
        return found

    assert mode() == "wal"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = DELETE")
    db.close()
    assert mode() == "delete"
    assert _cli("--state", str(path), "status", cwd=tmp_path).returncode == 0
    assert mode() == "wal"


def test_only_db_commands_import_alembic(tmp_path):
    path = tmp_path / "state.db"
    new_state(path)
    probe = ("import sys, runpy; sys.argv = ['harvester-cli', '--state', sys.argv[1], 'status'];\n"
             "try:\n    runpy.run_module('harvester_cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('ALEMBIC' if any(m.startswith('alembic') for m in sys.modules) else 'CLEAN', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.stderr.strip().splitlines()[-1] == "CLEAN", result.stderr
