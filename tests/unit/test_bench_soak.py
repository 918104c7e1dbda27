"""The soak's own reading of what ran (bench/soak.py, bench/soak_panda.py): the cron log's runs, a cycle's numbers,
and the jobs lost or doubled counted from the simulator's records. The soak itself needs the real peers and half
an hour; these parts decide what its table says, so a mistake in them must not pass as a clean soak."""

from __future__ import annotations

import json

from bench import soak, soak_panda
from harvester_cli.panda.sim.server import PandaSimulator


def test_the_cron_log_gives_each_completed_run_its_json_answer():
    answer = {"steps": [{"step": "submit", "summary": "submitted 3, failed 0", "partial": False, "problems": [],
                         "items": 3, "started": 10.0, "ended": 12.5}]}
    log = "\n".join([
        "--- 2026-12-07T06:00:00Z harvester-cli --json cycle",
        "harvester-cli: warning: something said on stderr",
        *json.dumps(answer, indent=2).splitlines(),
        "--- exit 0 after 2.5 s",
        "2026-12-07T06:01:00Z skipped: the previous `cycle` (pid 7) has been running for 60 s",
        "--- 2026-12-07T06:02:00Z harvester-cli --json cycle",
        "Traceback (most recent call last):",
        "--- exit 1 after 0.4 s",
        "--- 2026-12-07T06:03:00Z harvester-cli --json cycle",   # still running: not a completed run
    ])
    sections = soak.cron_sections(log)
    assert [(s["exit"], s["seconds"], s["result"]) for s in sections] == [(0, 2.5, answer), (1, 0.4, None)]
    assert sections[1]["started"] - sections[0]["started"] == 120


def test_a_cycles_numbers_come_from_its_steps_items():
    steps = [("fetch-jobs", "stored 5 jobs", 5), ("submit", "submitted 7, failed 1", 7),
             ("poll", "checked 100007, 12 changed", 100007), ("propagate", "jobs sent 4, workers sent 9", 13),
             ("sweep", "killed 0, cleaned 2", 2)]
    result = {"steps": [{"step": name, "summary": summary, "items": items, "partial": name == "sweep",
                         "problems": ["a kill failed"] if name == "sweep" else [], "started": 0.0, "ended": 1.5}
                        for name, summary, items in steps]}
    numbers = soak.cycle_numbers(result)
    assert (numbers["submitted"], numbers["polled"], numbers["changed"], numbers["sent"]) == (7, 100007, 12, 13)
    assert numbers["step_seconds"] == {name: 1.5 for name, _, _ in steps}
    assert numbers["partial"] == ["sweep: a kill failed"]
    assert soak.cycle_numbers(None) == {"step_seconds": {}, "partial": []}


def test_the_bound_on_panda_calls_grows_with_changed_items_only():
    assert soak.bound_calls(cycles=5, idle_calls=4, job_updates=0, worker_updates=0) == 30
    assert soak.bound_calls(cycles=5, idle_calls=4, job_updates=250, worker_updates=101) == 30 + 3 + 2


def test_the_audit_counts_push_jobs_lost_and_doubled_from_the_simulators_records(tmp_path):
    from harvester_cli.panda.sim import certs

    sim = PandaSimulator(certs.create(tmp_path / "pki"), finish_delay=0.0)   # never started: its records only
    ok, lost, sent_twice, two_finals, two_workers, waiting = sim.add_jobs("PUSH", 6, refresh=False)
    sim.add_jobs("PULL", 2, refresh=False)
    final = {"job_status": "finished"}
    for panda_id in (ok, lost, sent_twice, two_finals, two_workers):
        sim.jobs[panda_id].spec["nSent"] = 1
        if panda_id != lost:
            sim.jobs[panda_id].updates.append(final)
            sim.jobs[panda_id].status, sim.jobs[panda_id].final_status = "holding", "finished"
            sim.jobs[panda_id].holding_since = 0.0
    sim.jobs[lost].status = "sent"
    sim.jobs[sent_twice].spec["nSent"] = 2
    sim.jobs[two_finals].updates.append(final)
    sim.relations |= {("soak", 1, two_workers), ("soak", 2, two_workers), ("soak", 3, ok)}
    audit = soak_panda.audit(sim, "PUSH")
    assert (audit["given"], audit["finished"], audit["activated_left"]) == (5, 4, 1)
    assert (audit["lost"], audit["lost_ids"]) == (1, [lost])
    assert (audit["doubled"], audit["doubled_ids"]) == (3, sorted([sent_twice, two_finals, two_workers]))
    assert waiting not in audit["lost_ids"] + audit["doubled_ids"]


def test_the_records_count_updates_and_workers_first_seen_final():
    records = soak_panda.Records()
    records.take([
        {"path": "pilot/update_jobs_bulk", "args": {"job_list": [{"job_id": 1, "job_status": "running"},
                                                                 {"job_id": 2, "job_status": "finished"}]}},
        {"path": "harvester/update_workers", "args": {"workers": [{"workerID": 7, "status": "running"},
                                                                  {"workerID": 8, "status": "finished"}]}},
        {"path": "harvester/update_workers", "args": {"workers": [{"workerID": 8, "status": "finished"}]}},
        {"path": "pilot/acquire_jobs", "args": {}, "answer": {"success": True, "data": {"jobs": [{}, {}]}}},
        {"path": "pilot/acquire_jobs", "args": {}, "answer": {"success": False, "data": None}},
    ])
    totals = records.totals()
    assert totals["calls"] == {"pilot/update_jobs_bulk": 1, "harvester/update_workers": 2, "pilot/acquire_jobs": 2}
    assert totals["items"] == {"job_updates": 2, "job_updates_final": 1, "worker_updates": 3, "workers_final": 1,
                               "jobs_given": 2}
