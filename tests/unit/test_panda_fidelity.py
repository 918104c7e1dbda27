"""What the real panda-server does that a client must live with (issue 11), against the simulator that
models it: registration before any pilot, pilot_id and a single pilot_log per job, the instance's start
time, activated-job counts up to a minute old, and activated jobs per resource type for unified queues."""

from __future__ import annotations

import re
import time

import pytest

from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state.schema import jobs, workers
from harvester_cli.steps import fetch_jobs, poll, propagate, submit
from harvester_cli.steps.cycle import run_cycle
from tests.support.harness import Harness, cycle_until, hold_panda_counts, rows, wait_until

# -- 1. registration before pilots ---------------------------------------------------------------

@pytest.mark.parametrize("first", ["submit", "cycle"])
def test_a_new_instance_relates_every_job_to_its_worker(harness, sim, first):
    """PanDA writes "job ran in worker N" only for an instance it already knows: a new instance must
    register before its first pilots ask for jobs (cron may run submit on its own, or before propagate
    in a cycle), or those relations are lost for good."""
    ids = sim.add_jobs("PULL_Q", 3, jobPars="echo related")
    instance = harness.instance({"PULL_Q": {"mode": "pull", "empty_pilot_floor": 0}})
    queues = list(instance.config.queues.values())
    if first == "submit":
        submit.submit(instance, queues)
    else:
        run_cycle(instance, queues)
    wait_until(lambda: all(sim.job_status(i) != "activated" for i in ids), 30, 0.2, "pilots took the jobs")
    cycle_until(instance, lambda: all(sim.job_status(i) == "finished" for i in ids), what="pull jobs finished")
    related = {panda_id: worker for hid, worker, panda_id in sim.relations if hid == harness.harvester_id}
    assert set(related) == set(ids), f"jobs without a worker relation at PanDA: {set(ids) - set(related)}"
    ours = {w.worker_id for w in rows(instance, workers)}
    assert set(related.values()) <= ours
    first_pilot_call = min(c["time"] for c in sim.calls_to("pilot/acquire_jobs"))
    assert sim.instances[harness.harvester_id]["registered"] < first_pilot_call


def test_no_worker_reaches_pilots_while_panda_refuses_the_registration(harness, sim, monkeypatch):
    sim.add_jobs("PULL_Q", 2)
    instance = harness.instance({"PULL_Q": {"mode": "pull"}, "PUSH_Q": {"mode": "push"}})
    refusals = []

    def refuse(dn, harvester_id, data):
        refusals.append(harvester_id)
        return False, "database error in the PanDA server", None

    monkeypatch.setattr(sim, "heartbeat", refuse)
    queues = list(instance.config.queues.values())
    run = submit.submit(instance, queues)
    assert len(refusals) == 2   # the registration heartbeat, and the second one a refused first deserves
    assert all(not q.submitted for q in run.queues) and run.partial
    trace = [str(s) for s in run.queues[0].plan.trace]
    assert trace[-1].startswith("PanDA registration: PanDA refused the registration heartbeat twice") and \
        trace[-1].endswith("-> 0"), trace
    fetched = fetch_jobs.fetch_jobs(instance, queues)
    assert fetched.failed and "not registered at PanDA" in fetched.queues[0].error
    assert not sim.calls_to("pilot/acquire_jobs") and not rows(instance, workers)
    monkeypatch.undo()
    run = submit.submit(instance, queues)
    assert sum(len(q.submitted) for q in run.queues) >= 1 and not run.partial


def test_plan_of_an_unregistered_instance_says_submit_registers_first(harness, sim):
    sim.add_jobs("PULL_Q", 2)
    instance = harness.instance({"PULL_Q": {"mode": "pull"}})
    run = submit.submit(instance, list(instance.config.queues.values()), dry_run=True)
    assert run.queues[0].plan.total == 2
    assert "submit sends a heartbeat first" in str(run.queues[0].plan.trace[-1])
    assert not sim.calls_to("harvester/heartbeat")   # a plan sends nothing


# -- 2. pilot_id, batch_id, and pilot_log once ----------------------------------------------------

def test_push_updates_name_the_pilot_and_send_its_log_once_even_when_a_reply_is_lost(harness, sim):
    # The server holds a finished job a while before it ends it; with no delay, a minute refresh between the
    # lost reply and the resend would end the job and the resend would be answered, not recorded (failed once).
    sim.finish_delay = 3600
    (panda_id,) = sim.add_jobs("PUSH_Q", 1, jobPars="echo push; sleep 0.5")
    instance = harness.instance({"PUSH_Q": {"mode": "push"}})
    queues = list(instance.config.queues.values())
    fetch_jobs.fetch_jobs(instance, queues)
    submit.submit(instance, queues)
    propagate.propagate(instance, queues)
    (worker,) = rows(instance, workers)
    wait_until(lambda: poll.poll(instance, queues) and rows(instance, jobs)[0].sub_status == "reporting",
               30, 0.3, "the final state known locally")
    sim.lose_reply["pilot/update_jobs_bulk"] = 1   # PanDA applies the final update, the reply never comes
    propagate.propagate(instance, queues)
    job = sim.jobs[panda_id]
    finals = [u for u in job.updates if u["job_status"] in ("finished", "failed")]
    assert len(finals) == 2, "the final update was resent after the lost reply"
    assert job.pilot_logs == [worker.batch_log_url]   # one log record, though two calls carried a final update
    assert all(u["pilot_id"].startswith(worker.stdout_url) for u in job.updates)
    assert all(u["batch_id"] == worker.batch_id for u in job.updates)
    assert job.pilot_id == worker.stdout_url and rows(instance, jobs)[0].sub_status == "done"


