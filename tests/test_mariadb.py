"""The same store and cycle code on a real MariaDB server (started here, loopback only)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from harvester_cli.store import Store, jobs, workers
from tests.test_cycle import cycle_until, rows

pytestmark = [pytest.mark.mariadb, pytest.mark.integration]

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


def test_claims_are_exclusive_and_times_keep_their_precision_on_mariadb(maria_url):
    first, second = Store(maria_url), Store(maria_url)
    with first.write() as conn:
        conn.execute(workers.insert(), [{"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull",
                                         "status": "submitted", "created": 1795560012.25, "modified": 0.0}
                                        for i in range(1, 11)])
    with first.write() as conn, second.write() as other:
        a = {r.worker_id for r in first.claim(conn, workers, workers.c.queue == "Q", 6)}
        b = {r.worker_id for r in second.claim(other, workers, workers.c.queue == "Q", 6)}
    assert len(a) == 6 and len(b) == 4 and not a & b
    assert rows_created(first) == {1795560012.25}   # a single-precision FLOAT would be off by minutes


def rows_created(store):
    with store.read() as conn:
        return {r.created for r in conn.execute(workers.select())}


def test_push_cycle_with_a_large_job_on_mariadb(harness, sim, maria_url):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="echo " + "x" * 100_000)   # over TEXT's 64 kB
    instance = harness.instance({"PUSH_Q": {"mode": "push"}}, state=maria_url)
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", what="job finished on MariaDB")
    (job,) = rows(instance, jobs)
    assert job.sub_status == "done" and len(job.job_json) > 100_000
