"""Worker planning rules, table-driven: every rule can be the one that decides."""

from __future__ import annotations

import pytest

from harvester_cli.config import QueueConfig
from harvester_cli.steps.planner import QueueState, plan, split

pytestmark = pytest.mark.planner


def queue(**kw):
    base = {"name": "Q", "mode": "pull", "backend": "local", "pilot": "true", "n_queue_limit_worker": 10, "max_workers": 100,
            "max_new_workers_per_cycle": 50}
    return QueueConfig(**{**base, **kw})


@pytest.mark.parametrize("config,state,remaining,expected,deciding_rule", [
    ({"status": "offline"}, QueueState(activated=100), 100, 0, "queue status"),
    ({}, QueueState(queued={"SCORE": 4}, activated=100), 100, 6, "n_queue_limit_worker"),
    ({"max_workers": 12}, QueueState(queued={"SCORE": 2}, running={"SCORE": 7}, activated=100), 100, 3, "max_workers"),
    ({"max_new_workers_per_cycle": 2}, QueueState(activated=100), 100, 2, "max_new_workers_per_cycle"),
    ({}, QueueState(activated=100), 4, 4, "max_new_workers_per_run"),
    ({}, QueueState(activated=3), 100, 3, "activated jobs"),
    ({}, QueueState(activated=0), 100, 1, "activated jobs"),                       # empty-pilot floor 1
    ({"empty_pilot_floor": 0}, QueueState(activated=0), 100, 0, "activated jobs"),  # floor 0
    ({}, QueueState(queued={"SCORE": 1}, activated=0), 100, 0, "activated jobs"),   # one queued is enough
    ({}, QueueState(activated=None), 100, 1, "activated jobs"),                     # PanDA silent: floor only
    # PanDA silent and a pilot already queued: the floor counts the queued pilots, none more
    ({}, QueueState(queued={"SCORE": 1}, activated=None), 100, 0, "activated jobs"),
    ({}, QueueState(queued={"SCORE": 3}, activated=None), 100, 0, "activated jobs"),
    ({"empty_pilot_floor": 0}, QueueState(activated=None), 100, 0, "activated jobs"),
    ({"mode": "push"}, QueueState(waiting_jobs={"SCORE": 3}), 100, 3, "waiting jobs"),
    # PanDA's counts are a minute old: pilots started since they were made took some of the jobs counted
    ({}, QueueState(activated=5, started_recently={"SCORE": 3}, stats_age=20), 100, 2, "activated jobs"),
    ({"empty_pilot_floor": 0}, QueueState(activated=3, started_recently={"SCORE": 4}, stats_age=20), 100, 0,
     "activated jobs"),
    ({}, QueueState(activated=5, registration="PanDA refused the registration heartbeat twice"), 100, 0,
     "PanDA registration"),
])
def test_each_rule_bounds_the_plan(config, state, remaining, expected, deciding_rule):
    result = plan(queue(**config), state, remaining)
    assert result.total == expected
    assert any(step.rule == deciding_rule and step.result == expected for step in result.trace), \
        [str(s) for s in result.trace]


def test_push_never_plans_more_workers_of_a_type_than_jobs_of_that_type_wait():
    result = plan(queue(mode="push", resource_types=["SCORE", "MCORE"]),
                  QueueState(waiting_jobs={"SCORE": 1, "MCORE": 5}), 100)
    assert result.per_resource_type == {"SCORE": 1, "MCORE": 5}


def test_split_uses_largest_remainder():
    assert split(10, {"A": 1, "B": 1, "C": 1}) == {"A": 4, "B": 3, "C": 3}
    assert split(5, {"A": 0.5, "B": 0.3, "C": 0.2}) == {"A": 3, "B": 1, "C": 1}
    assert split(0, {"A": 1}) == {"A": 0}


def test_the_trace_reads_like_apf():
    result = plan(queue(n_queue_limit_worker=12), QueueState(activated=40), 100)
    assert "n_queue_limit_worker: limit=12, queued=0 -> 12" in [str(s) for s in result.trace]


