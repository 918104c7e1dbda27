"""Many jobs in one worker (issue 27) without a cluster: the queue keys and their checks, the allocation rules
(walltime, fill timeout, nodes), the plan's trace, jobs refused when fetched, what a job's step files say, and
what the PanDA simulator does with a worker's pandaid_list. The real multi-node Slurm runs are in
tests/integration/manyjobs."""

from __future__ import annotations

import json
import re

import pytest

from harvester_cli import config, model
from harvester_cli.backends import _slurm_status, _slurm_steps
from harvester_cli.backends.base import Observation, SubmitResult, WorkerRef
from harvester_cli.config import QueueConfig
from harvester_cli.errors import ConfigError
from harvester_cli.panda.jobs import PandaJob
from harvester_cli.state import locks
from harvester_cli.state import workers as state_workers
from harvester_cli.state.schema import jobs
from harvester_cli.steps import allocation, fetch_jobs, poll, submit
from harvester_cli.steps.planner import FreeCE, FreeResources, QueueState, plan
from tests.support.harness import rows

SHAPE = {"nodes_min": 1, "nodes_max": 3, "jobs_per_node": 4, "fill_timeout": 300, "walltime_margin": 600}


def queue(**many) -> QueueConfig:
    parsed = config.parse({"harvester_id": "h", "panda": {"url": "https://panda.example.org/api/v1"}, "queues": {
        "HPC": {"mode": "push", "backend": "slurm", "pilot": "true", "walltime": 7200, "max_new_workers_per_cycle": 50,
                "many_to_one": {**SHAPE, **many}}}})
    return parsed.queues["HPC"]


def job(panda_id: int, walltime="NULL", cores=1, ram=2000) -> PandaJob:
    return PandaJob({"PandaID": panda_id, "maxWalltime": walltime, "coreCount": cores, "minRamCount": ram,
                     "attemptNr": 1, "jobPars": "true"})


# -- the queue keys --------------------------------------------------------------------------------

@pytest.mark.parametrize("queue_table,expected", [
    ({"mode": "pull", "backend": "slurm"}, "many jobs per worker is push mode"),
    ({"mode": "push", "backend": "local"}, "the local backend runs one job per worker"),
    ({"mode": "push", "backend": "slurm", "walltime": 600}, "walltime_margin (600) leaves no time for jobs"),
    ({"mode": "push", "backend": "slurm", "backend_options": {
        "login_nodes": ["login1.example.org"], "work_dir": "/scratch/h", "ssh_key": "/dev/null",
        "known_hosts": "/dev/null"}},
     "through login_nodes it is not (yet) supported"),
])
def test_many_to_one_is_refused_where_it_cannot_work(queue_table, expected):
    data = {"harvester_id": "h", "panda": {"url": "https://panda.example.org/api/v1"},
            "queues": {"Q": {"pilot": "true", **queue_table, "many_to_one": {"nodes_max": 2}}}}
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config.parse(data)


def test_nodes_min_above_nodes_max_is_named():
    with pytest.raises(ConfigError, match=r"\[queues.HPC.many_to_one\] nodes_min: \(4\) must not be more than"):
        queue(nodes_min=4)


# -- the allocation rules ----------------------------------------------------------------------------

@pytest.mark.parametrize("ages,expected,words", [
    ([10.0] * 12, 1, "1 full"),
    ([10.0] * 13, 1, "1 job(s) wait for 3 more or for fill_timeout=300 (290 s left)"),
    ([400.0] * 12 + [10.0], 1, "(290 s left)"),          # the full one took the old jobs: the rest is young
    ([10.0] * 16, 2, "1 full + 1 of 4 job(s)"),          # the rest fills nodes_min
    ([400.0, 350.0, 10.0], 1, "the oldest waiting 400 s >= fill_timeout=300"),
    ([], 0, "0 job(s) wait"),
])
def test_allocations_go_full_or_filled_to_nodes_min_or_after_the_fill_timeout(ages, expected, words):
    made, why = allocation.allocations_for(ages, queue())
    assert made == expected and words in why, why


def test_submit_count_does_not_wait_to_fill():
    assert allocation.allocations_for([1.0], queue(), fill_now=True)[0] == 1


