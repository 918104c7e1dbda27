"""Many PanDA jobs in one batch allocation (issue 27) on a real Slurm of three compute nodes, one slurmd per
network namespace (tests/support/slurm_nodes.py), against the PanDA simulator: each job runs its own pilot in
a job step of its own, and each is reported on its own, with the worker's relation to every job at PanDA.

The payloads wait for a file the test writes (`release`), so a test sees every step running before it lets
them end: no sleeps, no timed assertions. The test's tmp_path is the file system the nodes share.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester_cli import model
from harvester_cli.backends import _slurm_status as slurm_status
from harvester_cli.state.schema import job_workers, jobs, workers
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as polling
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps import sweep as sweeping
from tests.support import ROOT
from tests.support.harness import cycle_until, rows, wait_until

pytestmark = pytest.mark.manyjobs

PILOT = f"PYTHONPATH={ROOT} {{python}} -m harvester_cli.panda.sim.pilot"
SHAPE = {"nodes_min": 1, "nodes_max": 3, "jobs_per_node": 4, "fill_timeout": 0, "walltime_margin": 300}


class Site:
    """One test's HPC queue on the cluster, its jobs at the simulator, and what to look at."""

    def __init__(self, nodes, harness, sim, **many):
        self.nodes, self.harness, self.sim = nodes, harness, sim
        self.release = harness.tmp_path / "release"
        self.queue_table = {
            "mode": "push", "backend": "slurm", "pilot": PILOT, "walltime": 3600, "job_heartbeat_seconds": 1,
            "many_to_one": {**SHAPE, **many},
            "backend_options": {"slurm_conf": str(nodes.conf), "partitions": ["hpc"], "squeue_cache_seconds": 0},
        }
        self.instance = harness.instance({"HPC": self.queue_table})
        self.queues = list(self.instance.config.queues.values())

    def add_jobs(self, n: int, **spec) -> list[int]:
        """Jobs whose payload says where it runs, then waits for the release file."""
        pars = f"echo payload on $(hostname); while [ ! -e {self.release} ]; do sleep 0.2; done"
        return self.sim.add_jobs("HPC", n, jobPars=pars, maxWalltime=600, **spec)

    def workers(self):
        return sorted(rows(self.instance, workers), key=lambda w: w.worker_id)

    def jobs(self) -> dict:
        return {j.panda_id: j for j in rows(self.instance, jobs)}

    def steps(self, batch_id: str) -> dict[str, str]:
        """The allocation's job steps as squeue lists them: step name -> node."""
        out = self.nodes.run("squeue", "-h", "-s", "-j", batch_id, "-o", f"%j{slurm_status.SEP}%N", check=False).stdout
        return dict(line.split(slurm_status.SEP) for line in out.splitlines() if slurm_status.SEP in line)

    def work(self, worker_id: int) -> Path:
        return self.harness.tmp_path / "work" / "HPC" / str(worker_id)

    def node_of(self, worker_id: int, panda_id: int) -> str | None:
        started = self.work(worker_id) / str(panda_id) / "started"
        return started.read_text().split()[0] if started.exists() else None

    def cycle_until(self, predicate, what: str, timeout: float = 60):
        def context():
            return (f"workers: {[(w.worker_id, w.status, w.batch_id, w.diag) for w in self.workers()]}\n"
                    f"jobs: {[(j.panda_id, j.status, j.sub_status, j.diag) for j in self.jobs().values()]}\n"
                    + self.nodes.logs(10))
        return cycle_until(self.instance, predicate, timeout, what, context=context)

    def poll_until(self, predicate, what: str, timeout: float = 60):
        def step():
            polling.poll(self.instance, self.queues)
            return predicate()
        return wait_until(step, timeout, 0.3, what)

    def all_running(self, worker_id: int, ids: list[int]) -> bool:
        return all(self.node_of(worker_id, p) for p in ids)


@pytest.fixture
def site(slurm_nodes, harness, sim):
    made = []

    def make(**many) -> Site:
        made.append(Site(slurm_nodes, harness, sim, **many))
        return made[-1]

    yield make
    for s in made:
        s.release.touch()
    slurm_nodes.cancel_all()


