"""HTCondor's own errors against the real pool (tests/support/condor_pool.py): holds provoked for real and read
as panda.ce_errors says, a push job whose CE cannot be reached given a new worker after PanDA said it is still
ours (and run once), a grid job stuck in Removed forced out, and a spooled submission whose outputs and logs
come back from a schedd that shares no file system with the harvester, named so that PanDA's monitor finds
all four of a pilot's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester_cli import model
from harvester_cli.panda import ce_errors, diagnostics
from harvester_cli.state.schema import jobs, workers
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps import sweep as sweeping
from harvester_cli.steps.monitor import summary
from tests.support.condor_pool import CHROOT, SCHEDD, pool_state
from tests.support.harness import cycle_until as _cycle_until
from tests.support.harness import rows, wait_until
from tests.support.monitor_links import answers, monitor_urls

pytestmark = [pytest.mark.htcondor, pytest.mark.ceerrors]

DOWN_CE = "127.0.0.1:9"   # nothing listens on the discard port


def worker_rows(instance):
    return rows(instance, workers)


def cycle_until(instance, predicate, timeout=60.0, what="cycle goal"):
    def context():
        state = [(w.worker_id, w.status, w.batch_id, w.native_status, w.diag) for w in worker_rows(instance)]
        return f"workers: {state}\npool: {pool_state()}"

    return _cycle_until(instance, predicate, timeout, what, context=context)


def poll_until(instance, predicate, timeout=60.0, what="poll goal"):
    queues = list(instance.config.queues.values())
    return wait_until(lambda: monitoring.poll(instance, queues) and predicate(), timeout, 0.5, what)


def in_queue(htc, worker_id: int) -> list:
    return [ad for ad in htc.jobs(projection=["JobStatus", "harvesterWorkerID"]) if ad["harvesterWorkerID"] == worker_id]


def test_holds_provoked_in_the_pool_read_as_the_table_says(htc, sim):
    """Four holds HTCondor really gives (an input file that does not exist, periodic_hold, hold = true, an
    output file the job did not write): the diag keeps HoldReasonCode and subcode, the table names each, the
    worker ends with that code at PanDA, and `status` counts them per CE."""
    zip_file = str(htc.pool.package_zip)
    queues = {
        "HTC_IN": htc.queue(pilot="true", held_timeout=0, input_files=[zip_file, "/nonexistent/pilot.tar.gz"]),
        "HTC_POLICY": htc.queue(pilot="true", held_timeout=0, extra_attributes={"periodic_hold": "true"}),
        "HTC_ONHOLD": htc.queue(pilot="true", held_timeout=0, extra_attributes={"hold": "true"}),
        "HTC_OUT": htc.queue(pilot="true", held_timeout=0,
                             extra_attributes={"transfer_output_files": "harvester-outputs,not-written"}),
    }
    expected = {"HTC_IN": 1160, "HTC_POLICY": 1103, "HTC_ONHOLD": 1115, "HTC_OUT": 1112}
    instance = htc.instance(queues)
    queue_list = list(instance.config.queues.values())
    submission.submit(instance, queue_list, count=1)
    poll_until(instance, lambda: all(w.kill_reason for w in worker_rows(instance)), timeout=90,
               what="every worker held, and its removal asked for")
    for w in worker_rows(instance):
        entry = ce_errors.match(w.diag, "htcondor")
        assert entry is not None and entry.code == expected[w.queue], (w.queue, w.diag)
        assert not entry.transient and w.native_status == "HELD" and w.diag.startswith("held: ")
    codes = {dict(labels)["code"] for (family, labels), n in instance.tally.items()
             if family == "harvester_cli_ce_errors_total"}
    assert codes == {str(c) for c in expected.values()}   # counted once each, when first seen
    assert sum(q.killed for q in sweeping.sweep(instance, queue_list).queues) == 4
    assert all(w.status == model.CANCELLED for w in worker_rows(instance))
    for w in worker_rows(instance):   # killed for the hold: still the hold's code
        assert diagnostics.classify(w.status, w.diag, None, "htcondor")[0] == expected[w.queue], w.diag
    propagation.propagate(instance, queue_list)
    reported = sim.workers(htc.harness.harvester_id)
    assert {w.queue: reported[w.worker_id]["errorCode"] for w in worker_rows(instance)} == expected
    per_ce = {(e["queue"], e["computing_element"], e["code"]): e for e in summary(instance, list(queues), 3600)["ce_errors"]}
    assert set(per_ce) == {(q, SCHEDD, code) for q, code in expected.items()}
    assert all(e["count"] == 1 and e["transient"] is False for e in per_ce.values())


def test_push_job_of_an_unreachable_ce_gets_a_new_worker_and_runs_once(htc, sim):
    """A grid worker whose CE cannot be reached (never handed to it: no GridJobId) is removed and its job given
    back, not failed; PanDA is asked before the new worker; the removed grid job, stuck in Removed (its CE
    never confirms), is forced out by a later poll."""
    (panda_id,) = sim.add_jobs("HTC_RETRY", 1, jobPars="echo the payload ran")
    instance = htc.instance({"HTC_RETRY": htc.queue("push", ces=[{"endpoint": DOWN_CE, "name": SCHEDD}],
                                                    unavailable_timeout=1, removed_timeout=1)})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    (first,) = submission.submit(instance, queues).queues[0].submitted
    poll_until(instance, lambda: worker_rows(instance)[0].kill_reason, timeout=90, what="removal of the worker asked")
    (w,) = worker_rows(instance)
    assert w.kill_reason.startswith(model.RESUBMIT_MARK) and "CE unreachable for more than 1 s" in w.kill_reason
    assert sweeping.sweep(instance, queues).queues[0].killed == 1
    (job,) = rows(instance, jobs)
    assert job.sub_status == model.SUB_RETRY and job.submit_attempts == 1
    assert [ad["JobStatus"] for ad in in_queue(htc, first)] == [3]   # its CE never confirms the removal
    assert sim.job_status(panda_id) == "sent"

    # The site's CE stays down: the operator sends the queue's jobs to the pool itself.
    fixed = htc.instance({"HTC_RETRY": htc.queue("push", removed_timeout=1)})
    # The new worker's polls force the stuck one out of Removed once it has been there removed_timeout.
    cycle_until(fixed, lambda: sim.job_status(panda_id) == "finished" and not in_queue(htc, first), timeout=90,
                what="job finished on a new worker, the stuck removed one forced out")
    states = [u["job_status"] for u in sim.jobs[panda_id].updates]
    assert "failed" not in states and states.count("finished") == 1, states
    assert states[0] == "starting"   # the heartbeat with PanDA's answer before the retry
    ended = {x.worker_id: x for x in worker_rows(fixed)}
    assert [ended[first].status, ended[max(ended)].status] == [model.CANCELLED, model.FINISHED] and len(ended) == 2
    assert not (Path(ended[first].log_dir) / "heartbeat.json").exists()
    assert "the payload ran" in (Path(ended[max(ended)].log_dir) / "pilot.out").read_text()
    (row,) = [e for e in summary(fixed, ["HTC_RETRY"], 3600)["ce_errors"] if e["computing_element"] == DOWN_CE]
    assert row["code"] == 1170 and row["transient"] is True and row["count"] == 1


def test_spooled_schedd_without_a_shared_file_system_sends_the_logs_back(htc, sim):
    """The log and work directories are on this host only (the pool's chroot cannot see them): input files go
    with the submission, outputs and logs come back into the served log tree when the job ends, the schedd
    forgets the job, and the monitor's four URLs answer."""
    (panda_id,) = sim.add_jobs("HTC_SPOOL", 1, jobPars="echo payload through the spool")
    private = htc.harness.tmp_path
    assert not (CHROOT / str(private).lstrip("/")).exists()   # the pool (in its chroot) cannot see it
    instance = htc.instance({"HTC_SPOOL": htc.queue("push", spool=True)}, log_dir=str(private / "logs"),
                            work_dir=str(private / "work"))
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", timeout=90, what="spooled job finished")
    (w,) = worker_rows(instance)
    log_dir = Path(w.log_dir)
    assert {"pilot.out", "pilot.err", "pilot.log", "pilot.jdl", "heartbeat.json"} <= {p.name for p in log_dir.iterdir()}
    assert "payload through the spool" in (log_dir / "pilot.out").read_text()
    assert "Job terminated" in (log_dir / "pilot.log").read_text()
    assert not in_queue(htc, w.worker_id)   # it left the queue once its outputs were back
    (ad,) = [a for a in htc.jobs(history=True, projection=["harvesterWorkerID", "harvesterRetrieved"])
             if a["harvesterWorkerID"] == w.worker_id]
    assert ad["harvesterRetrieved"] is True
    urls = monitor_urls(sim.jobs[panda_id].pilot_id)
    assert set(answers(private / "logs", "http://127.0.0.1:8080/logs", list(urls.values())).values()) == {200}