def test_pack_sizes_each_allocation_by_its_jobs():
    q = queue()
    now = 1000.0
    waiting = [(job(i, walltime=600 + 60 * i, cores=1 + i % 2, ram=1000 + i), now - 500 + i) for i in range(14)]
    packed, left = allocation.pack(q, waiting, now)
    assert [len(p.jobs) for p in packed] == [12, 2] and left == []
    full, rest = packed
    assert [j.panda_id for j in full.jobs] == list(range(12))       # oldest first
    assert full.allocation.nodes == 3 and full.allocation.jobs_per_node == 4
    assert full.allocation.cores_per_job == 2 and full.allocation.memory_per_job == 1011
    assert full.walltime == 600 + 60 * 11 + 600 and full.cores == 24
    assert rest.allocation.nodes == 1 and rest.walltime == 600 + 60 * 13 + 600   # the oldest rest waited 487 s


def test_pack_keeps_young_leftovers_waiting_and_caps_the_walltime():
    q = queue(nodes_min=2)
    now = 1000.0
    packed, left = allocation.pack(q, [(job(i), now - 10) for i in range(15)], now)
    assert len(packed) == 1 and [j.panda_id for j in left] == [12, 13, 14]
    assert packed[0].walltime == 7200   # a job without maxWalltime may need all of the queue's
    assert allocation.walltime(q, [job(1, walltime=7000)]) == 7200


def test_jobs_no_allocation_can_hold_are_refused_with_a_reason():
    q = queue(cores_per_job=2)
    assert allocation.refusal(q, job(1, walltime=6600)) is None
    assert "maxWalltime of 6601 s plus walltime_margin 600 s is more than the queue's walltime of 7200 s" in \
        allocation.refusal(q, job(1, walltime=6601))
    assert "asks for 4 cores, more than cores_per_job=2" in allocation.refusal(q, job(1, cores=4))


def test_the_plan_counts_allocations_from_jobs_waiting():
    q = queue()
    result = plan(q, QueueState(waiting_jobs={"SCORE": 30}, waiting_ages={"SCORE": [5.0] * 30}), 100)
    assert result.total == 3
    rules = {s.rule: s for s in result.trace}
    assert str(rules["jobs per allocation (many_to_one)"]) == (
        "jobs per allocation (many_to_one): 30 job(s) wait, an allocation holds 4..12 (1..3 node(s) x 4): 2 full "
        "+ 1 of 6 job(s) -> 3")
    # The queued limit counts allocations, not jobs.
    assert plan(queue(), QueueState(queued={"SCORE": 9}, waiting_jobs={"SCORE": 30},
                                    waiting_ages={"SCORE": [5.0] * 30}), 100).total == 1


def free_queue(**keys) -> QueueConfig:
    parsed = config.parse({"harvester_id": "h", "panda": {"url": "https://panda.example.org/api/v1"}, "queues": {
        "HPC": {"mode": "push", "backend": "slurm", "pilot": "true", "walltime": 7200, "max_new_workers_per_cycle": 50,
                "free_resources": True, "queued_when_full": 0, "many_to_one": SHAPE, **keys}}})
    return parsed.queues["HPC"]


def idle(*nodes: int, pool=None) -> FreeResources:
    """Partitions with these idle nodes, as Slurm's backend reports them for allocations of nodes_min=1."""
    return FreeResources(tuple(FreeCE(f"p{i}", n, 7200, 5, "sinfo, sbatch --test-only", pool or f"p{i}", n)
                               for i, n in enumerate(nodes)))


