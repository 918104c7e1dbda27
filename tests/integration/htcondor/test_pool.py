"""The HTCondor backend against real HTCondor daemons: minicondor in a Debian chroot, a loopback pool whose
schedd also stands in for an HTCondor-CE (grid universe, condor-C). The pool, its fixtures and its pilot:
tests/support/condor_pool.py.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from harvester_cli.state.schema import workers
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps import sweep as sweeping
from tests.support.condor_pool import COLLECTOR, SCHEDD, pool_state
from tests.support.harness import cycle_until as _cycle_until
from tests.support.harness import rows, wait_until

pytestmark = pytest.mark.htcondor

# A CE that is down: nothing listens on the discard port.
DOWN_CE = "127.0.0.1:9"


def cycle_until(instance, predicate, timeout=60.0, what="cycle goal"):
    """The harness's cycle_until, with the workers' and the pool's state in the failure message."""
    def context():
        state = [(w.worker_id, w.queue, w.status, w.batch_id, w.native_status, w.diag) for w in worker_rows(instance)]
        return f"workers: {state}\npool: {pool_state()}"

    return _cycle_until(instance, predicate, timeout, what, context=context)


def queues_of(instance):
    return list(instance.config.queues.values())


def poll_until(instance, predicate, timeout=60.0, what="poll goal"):
    def step():
        monitoring.poll(instance, queues_of(instance))
        return predicate()

    return wait_until(step, timeout, 0.5, what)


def worker_rows(instance):
    return rows(instance, workers)


# -- pull, push, OneBox twin --------------------------------------------------------------------

def test_pull_pilots_run_in_the_pool_and_finish_jobs_in_the_simulator(htc, sim):
    normal = sim.add_jobs("HTC_PULL", 2, jobPars="echo hello from the pool")
    background = sim.add_jobs("HTC_PULL", 1, jobPars="echo background", background=True)
    instance = htc.instance({
        "HTC_PULL": htc.queue(queue={"empty_pilot_floor": 0}),
        "HTC_PULL_BG": htc.queue(extra_attributes={"+HarvesterBackground": "True", "priority": "-10"},
                                 queue={"empty_pilot_floor": 0, "panda_queue": "HTC_PULL", "background": True}),
    })
    cycle_until(instance, lambda: all(sim.job_status(i) == "finished" for i in normal + background)
                and all(w.status == "finished" for w in worker_rows(instance)), timeout=120,
                what="pull jobs finished by pilots in the pool")
    local = worker_rows(instance)
    # Both queues see PanDA's 3 activated jobs of HTC_PULL, so there are some empty pilots too.
    assert {w.queue for w in local} == {"HTC_PULL", "HTC_PULL_BG"}
    for w in local:
        assert w.batch_id.count(".") == 1 and w.submission_host == SCHEDD and w.computing_element == SCHEDD
        assert w.stdout_url.startswith("http://127.0.0.1:8080/logs/") and w.stdout_url.endswith("/pilot.out")
        assert (Path(w.log_dir) / "pilot.log").read_text().count("Job terminated") == 1
        assert f"workerID = {w.worker_id}" in (Path(w.log_dir) / "pilot.jdl").read_text()
    pilot_logs = [(Path(w.log_dir) / "pilot.out").read_text() for w in local]
    assert sum("finished; PanDA says" in text for text in pilot_logs) == 3
    reported = sim.workers(htc.harness.harvester_id)
    assert all(reported[w.worker_id]["status"] == "finished" for w in local)
    ads = {ad["harvesterWorkerID"]: ad for ad in htc.jobs(history=True)}
    twin = next(w for w in local if w.queue == "HTC_PULL_BG")
    assert ads[twin.worker_id].get("HarvesterBackground") is True
    assert ads[twin.worker_id].get("JobPrio") == -10
    assert all(ads[w.worker_id].get("HarvesterBackground") is None for w in local if w.queue == "HTC_PULL")
    assert {ad["harvesterQueue"] for ad in ads.values()} == {"HTC_PULL", "HTC_PULL_BG"}
    latency = sorted(ad["JobStartDate"] - ad["QDate"] for ad in ads.values())
    print(f"\nsubmit -> running (schedd's QDate -> JobStartDate) of {len(latency)} workers: "
          f"{latency[0]}..{latency[-1]} s")


def test_push_job_file_goes_with_the_job_and_the_heartbeat_comes_back(htc, sim):
    (panda_id,) = sim.add_jobs("HTC_PUSH", 1, jobPars="echo payload in the pool; exit 0")
    (failing,) = sim.add_jobs("HTC_PUSH", 1, jobPars="exit 3")
    instance = htc.instance({"HTC_PUSH": htc.queue("push", local=True)})   # the default: this host's schedd
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished" and sim.job_status(failing) == "failed",
                timeout=120, what="push jobs final")
    final = sim.jobs[panda_id].updates[-1]
    assert final["exe_error_code"] == 0 and final["pilot_id"].endswith("/pilot.out")
    assert len(sim.jobs[panda_id].pilot_logs) == 1   # the batch log URL, once
    assert sim.jobs[failing].updates[-1]["exe_error_code"] == 3
    for w in worker_rows(instance):
        assert w.submission_host == SCHEDD   # the local schedd's name (SCHEDD_NAME)
        log_dir = Path(w.log_dir)
        assert (log_dir / "heartbeat.json").is_file() and (log_dir / "jobReport.json").is_file()
        assert not (log_dir / "pandaJobData.out").exists()   # the job file stays private
    assert any("payload in the pool" in (Path(w.log_dir) / "pilot.out").read_text() for w in worker_rows(instance))