def test_twelve_jobs_run_in_one_allocation_of_three_nodes_each_reported_alone(site):
    hpc = site()
    ids = hpc.add_jobs(12)
    fetching.fetch_jobs(hpc.instance, hpc.queues)
    run = submission.submit(hpc.instance, hpc.queues).queues[0]
    (worker,) = hpc.workers()
    assert run.submitted == [worker.worker_id] and worker.n_core == 12, (run.failed, run.error)
    script = (Path(worker.log_dir) / "pilot.jdl").read_text()
    for line in ("--nodes=3", "--ntasks-per-node=4", "--cpus-per-task=1", "--time=15"):   # 600 s + 300 s margin
        assert f"#SBATCH {line}\n" in script, script
    with hpc.instance.store.reading() as tx:
        bound = tx.execute(job_workers.select()).all()
    assert sorted(p for p, _ in bound) == sorted(ids) and {w for _, w in bound} == {worker.worker_id}

    # Every job runs at once, each in a step named by its PandaID, four per node.
    hpc.poll_until(lambda: hpc.all_running(worker.worker_id, ids), "all twelve steps running")
    steps = hpc.steps(worker.batch_id)
    assert sorted(int(s) for s in steps if s.isdigit()) == sorted(ids)
    per_node = [sum(1 for s, n in steps.items() if s.isdigit() and n == node) for node in hpc.nodes.nodes]
    assert per_node == [4, 4, 4], steps
    for panda_id in ids:   # its own directory, its own job dict, readable by this account only
        job_file = hpc.work(worker.worker_id) / str(panda_id) / "pandaJobData.out"
        assert f'"PandaID": {panda_id}' in job_file.read_text() and job_file.stat().st_mode & 0o777 == 0o600

    hpc.release.touch()
    hpc.cycle_until(lambda: all(hpc.sim.job_status(p) == "finished" for p in ids)
                    and hpc.workers()[0].status == model.FINISHED, "every job finished, then the worker")
    (worker,) = hpc.workers()
    assert worker.native_status == "COMPLETED"
    for panda_id in ids:
        final = hpc.sim.jobs[panda_id].updates[-1]
        node = hpc.node_of(worker.worker_id, panda_id)
        assert final["job_status"] == "finished" and final["node"] == node
        assert final["pilot_id"].endswith(f"/{worker.worker_id}/{panda_id}/pilot.out") and final["batch_id"]
        assert f"payload on {node}" in (Path(worker.log_dir) / str(panda_id) / "pilot.out").read_text()
        assert (Path(worker.log_dir) / str(panda_id) / "heartbeat.json").is_file()
    reported = hpc.sim.workers(hpc.harness.harvester_id)[worker.worker_id]
    assert reported["status"] == "finished" and reported["nJobs"] == 12
    assert sorted(reported["pandaid_list"]) == sorted(ids)
    related = {(w, p) for h, w, p in hpc.sim.relations if h == hpc.harness.harvester_id}
    assert related == {(worker.worker_id, p) for p in ids}


def test_a_node_that_dies_fails_only_its_own_jobs(site):
    hpc = site()
    ids = hpc.add_jobs(12)
    fetching.fetch_jobs(hpc.instance, hpc.queues)
    submission.submit(hpc.instance, hpc.queues)
    (worker,) = hpc.workers()
    hpc.poll_until(lambda: hpc.all_running(worker.worker_id, ids), "all twelve steps running")
    batch_host = hpc.steps(worker.batch_id)["batch"]
    victim = next(n for n in hpc.nodes.nodes if n != batch_host)
    lost = {p for p in ids if hpc.node_of(worker.worker_id, p) == victim}
    assert len(lost) == 4
    try:
        hpc.nodes.kill_node(victim)
        # Slurm notices (SlurmdTimeout), takes the node out of the allocation (--no-kill), and the steps
        # that ran there end: their jobs fail while the others run on.
        hpc.poll_until(lambda: all(hpc.jobs()[p].sub_status == model.SUB_REPORTING for p in lost), "the dead "
                       "node's jobs final", timeout=60)
        current = hpc.jobs()
        assert all(current[p].status == model.JOB_FAILED for p in lost)
        assert all(current[p].sub_status == model.SUB_RUNNING for p in set(ids) - lost)
        assert hpc.workers()[0].status == model.RUNNING
        hpc.release.touch()
        hpc.cycle_until(lambda: all(hpc.sim.job_status(p) in ("finished", "failed") for p in ids)
                        and hpc.workers()[0].status in model.WORKER_FINAL, "the other jobs finished, then the worker")
    finally:
        hpc.nodes.start_node(victim)
    for panda_id in ids:
        final = hpc.sim.jobs[panda_id].updates[-1]
        if panda_id in lost:
            assert final["job_status"] == "failed" and final["node"] == victim
            assert f"slurm NODE_FAIL: node {victim} failed" in final["pilot_error_diag"], final
        else:
            assert final["job_status"] == "finished", final
    (worker,) = hpc.workers()
    assert worker.status == model.FINISHED and worker.native_status == "COMPLETED"   # the allocation ran on


