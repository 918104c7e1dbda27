"""The Slurm backend against real Slurm 22.05 daemons (Debian's slurmctld, slurmd, munged) started by
tests/support/peers/slurm.sh: one node on loopback with more CPUs than the machine has, partitions `debug` (the
default) and `second`, no slurmdbd (ended jobs also go to a job-completion log, read with `sacct -c`).

The cluster is started once per session on free ports under its own directory (about a second) and
stopped at the end (tests/support/slurm_cluster.py). Jobs run as root on this host, so the worker's work and
log directories (under the test's tmp_path) are the "shared file system". The test pilot is this checkout's
harvester_cli.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from harvester_cli.instance import worker_ref
from harvester_cli.panda import diagnostics
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state.schema import workers
from harvester_cli.steps import downtimes
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps import sweep as sweeping
from harvester_cli.steps.cycle import run_cycle
from tests.support.harness import Harness, rows, wait_until
from tests.support.harness import cycle_until as _cycle_until
from tests.support.slurm_cluster import Slurm

pytestmark = pytest.mark.slurm


def cycle_until(instance, cluster, predicate, timeout=60.0, what="cycle goal"):
    """The harness's cycle_until, with the workers' state and the cluster's logs in the failure message."""
    def context():
        state = [(w.worker_id, w.status, w.batch_id, w.native_status, w.diag) for w in rows(instance, workers)]
        return f"workers: {state}\n{cluster.logs()}"

    return _cycle_until(instance, predicate, timeout, what, context=context)


def poll_until(instance, predicate, timeout=60.0, what="poll goal"):
    queues = list(instance.config.queues.values())

    def step():
        monitoring.poll(instance, queues)
        return predicate()

    return wait_until(step, timeout, 0.5, what)


def worker_rows(instance):
    return sorted(rows(instance, workers), key=lambda w: w.worker_id)


@pytest.fixture(scope="module", autouse=True)
def worker_out_of_walltime(cluster, pki, tmp_path_factory):
    """A worker with a 1-minute walltime, submitted as this module starts: Slurm counts minutes and checks limits
    about every 30 s, so its job ends 60-90 s after it started, and the tests in between run meanwhile
    (test_walltime_that_runs_out_fails_the_worker_as_timeout reads the outcome, before the test that restarts
    slurmctld without its state)."""
    with PandaSimulator(pki, finish_delay=0.0) as sim:
        harness = Harness(tmp_path_factory.mktemp("walltime"), sim, pki, f"test-walltime-{os.getpid()}")
        slurm = Slurm(cluster, harness)
        instance = slurm.instance({"SLURM_WALL": slurm.queue(pilot="echo started; sleep 600", queue={"walltime": 60})})
        submission.submit(instance, list(instance.config.queues.values()), count=1)
        yield instance
        instance.close()
        cluster.cancel_all(harness.harvester_id)


# -- lifecycles through the real steps -------------------------------------------------------------

def test_pull_pilots_run_as_one_job_array_and_finish_jobs_in_the_simulator(slurm, sim):
    ids = sim.add_jobs("SLURM_PULL", 3, jobPars="echo hello from slurm")
    instance = slurm.instance({"SLURM_PULL": slurm.queue(queue={"empty_pilot_floor": 0})})
    cycle_until(instance, slurm.cluster, lambda: all(sim.job_status(i) == "finished" for i in ids)
                and all(w.status == "finished" for w in worker_rows(instance)), timeout=90,
                what="pull jobs finished by Slurm pilots")
    local = worker_rows(instance)
    # Three identical workers of one run: one sbatch, one job array; task i runs worker base + i. (Later
    # runs may add empty pilots while PanDA still counts a job as activated.)
    first = local[:3]
    assert len({w.batch_id.split("_")[0] for w in first}) == 1
    base = first[0].worker_id
    assert [w.batch_id.split("_")[1] for w in first] == [str(w.worker_id - base) for w in first]
    seen = {j["JobArrayID"]: j for j in slurm.jobs()}
    for w in first:
        job = seen[w.batch_id]
        assert job["State"] == "COMPLETED" and job["Name"] == f"{slurm.harness.harvester_id}:{base}+"
        assert f"harvester {slurm.harness.harvester_id}" in job["Comment"]
        assert w.computing_element == "debug" and w.native_status == "COMPLETED" and w.native_exit_code == 0
        assert w.stdout_url.endswith(f"/{w.worker_id}/pilot.out") and w.batch_log_url.endswith("/pilot.log")
        log_dir = Path(w.log_dir)
        assert "#SBATCH --cpus-per-task=1" in (log_dir / "pilot.jdl").read_text()
        assert (log_dir / "pilot.log").exists()   # Slurm's own output, through the array's link
    outputs = [(Path(w.log_dir) / "pilot.out").read_text() for w in local]
    assert sum("hello from slurm" in text and "finished; PanDA says" in text for text in outputs) == 3
    assert all(w.status == "finished" and w.native_status == "COMPLETED" for w in local)
    reported = sim.workers(slurm.harness.harvester_id)
    assert all(reported[w.worker_id]["status"] == "finished" for w in local)


