"""Issue 6 through the PanDA simulator: unified queues, pilot streaming commands, kills, statistics,
one-off submissions, and worker diagnostics."""

from __future__ import annotations

import json

import pytest

from harvester_cli.panda.diagnostics import classify
from harvester_cli.state.schema import commands, worker_targets, workers
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from tests.support.harness import rows

pytestmark = pytest.mark.planner

UNIFIED = {"UNI": {"mode": "pull", "resource_types": ["SCORE", "MCORE"], "core_count": 8, "pilot": "sleep 30",
                   "n_queue_limit_worker": 4}}


def test_unified_pull_queue_gets_workers_of_both_sizes(harness, sim):
    sim.add_jobs("UNI", 3, resource_type="SCORE")
    sim.add_jobs("UNI", 3, resource_type="MCORE", coreCount=8)
    instance = harness.instance(UNIFIED)
    run = submission.submit(instance, list(instance.config.queues.values()))
    assert run.queues[0].plan.per_resource_type == {"SCORE": 2, "MCORE": 2}
    sizes = sorted((w.resource_type, w.n_core, w.memory_mb) for w in rows(instance, workers))
    assert sizes == [("MCORE", 8, 16000), ("MCORE", 8, 16000), ("SCORE", 1, 2000), ("SCORE", 1, 2000)]


def test_set_n_workers_jobtype_drives_submission_and_is_acknowledged(harness, sim):
    queues_config = {"STREAM": {"mode": "pull", "pilot_streaming": True, "resource_types": ["SCORE", "MCORE"],
                                "core_count": 4, "pilot": "sleep 30", "n_queue_limit_worker": 50}}
    instance = harness.instance(queues_config)
    queues = list(instance.config.queues.values())
    nothing = submission.submit(instance, queues)
    assert nothing.queues[0].plan.total == 0 and "no SET_N_WORKERS_JOBTYPE" in str(nothing.queues[0].plan.trace)
    propagation.propagate(instance, queues)   # heartbeat registers (first one refused by PanDA)
    propagation.propagate(instance, queues)
    assert {c["computingSite"] for c in sim.harvesters[harness.harvester_id]["subscriptions"]} == {"STREAM"}
    command_id = sim.add_command("SET_N_WORKERS_JOBTYPE:STREAM", {"managed": {"SCORE": 3, "MCORE": 1}},
                                 ack_requested=True)
    propagation.propagate(instance, queues)
    assert sim.commands[command_id]["status"] == "acknowledged"
    first = submission.submit(instance, queues)
    assert first.queues[0].plan.per_resource_type == {"SCORE": 3, "MCORE": 1}
    again = submission.submit(instance, queues)   # consumed: nothing more until PanDA asks again
    assert again.queues[0].plan.total == 0
    assert {t.resource_type: t.remaining for t in rows(instance, worker_targets)} == {"SCORE": 0, "MCORE": 0}


def test_set_n_workers_for_a_queue_not_in_streaming_mode_is_rejected_not_acknowledged(harness, sim):
    instance = harness.instance({"PLAIN": {"mode": "pull", "pilot": "sleep 30"}})
    queues = list(instance.config.queues.values())
    command_id = sim.add_command("SET_N_WORKERS_JOBTYPE:PLAIN", {"managed": {"SCORE": 5}}, ack_requested=True)
    propagation.propagate(instance, queues)
    (row,) = rows(instance, commands)
    assert row.status == "rejected" and "pilot-streaming" in row.diag
    assert sim.commands[command_id]["status"] == "retrieved"


def test_kill_workers_command_kills_only_matching_workers(harness, sim):
    instance = harness.instance({"A": {"mode": "pull", "pilot": "sleep 30"}, "B": {"mode": "pull", "pilot": "sleep 30"}})
    queues = list(instance.config.queues.values())
    for queue in queues:
        submission.submit(instance, [queue], count=2)
    sim.add_command("KILL_WORKERS", {"status": ["submitted", "running"], "computingSite": ["A"],
                                     "computingElement": "ALL", "submissionHost": "ALL"})
    run = propagation.propagate(instance, queues)
    assert run.kills_from_panda == 2
    marked = {w.queue for w in rows(instance, workers) if w.kill_reason}
    assert marked == {"A"}


def test_worker_statistics_reach_panda_per_job_type_and_resource_type(harness, sim):
    instance = harness.instance(UNIFIED)
    queues = list(instance.config.queues.values())
    submission.submit(instance, queues, count=2, resource_type="MCORE")
    submission.submit(instance, queues, count=1, resource_type="SCORE")
    monitoring.poll(instance, queues)
    propagation.propagate(instance, queues)
    stats = sim.harvesters[harness.harvester_id]["stats"]["UNI"]
    assert stats == {"managed": {"MCORE": {"running": 2}, "SCORE": {"running": 1}}}


def test_one_off_submission_with_wait_exits_non_zero_if_a_worker_failed(harness, sim):
    harness.write_config({"TEST_Q": {"mode": "pull", "pilot": "exit 5", "max_workers": 2}})
    result = harness.cli("--json", "submit", "--queue", "TEST_Q", "--count", "3", "--wait", "--interval", "0.5",
                         "--timeout", "60")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert len(data["queues"][0]["submitted"]) == 2   # hard cap max_workers=2 without --force
    assert {w["status"] for w in data["workers"]} == {"failed"}
    forced = harness.cli("--json", "submit", "--queue", "TEST_Q", "--count", "3", "--force")
    assert len(json.loads(forced.stdout)["queues"][0]["submitted"]) == 3


def test_lost_and_failed_workers_carry_error_codes_to_panda(harness, sim):
    instance = harness.instance({"D": {"mode": "pull", "pilot": "exit 5"}})
    queues = list(instance.config.queues.values())
    (worker_id,) = submission.submit(instance, queues, count=1).queues[0].submitted
    import time

    for _ in range(50):
        monitoring.poll(instance, queues)
        if rows(instance, workers)[0].status == "failed":
            break
        time.sleep(0.1)
    propagation.propagate(instance, queues)
    reported = sim.workers(harness.harvester_id)[worker_id]
    assert reported["errorCode"] == 1060 and reported["diagMessage"].startswith("pilot exited with an error")
    assert classify("failed", "lost: process 12 ended without an exit code", None)[0] == 1030
    assert classify("finished", None, 0) == (None, None)
