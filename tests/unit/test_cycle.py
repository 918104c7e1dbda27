"""The working cycle end to end: PanDA simulator over HTTPS, real local worker processes, SQLite state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harvester_cli.state.schema import job_workers, jobs, reports, workers
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps import sweep as sweeping
from tests.support.harness import cycle_until, hold_panda_counts, rows, wait_until

PULL = {"PULL_Q": {"mode": "pull", "empty_pilot_floor": 0}}
PUSH = {"PUSH_Q": {"mode": "push"}}


def test_pull_pilots_take_jobs_to_finished_and_workers_reach_panda(harness, sim, monkeypatch):
    ids = sim.add_jobs("PULL_Q", 2, jobPars="echo hello")
    hold_panda_counts(sim, monkeypatch)   # exactly one pilot per job, below
    instance = harness.instance(PULL)
    cycle_until(instance, lambda: all(sim.job_status(i) == "finished" for i in ids)
                and all(w.status == "finished" for w in rows(instance, workers)), what="pull jobs finished")
    reported = sim.workers(harness.harvester_id)
    local = rows(instance, workers)
    assert len(local) == 2   # two activated jobs: two pilots (floor 0: no empty pilot afterwards)
    assert {w.worker_id for w in local} <= set(reported)
    assert all(reported[w.worker_id]["status"] == "finished" for w in local)
    assert all(reported[w.worker_id]["stdOut"].startswith("http://127.0.0.1:8080/logs/workers/") for w in local)
    stats = sim.harvesters[harness.harvester_id]["stats"]["PULL_Q"]
    assert stats == {}   # nothing live any more


def test_push_job_final_update_comes_from_heartbeat_with_slim_job_report(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="echo payload; exit 0")
    instance = harness.instance(PUSH)
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", what="push job finished")
    statuses = [u["job_status"] for u in sim.jobs[panda_id].updates]
    # An unsent "starting" is replaced by a newer state in the outbox: PanDA gets the latest state, once.
    assert statuses[-1] == "finished" and statuses.count("finished") == 1
    final = sim.jobs[panda_id].updates[-1]
    report = json.loads(final["meta_data"])
    assert report["executor"][0]["logfileReport"] == {}   # slimmed
    assert final["exe_error_code"] == 0 and final["attempt_nr"] == 1
    assert final["pilot_id"].endswith("/pilot.out")   # PanDA's monitor links the job to its pilot's stdout
    assert [log.rsplit("/", 1)[-1] for log in sim.jobs[panda_id].pilot_logs] == ["pilot.log"]
    (job,) = rows(instance, jobs)
    assert job.sub_status == "done"
    log_dir = Path(rows(instance, workers)[0].log_dir)
    assert (log_dir / "heartbeat.json").exists() and "payload" in (log_dir / "pilot.out").read_text()


def test_push_payload_failure_is_reported_failed_with_exit_code(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="exit 3")
    instance = harness.instance(PUSH)
    cycle_until(instance, lambda: sim.job_status(panda_id) == "failed", what="push job failed")
    final = sim.jobs[panda_id].updates[-1]
    assert final["job_status"] == "failed" and final["exe_error_code"] == 3


def test_push_worker_without_heartbeat_gives_failed_update_with_backend_error(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1)
    instance = harness.instance({"PUSH_Q": {"mode": "push", "pilot": "/bin/sh -c 'exit 7'"}})
    cycle_until(instance, lambda: sim.job_status(panda_id) == "failed", what="failed update")
    final = sim.jobs[panda_id].updates[-1]
    assert final["pilot_error_code"] == 9000
    assert "no heartbeat.json" in final["pilot_error_diag"] and "exited with code 7" in final["pilot_error_diag"]


def test_invalid_job_from_panda_is_stored_and_reported_failed(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, coreCount="many")
    instance = harness.instance(PUSH)
    result = fetching.fetch_jobs(instance, list(instance.config.queues.values()))
    assert result.queues[0].invalid == 1
    propagation.propagate(instance, list(instance.config.queues.values()))
    assert sim.job_status(panda_id) == "failed"
    assert "coreCount='many'" in sim.jobs[panda_id].updates[-1]["pilot_error_diag"]
    assert not rows(instance, workers)   # never submitted


def test_panda_outage_keeps_every_update_and_the_next_run_sends_them(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1)
    instance = harness.instance(PUSH)
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues)
    wait_until(lambda: monitoring.poll(instance, queues) and rows(instance, workers)[0].status == "finished",
               what="worker finished")
    sim.fail_next = [503] * 50
    run = propagation.propagate(instance, queues)
    assert run.partial and run.jobs_sent == 0
    pending = rows(instance, reports)
    assert {r.kind for r in pending} == {"job", "worker"} and all(r.attempts >= 1 for r in pending)
    assert sim.job_status(panda_id) == "sent"   # PanDA saw nothing
    from harvester_cli.state.views import report_problems

    problems = report_problems(instance.store)
    assert {p["kind"] for p in problems} == {"job", "worker"} and "503" in problems[0]["last_error"]
    sim.fail_next = []
    run = propagation.propagate(instance, queues)
    assert not run.partial, run.errors
    assert not rows(instance, reports)
    assert sim.job_status(panda_id) == "finished"


def test_tobekilled_answer_kills_the_worker_and_fails_the_job(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="sleep 60")
    instance = harness.instance(PUSH)
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues)
    wait_until(lambda: monitoring.poll(instance, queues) and rows(instance, workers)[0].status == "running",
               what="worker running")
    sim.kill_jobs(None, [panda_id], None, False, [])
    run = propagation.propagate(instance, queues)
    assert run.kills_from_panda == 1
    result = sweeping.sweep(instance, queues)
    assert result.queues[0].killed == 1
    (worker,) = rows(instance, workers)
    assert worker.status == "cancelled"
    propagation.propagate(instance, queues)
    assert sim.jobs[panda_id].updates[-1]["job_status"] == "failed"
    assert "cancelled" == sim.jobs[panda_id].updates[-1]["job_sub_status"]
    wait_until(lambda: not Path(f"/proc/{worker.batch_id}").exists()
               or Path(f"/proc/{worker.batch_id}/stat").read_text().split()[2] == "Z", what="process gone")


def test_sweep_refuses_mass_kills_above_the_cap_unless_forced(harness, sim):
    sim.add_jobs("PUSH_Q", 3, jobPars="sleep 60")
    instance = harness.instance(PUSH, sweep={"max_kills_per_run": 2})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues)
    with instance.store.transaction() as conn:
        conn.execute(workers.update().values(kill_reason="operator"))
    refused = sweeping.sweep(instance, queues)
    assert refused.partial and "exceed the cap of 2" in refused.queues[0].refused
    assert all(w.status == "submitted" for w in rows(instance, workers))
    forced = sweeping.sweep(instance, queues, force=True)
    assert forced.queues[0].killed == 3
    assert all(w.status == "cancelled" for w in rows(instance, workers))


def test_sweep_forgets_final_workers_and_done_jobs_after_retention(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1)
    instance = harness.instance(PUSH)
    cycle_until(instance, lambda: rows(instance, jobs) and rows(instance, jobs)[0].sub_status == "done"
                and not rows(instance, reports), what="job done")
    work_dir = Path(harness.tmp_path / "work" / "PUSH_Q")
    assert any(work_dir.iterdir())
    queues = list(instance.config.queues.values())
    kept = sweeping.sweep(instance, queues)   # default retention: two days
    assert kept.queues[0].cleaned == 0 and rows(instance, workers)
    swept = sweeping.sweep(instance, queues, retention=0)
    assert swept.queues[0].cleaned == 1 and swept.queues[0].jobs_deleted == 1
    assert not rows(instance, workers) and not rows(instance, jobs) and not rows(instance, job_workers)
    assert not any(work_dir.iterdir())


def test_new_state_database_numbers_workers_above_pandas_highest_id(harness, sim):
    sim.update_workers(None, harness.harvester_id, [{"workerID": 41, "status": "finished"}])
    sim.add_jobs("PUSH_Q", 1)
    instance = harness.instance(PUSH)
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    run = submission.submit(instance, queues)
    assert run.queues[0].submitted == [42]


def test_pull_queue_without_activated_jobs_keeps_at_most_one_queued_pilot(harness, sim):
    instance = harness.instance({"PULL_Q": {"mode": "pull", "pilot": "sleep 30"}})
    queues = list(instance.config.queues.values())
    for _ in range(3):
        submission.submit(instance, queues)
    assert len(rows(instance, workers)) == 1


# -- crash safety (the process is killed at the worst moment) -----------------------------------

def test_crash_after_backend_submit_is_adopted_not_resubmitted(harness, sim):
    # The job runs until the test has counted its process groups (it ran `sleep 3`, and under load it could end
    # before they were counted: then none was found).
    go = harness.tmp_path / "go"
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars=f"while [ ! -e {go} ]; do sleep 0.1; done")
    harness.write_config(PUSH)
    harness.cli("fetch-jobs", check=True)
    crashed = harness.cli("submit", env={"HARVESTER_CLI_CRASH_AT": "after_backend_submit"})
    assert crashed.returncode == 99
    instance = harness.instance(PUSH)
    (pending,) = rows(instance, workers)
    assert pending.status == "pending"
    again = harness.cli_json("submit")
    assert again["queues"][0]["adopted"] == 1 and again["queues"][0]["submitted"] == []
    (worker,) = rows(instance, workers)
    assert worker.status == "submitted" and worker.batch_id
    tagged = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _tagged(p, harness.harvester_id, worker.worker_id)]
    assert len({_pgid(p) for p in tagged} - {None}) == 1   # one worker process group, not two
    go.touch()
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", what="adopted job finished")


def test_jobs_claimed_by_a_submit_that_died_go_to_the_next_submit(harness, sim):
    """A submit that claimed push jobs for its workers and ended before it recorded them (killed; or on a new
    PostgreSQL database the race for the first worker ids, which failed one of two submits) hid the jobs from
    the next submits' plans until the claim expired (lease_seconds, 600 s): the overlapping-runs fault test
    then waited past its 90 s. The next submit frees them at once."""
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="true")
    harness.write_config(PUSH)
    harness.cli("fetch-jobs", check=True)
    assert harness.cli("submit", env={"HARVESTER_CLI_CRASH_AT": "submit_after_job_claims"}).returncode == 99
    again = harness.cli_json("submit")
    assert len(again["queues"][0]["submitted"]) == 1, again["queues"][0]
    instance = harness.instance(PUSH)
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", what="the job finished")


def test_crash_before_backend_submit_marks_missed_and_resubmits_the_job(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1)
    harness.write_config(PUSH)
    harness.cli("fetch-jobs", check=True)
    assert harness.cli("submit", env={"HARVESTER_CLI_CRASH_AT": "before_backend_submit"}).returncode == 99
    again = harness.cli_json("submit")
    assert again["queues"][0]["missed"] == 1 and len(again["queues"][0]["submitted"]) == 1
    instance = harness.instance(PUSH)
    statuses = sorted(w.status for w in rows(instance, workers))
    assert statuses == ["missed", "submitted"]
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", what="job finished after repair")


def _tagged(proc: Path, harvester_id: str, worker_id: int) -> bool:
    try:
        environ = (proc / "environ").read_bytes()
    except OSError:
        return False
    return (f"HARVESTER_ID={harvester_id}\0".encode() in environ
            and f"HARVESTER_WORKER_ID={worker_id}\0".encode() in environ)


def _pgid(proc: Path) -> int | None:
    """The process group of a process, None when it ended meanwhile (a job's short-lived children)."""
    try:
        text = (proc / "stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[2])


def test_backend_can_ask_for_a_kill_and_for_a_resubmission(harness, sim):
    """The seam HTCondor (held too long) and ARC (transient errors) use: Observation.kill_reason/resubmit."""
    from harvester_cli.backends.base import Observation

    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="sleep 30")
    instance = harness.instance({"PUSH_Q": {"mode": "push", "max_submit_attempts": 2}})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    (first,) = submission.submit(instance, queues).queues[0].submitted
    backend = instance.backend(queues[0])
    backend.check = lambda refs: [Observation(r.worker_id, "running", "held", kill_reason="held for 2 h") for r in refs]
    assert monitoring.poll(instance, queues).queues[0].kill_requested == 1
    assert rows(instance, workers)[0].kill_reason == "held for 2 h"
    backend.check = lambda refs: [Observation(r.worker_id, "failed", "FAILED", diag="LRMS error: node died",
                                              resubmit=True, started=False) for r in refs]
    assert monitoring.poll(instance, queues).queues[0].resubmitted == 1
    (job,) = rows(instance, jobs)
    assert job.sub_status == "retry" and job.submit_attempts == 1 and "node died" in job.diag
    run = submission.submit(instance, queues).queues[0]   # PanDA still has it as ours: a new worker
    assert run.retried == 1 and run.abandoned == 0
    (second,) = run.submitted
    assert second != first and rows(instance, job_workers)[0].worker_id == second
    monitoring.poll(instance, queues)   # attempts used up: now the job is failed for good
    propagation.propagate(instance, queues)
    assert sim.job_status(panda_id) == "failed" and "2 attempts failed" in sim.jobs[panda_id].updates[-1]["pilot_error_diag"]


def test_onebox_twin_shares_the_panda_queue_and_asks_for_background_jobs(harness, sim):
    normal = sim.add_jobs("SITE_X", 1)
    background = sim.add_jobs("SITE_X", 1, background=True)
    instance = harness.instance({"X_PUSH": {"mode": "push", "panda_queue": "SITE_X"},
                                 "X_BACKGROUND": {"mode": "push", "panda_queue": "SITE_X", "background": True}})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    stored = {j.panda_id: j.queue for j in rows(instance, jobs)}
    assert stored == {normal[0]: "X_PUSH", background[0]: "X_BACKGROUND"}
    submission.submit(instance, queues)
    propagation.propagate(instance, queues)
    assert {w["computingSite"] for w in sim.workers(harness.harvester_id).values()} == {"SITE_X"}
    stats = sim.harvesters[harness.harvester_id]["stats"]
    assert list(stats) == ["SITE_X"] and sum(stats["SITE_X"]["managed"]["SCORE"].values()) == 2
    localhost = instance.ce_statistics("X_PUSH", 0)["localhost"]
    assert localhost["submitted"] == 1 and localhost["missed"] == 0 and localhost["started"] + localhost["queued"] == 1


def test_long_running_push_job_gets_a_heartbeat_and_panda_can_kill_it(harness, sim):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="sleep 60")
    instance = harness.instance({"PUSH_Q": {"mode": "push", "job_heartbeat_seconds": 1}})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues)
    wait_until(lambda: monitoring.poll(instance, queues) and rows(instance, jobs)[0].sub_status == "running",
               what="job running")
    propagation.propagate(instance, queues)        # the "running" update goes out; nothing pending now
    sim.kill_jobs(None, [panda_id], None, False, [])
    import time

    time.sleep(1.1)
    run = propagation.propagate(instance, queues)   # heartbeat due: PanDA answers tobekilled
    assert run.job_heartbeats == 1 and run.kills_from_panda == 1
    assert rows(instance, workers)[0].kill_reason