def test_push_job_file_is_private_and_the_heartbeat_comes_back(slurm, sim):
    (ok,) = sim.add_jobs("SLURM_PUSH", 1, jobPars="echo payload on slurm")
    (bad,) = sim.add_jobs("SLURM_PUSH", 1, jobPars="echo failing; exit 3")
    instance = slurm.instance({"SLURM_PUSH": slurm.queue("push", max_array_size=1)})
    cycle_until(instance, slurm.cluster, lambda: sim.job_status(ok) == "finished" and sim.job_status(bad) == "failed",
                timeout=90, what="push jobs final in PanDA")
    final = sim.jobs[ok].updates[-1]
    assert final["exe_error_code"] == 0 and final["pilot_id"].endswith("/pilot.out") and final["batch_id"]
    assert len(sim.jobs[ok].pilot_logs) == 1   # the batch log URL, once
    assert sim.jobs[bad].updates[-1]["exe_error_code"] == 3
    local = worker_rows(instance)
    assert len(local) == 2 and len({w.batch_id for w in local}) == 2 and all("_" not in w.batch_id for w in local)
    for w in local:
        assert w.status == "finished"   # the pilot ran and reported; the payload's failure is the job's
        job_file = harness_work(slurm, "SLURM_PUSH", w.worker_id) / "pandaJobData.out"
        assert job_file.stat().st_mode & 0o777 == 0o600
        assert (job_file.parent.stat().st_mode & 0o777) == 0o700
        log_dir = Path(w.log_dir)
        assert (log_dir / "heartbeat.json").is_file() and (log_dir / "jobReport.json").is_file()
        assert not (log_dir / "pandaJobData.out").exists()
    assert any("payload on slurm" in (Path(w.log_dir) / "pilot.out").read_text() for w in local)
    # Clean after the retention: work directories go, the logs stay.
    queues = list(instance.config.queues.values())
    assert sweeping.sweep(instance, queues, retention=0).queues[0].cleaned == 2
    assert not harness_work(slurm, "SLURM_PUSH", local[0].worker_id).exists()
    assert (Path(local[0].log_dir) / "heartbeat.json").exists()


def harness_work(slurm, queue: str, worker_id: int) -> Path:
    return slurm.harness.tmp_path / "work" / queue / str(worker_id)


def test_pilot_exiting_3_fails_the_worker_with_its_exit_code_and_an_error_code(slurm, sim):
    token = slurm.harness.tmp_path / "token"
    token.write_text("not a real token\n")
    instance = slurm.instance({"SLURM_EXIT": slurm.queue(
        pilot="echo proxy=$X509_USER_PROXY token=$BEARER_TOKEN_FILE worker=$HARVESTER_WORKER_ID; exit 3",
        token_file=str(token))})
    queues = list(instance.config.queues.values())
    assert len(submission.submit(instance, queues, count=1).queues[0].submitted) == 1
    poll_until(instance, lambda: worker_rows(instance)[0].status == "failed", timeout=60, what="worker failed")
    (w,) = worker_rows(instance)
    assert w.native_status == "FAILED" and w.native_exit_code == 3
    assert w.diag.startswith("slurm FAILED:") and "exit code 3" in w.diag and w.batch_id in w.diag
    assert diagnostics.classify(w.status, w.diag, w.native_exit_code)[0] == 1076
    propagation.propagate(instance, queues)
    reported = sim.workers(slurm.harness.harvester_id)[w.worker_id]
    assert reported["status"] == "failed" and reported["errorCode"] == 1076
    said = (Path(w.log_dir) / "pilot.out").read_text()
    assert f"proxy={slurm.harness.pki.proxy} token={token} worker={w.worker_id}" in said


def test_kills_from_panda_cancel_the_slurm_jobs(slurm, sim):
    (panda_id,) = sim.add_jobs("SLURM_KILL_PUSH", 1, jobPars="sleep 300")
    instance = slurm.instance({"SLURM_KILL_PUSH": slurm.queue("push"),
                               "SLURM_KILL_PULL": slurm.queue(pilot="sleep 300", queue={"empty_pilot_floor": 1})})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues)
    poll_until(instance, lambda: [w.status for w in worker_rows(instance)] == ["running", "running"], timeout=60,
               what="both workers running")
    # Push: PanDA answers the job's next update with tobekilled. Pull: a KILL_WORKERS command.
    sim.kill_jobs(None, [panda_id], None, False, [])
    sim.add_command("KILL_WORKERS", {"status": ["running"], "computingSite": ["SLURM_KILL_PULL"],
                                     "computingElement": "ALL", "submissionHost": "ALL"})
    assert propagation.propagate(instance, queues).kills_from_panda == 2
    result = sweeping.sweep(instance, queues)
    assert sum(q.killed for q in result.queues) == 2 and not any(q.kill_failed for q in result.queues)
    local = worker_rows(instance)
    assert all(w.status == "cancelled" and w.diag.startswith("killed: PanDA") for w in local), local
    wait_until(lambda: {j["State"] for j in slurm.jobs()} == {"CANCELLED"}, timeout=30, what="Slurm jobs cancelled")
    propagation.propagate(instance, queues)
    final = sim.jobs[panda_id].updates[-1]
    assert final["job_status"] == "failed" and final["job_sub_status"] == "cancelled"
    monitoring.poll(instance, queues)   # a final worker stays final
    assert all(w.status == "cancelled" for w in worker_rows(instance))
    # Killing again, and killing a job Slurm never had: both count as killed.
    backend = instance.backend(queues[0])
    ref = worker_ref(local[0])
    unknown = ref.replace(worker_id=ref.worker_id + 1000, batch_id="99999999")
    assert [r.ok for r in backend.kill([ref, unknown], "again")] == [True, True]