@pytest.mark.parametrize("config,state,remaining,expected,deciding_rule", [
    # missed-worker throttle
    ({"throttle_missed": 3}, QueueState(activated=100, missed_recent=4), 100, 0, "throttle"),
    ({"throttle_missed": 3}, QueueState(activated=5, missed_recent=3), 100, 5, "activated jobs"),
    # queued limit as a percentage of running, with its floor
    ({"n_queue_limit_worker_ratio": 10, "n_queue_limit_worker_min": 2},
     QueueState(running={"SCORE": 50}, activated=100), 100, 5, "n_queue_limit_worker"),
    ({"n_queue_limit_worker_ratio": 10, "n_queue_limit_worker_min": 2},
     QueueState(running={"SCORE": 5}, activated=100), 100, 2, "n_queue_limit_worker"),
    # pilot streaming: PanDA's number decides, within the limits
    ({"pilot_streaming": True}, QueueState(streaming_targets={"SCORE": 3}), 100, 3, "pilot streaming"),
    ({"pilot_streaming": True}, QueueState(streaming_targets={"SCORE": 40}), 100, 10, "n_queue_limit_worker"),
    ({"pilot_streaming": True}, QueueState(streaming_targets=None, activated=100), 100, 0, "pilot streaming"),
    # queued cores and memory caps
    ({"max_queued_cores": 10, "resource_types": ["MCORE"]},
     QueueState(activated=100, queued_cores=2, sizes={"MCORE": (4, 8000)}), 100, 2, "queued cores/memory"),
    ({"max_queued_memory_mb": 5000}, QueueState(activated=100, sizes={"SCORE": (1, 2000)}), 100, 2,
     "queued cores/memory"),
])
def test_each_issue6_rule_bounds_the_plan(config, state, remaining, expected, deciding_rule):
    result = plan(queue(**config), state, remaining)
    assert result.total == expected
    assert any(step.rule == deciding_rule and step.result == expected for step in result.trace), \
        [str(s) for s in result.trace]


def test_unified_split_uses_largest_remainder_and_pilot_streaming_numbers():
    unified = queue(resource_types=["SCORE", "MCORE", "SCORE_HIMEM"], n_queue_limit_worker=10)
    assert plan(unified, QueueState(activated=100), 100).per_resource_type == {"SCORE": 4, "MCORE": 3, "SCORE_HIMEM": 3}
    streaming = queue(resource_types=["SCORE", "MCORE"], pilot_streaming=True, n_queue_limit_worker=5)
    result = plan(streaming, QueueState(streaming_targets={"SCORE": 6, "MCORE": 2}), 100)
    assert result.per_resource_type == {"SCORE": 4, "MCORE": 1}   # 5 split 6:2 -> 3.75, 1.25 -> 4, 1


def test_core_cap_still_admits_smaller_workers_when_a_big_one_does_not_fit():
    mixed = queue(resource_types=["MCORE", "SCORE"], max_queued_cores=9)
    state = QueueState(activated=100, sizes={"MCORE": (8, 16000), "SCORE": (1, 2000)})
    assert plan(mixed, state, 100).per_resource_type == {"MCORE": 1, "SCORE": 1}


def test_unified_queue_follows_activated_jobs_per_resource_type():
    q = queue(resource_types=["SCORE", "MCORE", "SCORE_HIMEM"], n_queue_limit_worker=50)
    state = QueueState(activated=9, activated_by_type={"SCORE": 6, "MCORE": 3, "SCORE_HIMEM": 0},
                       activated_source="per resource type", queued={"SCORE": 2},
                       started_recently={"MCORE": 1}, stats_age=30)
    result = plan(q, state, 100)
    # SCORE: 6 activated, 2 pilots already wait -> 4; MCORE: 3 - 1 started since the count -> 2; HIMEM: none
    assert result.per_resource_type == {"SCORE": 4, "MCORE": 2, "SCORE_HIMEM": 0}, [str(s) for s in result.trace]
    assert any("by activated jobs per resource type" in s.rule for s in result.trace)


def test_site_totals_are_split_evenly_and_say_so():
    result = plan(queue(resource_types=["SCORE", "MCORE"]), QueueState(activated=4), 100)
    assert result.per_resource_type == {"SCORE": 2, "MCORE": 2}
    assert any("evenly: PanDA gave site totals only" in s.rule for s in result.trace)
