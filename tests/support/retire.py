"""Retiring queued pilots against a real batch system: the scenarios of issue 30, written once for any peer
whose pilots can be kept waiting in its batch queue and made to start when a test says so
(tests/integration/htcondor/test_retire.py: the pool's schedd; tests/integration/slurm/test_retire.py).

A peer gives: `queue(**queue_keys)` (a queue whose pilots wait until started), `instance(queues, **overrides)`,
`start(row)` (make this worker's batch job start, and return once the batch system runs it) and
`state(row)` ("queued", "running", "removed" for a job removed or cancelled, "other"). Pilots are made with
`submit --count`, seen by poll, then made older in the state database (the youngest has the highest id), so
no test waits for `retire_min_age`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter

from sqlalchemy import select, update

from harvester_cli import model
from harvester_cli.state import views
from harvester_cli.state.schema import workers
from harvester_cli.steps import poll, submit, sweep
from tests.support.harness import to_toml, wait_until

QUEUE = "RETIRE_Q"
RULE = "retire queued pilots"


def rows(instance) -> dict[int, object]:
    with instance.store.reading() as conn:
        return {w.worker_id: w for w in conn.execute(select(workers).order_by(workers.c.worker_id))}


def queues_of(instance) -> list:
    return list(instance.config.queues.values())


def idle_pilots(instance, n: int) -> list:
    """`n` pilots waiting in the batch queue, seen so by poll, queued for an hour and more (oldest first)."""
    run = submit.submit(instance, queues_of(instance), count=n).queues[0]
    assert len(run.submitted) == n, run.failed[:2] or run.error

    def all_seen_waiting():
        poll.poll(instance, queues_of(instance))
        return all(w.status == model.SUBMITTED and w.native_status for w in rows(instance).values())

    wait_until(all_seen_waiting, 60, 0.5, "pilots seen waiting in the batch queue")
    at = model.now()
    ids = sorted(rows(instance))
    with instance.store.transaction() as conn:
        for age, worker_id in enumerate(reversed(ids)):   # the highest id is the youngest
            conn.execute(update(workers).where(workers.c.worker_id == worker_id)
                         .values(submit_time=at - 3600 - 60 * age))
    return [rows(instance)[w] for w in ids]


def retire_step(instance) -> object:
    """The retirement rule's line of a plan (a dry run: nothing marked)."""
    plan = submit.submit(instance, queues_of(instance), dry_run=True).queues[0].plan
    return next(s for s in plan.trace if s.rule == RULE)


def marked(instance) -> list[int]:
    return [w for w, r in rows(instance).items() if model.is_retirement(r.kill_reason)]


# -- the scenarios -------------------------------------------------------------------------------------

def excess_idle_pilots_are_retired_youngest_first(peer, sim) -> None:
    instance = peer.instance({QUEUE: peer.queue()})
    pilots = idle_pilots(instance, 5)
    sim.add_jobs(QUEUE, 2)   # PanDA has 2 activated jobs: 2 pilots are needed, 3 are not
    step = retire_step(instance)
    youngest = [p.worker_id for p in reversed(pilots)][:3]
    assert step.result == 3 and ("need 2" in step.inputs or "need SCORE=2" in step.inputs) and \
        f"youngest first: {', '.join(map(str, youngest))}" in step.inputs, str(step)
    assert not marked(instance)   # a plan marks nothing
    submit.submit(instance, queues_of(instance))
    assert sorted(marked(instance)) == sorted(youngest)
    result = sweep.sweep(instance, queues_of(instance)).queues[0]
    assert (result.retired, result.retire_started, result.kill_failed) == (3, 0, [])
    now = rows(instance)
    for p in pilots:
        if p.worker_id in youngest:
            assert now[p.worker_id].status == model.CANCELLED and now[p.worker_id].diag.startswith("retired")
            assert peer.state(p) == "removed"
        else:
            assert now[p.worker_id].status == model.SUBMITTED and now[p.worker_id].kill_reason is None
            assert peer.state(p) == "queued"


def a_running_pilot_is_never_touched(peer, sim) -> None:
    instance = peer.instance({QUEUE: peer.queue(empty_pilot_floor=0)})
    pilots = idle_pilots(instance, 3)
    running = pilots[-1]   # the youngest: the first the rule would take if it were still queued
    peer.start(running)
    wait_until(lambda: poll.poll(instance, queues_of(instance)) and
               rows(instance)[running.worker_id].status == model.RUNNING, 60, 0.5, "poll sees the pilot running")
    step = retire_step(instance)   # no activated job, floor 0: every queued pilot goes, and only those
    assert step.result == 2 and "queued=2" in step.inputs, str(step)
    submit.submit(instance, queues_of(instance))
    result = sweep.sweep(instance, queues_of(instance)).queues[0]
    assert (result.retired, result.retire_started) == (2, 0)
    now = rows(instance)
    assert now[running.worker_id].status == model.RUNNING and now[running.worker_id].kill_reason is None
    assert peer.state(running) == "running"
    assert [peer.state(p) for p in pilots[:2]] == ["removed", "removed"]