def test_crash_between_sbatch_and_the_record_is_adopted_not_resubmitted(slurm, sim):
    (panda_id,) = sim.add_jobs("SLURM_CRASH", 1, jobPars="sleep 3; echo adopted")
    queues = {"SLURM_CRASH": slurm.queue("push")}
    slurm.harness.write_config(queues)
    slurm.harness.cli("fetch-jobs", check=True)
    crashed = slurm.harness.cli("submit", env={"HARVESTER_CLI_CRASH_AT": "after_backend_submit"})
    assert crashed.returncode == 99, crashed.stderr
    instance = slurm.instance(queues)
    (pending,) = worker_rows(instance)
    assert pending.status == "pending" and pending.batch_id is None
    (job,) = slurm.jobs()   # Slurm has it, under the worker's name
    assert job["Name"] == f"{slurm.harness.harvester_id}:{pending.worker_id}"
    again = slurm.harness.cli_json("submit")
    assert again["queues"][0]["adopted"] == 1 and again["queues"][0]["submitted"] == [], again
    (w,) = worker_rows(instance)
    assert w.status == "submitted" and w.batch_id == job["JobArrayID"] and w.computing_element == "debug"
    cycle_until(instance, slurm.cluster, lambda: sim.job_status(panda_id) == "finished", timeout=90,
                what="adopted job finished")
    assert len(worker_rows(instance)) == 1 and len(slurm.jobs()) == 1   # never submitted twice
    assert "adopted" in (Path(w.log_dir) / "pilot.out").read_text()


def test_slurmctld_down_or_hanging_during_poll_loses_nothing(slurm, sim):
    instance = slurm.instance({"SLURM_DOWN": slurm.queue(pilot="sleep 25; echo survived", command_timeout=4,
                                                         squeue_cache_seconds=0, queue={"lost_grace_seconds": 0})})
    queues = list(instance.config.queues.values())
    submission.submit(instance, queues, count=2)
    poll_until(instance, lambda: all(w.status == "running" for w in worker_rows(instance)), timeout=60,
               what="workers running")
    before = [(w.status, w.diag, w.native_status) for w in worker_rows(instance)]

    # Hanging: slurmctld accepts connections but never answers; every command is cut at command_timeout.
    os.kill(slurm.cluster.ctld_pid(), signal.SIGSTOP)
    try:
        poll = monitoring.poll(instance, queues)
    finally:
        os.kill(slurm.cluster.ctld_pid(), signal.SIGCONT)
    assert poll.partial and "did not answer within 4 s" in poll.queues[0].error
    assert [(w.status, w.diag, w.native_status) for w in worker_rows(instance)] == before

    # Down: the CLI says so and exits 1; nothing is marked lost (grace 0 would fail a missing worker at once).
    slurm.harness.write_config({"SLURM_DOWN": slurm.queue(pilot="true", command_timeout=30,
                                                          queue={"lost_grace_seconds": 0})})
    slurm.cluster.script("stopctld")
    try:
        result = slurm.harness.cli("poll")
        assert result.returncode == 1, result.stderr
        said = result.stdout + result.stderr
        assert "squeue failed" in said and "Unable to contact slurm controller" in said, said
        assert [(w.status, w.diag, w.native_status) for w in worker_rows(instance)] == before
        assert not any(w.kill_reason for w in worker_rows(instance))
    finally:
        slurm.cluster.script("startctld")
    # Back: the jobs ran on through the outage and finish.
    poll_until(instance, lambda: all(w.status == "finished" for w in worker_rows(instance)), timeout=90,
               what="workers finished after slurmctld came back")
    assert all("survived" in (Path(w.log_dir) / "pilot.out").read_text() for w in worker_rows(instance))


