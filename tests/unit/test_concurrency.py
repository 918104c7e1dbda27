"""Each command run twice at once (two real processes, one SQLite state): nothing is processed twice.

Every assertion is on an outcome that double processing would break: a job bound to two workers, a
final update sent twice, a worker killed twice. If the two runs happen not to overlap, the second finds
nothing left to do and the assertions still hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from sqlalchemy import select

from harvester_cli.state.schema import job_workers, jobs, workers
from tests.support.harness import wait_until

N = 30
QUEUES = {"PUSH_Q": {"mode": "push", "n_queue_limit_worker": 100, "max_workers": 100,
                     "max_new_workers_per_cycle": 100, "n_queue_limit_job": 100}}


def twice(harness, *args: str) -> list[dict]:
    """Start the same command in two processes at the same moment; return both JSON outputs."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(harness.tmp_path / "x"), "XDG_STATE_HOME": str(harness.tmp_path / "y")}
    command = [sys.executable, "-m", "harvester_cli", "--config", str(harness.tmp_path / "config.toml"), "--json", *args]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(json.loads(out))
    return outputs


def table(instance, t):
    with instance.store.reading() as conn:
        return conn.execute(select(t)).all()


@pytest.fixture
def setup(harness, sim):
    ids = sim.add_jobs("PUSH_Q", N, jobPars="sleep 1")
    harness.write_config(QUEUES)
    return harness, sim, ids, harness.instance(QUEUES)


def test_fetch_jobs_twice_at_once_stores_every_sent_job_once(setup):
    harness, sim, ids, instance = setup
    outputs = twice(harness, "fetch-jobs")
    assert sum(o["queues"][0]["stored"] for o in outputs) == N
    stored = [j.panda_id for j in table(instance, jobs)]
    assert sorted(stored) == sorted(ids)
    assert all(sim.jobs[i].status == "sent" and sim.jobs[i].spec["nSent"] == 1 for i in ids)


def test_submit_twice_at_once_binds_each_job_to_one_worker(setup):
    harness, sim, ids, instance = setup
    harness.cli("fetch-jobs", check=True)
    outputs = twice(harness, "submit")
    assert sum(len(o["queues"][0]["submitted"]) for o in outputs) == N
    links = table(instance, job_workers)
    assert len(links) == N and len({l.panda_id for l in links}) == N and len({l.worker_id for l in links}) == N
    assert len(table(instance, workers)) == N


def test_poll_and_propagate_twice_at_once_send_each_final_update_once(setup):
    harness, sim, ids, instance = setup
    harness.cli("fetch-jobs", check=True)
    harness.cli("submit", check=True)
    harness.cli("propagate", check=True)
    # wait until every worker process has ended, then let two polls find them at once
    wait_until(lambda: all((harness.tmp_path / "work" / "PUSH_Q" / str(w.worker_id) / ".exitcode").exists()
                           for w in table(instance, workers)), timeout=60, what="workers ended")
    polls = twice(harness, "poll")
    assert sum(p["queues"][0]["jobs_final"] for p in polls) == N
    pushes = twice(harness, "propagate")
    assert sum(p["jobs_sent"] for p in pushes) == N
    finals = Counter(i for i in ids for u in sim.jobs[i].updates if u["job_status"] in ("finished", "failed"))
    assert finals == Counter({i: 1 for i in ids})
    assert all(sim.job_status(i) == "finished" for i in ids), [(i, sim.jobs[i].updates[-1]) for i in ids
                                                             if sim.job_status(i) != "finished"][:2]


def test_sweep_twice_at_once_kills_each_worker_once(setup):
    harness, sim, ids, instance = setup
    harness.cli("fetch-jobs", check=True)
    harness.cli("submit", check=True)
    with instance.store.transaction() as conn:
        conn.execute(workers.update().values(kill_reason="operator request"))
    sweeps = twice(harness, "sweep")
    assert sum(s["queues"][0]["killed"] for s in sweeps) == N
    assert {w.status for w in table(instance, workers)} == {"cancelled"}