# -- the mass-kill cap at its boundary, and a worker cancelled while its submission goes on ------------

SLEEPERS = {"SLEEP_Q": {"mode": "pull", "pilot": "sleep 60", "max_workers": 10, "n_queue_limit_worker": 10}}


def _marked(instance, n: int) -> None:
    queues = list(instance.config.queues.values())
    assert len(submission.submit(instance, queues, count=n).queues[0].submitted) == n
    with instance.store.transaction() as conn:
        conn.execute(workers.update().values(kill_reason="operator"))


@pytest.mark.parametrize("cap", [1, 2])
def test_sweep_kills_exactly_the_cap_and_refuses_one_more(harness, sim, cap):
    instance = harness.instance(SLEEPERS, sweep={"max_kills_per_run": cap})
    queues = list(instance.config.queues.values())
    _marked(instance, cap + 1)
    refused = sweeping.sweep(instance, queues)
    assert refused.queues[0].refused and f"{cap + 1} workers marked for killing exceed the cap of {cap}" \
        in refused.queues[0].refused
    assert refused.queues[0].killed == 0 and all(w.status == "submitted" for w in rows(instance, workers))
    with instance.store.transaction() as conn:   # one less: exactly the cap
        conn.execute(workers.update().where(workers.c.worker_id == rows(instance, workers)[0].worker_id)
                     .values(kill_reason=None))
    at_cap = sweeping.sweep(instance, queues)
    assert at_cap.queues[0].refused is None and at_cap.queues[0].killed == cap and not at_cap.partial
    assert sorted(w.status for w in rows(instance, workers)) == ["cancelled"] * cap + ["submitted"]