# -- held, kill, history ------------------------------------------------------------------------

def test_held_job_is_removed_after_the_timeout(htc, sim):
    instance = htc.instance({"HTC_HELD": htc.queue(
        pilot="sleep 30", held_timeout=4, input_files=[str(htc.pool.package_zip), "/nonexistent/pilot.tar.gz"],
        queue={"empty_pilot_floor": 1})})
    queues = queues_of(instance)
    submission.submit(instance, queues, count=1)
    poll_until(instance, lambda: (worker_rows(instance)[0].diag or "").startswith("held: "), timeout=60,
               what="worker held")
    (w,) = worker_rows(instance)
    assert w.status == "submitted" or w.status == "idle"
    assert "/nonexistent/pilot.tar.gz" in w.diag and w.native_status == "HELD"
    poll_until(instance, lambda: worker_rows(instance)[0].kill_reason, timeout=30, what="kill requested")
    assert worker_rows(instance)[0].kill_reason.startswith("held longer than 4 s")
    result = sweeping.sweep(instance, queues)
    assert result.queues[0].killed == 1
    (w,) = worker_rows(instance)
    assert w.status == "cancelled" and w.diag.startswith("killed: held longer than 4 s")
    ad = wait_until(lambda: next(iter(htc.jobs(history=True, projection=["JobStatus", "RemoveReason"])), None),
                    timeout=30, what="removed job in the history")
    assert ad["JobStatus"] == 3 and "harvester-cli" in ad["RemoveReason"]


def test_sweep_kills_running_workers_with_the_cap(htc, sim):
    instance = htc.instance({"HTC_KILL": htc.queue(pilot="sleep 300")}, sweep={"max_kills_per_run": 1})
    queues = queues_of(instance)
    submission.submit(instance, queues, count=2)
    poll_until(instance, lambda: all(w.status == "running" for w in worker_rows(instance)), timeout=60,
               what="workers running")
    with instance.store.transaction() as conn:
        conn.execute(workers.update().values(kill_reason="operator request"))
    refused = sweeping.sweep(instance, queues)
    assert "exceed the cap of 1" in refused.queues[0].refused
    assert all(w.status == "running" for w in worker_rows(instance))
    forced = sweeping.sweep(instance, queues, force=True)
    assert forced.queues[0].killed == 2 and not forced.queues[0].kill_failed
    assert all(w.status == "cancelled" for w in worker_rows(instance))
    removed = wait_until(lambda: [ad for ad in htc.jobs(history=True, projection=["JobStatus", "RemoveReason"])
                                  if ad["JobStatus"] == 3] if len(htc.jobs(history=True)) == 2 else None,
                         timeout=30, what="both jobs removed")
    assert all("killed by harvester-cli sweep" in ad["RemoveReason"] for ad in removed)
    monitoring.poll(instance, queues)   # a final worker stays final
    assert all(w.status == "cancelled" for w in worker_rows(instance))
    # killing again (e.g. a retried sweep): the schedd no longer knows them, which counts as killed
    backend = instance.backend(queues[0])
    from harvester_cli.instance import worker_ref

    assert all(r.ok for r in backend.kill([worker_ref(w) for w in worker_rows(instance)], "again"))


def test_crash_after_submit_is_adopted_from_the_history_after_the_job_left_the_queue(htc, sim):
    queues = {"HTC_HIST": htc.queue(pilot="echo short pilot", queue={"empty_pilot_floor": 1})}
    htc.write_config(queues)
    crashed = htc.harness.cli("submit", env={"HARVESTER_CLI_CRASH_AT": "after_backend_submit"})
    assert crashed.returncode == 99, crashed.stderr
    instance = htc.instance(queues)
    (pending,) = worker_rows(instance)
    assert pending.status == "pending" and pending.batch_id is None
    wait_until(lambda: htc.jobs(history=True) and not htc.jobs(), timeout=60, what="job done and out of the queue")
    again = htc.harness.cli_json("submit")
    assert again["queues"][0]["adopted"] == 1, again
    (w,) = [r for r in worker_rows(instance) if r.worker_id == pending.worker_id]
    assert w.status == "submitted" and w.batch_id and w.computing_element == SCHEDD
    monitoring.poll(instance, queues_of(instance))
    (w,) = [r for r in worker_rows(instance) if r.worker_id == pending.worker_id]
    assert w.status == "finished" and w.native_status == "COMPLETED" and w.end_time >= w.start_time
    assert "short pilot" in (Path(w.log_dir) / "pilot.out").read_text()