def test_fanout_over_two_partitions_skips_one_that_is_down(slurm, sim):
    instance = slurm.instance({"SLURM_FAN": slurm.queue(pilot="sleep 60", partitions=["debug", "second"],
                                                        sbatch_options=["--hold"],
                                                        queue={"n_queue_limit_worker": 20, "max_workers": 40})})
    queues = list(instance.config.queues.values())
    first = submission.submit(instance, queues, count=6).queues[0].submitted
    by_ce = {w.worker_id: w.computing_element for w in worker_rows(instance)}
    assert Counter(by_ce.values()) == {"debug": 3, "second": 3}   # no history yet: an even split
    seen = {j["JobArrayID"]: j["Partition"] for j in slurm.jobs()}
    assert all(seen[w.batch_id] == w.computing_element for w in worker_rows(instance))
    assert len({w.batch_id.split("_")[0] for w in worker_rows(instance)}) == 2   # one array per partition

    slurm.cluster.run("scontrol", "update", "PartitionName=second", "State=DOWN")
    try:
        second = submission.submit(instance, queues, count=4).queues[0].submitted
        assert {w.computing_element for w in worker_rows(instance) if w.worker_id in second} == {"debug"}
        # A queue limit per partition: debug queues 7 now; with a limit of 8 only one more fits anywhere.
        limited = slurm.instance({"SLURM_FAN": slurm.queue(pilot="sleep 60", partitions=["debug", "second"],
                                                           sbatch_options=["--hold"],
                                                           queue={"n_queue_limit_worker": 8, "max_workers": 40})})
        run = submission.submit(limited, list(limited.config.queues.values()), count=3, force=True).queues[0]
        assert len(run.submitted) == 1 and len(run.failed) == 2
        assert run.failed[0][1] == ("no partition can take this worker (second: partition is down (sinfo); "
                                    "debug: reaches the queue limit of 8 (n_queue_limit_worker))")
    finally:
        slurm.cluster.run("scontrol", "update", "PartitionName=second", "State=UP")
    assert len(first) == 6


def test_a_partition_whose_submissions_keep_failing_is_benched(slurm, sim):
    instance = slurm.instance({"SLURM_BACKOFF": slurm.queue(
        pilot="sleep 60", partitions=["debug", "noroot"], sbatch_options=["--hold"], ce_backoff_failures=2,
        queue={"n_queue_limit_worker": 20, "max_workers": 40})})
    queues = list(instance.config.queues.values())
    first = submission.submit(instance, queues, count=4).queues[0]
    assert len(first.submitted) == 2 and len(first.failed) == 2
    missed = [w for w in worker_rows(instance) if w.status == "missed"]
    assert {w.computing_element for w in missed} == {"noroot"}   # sinfo shows it up; sbatch refuses root there
    assert missed[0].diag == ("sbatch refused the worker to partition noroot: sbatch: error: Batch job submission "
                              "failed: Invalid user id")
    second = submission.submit(instance, queues, count=4).queues[0]
    assert len(second.submitted) == 4 and not second.failed
    assert {w.computing_element for w in worker_rows(instance) if w.worker_id in second.submitted} == {"debug"}


def test_multinode_template_renders_and_runs_one_pilot_per_node(slurm, sim):
    pilot = "echo pilot task $SLURM_PROCID of $SLURM_NTASKS on $SLURM_JOB_NUM_NODES nodes"
    instance = slurm.instance({
        "SLURM_HPC": slurm.queue(pilot=pilot, shipped_template="multinode",
                                 queue={"core_count": 4, "resource_types": ["MCORE"]}),
        "SLURM_HPC2": slurm.queue(pilot=pilot, shipped_template="multinode", nodes=2,
                                  queue={"core_count": 8, "resource_types": ["MCORE"]}),
    })
    queues = list(instance.config.queues.values())
    one = submission.submit(instance, [queues[0]], count=1, resource_type="MCORE").queues[0]
    assert len(one.submitted) == 1
    poll_until(instance, lambda: worker_rows(instance)[0].status == "finished", timeout=60, what="multinode job done")
    (w,) = worker_rows(instance)
    text = (Path(w.log_dir) / "pilot-0.jdl").read_text()
    assert "#SBATCH --nodes=1" in text and "#SBATCH --cpus-per-task=4" in text and "#SBATCH --mem=8000" in text
    assert "srun --nodes=1 --ntasks-per-node=1" in text and "--per-task" in text
    assert "pilot task 0 of 1 on 1 nodes" in (Path(w.log_dir) / "pilot-0.out").read_text()
    assert w.stdout_url.endswith("/pilot-0.out")
    # Two nodes of 4 cores and 8000 MB each. Slurm takes it (EnforcePartLimits=NO), but it can never start on
    # this one-node partition (pending reason PartitionConfig): the monitor asks sweep to kill it.
    two = submission.submit(instance, [queues[1]], count=1, resource_type="MCORE").queues[0]
    (two_worker,) = [r for r in worker_rows(instance) if r.queue == "SLURM_HPC2"]
    assert two.submitted == [two_worker.worker_id]
    text = (Path(two_worker.log_dir) / "pilot-0.jdl").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --cpus-per-task=4" in text and "#SBATCH --mem=8000" in text
    poll_until(instance, lambda: next(r for r in worker_rows(instance) if r.queue == "SLURM_HPC2").kill_reason,
               timeout=30, what="kill requested for a job that cannot start")
    (two_worker,) = [r for r in worker_rows(instance) if r.queue == "SLURM_HPC2"]
    assert two_worker.status == "submitted" and two_worker.diag == "pending: PartitionConfig"
    assert sweeping.sweep(instance, [queues[1]]).queues[0].killed == 1
    (two_worker,) = [r for r in worker_rows(instance) if r.queue == "SLURM_HPC2"]
    assert two_worker.status == "cancelled" and two_worker.diag == (
        "killed: pending in Slurm for a reason that does not clear by itself: PartitionConfig")