def the_floor_is_kept(peer, sim) -> None:
    instance = peer.instance({QUEUE: peer.queue(empty_pilot_floor=1)})
    pilots = idle_pilots(instance, 4)
    for _ in range(2):   # a second round finds nothing more to retire
        submit.submit(instance, queues_of(instance))
        sweep.sweep(instance, queues_of(instance))
    now = rows(instance)
    assert [now[p.worker_id].status for p in pilots] == [model.SUBMITTED] + [model.CANCELLED] * 3
    assert peer.state(pilots[0]) == "queued"   # the oldest: the empty-pilot floor of one
    step = retire_step(instance)
    assert step.result == 0 and "floor=1" in step.inputs and "queued=1," in step.inputs, str(step)


def a_pilot_that_starts_during_the_removal_is_not_lost(peer, sim) -> None:
    instance = peer.instance({QUEUE: peer.queue(empty_pilot_floor=0)})
    pilots = idle_pilots(instance, 3)
    submit.submit(instance, queues_of(instance))
    assert sorted(marked(instance)) == [p.worker_id for p in pilots]
    starter = pilots[1]
    peer.start(starter)   # it starts after poll saw it waiting and submit marked it, before sweep comes
    assert rows(instance)[starter.worker_id].status == model.SUBMITTED   # as far as the state database knows
    result = sweep.sweep(instance, queues_of(instance)).queues[0]
    assert (result.retired, result.retire_started, result.kill_failed) == (2, 1, [])
    now = rows(instance)[starter.worker_id]
    assert now.status == model.SUBMITTED and now.kill_reason is None and now.lock_owner is None
    assert peer.state(starter) == "running"
    wait_until(lambda: poll.poll(instance, queues_of(instance)) and
               rows(instance)[starter.worker_id].status == model.RUNNING, 60, 0.5, "poll sees the pilot running")
    assert [peer.state(p) for p in (pilots[0], pilots[2])] == ["removed", "removed"]
    assert peer.state(starter) == "running"   # still: nothing removed it after all


def two_hosts_retiring_together_remove_each_pilot_once(peer, sim, harness) -> None:
    """Two instances ([instance] host a and b) on one state database run `cycle` at once, round after round,
    as two processes each, with few marks per run so that both take part; every pilot beyond the demand is
    retired once, by one of them."""
    n = 10
    queues = {QUEUE: peer.queue(empty_pilot_floor=0, retire_max_per_run=3)}
    instance = peer.instance(queues, instance={"host": "host-a"})
    pilots = idle_pilots(instance, n)
    configs = []
    for host in ("host-a", "host-b"):
        data = harness.config_data(queues, **{**peer.overrides, "instance": {"host": host}})
        path = harness.tmp_path / f"{host}.toml"
        path.write_text(to_toml(data))
        configs.append(path)

    def at_once(*args: str) -> None:
        env = {**os.environ, "XDG_CONFIG_HOME": str(harness.tmp_path / "x"),
               "XDG_STATE_HOME": str(harness.tmp_path / "y")}
        commands = [[sys.executable, "-m", "harvester_cli", "--config", str(c), "--json", *args] for c in configs]
        outputs: list = [None, None]
        gate = threading.Barrier(2)

        def run(i: int) -> None:
            gate.wait()
            outputs[i] = subprocess.run(commands[i], capture_output=True, text=True, check=False, env=env, timeout=300)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for out in outputs:
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    def retired_by_host() -> Counter:
        return Counter({c["host"]: int(c["value"]) for c in views.counters(instance.store)
                        if c["name"] == "harvester_cli_pilots_retired_total"})

    rounds = 0
    while any(r.status != model.CANCELLED for r in rows(instance).values()) and rounds < 8:
        at_once("cycle")
        rounds += 1
    now = rows(instance)
    assert all(now[p.worker_id].status == model.CANCELLED and now[p.worker_id].diag.startswith("retired")
               for p in pilots), [(w, r.status, r.kill_reason, r.diag) for w, r in now.items()]
    by_host = retired_by_host()
    assert sum(by_host.values()) == n, by_host   # each pilot once: a second removal would count again
    assert Counter(peer.state(p) for p in pilots) == {"removed": n}
    at_once("cycle")   # nothing left: nobody retires anything again
    assert retired_by_host() == by_host
    reported = sim.workers(harness.harvester_id)
    assert all(reported[p.worker_id]["status"] == "cancelled" and reported[p.worker_id]["errorCode"] == 1014
               for p in pilots)
    print(f"\ntwo hosts, {rounds} rounds of cycle at once: pilots retired per host {dict(by_host)}")