def test_a_cap_of_zero_refuses_every_kill_unless_forced(harness, sim):
    instance = harness.instance(SLEEPERS, sweep={"max_kills_per_run": 0})
    queues = list(instance.config.queues.values())
    _marked(instance, 1)
    assert sweeping.sweep(instance, queues).queues[0].refused
    assert sweeping.sweep(instance, queues, force=True).queues[0].killed == 1


@pytest.mark.parametrize("cap", [1, 2])
def test_kill_workers_marks_exactly_the_cap_and_refuses_one_more(harness, sim, cap):
    instance = harness.instance(SLEEPERS, sweep={"max_kills_per_run": cap})
    queues = list(instance.config.queues.values())
    ids = submission.submit(instance, queues, count=cap + 1).queues[0].submitted
    over = sweeping.mark_for_kill(instance, ["SLEEP_Q"], worker_ids=tuple(ids))
    assert over.refused and f"{cap + 1} workers match, more than sweep.max_kills_per_run={cap}" in over.refused
    assert over.marked == 0 and not any(w.kill_reason for w in rows(instance, workers))
    exact = sweeping.mark_for_kill(instance, ["SLEEP_Q"], worker_ids=tuple(ids[:cap]))
    assert exact.refused is None and exact.marked == cap
    forced = sweeping.mark_for_kill(instance, ["SLEEP_Q"], worker_ids=tuple(ids), force=True)
    assert forced.refused is None and forced.marked == 1