def test_with_fewer_idle_nodes_than_nodes_max_the_allocations_are_sized_to_them():
    waiting = {"waiting_jobs": {"SCORE": 24}, "waiting_ages": {"SCORE": [5.0] * 24}}
    result = plan(free_queue(), QueueState(free=idle(2), **waiting), 100)
    # 2 idle nodes: one allocation of 2 nodes (8 jobs) starts now, rather than none of 3 nodes
    assert (result.total, result.nodes) == (1, 2)
    rules = {s.rule: s for s in result.trace}
    assert "allocations of at most 2 node(s), the most idle in one place (nodes_max=3)" in \
        rules["free resources"].inputs
    assert "holds 4..8 (1..2 node(s) x 4, sized to the idle nodes (nodes_max=3)): 3 full" in \
        rules["jobs per allocation (many_to_one)"].inputs
    now = 1000.0
    packed, left = allocation.pack(free_queue(), [(job(i), now - 10) for i in range(8)], now, nodes_max=result.nodes)
    assert [p.allocation.nodes for p in packed] == [2] and len(packed[0].jobs) == 8 and not left
    # two partitions of 2 idle nodes each: two such allocations; enough idle nodes: full ones, as many as fit
    assert plan(free_queue(), QueueState(free=idle(2, 2), **waiting), 100).total == 2
    full = plan(free_queue(), QueueState(free=idle(7), **waiting), 100)
    assert (full.total, full.nodes) == (2, None)


def test_allocations_are_not_sized_below_nodes_min_nor_where_nothing_can_start():
    waiting = {"waiting_jobs": {"SCORE": 24}, "waiting_ages": {"SCORE": [5.0] * 24}}
    few = plan(free_queue(many_to_one={**SHAPE, "nodes_min": 2}), QueueState(free=idle(1), **waiting), 100)
    assert few.nodes is None   # the backend counts allocations of nodes_min: none of 2 nodes on 1
    none = plan(free_queue(queued_when_full=1), QueueState(free=idle(0), **waiting), 100)
    assert (none.total, none.nodes) == (1, None)   # the one that waits for nodes is a full one
    # a batch system that does not say its idle nodes (ARC): its own count of workers stands
    arc = FreeResources((FreeCE("ce1", 2, None, 5, "GLUE2"),))
    assert plan(free_queue(), QueueState(free=arc, **waiting), 100).nodes is None


def test_fetch_refuses_what_cannot_fit_and_keeps_the_rest(harness, sim):
    fits = sim.add_jobs("HPC", 1, maxWalltime=3600)
    too_long = sim.add_jobs("HPC", 1, maxWalltime=7000)
    instance = harness.instance({"HPC": {"mode": "push", "backend": "slurm", "walltime": 7200,
                                         "many_to_one": SHAPE}})
    result = fetch_jobs.fetch_jobs(instance, list(instance.config.queues.values()))
    assert result.queues[0].stored == 2 and result.queues[0].invalid == 1   # the refused one stored failed
    stored = {r.panda_id: r for r in rows(instance, jobs)}
    assert stored[fits[0]].sub_status == model.SUB_FETCHED
    refused = stored[too_long[0]]
    assert (refused.status, refused.sub_status) == (model.JOB_FAILED, model.SUB_REPORTING)
    assert refused.diag.startswith("refused: its maxWalltime of 7000 s plus walltime_margin 600 s")


# -- a job's step, from its files -------------------------------------------------------------------

def step_files(work, panda_id, **files):
    here = work / str(panda_id)
    here.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (here / name).write_text(text)


def test_each_job_of_an_allocation_reads_from_its_own_files(tmp_path):
    (tmp_path / "jobs.list").write_text("11 1 2000\n12 1 2000\n13 1 2000\n14 1 2000\n15 1 2000\n")
    step_files(tmp_path, 11, started="n1 5.0 100\n", ended="0 200\n")
    step_files(tmp_path, 12, started="n2 5.1 100\n", ended="0 200\n",
               **{"step.log": "srun: error: Node failure on n2\n"})
    step_files(tmp_path, 13, started="n1 5.2 100\n")
    step_files(tmp_path, 14, started="n3 5.3 100\n", ended="137 150\n", killed="PanDA asked\n",
               **{"step.log": "slurmstepd: error: *** STEP 5.3 ON n3 CANCELLED AT 2026 ***\n"})
    step_files(tmp_path, 15)
    running = Observation(1, model.RUNNING, "RUNNING")
    seen = _slurm_steps.observe(tmp_path, running)
    assert sorted(seen) == [11, 12, 13, 14, 15]
    assert seen[11].ended and seen[11].node == "n1" and seen[11].diag is None and seen[11].exit_code == 0
    assert seen[12].ended and seen[12].diag.startswith("slurm NODE_FAIL: node n2 failed while the job's step ran")
    assert seen[13].started and not seen[13].ended
    assert seen[14].diag == "killed: PanDA asked (its step was cancelled on node n3)"
    assert not seen[15].started and not seen[15].ended
    # The allocation ended (its time ran out): every job whose step did not end ends with it.
    timeout = Observation(1, model.FAILED, "TIMEOUT", diag="slurm TIMEOUT: the job reached its time limit")
    seen = _slurm_steps.observe(tmp_path, timeout)
    assert seen[13].ended and seen[13].diag == ("the allocation ended before the job's step did: slurm TIMEOUT: the "
                                                "job reached its time limit")