def test_refused_submission_is_a_missed_worker_with_slurms_reason(slurm, sim):
    instance = slurm.instance({"SLURM_BAD": slurm.queue(pilot="true", constraint="nosuchfeature")})
    queues = list(instance.config.queues.values())
    run = submission.submit(instance, queues, count=2).queues[0]
    assert run.submitted == [] and len(run.failed) == 2
    for w in worker_rows(instance):
        assert w.status == "missed"
        assert w.diag == "sbatch refused the worker to partition debug: sbatch: error: Batch job submission " \
                         "failed: Invalid feature specification"
    assert slurm.jobs() == []


def test_bulk_one_squeue_per_poll_and_one_scancel_for_all(slurm, sim):
    n = 40
    instance = slurm.instance({"SLURM_BULK": slurm.queue(pilot="true", sbatch_options=["--hold"],
                                                         queue={"max_workers": 100})})
    queues = list(instance.config.queues.values())
    run = submission.submit(instance, queues, count=n, force=True).queues[0]
    assert len(run.submitted) == n
    assert len({w.batch_id.split("_")[0] for w in worker_rows(instance)}) == 1   # one array
    backend = instance.backend(queues[0])
    calls: list[list[str]] = []
    real_run = backend._run
    backend._run = lambda args: calls.append(args) or real_run(args)
    backend.forget_listing()
    polled = monitoring.poll(instance, queues).queues[0]
    assert polled.checked == n and polled.error is None
    assert [c[0] for c in calls] == ["squeue"]
    assert all(w.status == "idle" and w.diag.startswith("held: JobHeldUser") for w in worker_rows(instance))
    calls.clear()
    with instance.store.transaction() as conn:
        conn.execute(workers.update().values(kill_reason="bulk test"))
    swept = sweeping.sweep(instance, queues).queues[0]
    assert swept.killed == n and not swept.kill_failed
    assert [c[0] for c in calls] == ["scancel"]
    wait_until(lambda: {j["State"] for j in slurm.jobs()} == {"CANCELLED"}, timeout=30, what="all cancelled")
    # Cleaning after the retention removes the work directories and the array's links and dispatcher.
    propagation.propagate(instance, queues)
    arrays = slurm.harness.tmp_path / "work" / "SLURM_BULK" / "arrays"
    assert len(list(arrays.iterdir())) == 1
    assert sweeping.sweep(instance, queues, retention=0).queues[0].cleaned == n
    assert list(arrays.iterdir()) == [] and [p.name for p in arrays.parent.iterdir()] == ["arrays"]

    # Without arrays: one sbatch per worker, several at once; each its own job.
    singles = slurm.instance({"SLURM_BULK": slurm.queue(pilot="true", sbatch_options=["--hold"], max_array_size=1,
                                                        max_concurrent_sbatch=4, queue={"max_workers": 100})})
    run = submission.submit(singles, list(singles.config.queues.values()), count=10, force=True).queues[0]
    assert len(run.submitted) == 10
    new = [w for w in worker_rows(singles) if w.worker_id in run.submitted]
    assert len({w.batch_id for w in new}) == 10 and all(w.batch_id.isdigit() for w in new)


def test_walltime_that_runs_out_fails_the_worker_as_timeout(worker_out_of_walltime):
    instance = worker_out_of_walltime
    (w,) = worker_rows(instance)
    assert "#SBATCH --time=1" in (Path(w.log_dir) / "pilot.jdl").read_text()
    poll_until(instance, lambda: worker_rows(instance)[0].status == "failed", timeout=180, what="worker timed out")
    (w,) = worker_rows(instance)
    assert w.native_status == "TIMEOUT" and "time limit" in w.diag and w.native_exit_code == 128 + 15
    assert diagnostics.classify(w.status, w.diag, w.native_exit_code) == (1070, "Slurm: walltime exceeded (TIMEOUT)")
    assert "DUE TO TIME LIMIT" in (Path(w.log_dir) / "pilot.log").read_text()
    assert w.end_time - w.start_time >= 60


def test_jobs_slurmctld_forgot_are_read_from_the_job_completion_log(slurm, sim):
    """slurmctld restarted without its state (-c): squeue and scontrol know nothing, sacct -c does."""
    instance = slurm.instance({"SLURM_GONE": slurm.queue(pilot="echo done; exit 4", max_array_size=1,
                                                         queue={"lost_grace_seconds": 0})})
    queues = list(instance.config.queues.values())
    submission.submit(instance, queues, count=2)
    ours = worker_rows(instance)
    wait_until(lambda: {j["State"] for j in slurm.jobs()} == {"FAILED"}, timeout=60, what="jobs ended in Slurm")
    slurm.cluster.script("stopctld")
    slurm.cluster.script("startctld", "-c")
    assert slurm.jobs() == []
    # Crash repair finds the same jobs by name in the job-completion log.
    backend = instance.backend(queues[0])
    refs = [worker_ref(w) for w in ours]
    pending = [r.replace(batch_id=None, status="pending") for r in refs]
    assert [f.batch_id for f in backend.find(pending)] == [w.batch_id for w in ours]
    monitoring.poll(instance, queues)
    for w in worker_rows(instance):
        assert w.status == "failed" and w.native_status == "FAILED" and w.native_exit_code == 4
    # A job no part of Slurm knows is missing: lost once the grace (0 here) has passed.
    ghost = refs[0].replace(worker_id=10**9, batch_id="987654")
    (seen,) = backend.check([ghost])
    assert seen.status == "missing" and "no trace of job 987654" in seen.diag