def test_a_kill_from_panda_cancels_that_jobs_step_only(site):
    hpc = site()
    ids = hpc.add_jobs(4)
    fetching.fetch_jobs(hpc.instance, hpc.queues)
    submission.submit(hpc.instance, hpc.queues)
    (worker,) = hpc.workers()
    hpc.poll_until(lambda: hpc.all_running(worker.worker_id, ids), "four steps running")
    assert worker.n_core == 4 and "#SBATCH --nodes=1\n" in (Path(worker.log_dir) / "pilot.jdl").read_text()
    victim = ids[1]
    hpc.sim.kill_jobs(None, [victim], None, False, [])
    wait_until(lambda: propagation.propagate(hpc.instance, hpc.queues).kills_from_panda, 20, 0.5,
               "PanDA answering tobekilled to the job's running update")
    assert hpc.jobs()[victim].sub_status == model.SUB_KILLING and not hpc.workers()[0].kill_reason
    swept = sweeping.sweep(hpc.instance, hpc.queues).queues[0]
    assert swept.jobs_killed == 1 and swept.killed == 0 and not swept.job_kill_failed
    wait_until(lambda: str(victim) not in hpc.steps(worker.batch_id), 30, 0.3, "the killed job's step gone")
    assert set(hpc.steps(worker.batch_id)) >= {str(p) for p in ids if p != victim}
    assert "CANCELLED" in (hpc.work(worker.worker_id) / str(victim) / "step.log").read_text()
    hpc.release.touch()
    hpc.cycle_until(lambda: all(hpc.sim.job_status(p) in ("finished", "failed") for p in ids)
                    and hpc.workers()[0].status == model.FINISHED, "the others finished, then the worker")
    final = hpc.sim.jobs[victim].updates[-1]
    assert final["job_status"] == "failed" and final["job_sub_status"] == "cancelled"
    assert [hpc.sim.job_status(p) for p in ids if p != victim] == ["finished"] * 3


def test_killing_the_last_running_job_ends_the_allocation(site):
    hpc = site()
    (quick,) = hpc.sim.add_jobs("HPC", 1, jobPars="echo quick", maxWalltime=600)
    (slow,) = hpc.add_jobs(1)
    fetching.fetch_jobs(hpc.instance, hpc.queues)
    submission.submit(hpc.instance, hpc.queues)   # two jobs, fill_timeout 0: one node
    (worker,) = hpc.workers()
    hpc.cycle_until(lambda: hpc.sim.job_status(quick) == "finished" and hpc.node_of(worker.worker_id, slow),
                    "the quick job finished, the slow one running")
    hpc.sim.kill_jobs(None, [slow], None, False, [])
    wait_until(lambda: propagation.propagate(hpc.instance, hpc.queues).kills_from_panda, 20, 0.5, "tobekilled")
    swept = sweeping.sweep(hpc.instance, hpc.queues).queues[0]
    assert swept.killed == 1 and swept.jobs_killed == 0   # the whole allocation: nothing else runs in it
    (worker,) = hpc.workers()
    assert worker.status == model.CANCELLED and worker.diag == "killed: PanDA asked to kill its last running job"
    wait_until(lambda: not hpc.steps(worker.batch_id), 30, 0.3, "the allocation gone from Slurm")
    propagation.propagate(hpc.instance, hpc.queues)
    final = hpc.sim.jobs[slow].updates[-1]
    assert final["job_status"] == "failed" and final["job_sub_status"] == "cancelled"
    assert hpc.sim.job_status(quick) == "finished"
    assert hpc.sim.workers(hpc.harness.harvester_id)[worker.worker_id]["status"] == "cancelled"