def test_a_worker_cancelled_while_the_backend_submits_it_stays_cancelled_and_its_job_untouched(harness, sim):
    """The backend takes the worker, but meanwhile its submission was withdrawn (the worker cancelled, its
    job given back to wait): the backend's answer moves only workers still pending."""
    from harvester_cli import model
    from harvester_cli.steps import transitions

    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="sleep 30")
    instance = harness.instance(PUSH)
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    backend = instance.backend(queues[0])
    real_submit = backend.submit

    def submit_while_cancelled(specs):
        results = real_submit(specs)
        with instance.store.transaction() as tx:
            tx.execute(workers.update().values(status=model.CANCELLED, diag="cancelled meanwhile"))
            transitions.requeue_jobs(tx, queues[0], {s.worker_id: "cancelled meanwhile" for s in specs},
                                     model.now(), attempt=False)
        return results

    backend.submit = submit_while_cancelled
    run = submission.submit(instance, queues)
    assert len(run.queues[0].submitted) == 1   # the backend took it
    (worker,) = rows(instance, workers)
    assert worker.status == "cancelled" and worker.batch_id is None and worker.diag == "cancelled meanwhile"
    (job,) = rows(instance, jobs)
    assert (job.status, job.sub_status, job.submit_attempts) == ("starting", "fetched", 0)
    assert not rows(instance, job_workers)
    propagation.propagate(instance, queues)
    assert all(u["job_status"] != "starting" or "batch_id" not in u for u in sim.jobs[panda_id].updates)
    assert sim.workers(harness.harvester_id)[worker.worker_id]["status"] == "cancelled"


