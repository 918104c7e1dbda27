"""Real PostgreSQL and MariaDB servers for the tests (started here as root, loopback only): session
fixtures that start the server, and per-test fixtures that make an empty database and give its URL."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROLE, PASSWORD = "harvester_cli_test", "harvester_cli_test"


def _psql(sql: str) -> None:
    subprocess.run(["su", "postgres", "-c", f'psql -qc "{sql}"'], check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres_server():
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres")) if Path("/usr/lib/postgresql").exists() else []
    if not versions or not shutil.which("pg_ctlcluster"):
        pytest.fail("PostgreSQL is not installed: run scripts/test as root (it installs scripts/apt-packages.txt)")
    version = versions[-1].parent.parent.name
    subprocess.run(["pg_ctlcluster", version, "main", "start"], capture_output=True)   # already running is fine
    subprocess.run(["pg_ctlcluster", version, "main", "status"], check=True, capture_output=True)
    subprocess.run(["su", "postgres", "-c", f"psql -qc \"DROP ROLE IF EXISTS {ROLE}\""], capture_output=True)
    _psql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
    return version


@pytest.fixture
def pg_url(postgres_server):
    name = f"hcli_{uuid.uuid4().hex[:10]}"
    _psql(f"CREATE DATABASE {name} OWNER {ROLE}")
    yield f"postgresql+psycopg://{ROLE}:{PASSWORD}@127.0.0.1/{name}"
    subprocess.run(["su", "postgres", "-c", f"psql -qc \"DROP DATABASE IF EXISTS {name} WITH (FORCE)\""],
                   capture_output=True)


USER, PASSWORD = "harvester_cli_test", "harvester_cli_test"
SOCKET = "/run/mysqld/mysqld.sock"


def _sql(statement: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mariadb", f"--socket={SOCKET}", "-e", statement], capture_output=True, text=True)


@pytest.fixture(scope="session")
def mariadb_server():
    if not shutil.which("mariadbd") or not Path("/var/lib/mysql/mysql").exists():
        pytest.fail("MariaDB is not installed: run scripts/test as root (it installs scripts/apt-packages.txt)")
    started = None
    if _sql("SELECT 1").returncode != 0:
        Path("/run/mysqld").mkdir(exist_ok=True)
        shutil.chown("/run/mysqld", "mysql", "mysql")
        started = subprocess.Popen(["mariadbd", "--user=mysql", "--bind-address=127.0.0.1", "--port=3306",
                                    f"--socket={SOCKET}", "--datadir=/var/lib/mysql", "--skip-log-error"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while _sql("SELECT 1").returncode != 0:
            if time.monotonic() > deadline or started.poll() is not None:
                pytest.fail("mariadbd did not start within 60 s")
            time.sleep(0.3)
    _sql(f"DROP USER IF EXISTS '{USER}'@'127.0.0.1'")
    assert _sql(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
                f"GRANT ALL ON *.* TO '{USER}'@'127.0.0.1'").returncode == 0
    yield
    if started:
        started.terminate()
        started.wait(timeout=60)


@pytest.fixture
def maria_url(mariadb_server):
    name = f"hcli_{uuid.uuid4().hex[:10]}"
    assert _sql(f"CREATE DATABASE {name}").returncode == 0
    yield f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:3306/{name}"
    _sql(f"DROP DATABASE IF EXISTS {name}")


def assert_state_errors(cases: dict[str, tuple[int, str]], tmp_path: Path) -> None:
    """`status` and `db upgrade` on each state URL exit with the given code, one line on stderr saying the given
    words and no password (cases: URL -> (exit code, words))."""
    import sys

    config = tmp_path / "config.toml"
    config.write_text('harvester_id = "outage"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
                      '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n')
    for url, (code, says) in cases.items():
        for command in (["status"], ["db", "upgrade"]):
            result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), "--state", url,
                                     *command], capture_output=True, text=True, timeout=60)
            assert result.returncode == code and says in result.stderr, (url, command, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1 and "wrong-password" not in result.stderr, result.stderr