def test_a_crash_between_sbatch_and_the_record_adopts_the_allocation_and_its_jobs(site):
    hpc = site()
    ids = hpc.add_jobs(5)
    hpc.harness.write_config({"HPC": hpc.queue_table})
    hpc.harness.cli("fetch-jobs", check=True)
    crashed = hpc.harness.cli("submit", env={"HARVESTER_CLI_CRASH_AT": "after_backend_submit"})
    assert crashed.returncode == 99, crashed.stderr
    (pending,) = hpc.workers()
    assert pending.status == model.PENDING and pending.batch_id is None
    assert {j.sub_status for j in hpc.jobs().values()} == {model.SUB_SUBMITTED}   # bound in the same transaction
    listed = hpc.nodes.run("squeue", "-h", "-o", "%i %j").stdout.split("\n")
    (allocation,) = [line.split()[0] for line in listed if line.endswith(f":{pending.worker_id}")]
    again = hpc.harness.cli_json("submit")
    assert again["queues"][0]["adopted"] == 1 and again["queues"][0]["submitted"] == [], again
    (worker,) = hpc.workers()
    assert worker.status == model.SUBMITTED and worker.batch_id == allocation
    assert worker.stdout_url.endswith(f"/{worker.worker_id}/pilot.log")
    hpc.poll_until(lambda: hpc.all_running(worker.worker_id, ids), "the adopted allocation's steps running")
    hpc.release.touch()
    hpc.cycle_until(lambda: all(hpc.sim.job_status(p) == "finished" for p in ids), "the adopted jobs finished")
    ours = [line for line in hpc.nodes.run("squeue", "-h", "-t", "all", "-o", "%i %j").stdout.splitlines()
            if f" {hpc.harness.harvester_id}:" in line]
    assert len(hpc.workers()) == 1 and len(ours) == 1   # never submitted twice
    with hpc.instance.store.reading() as tx:
        assert sorted(p for p, _ in tx.execute(job_workers.select()).all()) == sorted(ids)   # each once
    reported = hpc.sim.workers(hpc.harness.harvester_id)[worker.worker_id]
    assert reported["nJobs"] == 5 and sorted(reported["pandaid_list"]) == sorted(ids)


def test_walltime_covers_the_longest_job_and_a_half_filled_allocation_waits_for_the_fill_timeout(site):
    hpc = site(fill_timeout=3)
    short = hpc.sim.add_jobs("HPC", 2, jobPars="echo short", maxWalltime=300)
    (longer,) = hpc.sim.add_jobs("HPC", 1, jobPars="echo longer", maxWalltime=1500)
    (too_long,) = hpc.sim.add_jobs("HPC", 1, jobPars="echo never", maxWalltime=3400)
    fetched = fetching.fetch_jobs(hpc.instance, hpc.queues).queues[0]
    assert fetched.invalid == 1
    assert hpc.jobs()[too_long].diag.startswith("refused: its maxWalltime of 3400 s plus walltime_margin 300 s")
    # Three jobs fill less than one node (4): they wait for one more, or for the fill timeout.
    first = submission.submit(hpc.instance, hpc.queues).queues[0]
    (rule,) = [str(s) for s in first.plan.trace if s.rule == "jobs per allocation (many_to_one)"]
    assert first.submitted == [] and "wait for 1 more or for fill_timeout=3" in rule, rule
    planned = wait_until(lambda: submission.submit(hpc.instance, hpc.queues, dry_run=True).queues[0].plan.total, 30,
                         0.3, "the fill timeout passing")
    assert planned == 1
    run = submission.submit(hpc.instance, hpc.queues).queues[0]
    (worker,) = hpc.workers()
    assert run.submitted == [worker.worker_id]
    script = (Path(worker.log_dir) / "pilot.jdl").read_text()
    assert "#SBATCH --nodes=1\n" in script and "#SBATCH --time=30\n" in script   # 1500 s + 300 s margin
    hpc.cycle_until(lambda: all(hpc.sim.job_status(p) == "finished" for p in [*short, longer])
                    and hpc.sim.job_status(too_long) == "failed", "the three jobs finished, the refused one failed")
    assert "refused" in hpc.sim.jobs[too_long].updates[-1]["pilot_error_diag"]


