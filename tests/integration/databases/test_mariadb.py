"""The same store and cycle code on a real MariaDB server (started here, loopback only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harvester_cli.state.schema import jobs, workers
from harvester_cli.state import claims
from harvester_cli.state.store import Store
from tests.support.databases import assert_state_errors
from tests.support.harness import cycle_until, new_state, rows

pytestmark = [pytest.mark.mariadb, pytest.mark.integration]

def test_claims_are_exclusive_and_times_keep_their_precision_on_mariadb(maria_url):
    new_state(maria_url)
    first, second = Store(maria_url), Store(maria_url)
    with first.transaction() as conn:
        conn.execute(workers.insert(), [{"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull",
                                         "status": "submitted", "created": 1795560012.25, "modified": 0.0}
                                        for i in range(1, 11)])
    with first.transaction() as conn, second.transaction() as other:
        a = {r.worker_id for r in claims.claim(conn, workers, workers.c.queue == "Q", 6)}
        b = {r.worker_id for r in claims.claim(other, workers, workers.c.queue == "Q", 6)}
    assert len(a) == 6 and len(b) == 4 and not a & b
    assert rows_created(first) == {1795560012.25}   # a single-precision FLOAT would be off by minutes


def rows_created(store):
    with store.reading() as conn:
        return {r.created for r in conn.execute(workers.select())}


def test_push_cycle_with_a_large_job_on_mariadb(harness, sim, maria_url):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="echo " + "x" * 100_000)   # over TEXT's 64 kB
    instance = harness.instance({"PUSH_Q": {"mode": "push"}}, state=maria_url)
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", what="job finished on MariaDB")
    (job,) = rows(instance, jobs)
    assert job.sub_status == "done" and len(job.job_json) > 100_000


@pytest.mark.parametrize("scheme", ["mariadb", "mysql", "mysql+pymysql", "mariadb+pymysql"])
def test_the_url_forms_an_operator_writes_work_as_written(maria_url, tmp_path, scheme):
    url = scheme + "://" + maria_url.split("://", 1)[1]
    config = tmp_path / "config.toml"
    config.write_text('harvester_id = "url-test"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
                      '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n')
    for args in (("db", "upgrade"), ("--json", "status")):
        result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), "--state", url, *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (url, args, result.stderr)
    assert "Q" in json.loads(result.stdout)["queues"]


def test_a_server_that_does_not_answer_is_an_outage_and_a_refusal_is_configuration(maria_url, tmp_path):
    credentials, rest = maria_url.split("://", 1)[1].split("@", 1)
    user = credentials.split(":", 1)[0]
    cases = {"mariadb://" + credentials + "@127.0.0.1:1/x": (1, "no answer"),
             f"mariadb://{user}:wrong-password@{rest}": (2, "Access denied")}
    assert_state_errors(cases, tmp_path)