# -- downtimes, and caps several queues share over every host --------------------------------------

@pytest.mark.downtimes
def test_a_push_queue_down_everywhere_fetches_nothing_and_its_running_worker_is_left_alone(slurm, sim):
    (first,) = sim.add_jobs("SLURM_DOWN", 1, jobPars="sleep 30")
    instance = slurm.instance({"SLURM_DOWN": slurm.queue("push", partitions=["debug", "second"], max_array_size=1)})
    queues = list(instance.config.queues.values())
    cycle_until(instance, slurm.cluster, lambda: [w.status for w in worker_rows(instance)] == ["running"],
                timeout=60, what="the first job's worker running")
    for partition in ("debug", "second"):   # every CE of the queue: down everywhere
        downtimes.add(instance, queue=None, ce=partition, start=None, end=time.time() + 3600, severity="OUTAGE",
                      reason="Slurm upgrade")
    waiting = sim.add_jobs("SLURM_DOWN", 2, jobPars="true")
    run_cycle(instance, queues)
    fetched = fetching.fetch_jobs(instance, queues).queues[0]
    assert fetched.stored == 0
    assert fetched.skipped.startswith("not fetching: every CE in downtime: debug: OUTAGE until ")
    assert "(Slurm upgrade)" in fetched.skipped
    assert [sim.job_status(i) for i in waiting] == ["activated", "activated"]
    (w,) = worker_rows(instance)
    assert w.status == "running" and w.kill_reason is None
    assert [j["State"] for j in slurm.jobs()] == ["RUNNING"]
    status = downtimes.summary(instance, queues)
    assert status["queues_down"][0]["why"].startswith("every CE in downtime")
    assert [d["computing_element"] for d in status["downtimes"]] == ["debug", "second"]
    for d in status["downtimes"]:
        downtimes.remove(instance, [int(d["id"])])
    assert fetching.fetch_jobs(instance, queues).queues[0].stored == 2
    assert sim.job_status(first) in ("running", "finished")


@pytest.mark.downtimes
def test_a_downtime_added_on_one_host_is_seen_by_another(slurm, sim):
    queue = slurm.queue(pilot="sleep 60", partitions=["debug", "second"], sbatch_options=["--hold"],
                        queue={"n_queue_limit_worker": 20, "max_workers": 40})
    slurm.harness.write_config({"SLURM_HOSTS": queue}, instance={"host": "host-one"})
    added = slurm.harness.cli_json("downtime", "add", "--ce", "second", "--for", "1h", "--reason", "rack move")
    assert added["downtime"]["queues"] == ["SLURM_HOSTS"]
    other_id = f"{slurm.harness.harvester_id}-two"
    other = slurm.harness.instance({"SLURM_HOSTS": queue}, harvester_id=other_id, instance={"host": "host-two"})
    try:
        run = submission.submit(other, list(other.config.queues.values()), count=4).queues[0]
        assert len(run.submitted) == 4
        assert {w.computing_element for w in worker_rows(other)} == {"debug"}
        assert {j["Partition"] for j in slurm.cluster.jobs(other_id)} == {"debug"}
        (seen,) = downtimes.listing(other, list(other.config.queues.values()))
        assert seen["source"] == "database" and seen["reason"] == "rack move" and seen["active"]
        assert downtimes.remove(other, [int(seen["id"])])[0] == [int(seen["id"])]
        assert slurm.harness.cli_json("downtime", "list")["downtimes"] == []   # withdrawn there, gone here
    finally:
        slurm.cluster.cancel_all(other_id)