def test_steps_are_found_by_their_names():
    text = f"5.0{_slurm_status.SEP}101\n5.1{_slurm_status.SEP}102\n5.batch{_slurm_status.SEP}batch\n"
    assert _slurm_status.parse_steps(text) == {"101": "5.0", "102": "5.1"}


# -- what PanDA does with a worker's jobs -------------------------------------------------------------

def test_a_final_worker_with_an_error_stamps_only_its_jobs_still_active(sim):
    first, second = sim.add_jobs("HPC", 2)
    with sim.lock:
        for panda_id in (first, second):
            sim.jobs[panda_id].status = "running"
        sim.update_job("dn", first, "failed", 1)   # its own final update came first: holding
        answer = sim.update_workers("dn", "h", [{"workerID": 7, "status": "running", "nJobs": 2,
                                                  "pandaid_list": [first, second]}])
        assert answer == (True, "", [True])
        assert {(w, p) for h, w, p in sim.relations if h == "h"} == {(7, first), (7, second)}
        sim.update_workers("dn", "h", [{"workerID": 7, "status": "failed", "errorCode": 1072,
                                        "diagMessage": "NODE_FAIL", "pandaid_list": [first, second]}])
    assert sim.jobs[first].sup_error_code is None
    assert (sim.jobs[second].sup_error_code, sim.jobs[second].sup_error_diag) == (1072, "Diag from worker : NODE_FAIL")
    assert json.loads(json.dumps(sim.workers("h")[7]))["nJobs"] == 2


# -- a many-job worker the backend lost ---------------------------------------------------------------

class LostBackend:
    """What poll asks of a backend once a worker is lost: each job's outputs (there are none)."""

    def fetch_job_outputs(self, worker, panda_id, names):
        return {}


def test_a_lost_allocation_ends_every_one_of_its_jobs(harness, sim, monkeypatch):
    ids = sim.add_jobs("HPC", 3)
    instance = harness.instance({"HPC": {"mode": "push", "backend": "slurm", "walltime": 7200,
                                         "lost_grace_seconds": 0, "many_to_one": SHAPE}})
    (q,) = instance.config.queues.values()
    fetch_jobs.fetch_jobs(instance, [q])
    with locks.lease(instance.store, "submit:HPC"):   # what record_pending checks it holds
        (spec,) = submit.record_pending(instance, q, {"SCORE": 1}, 0, {}, fill_now=True)
        submit.record_results(instance, q, [SubmitResult(spec.worker_id, batch_id="77")])
    assert sorted(j.panda_id for j in spec.jobs) == sorted(ids) and spec.allocation.nodes == 1
    monkeypatch.setattr(instance, "backend", lambda queue: LostBackend())
    with instance.store.reading() as tx:
        refs = [WorkerRef(r[0], "HPC", *r[1:]) for r in state_workers.active_page(tx, "HPC", -1, 10, None)]
    result = poll.QueuePoll("HPC")
    poll.apply_observations(instance, q, refs, [Observation(spec.worker_id, model.MISSING, "unknown",
                                                            diag="Slurm has no trace of job 77")], result)
    assert result.jobs_final == 3
    for job in rows(instance, jobs):
        assert (job.status, job.sub_status) == (model.JOB_FAILED, model.SUB_REPORTING)
        assert "no heartbeat.json from the worker: lost: Slurm has no trace of job 77" in job.diag