# -- grid universe: condor-C to the pool's own schedd as an HTCondor-CE ------------------------

def test_grid_condor_c_push_worker_through_a_ce(htc, sim):
    (panda_id,) = sim.add_jobs("HTC_GRID", 1, jobPars="echo payload via condor-C")
    instance = htc.instance({"HTC_GRID": htc.queue("push", ces=[{"endpoint": COLLECTOR, "name": SCHEDD}])})
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", timeout=150,
                what="push job finished through condor-C")
    (w,) = worker_rows(instance)
    assert w.computing_element == COLLECTOR and w.status == "finished"
    assert (Path(w.log_dir) / "heartbeat.json").is_file()
    ad = next(a for a in htc.jobs() + htc.jobs(history=True) if a["harvesterWorkerID"] == w.worker_id)
    assert ad["JobUniverse"] == 9 and ad["GridResource"] == f"condor {SCHEDD} {COLLECTOR}"


def test_fanout_over_two_ces_benches_the_one_that_is_down(htc, sim):
    ces = [{"endpoint": COLLECTOR, "name": SCHEDD}, {"endpoint": DOWN_CE, "name": SCHEDD}]
    instance = htc.instance({"HTC_FAN": htc.queue(pilot="echo pilot", ces=ces, unavailable_timeout=3,
                                                  ce_backoff_seconds=600,
                                                  queue={"n_queue_limit_worker": 10, "max_workers": 20})})
    queues = queues_of(instance)
    first = submission.submit(instance, queues, count=4).queues[0].submitted
    by_ce = {w.worker_id: w.computing_element for w in worker_rows(instance)}
    assert Counter(by_ce.values()) == {COLLECTOR: 2, DOWN_CE: 2}   # even split: no history yet
    down = [i for i in first if by_ce[i] == DOWN_CE]
    poll_until(instance, lambda: all(w.kill_reason for w in worker_rows(instance) if w.worker_id in down),
               timeout=90, what="workers of the down CE marked for removal")
    w = next(w for w in worker_rows(instance) if w.worker_id == down[0])
    assert w.diag.startswith("CE unreachable since") and "CE unreachable for more than 3 s" in w.kill_reason
    assert sweeping.sweep(instance, queues).queues[0].killed == 2
    second = submission.submit(instance, queues, count=4).queues[0].submitted
    assert len(second) == 4
    assert {w.computing_element for w in worker_rows(instance) if w.worker_id in second} == {COLLECTOR}
    health = instance.backend(queues[0]).load_health()
    assert DOWN_CE in health and COLLECTOR not in health
    # The removed jobs of the down CE linger in the queue (their CE never confirms): cleaning forces them out.
    lingering = [ad for ad in htc.jobs(projection=["JobStatus", "harvesterWorkerID"]) if ad["harvesterWorkerID"] in down]
    assert [ad["JobStatus"] for ad in lingering] == [3, 3]
    propagation.propagate(instance, queues)
    assert sweeping.sweep(instance, queues, retention=0).queues[0].cleaned == 2
    wait_until(lambda: not [ad for ad in htc.jobs() if ad["harvesterWorkerID"] in down], timeout=30,
               what="removed grid jobs forced out of the queue")


# -- bulk: rates against the real schedd (printed, not asserted) --------------------------------

def test_bulk_submit_poll_and_remove_many_workers(htc, sim):
    n = 300
    instance = htc.instance({"HTC_BULK": htc.queue(pilot="true", max_at_once=100, extra_attributes={"hold": "true"},
                                                   queue={"max_workers": n})})
    queues = queues_of(instance)
    started = time.monotonic()
    run = submission.submit(instance, queues, count=n, force=True)
    submit_seconds = time.monotonic() - started
    assert len(run.queues[0].submitted) == n, run.queues[0].failed[:3]
    assert len({w.batch_id.split(".")[0] for w in worker_rows(instance)}) == 3   # 100 per Schedd.submit call
    started = time.monotonic()
    polled = monitoring.poll(instance, queues).queues[0]
    poll_seconds = time.monotonic() - started
    assert polled.checked == n and polled.error is None
    assert all(w.diag.startswith("held: ") and w.native_status == "HELD" for w in worker_rows(instance))
    with instance.store.transaction() as conn:
        conn.execute(workers.update().values(kill_reason="bulk test"))
    started = time.monotonic()
    swept = sweeping.sweep(instance, queues, force=True).queues[0]
    kill_seconds = time.monotonic() - started
    assert swept.killed == n and not swept.kill_failed
    assert not [ad for ad in htc.jobs(projection=["JobStatus"]) if ad["JobStatus"] != 3]   # removed or gone
    print(f"\n{n} workers against the real schedd: submit {submit_seconds:.2f} s ({n / submit_seconds:.0f}/s, "
          f"files and store included), poll {poll_seconds:.2f} s ({n / poll_seconds:.0f}/s), "
          f"remove {kill_seconds:.2f} s ({n / kill_seconds:.0f}/s)")