def test_a_refused_allocation_fails_every_job_once_none_lost_none_twice(site, monkeypatch):
    """sbatch refuses the allocation for a reason that will not pass (a constraint no node has: the Slurm
    table's permanent refusal): every job of the allocation fails at once, each reported once, none bound."""
    hpc = site()
    ids = hpc.add_jobs(6)
    table = {**hpc.queue_table, "backend_options": {**hpc.queue_table["backend_options"], "constraint": "nosuch"}}
    hpc.instance = hpc.harness.instance({"HPC": table})
    hpc.queues = list(hpc.instance.config.queues.values())
    fetching.fetch_jobs(hpc.instance, hpc.queues)
    run = submission.submit(hpc.instance, hpc.queues).queues[0]
    (worker,) = hpc.workers()
    assert [w for w, _ in run.failed] == [worker.worker_id] and worker.status == model.MISSED
    assert "Invalid feature specification" in worker.diag
    current = hpc.jobs()
    assert sorted(current) == sorted(ids)
    assert all(j.status == model.JOB_FAILED and j.submit_attempts == 1 for j in current.values()), current
    with hpc.instance.store.reading() as tx:
        assert tx.execute(job_workers.select()).all() == []
    propagation.propagate(hpc.instance, hpc.queues)
    for panda_id in ids:
        finals = [u for u in hpc.sim.jobs[panda_id].updates if u["job_status"] in ("finished", "failed")]
        assert [u["job_status"] for u in finals] == ["failed"], (panda_id, finals)


@pytest.mark.resources
def test_with_one_node_drained_the_allocation_is_sized_to_the_two_idle_nodes_and_starts_now(site):
    """free_resources on a queue of allocations of up to 3 nodes while one of the 3 is drained: sinfo says 2 idle,
    so the allocation asks for 2 nodes (8 jobs) and runs at once, instead of one of 3 that would wait for the
    drained node; the 4 jobs left wait for the next allocation."""
    hpc = site(fill_timeout=0)
    hpc.queue_table.update(free_resources=True, queued_when_full=0, n_queue_limit_worker=1)
    hpc.instance = hpc.harness.instance({"HPC": hpc.queue_table})
    hpc.queues = list(hpc.instance.config.queues.values())
    drained = hpc.nodes.nodes[-1]
    hpc.nodes.run("scontrol", "update", f"nodename={drained}", "state=drain", "reason=harvester-cli test")
    try:
        hpc.nodes.wait_state(drained, ("drained",), 30)
        ids = hpc.add_jobs(12)
        fetching.fetch_jobs(hpc.instance, hpc.queues)
        run = submission.submit(hpc.instance, hpc.queues).queues[0]
        assert run.plan.nodes == 2, run.plan.trace
        (free_rule,) = [str(s) for s in run.plan.trace if s.rule == "free resources"]
        assert "allocations of at most 2 node(s), the most idle in one place (nodes_max=3)" in free_rule, free_rule
        (worker,) = hpc.workers()
        assert run.submitted == [worker.worker_id] and worker.n_core == 8, (run.failed, run.error)
        assert "#SBATCH --nodes=2\n" in (Path(worker.log_dir) / "pilot.jdl").read_text()
        with hpc.instance.store.reading() as tx:
            bound = sorted(p for p, _ in tx.execute(job_workers.select()).all())
        assert bound == sorted(ids)[:8]   # the oldest eight
        hpc.poll_until(lambda: hpc.all_running(worker.worker_id, bound), "the eight steps running on two nodes")
        assert {hpc.node_of(worker.worker_id, p) for p in bound} == set(hpc.nodes.nodes[:2])
    finally:
        hpc.nodes.run("scontrol", "update", f"nodename={drained}", "state=resume", check=False)
