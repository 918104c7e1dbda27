"""The same store and cycle code on a real PostgreSQL server (started here, loopback only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harvester_cli.state.schema import workers
from harvester_cli.state import claims
from harvester_cli.state.store import Store
from tests.support.databases import assert_state_errors
from tests.support.harness import cycle_until, new_state, rows

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

def test_claims_are_exclusive_on_postgresql(pg_url):
    new_state(pg_url)
    first, second = Store(pg_url), Store(pg_url)
    with first.transaction() as conn:
        conn.execute(workers.insert(), [{"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull",
                                         "status": "submitted", "created": 0.0, "modified": 0.0} for i in range(1, 11)])
    with first.transaction() as conn, second.transaction() as other:   # two open transactions at once
        a = {r.worker_id for r in claims.claim(conn, workers, workers.c.queue == "Q", 6)}
        b = {r.worker_id for r in claims.claim(other, workers, workers.c.queue == "Q", 6)}
    assert len(a) == 6 and len(b) == 4 and not a & b   # SKIP LOCKED: the second skips the first's rows


def test_pull_and_push_cycle_on_postgresql(harness, sim, pg_url):
    ids = sim.add_jobs("PULL_Q", 2) + sim.add_jobs("PUSH_Q", 2)
    instance = harness.instance({"PULL_Q": {"mode": "pull", "empty_pilot_floor": 0}, "PUSH_Q": {"mode": "push"}},
                                state=pg_url)
    cycle_until(instance, lambda: all(sim.job_status(i) == "finished" for i in ids)
                and all(w.status == "finished" for w in rows(instance, workers)), what="jobs finished on PostgreSQL")
    assert len(rows(instance, workers)) == 4


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_the_url_forms_an_operator_writes_work_as_written(pg_url, tmp_path, scheme):
    url = scheme + "://" + pg_url.split("://", 1)[1]
    config = tmp_path / "config.toml"
    config.write_text('harvester_id = "url-test"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
                      '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n')
    for args in (("db", "upgrade"), ("--json", "status")):
        result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), "--state", url, *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (url, args, result.stderr)
    assert "Q" in json.loads(result.stdout)["queues"]
    assert "harvester_cli_test" not in result.stderr   # the password never shows


def test_a_server_that_does_not_answer_is_an_outage_and_a_refusal_is_configuration(pg_url, tmp_path):
    """Exit 1 (the next run tries again) for a server that is down; exit 2 (fix the configuration) for a
    wrong password or database; one line each, no password."""
    credentials, rest = pg_url.split("://", 1)[1].split("@", 1)
    user = credentials.split(":", 1)[0]
    cases = {"postgresql://" + credentials + "@127.0.0.1:1/x": (1, "no answer"),
             f"postgresql://{user}:wrong-password@{rest}": (2, "password authentication failed"),
             "postgresql://" + credentials + "@127.0.0.1/no_such_database": (2, "does not exist")}
    assert_state_errors(cases, tmp_path)