def test_pilot_log_goes_with_one_acknowledged_update_per_job_never_again(harness, sim):
    """PanDA stores a new log record for every update carrying pilot_log: it goes with the first update PanDA
    takes (here `starting`, after a refused try), not with `running` nor the final one."""
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="sleep 60")
    instance = harness.instance(PUSH)
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues)
    sim.fail_next = [503] * 10   # refused: not acknowledged, so pilot_log is still to send
    assert propagation.propagate(instance, queues).partial
    sim.fail_next = []
    assert propagation.propagate(instance, queues).jobs_sent == 1   # starting, with pilot_log
    assert [u["job_status"] for u in sim.jobs[panda_id].updates] == ["starting"]
    assert rows(instance, jobs)[0].pilot_log_sent
    wait_until(lambda: monitoring.poll(instance, queues) and rows(instance, jobs)[0].sub_status == "running",
               what="job running")
    assert propagation.propagate(instance, queues).jobs_sent == 1   # running, without pilot_log
    with instance.store.transaction() as conn:
        conn.execute(workers.update().values(kill_reason="operator"))
    assert sweeping.sweep(instance, queues).queues[0].killed == 1
    assert propagation.propagate(instance, queues).jobs_sent == 1   # failed, without pilot_log
    updates = sim.jobs[panda_id].updates
    assert [u["job_status"] for u in updates] == ["starting", "running", "failed"]
    assert ["pilot_log" in u for u in updates] == [True, False, False]
    assert [log.rsplit("/", 1)[-1] for log in sim.jobs[panda_id].pilot_logs] == ["pilot.log"]