@pytest.mark.downtimes
def test_a_shared_cap_holds_over_two_queues_and_two_hosts_split_by_demand(slurm, sim):
    sim.add_jobs("SLURM_CAP_A", 8)
    sim.add_jobs("SLURM_CAP_B", 4)
    queue = slurm.queue(pilot="sleep 60", sbatch_options=["--hold"], queue={"empty_pilot_floor": 0})
    cap = {"SITE": {"queues": ["SLURM_CAP_A", "SLURM_CAP_B"], "max_queued": 6}}
    # Host one runs A (and knows B); host two runs B only: A's demand reaches it through the state database.
    one = slurm.instance({"SLURM_CAP_A": queue, "SLURM_CAP_B": queue}, caps=cap, instance={"host": "host-one"})
    other_id = f"{slurm.harness.harvester_id}-two"
    two = slurm.harness.instance({"SLURM_CAP_B": queue}, caps=cap, harvester_id=other_id,
                                 instance={"host": "host-two"})
    a, b = one.config.queues["SLURM_CAP_A"], two.config.queues["SLURM_CAP_B"]
    try:
        first = submission.submit(one, [a]).queues[0]
        assert len(first.submitted) == 4   # 6 split 8:4
        shown = next(s for s in first.plan.trace if s.rule == "shared cap SITE")
        assert "split by demand SLURM_CAP_A=8, SLURM_CAP_B=4: share of SLURM_CAP_A=4" in shown.inputs
        planned = submission.submit(two, [b], dry_run=True).queues[0].plan
        assert planned.total == 2 and planned.caps[0]["queues"]["SLURM_CAP_A"]["demand"] == 8
        second = submission.submit(two, [b]).queues[0]
        assert len(second.submitted) == 2
        assert submission.submit(one, [a]).queues[0].submitted == []   # at its share, and the cap is full
        assert submission.submit(two, [b]).queues[0].submitted == []
        queued = Counter(w.queue for w in worker_rows(one) if w.status == "submitted")
        assert queued == {"SLURM_CAP_A": 4, "SLURM_CAP_B": 2}
        assert len(slurm.jobs()) + len(slurm.cluster.jobs(other_id)) == 6
    finally:
        slurm.cluster.cancel_all(other_id)


# -- CE errors (marker ceerrors): Slurm's refusals and reasons, push jobs given back, the monitor's URLs --------

@pytest.mark.ceerrors
def test_slurm_refusals_and_reasons_read_as_the_table_says(slurm, sim):
    """sbatch refusing root on a partition (permanent: the push job fails at once), a partition that is down
    (transient), a held job (JobHeldUser) and a pilot that exits 3, all real, each with its table entry."""
    from harvester_cli.panda import ce_errors
    from harvester_cli.state.schema import jobs
    from harvester_cli.steps.monitor import summary

    (refused_job,) = sim.add_jobs("SLURM_NOROOT", 1)
    instance = slurm.instance({
        "SLURM_NOROOT": slurm.queue("push", partitions=["noroot"]),
        "SLURM_DOWN": slurm.queue(pilot="true", partitions=["second"]),
        "SLURM_HELD": slurm.queue(pilot="true", sbatch_options=["--hold"]),
        "SLURM_EXIT3": slurm.queue(pilot="exit 3"),
    })
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues[:1])
    slurm.cluster.run("scontrol", "update", "PartitionName=second", "State=DOWN")
    try:
        submission.submit(instance, queues[1:], count=1)
    finally:
        slurm.cluster.run("scontrol", "update", "PartitionName=second", "State=UP")
    (job,) = rows(instance, jobs)
    assert job.status == "failed" and "not retried" in job.diag
    poll_until(instance, lambda: {w.queue: w.status for w in worker_rows(instance)}["SLURM_EXIT3"] == "failed"
               and (next(w for w in worker_rows(instance) if w.queue == "SLURM_HELD").diag or "").startswith("held"),
               timeout=60, what="the pilot exited and the held job seen held")
    found = {w.queue: ce_errors.match(w.diag, "slurm") for w in worker_rows(instance)}
    assert {q: (e.code, e.transient) for q, e in found.items()} == {
        "SLURM_NOROOT": (1309, False), "SLURM_DOWN": (1307, True), "SLURM_HELD": (1322, False),
        "SLURM_EXIT3": (1076, False)}
    counted = {dict(labels)["code"] for (family, labels), n in instance.tally.items()
               if family == "harvester_cli_ce_errors_total"}
    assert counted == {"1309", "1307", "1322", "1076"}
    per_ce = {(e["queue"], e["computing_element"]): e["code"]
              for e in summary(instance, [q.name for q in queues], 3600)["ce_errors"]}
    assert per_ce == {("SLURM_NOROOT", "noroot"): 1309, ("SLURM_DOWN", "second"): 1307, ("SLURM_EXIT3", "debug"): 1076}
    propagation.propagate(instance, queues)
    assert sim.job_status(refused_job) == "failed"