def test_the_pilots_own_pilot_id_is_kept(harness, sim, tmp_path):
    (panda_id,) = sim.add_jobs("PUSH_Q", 1)
    pilot = tmp_path / "pilot.sh"
    pilot.write_text('#!/bin/sh\nprintf \'{"jobId": %s, "state": "finished", "pilotID": "gtag|condor|PR|3.7"}\' '
                     '"$(python3 -c \'import json; print(json.load(open("pandaJobData.out"))["PandaID"])\')"'
                     ' > heartbeat.json\n')
    pilot.chmod(0o755)
    instance = harness.instance({"PUSH_Q": {"mode": "push", "pilot": str(pilot)}})
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", what="push job finished")
    assert sim.jobs[panda_id].pilot_id == "gtag|condor|PR|3.7"


# -- 3. startTime ---------------------------------------------------------------------------------

def test_heartbeat_start_time_is_the_instance_start_not_now(harness, sim):
    instance = harness.instance({"PULL_Q": {"mode": "pull"}})
    queues = list(instance.config.queues.values())
    propagate.propagate(instance, queues)
    time.sleep(1.2)
    propagate.propagate(instance, queues)
    from harvester_cli.state.schema import panda_registrations

    starts = {h["data"]["startTime"] for h in sim.harvesters[harness.harvester_id]["heartbeats"]}
    assert len(sim.harvesters[harness.harvester_id]["heartbeats"]) == 2 and len(starts) == 1
    (registration,) = rows(instance, panda_registrations)
    assert registration.panda_url == sim.url and registration.harvester_id == harness.harvester_id
    assert starts == {time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(registration.registered))}


# -- 4. activated counts up to a minute old --------------------------------------------------------

def test_a_pilot_that_took_a_job_is_not_replaced_while_panda_still_counts_the_job(harness, sim, monkeypatch):
    """The counts come from a view refreshed once a minute: jobs the first pilots took still show as
    activated in the next one-minute cycle. Sending pilots for them makes empty pilots."""
    assert sim.stats_refresh == 60   # the real server's behaviour, on by default
    ids = sim.add_jobs("PULL_Q", 3, jobPars="echo taken")
    hold_panda_counts(sim, monkeypatch)
    instance = harness.instance({"PULL_Q": {"mode": "pull", "empty_pilot_floor": 0}})
    queues = list(instance.config.queues.values())
    first = submit.submit(instance, queues)
    assert len(first.queues[0].submitted) == 3
    wait_until(lambda: all(sim.job_status(i) != "activated" for i in ids), 30, 0.2, "pilots took the jobs")
    wait_until(lambda: poll.poll(instance, queues) and all(w.start_time for w in rows(instance, workers)),
               30, 0.2, "pilots seen started")
    assert sim.active_job_stats_by_site(None)[2]["PULL_Q"]["activated"] == 3   # still counted by PanDA
    second = submit.submit(instance, queues)
    assert second.queues[0].submitted == [], [str(s) for s in second.queues[0].plan.trace]
    rule = next(str(s) for s in second.queues[0].plan.trace if s.rule == "activated jobs")
    assert re.search(r"counted \d+ s ago\) - pilots started since=3 -> 0", rule), rule


# -- 5. unified queues: activated jobs per resource type -------------------------------------------

UNIFIED = {"UNI": {"mode": "pull", "resource_types": ["SCORE", "MCORE"], "core_count": 8, "empty_pilot_floor": 0}}


def test_unified_queue_sends_pilots_of_the_resource_types_that_have_jobs(harness, sim):
    sim.add_jobs("UNI", 4, resource_type="SCORE")
    sim.add_jobs("UNI", 1, resource_type="MCORE", prodSourceLabel="test")   # not this queue's label
    instance = harness.instance(UNIFIED)
    run = submit.submit(instance, list(instance.config.queues.values()), dry_run=True)
    plan = run.queues[0].plan
    assert plan.per_resource_type == {"SCORE": 4, "MCORE": 0}, [str(s) for s in plan.trace]
    assert any("per resource type" in str(s) for s in plan.trace)


def test_unified_queue_falls_back_to_site_totals_on_an_older_server(tmp_path, pki):
    with PandaSimulator(pki, detailed_stats=False) as old_server:
        old_server.add_jobs("UNI", 4, resource_type="SCORE")
        harness = Harness(tmp_path, old_server, pki, "fallback-test")
        instance = harness.instance(UNIFIED)
        run = submit.submit(instance, list(instance.config.queues.values()), dry_run=True)
        plan = run.queues[0].plan
        assert plan.per_resource_type == {"SCORE": 2, "MCORE": 2}, [str(s) for s in plan.trace]
        assert any("site totals" in str(s) for s in plan.trace)
        assert old_server.calls_to("statistics/active_job_stats_by_site")
        instance.close()
