"""The CE error tables (panda/ce_errors.py), the retry of push jobs after a transient CE error before they
started (poll, sweep, submit's question to PanDA, propagate's heartbeat), the log names the PanDA monitor
finds and the old names serve-logs still answers. No daemon: the PanDA simulator and local workers whose
backend answers as the test says; tests/integration/*/test_ce_errors.py provoke the errors for real."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from harvester_cli import model
from harvester_cli.backends import _htcondor_submit as build
from harvester_cli.backends.base import Observation
from harvester_cli.panda import ce_errors, diagnostics, updates
from harvester_cli.site.logserver import LogServer
from harvester_cli.state.schema import jobs, workers
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import monitor
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps import sweep as sweeping
from tests.support.harness import rows

pytestmark = pytest.mark.ceerrors

# Texts the real peers wrote (the integration tests provoke them): the diag each backend makes of them.
SEEN = [
    ("htcondor", "held: Transfer input files failure at access point vm while sending files to execution point "
                 "slot1_1@vm. Details: reading from file /nonexistent/x.tgz: (errno 2) No such file or directory "
                 "(HoldReasonCode 13, subcode 2)", 1160, False),
    ("htcondor", "held: Error from slot1_4@vm: Failed to execute '/nonexistent/exe': (errno=2: 'No such file or "
                 "directory') (HoldReasonCode 6, subcode 2)", 1106, False),
    ("htcondor", "held: ARC job has no credentials (HoldReasonCode 0, subcode 0)", 1151, True),
    ("htcondor", "held: submitted on hold at user's request (HoldReasonCode 15, subcode None)", 1115, False),
    ("htcondor", "killed: held longer than 4 s: x (HoldReasonCode 13, subcode 110)", 1113, True),
    ("htcondor", "CE unreachable since 2026-12-07T06:05:00Z (condor ce@vm 127.0.0.1:9)", 1170, True),
    ("htcondor", "killed: " + model.RESUBMIT_MARK + "CE unreachable for more than 1 s (condor x)", 1170, True),
    ("htcondor", "removed: via condor_rm (by user ctest)", 1175, False),
    ("arc", "Job submission to LRMS failed", 1201, True),
    ("arc", "Failed in data staging: Failed checking source replica", 1202, True),
    ("arc", "LRMS error: (3) Job finished with wrong exit code - 3 != 0", 1213, False),
    ("arc", "ARC CE https://ce:443/arex refused the job: Operation error: 500 Requested queue nosuch is not "
            "allowed for this user", 1217, False),
    ("arc", "ARC CE https://ce/arex refused the proxy /p.pem (HTTP 403): its DN is not authorized or mapped there, "
            "nothing can be delegated", 1218, True),
    ("slurm", "slurm TIMEOUT: the job reached its time limit (--time) and was killed (job 5)", 1070, False),
    ("slurm", "slurm NODE_FAIL: a node of the job failed (job 5)", 1072, True),
    ("slurm", "sbatch refused the worker to partition noroot: sbatch: error: Batch job submission failed: Invalid "
              "user id", 1309, False),
    ("slurm", "no partition can take this worker (second: partition is down (sinfo))", 1307, True),
    ("slurm", "held: JobHeldUser (job 7)", 1322, False),
]


@pytest.mark.parametrize("backend, diag, code, transient", SEEN)
def test_what_the_peers_said_reads_as_its_table_entry(backend, diag, code, transient):
    entry = ce_errors.match(diag, backend)
    assert (entry.code, entry.transient) == (code, transient)
    assert diagnostics.classify(model.FAILED, diag, None, backend)[0] == code
    assert ce_errors.match(diag) == entry   # the diag alone says which table


def test_codes_are_unique_in_their_ranges_and_the_harvesters_own_rules_stay_apart():
    entries = ce_errors.all_entries()
    assert len({e.code for e in entries}) == len(entries)
    ranges = {"htcondor": range(1100, 1200), "arc": range(1200, 1300), "slurm": range(1300, 1400)}
    for e in entries:
        assert e.code in ranges[e.backend] or (e.backend == "slurm" and 1070 <= e.code <= 1077), e
        assert e.meaning and e.native and re.compile(e.pattern)
    assert not {e.code for e in entries} & {code for _, code, _ in diagnostics.RULES}
    # PanDA's kill says more than the hold meanwhile; a hold says more than "killed by the harvester"
    assert diagnostics.classify("cancelled", "killed: PanDA answered tobekilled (HoldReasonCode 13, subcode 2)",
                                None)[0] == 1010
    assert diagnostics.classify("cancelled", "killed: operator: requested by an operator", None)[0] == 1013
    assert diagnostics.meaning(1170) == "the grid CE cannot be reached" and diagnostics.transient(1170)
    assert diagnostics.transient(1040) and not diagnostics.transient(1060)


# -- the retry of a push job: poll, sweep, submit's question to PanDA, propagate's heartbeat ---------

PUSH = {"PUSH_Q": {"mode": "push", "max_submit_attempts": 3, "job_heartbeat_seconds": 60}}


def one_push_worker(harness, sim, jobs_wanted: int = 1):
    ids = sim.add_jobs("PUSH_Q", jobs_wanted, jobPars="sleep 30")
    instance = harness.instance(PUSH)
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submitted = submission.submit(instance, queues).queues[0].submitted
    return instance, queues, ids, submitted


def answer(instance, queues, **seen):
    instance.backend(queues[0]).check = lambda refs: [Observation(r.worker_id, **seen) for r in refs]


def test_transient_failure_before_the_job_started_gives_the_job_back_and_panda_is_asked_first(harness, sim):
    instance, queues, (panda_id,), (first,) = one_push_worker(harness, sim)
    answer(instance, queues, status="failed", native_status="FAILED", diag="Job submission to LRMS failed",
           started=False)
    assert monitoring.poll(instance, queues).queues[0].resubmitted == 1
    (job,) = rows(instance, jobs)
    assert (job.status, job.sub_status, job.submit_attempts) == ("starting", "retry", 1)
    assert instance.tally[("harvester_cli_jobs_resubmitted_total",
                           (("code", "1201"), ("computing_element", "localhost"), ("queue", "PUSH_Q")))] == 1
    run = submission.submit(instance, queues).queues[0]
    assert (run.retried, run.abandoned, len(run.submitted)) == (1, 0, 1)
    assert [u["job_status"] for u in sim.jobs[panda_id].updates] == ["starting"]   # asked with its heartbeat
    assert rows(instance, jobs)[0].sub_status == "submitted"


@pytest.mark.parametrize("seen, why", [
    ({"started": None}, "the batch system cannot tell whether it started"),
    ({"started": False, "exit_code": 2}, "an exit code: something ran"),
    ({"started": False, "diag": "LRMS error: (3) Job finished with wrong exit code - 3 != 0"}, "not transient"),
])
def test_a_job_that_may_have_started_or_failed_for_good_is_reported_failed(harness, sim, seen, why):
    instance, queues, (panda_id,), _ = one_push_worker(harness, sim)
    answer(instance, queues, **{"status": "failed", "native_status": "FAILED",
                                "diag": "Job submission to LRMS failed", **seen})
    assert monitoring.poll(instance, queues).queues[0].resubmitted == 0, why
    (job,) = rows(instance, jobs)
    assert job.status == "failed" and job.sub_status == "reporting"


def test_pilot_outputs_prove_the_job_started_whatever_the_ce_says(harness, sim):
    instance, queues, _, _ = one_push_worker(harness, sim)
    (w,) = rows(instance, workers)   # the local backend brings outputs from the worker's work directory
    backend = instance.backend(queues[0])
    (backend.work_dir(w.worker_id) / "heartbeat.json").write_text('{"state": "failed", "pilotErrorCode": 1}')
    answer(instance, queues, status="failed", native_status="FAILED", diag="Job submission to LRMS failed",
           started=False)
    assert monitoring.poll(instance, queues).queues[0].resubmitted == 0
    assert rows(instance, jobs)[0].status == "failed"


def test_a_transient_kill_before_the_start_gives_the_job_back_after_sweep(harness, sim):
    instance, queues, (panda_id,), (first,) = one_push_worker(harness, sim)
    answer(instance, queues, status="submitted", native_status="IDLE", started=False,
           diag="CE unreachable since now", kill_reason="CE unreachable for more than 1 s")
    assert monitoring.poll(instance, queues).queues[0].kill_requested == 1
    (w,) = rows(instance, workers)
    assert w.kill_reason == model.RESUBMIT_MARK + "CE unreachable for more than 1 s"
    assert sweeping.sweep(instance, queues).queues[0].killed == 1
    (job,) = rows(instance, jobs)
    assert job.sub_status == "retry" and job.submit_attempts == 1
    propagation.propagate(instance, queues)
    assert "failed" not in [u["job_status"] for u in sim.jobs[panda_id].updates]


def test_panda_is_asked_before_each_retry_and_a_job_it_took_back_stays_over(harness, sim):
    instance, queues, (killed, reassigned, gone, kept), _ = one_push_worker(harness, sim, 4)
    answer(instance, queues, status="failed", native_status="FAILED", diag="Job was lost", started=False)
    assert monitoring.poll(instance, queues).queues[0].resubmitted == 4
    sim.kill_jobs(None, [killed], None, False, [])
    with sim.lock:
        sim.jobs[reassigned].attempt_nr = 2
        del sim.jobs[gone]
    check = submission.confirm_retries(instance, queues[0])
    assert (check.confirmed, check.abandoned) == (1, 3)
    states = {j.panda_id: (j.status, j.sub_status, j.diag) for j in rows(instance, jobs)}
    assert states[kept][:2] == ("starting", "fetched")
    assert "tobekilled" in states[killed][2] and "reassigned" in states[reassigned][2]
    assert "does not have the job" in states[gone][2]
    assert all(states[p][:2] == ("failed", "done") for p in (killed, reassigned, gone))


def test_panda_unreachable_leaves_the_jobs_waiting_and_says_so(harness, sim):
    instance, queues, (panda_id,), _ = one_push_worker(harness, sim)
    answer(instance, queues, status="failed", native_status="FAILED", diag="Job was lost", started=False)
    monitoring.poll(instance, queues)
    sim.fail_next = [503] * 50
    run = submission.submit(instance, queues)
    sim.fail_next = []
    assert run.partial and "PanDA could not be asked" in run.queues[0].retry_problem
    assert rows(instance, jobs)[0].sub_status == "retry" and not run.queues[0].submitted


def test_the_bound_is_max_submit_attempts(harness, sim):
    instance, queues, (panda_id,), _ = one_push_worker(harness, sim)
    for attempt in (1, 2, 3):
        answer(instance, queues, status="failed", native_status="FAILED", diag="Job was lost", started=False)
        monitoring.poll(instance, queues)
        if attempt < 3:
            assert len(submission.submit(instance, queues).queues[0].submitted) == 1
    (job,) = rows(instance, jobs)
    assert job.status == "failed" and "3 attempts failed" in job.diag
    propagation.propagate(instance, queues)
    assert sim.job_status(panda_id) == "failed"


def test_a_job_waiting_again_keeps_its_starting_heartbeat(harness, sim):
    instance, queues, (panda_id,), _ = one_push_worker(harness, sim)
    answer(instance, queues, status="failed", native_status="FAILED", diag="Job was lost", started=False)
    monitoring.poll(instance, queues)
    with instance.store.transaction() as tx:   # last heard two minutes ago
        tx.execute(jobs.update().values(modified=model.now() - 120))
    assert propagation.propagate(instance, queues).job_heartbeats == 1
    assert [u["job_status"] for u in sim.jobs[panda_id].updates][-1] == "starting"
    assert propagation.propagate(instance, queues).job_heartbeats == 0   # heard now


def test_a_permanent_submission_refusal_fails_the_job_at_once(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1)
    instance = harness.instance(PUSH)
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    from harvester_cli.backends.base import SubmitResult

    instance.backend(queues[0]).submit = lambda specs: [SubmitResult(
        s.worker_id, error="sbatch refused the worker: sbatch: error: Invalid partition name specified") for s in specs]
    submission.submit(instance, queues)
    (job,) = rows(instance, jobs)
    assert job.status == "failed" and "not retried" in job.diag and job.submit_attempts == 1


def test_status_and_the_metrics_count_the_errors_per_ce(harness, sim):
    """What an operator reads: `status` (text and JSON) has a row per queue, CE and code, and the metrics file
    the counters of errors seen and jobs given back, labelled the same way."""
    instance, queues, _, _ = one_push_worker(harness, sim, 2)
    answer(instance, queues, status="failed", native_status="FAILED", diag="Job submission to LRMS failed",
           started=False)
    assert monitoring.poll(instance, queues).queues[0].resubmitted == 2
    textfile = harness.tmp_path / "metrics" / "harvester.prom"
    textfile.parent.mkdir()
    harness.write_config(PUSH, metrics={"textfile": str(textfile)})
    monitor.after_command(instance, [monitor.Run("poll", model.now(), model.now(), 0)])
    text = monitor.metrics_text(instance).decode()
    assert re.search(r'^harvester_cli_ce_errors_total\{code="1201",computing_element="localhost",.*queue="PUSH_Q",'
                     r'transient="true"\} 2\.0$', text, re.M), text
    assert re.search(r'^harvester_cli_jobs_resubmitted_total\{code="1201",computing_element="localhost",.*'
                     r'queue="PUSH_Q"\} 2\.0$', text, re.M), text
    (row,) = harness.cli_json("status")["ce_errors"]
    assert row == {"queue": "PUSH_Q", "computing_element": "localhost", "code": 1201, "count": 2, "transient": True,
                   "meaning": "the CE could not hand the job to its batch system"}
    shown = harness.cli("status", check=True).stdout
    assert "errors per CE" in shown and re.search(r"^PUSH_Q +localhost +1201 +the CE could not hand the job to its "
                                                  r"batch system +yes +2$", shown, re.M), shown


# -- log names -------------------------------------------------------------------------------------

def test_a_site_template_names_the_files_and_the_submit_description_follows_stdout():
    submit = build.description("executable = x\noutput = $(logDir)/job.out\nerror = $(logDir)/job.err\n"
                               "log = /var/log/condor/all.log\n", harvester_id="h", queue_name="Q", ce="c", extra={})
    assert build.log_names(submit) == build.LogNames("job.out", "job.err", None, "job.jdl")
    assert updates.monitor_link("http://h/logs/1/job.out", ".jdl") == "http://h/logs/1/job.jdl"
    assert updates.monitor_link("http://h/logs/1/stdout.txt", ".jdl") is None


def test_serve_logs_answers_old_names_in_new_directories_and_new_names_in_old_ones(tmp_path):
    old = tmp_path / "workers" / "2026-01-01" / "Q" / "1"
    new = tmp_path / "workers" / "2026-01-01" / "Q" / "2"
    for directory, names in ((old, ("pilot.out", "pilot.err", "batch.log", "submit.sub")),
                             (new, ("pilot.out", "pilot.err", "pilot.log", "pilot.jdl"))):
        directory.mkdir(parents=True)
        for name in names:
            (directory / name).write_text(f"{directory.name}/{name}")
    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "submit.log").write_text("private")
    with LogServer(tmp_path, "127.0.0.1", 0, "/logs") as server:
        port = server.sock.getsockname()[1]

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/logs/{path}", timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""

        base = "workers/2026-01-01/Q"
        assert get(f"{base}/1/pilot.log") == (200, "1/batch.log")
        assert get(f"{base}/1/pilot.jdl") == (200, "1/submit.sub")
        assert get(f"{base}/2/batch.log") == (200, "2/pilot.log")
        assert get(f"{base}/2/submit.sbatch") == (200, "2/pilot.jdl")
        assert get(f"{base}/2/other.log")[0] == 404   # only the pilot stems have other names
        assert get("commands/submit.log")[0] == 404
