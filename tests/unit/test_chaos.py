"""The chaos run's own logic (bench/chaos.py), without daemons: the faults a seed draws, the moment a
state counts as consistent again, and the final checks against planted breakage. The runs themselves:
tests/integration/multihost/test_chaos.py."""

from __future__ import annotations

import os
from collections import namedtuple

import pytest

from bench import chaos
from harvester_cli.panda.sim.server import SimJob

pytestmark = pytest.mark.chaos


def test_a_seed_draws_the_same_faults_again_and_every_kind_comes_first():
    faults = chaos.schedule(7, 600, 3)
    assert faults == chaos.schedule(7, 600, 3)
    assert [(f.kind, f.at) for f in faults] != [(f.kind, f.at) for f in chaos.schedule(8, 600, 3)]
    assert sorted(f.kind for f in faults if f.number <= len(chaos.KINDS)) == sorted(chaos.KINDS)
    assert {f.kind for f in faults} == set(chaos.KINDS) and all(1 <= f.host <= 3 for f in faults)
    # Overlapping, but never two on one resource: the server restarts one at a time, a host's filter once.
    assert any(b.at < a.at + a.duration for a, b in zip(faults, faults[1:]))
    restarts = [f for f in faults if f.kind.startswith("db_restart")]
    assert all(b.at >= a.at + a.duration for a, b in zip(restarts, restarts[1:]))


Report = namedtuple("Report", "kind key created")
Worker = namedtuple("Worker", "worker_id status modified")
Job = namedtuple("Job", "panda_id status sub_status modified")


def snapshot(**changes) -> dict:
    snap = {"reports": [], "workers": [Worker(1, "finished", 100.0)], "jobs": [Job(10, "finished", "done", 100.0)],
            "claims": [], "panda_workers": {1: {"status": "finished"}}, "panda_jobs": {10: ("finished", "finished")},
            "at": 200.0}
    snap.update(changes)
    return snap


def test_consistent_only_once_what_happened_before_the_fault_end_has_settled():
    assert chaos.Run.consistent(snapshot(), since=150.0)
    assert not chaos.Run.consistent(snapshot(reports=[Report("job", 10, 120.0)]), 150.0)   # outbox not drained
    assert chaos.Run.consistent(snapshot(reports=[Report("job", 10, 160.0)]), 150.0)       # queued after: fine
    assert not chaos.Run.consistent(snapshot(panda_workers={1: {"status": "running"}}), 150.0)
    assert not chaos.Run.consistent(snapshot(panda_jobs={10: ("holding", "failed")}), 150.0)
    dead = f"h1:{dead_pid()}:abc"
    assert not chaos.Run.consistent(snapshot(claims=[(dead, 260.0)]), 150.0)   # a dead run's lease still holds
    assert chaos.Run.consistent(snapshot(claims=[(dead, 190.0)]), 150.0)       # expired: anyone may take it
    assert chaos.Run.consistent(snapshot(claims=[(f"h1:{os.getpid()}:abc", 260.0)]), 150.0)   # alive: working


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


LocalJob = namedtuple("LocalJob", "status sub_status diag")
LocalWorker = namedtuple("LocalWorker", "status harvester_host")


def records(**changes) -> chaos.Records:
    job = SimJob(10, "CHAOS_A", {}, status="finished", final_status="finished",
                 updates=[{"job_status": "running"}, {"job_status": "finished"}, {"job_status": "finished"}])
    data = dict(panda_jobs={10: job}, panda_workers={1: {"status": "finished"}},
                worker_updates=[{"workerID": 1, "status": "running"}, {"workerID": 1, "status": "finished"}],
                local_jobs={10: LocalJob("finished", "done", None)}, local_workers={1: LocalWorker("finished", "h1")},
                bindings=[(10, 1)], starts=[(1, "hkh1")], namespaces={"h1": "hkh1", "h2": "hkh2"},
                runs=[{"command": "cycle", "rc": 0, "stderr": ""}, {"command": "poll", "rc": -9, "stderr": ""}])
    data.update(changes)
    return chaos.Records(**data)


def test_the_final_checks_pass_a_clean_run_and_name_each_planted_breakage():
    assert chaos.verify(records()) == []   # a final update sent twice with the same state is a retry
    lost = SimJob(11, "CHAOS_A", {}, status="sent")   # sent, kept by no host: PanDA's timeout takes it back
    given_back = SimJob(12, "CHAOS_A", {}, status="failed", updates=[{"job_status": "failed"}])   # not storable
    assert chaos.verify(records(panda_jobs={10: records().panda_jobs[10], 11: lost, 12: given_back})) == []
    planted = {
        "started twice": records(starts=[(1, "hkh1"), (1, "hkh1")]),
        "started in hkh2": records(starts=[(1, "hkh2")]),
        "conflicting final updates": records(panda_jobs={10: SimJob(10, "A", {}, status="finished", updates=[
            {"job_status": "finished"}, {"job_status": "failed"}])}),
        "an update after its final one": records(panda_jobs={10: SimJob(10, "A", {}, status="finished", updates=[
            {"job_status": "finished"}, {"job_status": "running"}])}),
        "an update lost": records(panda_workers={1: {"status": "running"}}),
        "sent running after finished": records(worker_updates=[{"workerID": 1, "status": "finished"},
                                                                {"workerID": 1, "status": "running"}]),
        "run by two workers": records(bindings=[(10, 1), (10, 2)], starts=[(1, "hkh1"), (2, "hkh1")],
                                      local_workers={1: LocalWorker("finished", "h1"),
                                                     2: LocalWorker("finished", "h1")},
                                      panda_workers={1: {"status": "finished"}, 2: {"status": "finished"}}),
        "activated at PanDA, never stored": records(local_jobs={}, panda_jobs={10: SimJob(10, "A", {})}),
        "holding at PanDA": records(panda_jobs={10: SimJob(10, "A", {}, status="holding")}),
        "printed a traceback": records(runs=[{"command": "poll", "rc": 1, "stderr": "Traceback (most recent"}]),
        "exited 2": records(runs=[{"command": "poll", "rc": 2, "stderr": "error"}]),
    }
    for what, broken in planted.items():
        problems = chaos.verify(broken)
        assert any(what in p for p in problems), (what, problems)
