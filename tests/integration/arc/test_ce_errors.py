"""A-REX's own errors against the real CE (tests/support/arc_ce.py): failures provoked for real and read as
panda.ce_errors says, and a push job whose first workers failed for transient CE reasons before it started
(the CE refused the proxy, then could not hand the job to its batch system) given a new worker each time
after PanDA said it is still ours, and run once, its four monitor URLs answering."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harvester_cli import model
from harvester_cli.panda import ce_errors
from harvester_cli.panda.sim import certs
from harvester_cli.state.schema import jobs, workers
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps.monitor import summary
from tests.support.arc_ce import arc_queue
from tests.support.harness import cycle_until, rows, wait_until
from tests.support.monitor_links import answers, monitor_urls

pytestmark = [pytest.mark.arc, pytest.mark.ceerrors]


def code_of(w) -> int | None:
    entry = ce_errors.match(w.diag, "arc")
    return entry.code if entry else None


def unmapped_proxy(pki, path: Path) -> Path:
    """A proxy of a user the test CA signed but the CE does not map: A-REX answers 403."""
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key((pki.directory / "cakey.pem").read_bytes(), None)
    user, key = certs.make_user_cert(ca, ca_key, "a user the CE does not map")
    proxy, proxy_key = certs.make_proxy(user, key)
    path.write_bytes(proxy.public_bytes(serialization.Encoding.PEM) + certs._pem_key(proxy_key)
                     + user.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o600)
    return path


def test_arc_failures_provoked_on_the_ce_read_as_the_table_says(harness, sim, arc_ce, pilot_zip):
    """A queue the CE refuses (permanent: the push job fails at once, not retried), and a runtime environment
    the CE does not have (FAILED before its batch system: transient, but a pull pilot has no job to give
    back). The next test has a pilot that exits 3 (an LRMS error: not transient)."""
    (refused_job,) = sim.add_jobs("ARC_NOQUEUE", 1)
    instance = harness.instance({
        "ARC_NOQUEUE": arc_queue(arc_ce, pilot_zip, "push", queue="nosuch"),
        "ARC_RTE": {**arc_queue(arc_ce, pilot_zip, "pull", runtime_environments=["NO/SUCH"]), "pilot": "true"},
    })
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues[:1])
    submission.submit(instance, queues[1:], count=1)
    (job,) = rows(instance, jobs)
    assert job.status == "failed" and "not retried" in job.diag and job.submit_attempts == 1
    wait_until(lambda: monitoring.poll(instance, queues) and all(
        w.status in model.WORKER_FINAL for w in rows(instance, workers)), timeout=90, interval=1.0,
        what="every worker ended")
    by_queue = {w.queue: w for w in rows(instance, workers)}
    assert {q: (w.status, code_of(w)) for q, w in by_queue.items()} == {
        "ARC_NOQUEUE": ("missed", 1217), "ARC_RTE": ("failed", 1201)}
    propagation.propagate(instance, queues)
    assert sim.job_status(refused_job) == "failed"
    assert "Requested queue nosuch is not allowed" in sim.jobs[refused_job].updates[-1]["pilot_error_diag"]
    reported = sim.workers(harness.harvester_id)
    assert {w.queue: reported[w.worker_id]["errorCode"] for w in by_queue.values()} == {
        "ARC_NOQUEUE": 1217, "ARC_RTE": 1201}
    per_ce = {(e["queue"], e["computing_element"]): (e["code"], e["transient"], e["count"])
              for e in summary(instance, [q.name for q in queues], 3600)["ce_errors"]}
    assert per_ce == {("ARC_NOQUEUE", arc_ce.url): (1217, False, 1), ("ARC_RTE", arc_ce.url): (1201, True, 1)}


def test_push_job_after_a_refused_proxy_and_a_failed_lrms_submission_runs_once(harness, sim, arc_ce, pilot_zip,
                                                                               pki):
    (panda_id,) = sim.add_jobs("ARC_PUSH", 1, jobPars="echo the payload ran")
    # 1. The CE refuses the instance's proxy (its DN is not mapped): nothing delegated, the worker missed.
    other = unmapped_proxy(pki, harness.tmp_path / "unmapped.pem")
    refusing = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push")}, panda={"proxy": str(other)})
    queues = list(refusing.config.queues.values())
    fetching.fetch_jobs(refusing, queues)
    submission.submit(refusing, queues)
    (missed,) = rows(refusing, workers)
    assert missed.status == "missed" and code_of(missed) == 1218 and "HTTP 403" in missed.diag
    (job,) = rows(refusing, jobs)
    assert (job.sub_status, job.submit_attempts) == (model.SUB_RETRY, 1)

    # 2. The proxy is renewed; the CE takes the job but cannot hand it to its batch system (a runtime
    #    environment it does not have): FAILED before the LRMS, no pilot output, so the job is given back again.
    lrms = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push", runtime_environments=["NO/SUCH"])})
    cycle_until(lrms, lambda: rows(lrms, jobs)[0].submit_attempts == 2, timeout=90, what="job given back again")
    failed = next(w for w in rows(lrms, workers) if w.status == "failed")
    assert code_of(failed) == 1201 and failed.native_exit_code is None
    assert rows(lrms, jobs)[0].sub_status == model.SUB_RETRY
    assert sim.job_status(panda_id) not in ("failed", "finished")

    # 3. The site installs the environment (here: the queue stops asking for it): the job runs, once. Beside
    #    it, a pull pilot that exits 3 (an LRMS error after the pilot ran: not transient).
    fixed = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push"),
                              "ARC_EXIT": {**arc_queue(arc_ce, pilot_zip, "pull"), "pilot": "exit 3",
                                           "empty_pilot_floor": 0}})
    submission.submit(fixed, [fixed.config.queues["ARC_EXIT"]], count=1)
    cycle_until(fixed, lambda: sim.job_status(panda_id) == "finished" and all(
        w.status in model.WORKER_FINAL for w in rows(fixed, workers)), timeout=120, what="job finished")
    exited = next(w for w in rows(fixed, workers) if w.queue == "ARC_EXIT")
    assert exited.status == "failed" and code_of(exited) == 1213 and exited.native_exit_code == 3
    ended = [w for w in rows(fixed, workers) if w.queue == "ARC_PUSH"]
    assert [w.status for w in ended] == ["missed", "failed", "finished"]
    states = [u["job_status"] for u in sim.jobs[panda_id].updates]
    assert "failed" not in states and states.count("finished") == 1, states
    assert sum("the payload ran" in (Path(w.log_dir) / "pilot.out").read_text() for w in ended
               if (Path(w.log_dir) / "pilot.out").exists()) == 1
    per_ce = {e["code"]: e["transient"] for e in summary(fixed, ["ARC_PUSH", "ARC_EXIT"], 3600)["ce_errors"]
              if e["computing_element"] == arc_ce.url}
    assert per_ce == {1218: True, 1201: True, 1213: False}
    # PanDA's monitor: the pilot's four files, and the name A-REX's log had before (old URLs) as well.
    urls = list(monitor_urls(sim.jobs[panda_id].pilot_id).values())
    urls.append(urls[0].replace("/pilot.out", "/arc-errors.log"))
    assert set(answers(harness.tmp_path / "logs", "http://127.0.0.1:8080/logs", urls).values()) == {200}