@pytest.mark.ceerrors
def test_push_jobs_given_back_are_asked_at_panda_and_only_those_still_ours_run_once(slurm, sim):
    """A partition that is down misses three push workers (transient): their jobs wait for PanDA's word.
    PanDA killed one meanwhile and reassigned another: only the third gets a new worker, and runs once;
    the monitor's four URLs of its pilot answer."""
    from harvester_cli import model
    from harvester_cli.state.schema import jobs
    from tests.support.monitor_links import answers, monitor_urls

    killed, reassigned, kept = sim.add_jobs("SLURM_RETRY", 3, jobPars="echo the payload ran")
    queue = slurm.queue("push", partitions=["second"], max_array_size=1, ce_backoff_failures=10)
    instance = slurm.instance({"SLURM_RETRY": queue})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    slurm.cluster.run("scontrol", "update", "PartitionName=second", "State=DOWN")
    try:
        run = submission.submit(instance, queues).queues[0]
    finally:
        slurm.cluster.run("scontrol", "update", "PartitionName=second", "State=UP")
    assert len(run.failed) == 3 and "partition is down" in run.failed[0][1]
    assert {j.sub_status for j in rows(instance, jobs)} == {model.SUB_RETRY}
    sim.kill_jobs(None, [killed], None, False, [])
    with sim.lock:   # PanDA gave the job to another site: a new attempt, activated there
        sim.jobs[reassigned].attempt_nr, sim.jobs[reassigned].status = 2, "activated"
        sim.jobs[reassigned].site = "ANOTHER_SITE"
    again = submission.submit(instance, queues).queues[0]
    assert (again.retried, again.abandoned, len(again.submitted)) == (1, 2, 1)
    states = {j.panda_id: (j.status, j.sub_status) for j in rows(instance, jobs)}
    assert states[killed] == states[reassigned] == ("failed", "done")
    cycle_until(instance, slurm.cluster, lambda: sim.job_status(kept) == "finished", timeout=60, what="job finished")
    ran = [w for w in worker_rows(instance) if w.status == "finished"]
    assert len(ran) == 1 and len(worker_rows(instance)) == 4   # three missed, one that ran
    assert "the payload ran" in (Path(ran[0].log_dir) / "pilot.out").read_text()
    assert [u["job_status"] for u in sim.jobs[reassigned].updates] == []   # never told anything after PanDA took it
    assert "failed" not in [u["job_status"] for u in sim.jobs[killed].updates]
    urls = list(monitor_urls(sim.jobs[kept].pilot_id).values())
    assert set(answers(slurm.harness.tmp_path / "logs", "http://127.0.0.1:8080/logs", urls).values()) == {200}


@pytest.mark.ceerrors
def test_a_push_job_survives_slurmctld_down_at_submit_and_runs_once(slurm, sim):
    """slurmctld stopped while submit runs: Slurm cannot be asked (its partitions first), so the run is an outage
    (exit 1, one line) that leaves its worker pending for the next submit, and fails nothing at PanDA; once the
    controller is back, that submit finds no trace of the worker in Slurm, marks it missed and gives the job a
    new worker, which runs it once."""
    from harvester_cli import model
    from harvester_cli.state.schema import jobs

    (panda_id,) = sim.add_jobs("SLURM_CTLD", 1, jobPars="echo the payload ran")
    instance = slurm.instance({"SLURM_CTLD": slurm.queue("push", max_array_size=1)})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    slurm.cluster.script("stopctld")
    try:
        run = submission.submit(instance, queues).queues[0]
    finally:
        slurm.cluster.script("startctld")
    assert run.error_exit == 1 and not run.submitted and not run.failed, run
    assert "Unable to contact slurm controller" in run.error and "the next submit repairs" in run.error
    assert [w.status for w in worker_rows(instance)] == [model.PENDING]
    assert sim.job_status(panda_id) == "sent" and not sim.jobs[panda_id].updates
    cycle_until(instance, slurm.cluster, lambda: sim.job_status(panda_id) == "finished", timeout=90,
                what="job finished on a new worker once slurmctld is back")
    first, *later = worker_rows(instance)
    assert first.status == model.MISSED and "no trace of this worker" in first.diag
    assert [w.status for w in later] == [model.FINISHED]
    assert "the payload ran" in (Path(later[0].log_dir) / "pilot.out").read_text()
    states = [u["job_status"] for u in sim.jobs[panda_id].updates]
    assert "failed" not in states and states.count("finished") == 1, states
    assert [j.submit_attempts for j in rows(instance, jobs)] == [1]


@pytest.mark.ceerrors
def test_multinode_worker_files_answer_the_monitors_urls_and_old_names_keep_working(slurm, sim):
    """A multinode worker's first pilot writes pilot-0.out: its batch log and script are pilot-0.log and
    pilot-0.jdl. A worker made before had batch.log and submit.sbatch: its old URLs and the monitor's new ones
    both answer."""
    from tests.support.monitor_links import answers, monitor_urls

    instance = slurm.instance({"SLURM_NODES": slurm.queue(pilot="echo node $SLURM_PROCID", nodes=1,
                                                          shipped_template="multinode")})
    queues = list(instance.config.queues.values())
    submission.submit(instance, queues, count=2)
    poll_until(instance, lambda: all(w.status == "finished" for w in worker_rows(instance)), timeout=60,
               what="workers finished")
    new, old = worker_rows(instance)
    assert new.stdout_url.endswith("/pilot-0.out") and new.batch_log_url.endswith("/pilot-0.log")
    old_dir = Path(old.log_dir)   # as the worker's files were named before
    (old_dir / "pilot-0.log").rename(old_dir / "batch.log")
    (old_dir / "pilot-0.jdl").rename(old_dir / "submit.sbatch")
    urls = [*monitor_urls(new.stdout_url).values(), *monitor_urls(old.stdout_url).values(),
            old.stdout_url.replace("/pilot-0.out", "/batch.log"), old.stdout_url.replace("/pilot-0.out", "/submit.sbatch")]
    assert answers(slurm.harness.tmp_path / "logs", "http://127.0.0.1:8080/logs", urls) == {u: 200 for u in urls}
