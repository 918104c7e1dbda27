"""The same store and cycle code on a real PostgreSQL server (started here, loopback only)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from harvester_cli.store import Store, workers
from tests.test_cycle import cycle_until, rows

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

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
    yield f"postgresql+psycopg2://{ROLE}:{PASSWORD}@127.0.0.1/{name}"
    subprocess.run(["su", "postgres", "-c", f"psql -qc \"DROP DATABASE IF EXISTS {name} WITH (FORCE)\""],
                   capture_output=True)


def test_claims_are_exclusive_on_postgresql(pg_url):
    first, second = Store(pg_url), Store(pg_url)
    with first.write() as conn:
        conn.execute(workers.insert(), [{"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull",
                                         "status": "submitted", "created": 0.0, "modified": 0.0} for i in range(1, 11)])
    with first.write() as conn, second.write() as other:   # two open transactions at once
        a = {r.worker_id for r in first.claim(conn, workers, workers.c.queue == "Q", 6)}
        b = {r.worker_id for r in second.claim(other, workers, workers.c.queue == "Q", 6)}
    assert len(a) == 6 and len(b) == 4 and not a & b   # SKIP LOCKED: the second skips the first's rows


def test_pull_and_push_cycle_on_postgresql(harness, sim, pg_url):
    ids = sim.add_jobs("PULL_Q", 2) + sim.add_jobs("PUSH_Q", 2)
    instance = harness.instance({"PULL_Q": {"mode": "pull", "empty_pilot_floor": 0}, "PUSH_Q": {"mode": "push"}},
                                state=pg_url)
    cycle_until(instance, lambda: all(sim.job_status(i) == "finished" for i in ids)
                and all(w.status == "finished" for w in rows(instance, workers)), what="jobs finished on PostgreSQL")
    assert len(rows(instance, workers)) == 4
