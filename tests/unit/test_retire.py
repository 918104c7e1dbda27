"""Retiring queued pilots nobody needs any more: the rule (pure, steps/retire.py), and the way through submit,
sweep, PanDA, `status` and the metrics against a backend that answers as told (the real pool, Slurm and A-REX:
tests/integration/{htcondor,slurm,arc}/test_retire.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from harvester_cli import model
from harvester_cli.backends.base import Observation, RetireResult
from harvester_cli.backends.local import LocalBackend
from harvester_cli.config import QueueConfig
from harvester_cli.panda import diagnostics, updates
from harvester_cli.state.schema import workers
from harvester_cli.steps import monitor, poll, propagate, submit, sweep
from harvester_cli.steps.planner import QueueState
from harvester_cli.steps.retire import Pilot, decide

pytestmark = pytest.mark.retire

NOW = 1_000_000.0
HOUR = 3600.0


def queue(**kw) -> QueueConfig:
    base = {"name": "Q", "mode": "pull", "backend": "htcondor", "pilot": "true", "retire_min_age": 600}
    return QueueConfig(**{**base, **kw})


def pilots(*ages: float, rt: str = "SCORE", first: int = 1, **kw) -> list[Pilot]:
    """Submitted pilots that never ran, queued for these many seconds (ids in submission order)."""
    return [Pilot(first + i, rt, queued_since=NOW - age, **kw) for i, age in enumerate(ages)]


# -- the rule ---------------------------------------------------------------------------------------

def test_excess_pilots_are_retired_youngest_first_down_to_the_demand():
    queued = pilots(5 * HOUR, 4 * HOUR, 3 * HOUR, 2 * HOUR, HOUR)   # worker 5 is the youngest
    d = decide(queue(), QueueState(activated=2), queued, NOW)
    assert d.retire == [5, 4, 3] and not d.withdraw
    assert str(d.step).startswith("retire queued pilots: activated=2 (site totals) -> 2 x 1, floor=1 -> need 2, "
                                  "queued=5") and str(d.step).endswith("-> 3")
    assert "youngest first: 5, 4, 3" in str(d.step)


def test_the_empty_pilot_floor_is_kept():
    d = decide(queue(), QueueState(activated=0), pilots(3 * HOUR, 2 * HOUR, HOUR), NOW)
    assert d.retire == [3, 2]   # the oldest stays: the floor of one
    d0 = decide(queue(empty_pilot_floor=0), QueueState(activated=0), pilots(3 * HOUR, 2 * HOUR, HOUR), NOW)
    assert d0.retire == [3, 2, 1]


def test_only_pilots_older_than_the_minimum_age_and_never_started():
    young = pilots(300, 100, first=10)                                   # younger than retire_min_age
    ran = [Pilot(20, "SCORE", status=model.IDLE, queued_since=NOW - HOUR, started_before=True)]
    held = [Pilot(21, "SCORE", status=model.IDLE, queued_since=NOW - HOUR)]
    pending = [Pilot(22, "SCORE", status=model.PENDING, queued_since=None)]
    d = decide(queue(empty_pilot_floor=0), QueueState(activated=0), young + ran + held + pending + pilots(HOUR), NOW)
    assert d.retire == [1]
    assert "waited longer than retire_min_age=600 s and never ran=1" in str(d.step)


def test_at_most_the_cap_per_run_and_marks_not_carried_out_count_against_it():
    many = pilots(*[HOUR + i for i in range(10)])
    assert len(decide(queue(retire_max_per_run=3), QueueState(activated=0), many, NOW).retire) == 3
    marked = [Pilot(p.worker_id, p.resource_type, queued_since=p.queued_since, mark="retire") for p in many[:2]]
    d = decide(queue(retire_max_per_run=3), QueueState(activated=0), marked + many[2:], NOW)
    assert sorted(d.keep) == [1, 2] and len(d.retire) == 1 and d.retiring == 3
    assert not decide(queue(retire_max_per_run=0), QueueState(activated=0), many, NOW).retire
    # sweep's own cap: retirements never make it refuse the queue's kills
    d = decide(queue(), QueueState(activated=0), many, NOW, sweep_room=2)
    assert len(d.retire) == 2 and "room in sweep's max_kills_per_run=2" in str(d.step)


def test_marks_come_off_when_the_demand_comes_back():
    marked = [Pilot(i, "SCORE", queued_since=NOW - HOUR, mark="retire") for i in (1, 2, 3)]
    d = decide(queue(), QueueState(activated=2), marked, NOW)   # need 2 of the 3 now
    assert len(d.keep) == 1 and len(d.withdraw) == 2 and not d.retire
    # PanDA cannot say how many jobs there are: nothing is retired, and the marks come off
    d = decide(queue(), QueueState(activated=None), marked, NOW)
    assert sorted(d.withdraw) == [1, 2, 3] and not d.retire and "PanDA did not answer" in str(d.step)


def test_pilots_marked_for_a_kill_of_another_kind_do_not_count_as_staying():
    # 5 queued, 2 of them on their way out (held too long): 3 stay, the demand needs 3, nothing to retire
    killed = [Pilot(10 + i, "SCORE", queued_since=NOW - HOUR, mark="kill") for i in range(2)]
    assert not decide(queue(), QueueState(activated=3), killed + pilots(HOUR, HOUR, HOUR), NOW).retire


def test_per_resource_type_when_panda_counts_per_type():
    q = queue(resource_types=["SCORE", "MCORE"])
    score = pilots(2 * HOUR, HOUR, rt="SCORE", first=1)
    mcore = pilots(3 * HOUR, 2 * HOUR, HOUR, rt="MCORE", first=10)
    d = decide(q, QueueState(activated=4, activated_by_type={"SCORE": 4, "MCORE": 0}), score + mcore, NOW)
    assert d.retire == [12, 11, 10]   # MCORE has no jobs; SCORE's 2 pilots are all needed, the floor too
    assert "x 1 -> need SCORE=4, MCORE=0, floor=1" in str(d.step)
    d = decide(q, QueueState(activated=0, activated_by_type={"SCORE": 0, "MCORE": 0}), score + mcore, NOW)
    assert len(d.retire) == 4   # 5 queued, floor 1: the oldest stays (whichever type)
    assert 10 not in d.retire


def test_pilots_started_since_panda_counted_are_taken_off_the_demand():
    d = decide(queue(empty_pilot_floor=0), QueueState(activated=3, started_recently={"SCORE": 3}, stats_age=30),
               pilots(HOUR, HOUR), NOW)
    assert len(d.retire) == 2 and "started since=3" in str(d.step)


def test_push_retires_only_pilots_whose_job_no_longer_waits():
    carrying = pilots(2 * HOUR, 2 * HOUR, carries_job=True)
    orphan = pilots(HOUR, first=5)
    d = decide(queue(mode="push"), QueueState(), carrying + orphan, NOW)
    assert d.retire == [5] and "push: 2 of them carry a job that waits for them" in str(d.step)


@pytest.mark.parametrize("config,why", [
    ({"pilot_streaming": True}, "pilot streaming"),
    ({"status": "test"}, "status=test"),
    ({"backend": "local"}, "no batch queue"),
])
def test_where_nothing_is_retired(config, why):
    d = decide(queue(**config), QueueState(activated=0), pilots(HOUR, HOUR), NOW,
               backend_retires=config.get("backend") != "local")
    assert not d.retire and why in str(d.step) and d.step.result == 0


# -- through submit, sweep, PanDA, status and the metrics -------------------------------------------

class Told:
    """What the fake backend's retire answers per worker id (default: retired), and who it was asked about."""

    def __init__(self):
        self.outcomes: dict[int, str] = {}
        self.asked: list[int] = []

    def retire(self, backend, refs, reason):
        self.asked += [r.worker_id for r in refs]
        return [RetireResult(r.worker_id, self.outcomes.get(r.worker_id, RetireResult.RETIRED), "IDLE") for r in refs]


@pytest.fixture
def told(monkeypatch):
    answers = Told()
    monkeypatch.setattr(LocalBackend, "retires_queued", True)
    monkeypatch.setattr(LocalBackend, "retire", lambda self, refs, reason: answers.retire(self, refs, reason))
    return answers


def _queued(instance, n: int, age: float = HOUR) -> None:
    at = model.now()
    with instance.store.transaction() as conn:
        conn.execute(workers.insert(), [
            {"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull", "resource_type": "SCORE",
             "status": "submitted", "batch_id": str(900000 + i), "created": at - age - i, "modified": at - age - i,
             "submit_time": at - age + i} for i in range(1, n + 1)])   # the highest id is the youngest


def _rows(instance):
    with instance.store.reading() as conn:
        return {w.worker_id: w for w in conn.execute(select(workers))}


def test_submit_marks_sweep_retires_panda_hears_cancelled_with_its_code_and_status_counts(harness, sim, told):
    queues, metrics = {"Q": {"mode": "pull", "n_queue_limit_worker": 10}}, {"textfile": str(harness.tmp_path / "m.prom")}
    harness.write_config(queues, metrics=metrics)   # for `status` below
    instance = harness.instance(queues, metrics=metrics)
    _queued(instance, 5)
    sim.add_jobs("Q", 1)
    queues = list(instance.config.queues.values())
    plan = submit.submit(instance, queues, dry_run=True).queues[0].plan
    step = next(s for s in plan.trace if s.rule == "retire queued pilots")
    assert step.result == 4 and "need SCORE=1, floor=1" in step.inputs and "queued=5" in step.inputs
    assert not any(w.kill_reason for w in _rows(instance).values())   # a plan marks nothing

    run = submit.submit(instance, queues)
    assert not run.queues[0].submitted
    marked = {w for w, row in _rows(instance).items() if model.is_retirement(row.kill_reason)}
    assert marked == {5, 4, 3, 2}
    told.outcomes[3] = RetireResult.STARTED   # it started between poll and sweep
    result = sweep.sweep(instance, queues).queues[0]
    assert (result.retired, result.retire_started, result.killed) == (3, 1, 0) and not result.kill_failed
    rows = _rows(instance)
    assert [w for w, r in rows.items() if r.status == "cancelled"] == [2, 4, 5]
    assert rows[3].status == "submitted" and rows[3].kill_reason is None and rows[1].kill_reason is None
    assert rows[5].diag.startswith("retired while still queued after ") and "(IDLE): not needed" in rows[5].diag
    assert diagnostics.classify("cancelled", rows[5].diag, None)[0] == 1014
    update = updates.worker_update(rows[5], [], "Q")
    assert update["status"] == "cancelled" and update["errorCode"] == 1014
    propagate.propagate(instance, queues)
    reported = sim.workers(harness.harvester_id)
    assert reported[5]["status"] == "cancelled" and reported[5]["errorCode"] == 1014

    # a second sweep has nothing left to do; nobody is asked twice
    assert sweep.sweep(instance, queues).queues[0].retired == 0 and sorted(told.asked) == [2, 3, 4, 5]
    monitor.after_command(instance, [monitor.Run("sweep", 0.0, 1.0, 0)])
    data = monitor.summary(instance, ["Q"], 3600)
    assert data["retired"]["count"] == 3 and data["retired"]["total"] == 3
    assert data["retired"]["started_during_removal"] == 1
    text = (harness.tmp_path / "m.prom").read_text()
    assert 'harvester_cli_pilots_retired_total{' in text and 'queue="Q"' in text
    assert "harvester_cli_pilots_started_during_retirement_total{" in text
    shown = harness.cli("status")
    assert "3 queued pilot(s) retired as no longer needed" in shown.stdout, shown.stdout + shown.stderr


def test_a_mark_on_a_pilot_poll_saw_start_is_taken_off_without_asking_the_backend(harness, sim, told):
    instance = harness.instance({"Q": {"mode": "pull", "empty_pilot_floor": 0}})
    _queued(instance, 2)
    queues = list(instance.config.queues.values())
    submit.submit(instance, queues)
    with instance.store.transaction() as conn:
        conn.execute(workers.update().where(workers.c.worker_id == 2).values(status="running", start_time=model.now()))
    result = sweep.sweep(instance, queues).queues[0]
    assert (result.retired, result.retire_started) == (1, 1) and told.asked == [1]
    assert _rows(instance)[2].status == "running" and _rows(instance)[2].kill_reason is None


def test_a_backend_that_fails_keeps_the_marks_for_the_next_sweep(harness, sim, told):
    instance = harness.instance({"Q": {"mode": "pull", "empty_pilot_floor": 0}})
    _queued(instance, 2)
    queues = list(instance.config.queues.values())
    submit.submit(instance, queues)
    told.outcomes = {1: RetireResult.FAILED, 2: RetireResult.FAILED}
    failed = sweep.sweep(instance, queues)
    assert failed.partial and any("retire failed" in p for p in failed.problems())
    assert all(model.is_retirement(r.kill_reason) and r.lock_owner is None for r in _rows(instance).values())
    told.outcomes = {}
    assert sweep.sweep(instance, queues).queues[0].retired == 2


def test_a_pilot_another_host_sees_removed_before_the_sweep_records_it_is_retired_once(harness, sim, told, monkeypatch):
    """Two hosts: one's sweep removes the marked pilots, the other's poll sees them cancelled in the batch system
    before that sweep records anything. They were retired (PanDA's 1014), counted once, and the sweep that
    removed them writes nothing over what poll recorded."""
    instance = harness.instance({"Q": {"mode": "pull", "empty_pilot_floor": 0}})
    _queued(instance, 2)
    queues = list(instance.config.queues.values())
    submit.submit(instance, queues)
    removed: set[int] = set()
    monkeypatch.setattr(LocalBackend, "check", lambda self, refs: [
        Observation(r.worker_id, model.CANCELLED if r.worker_id in removed else model.SUBMITTED,
                    "CANCELLED" if r.worker_id in removed else "PENDING", started=False) for r in refs])

    def removed_then_seen_by_another_poll(self, refs, reason):
        removed.update(r.worker_id for r in refs)
        assert poll.poll(instance, queues).queues[0].changes == {"cancelled": 2}
        return [RetireResult(r.worker_id, RetireResult.RETIRED, "PENDING") for r in refs]

    monkeypatch.setattr(LocalBackend, "retire", removed_then_seen_by_another_poll)
    assert sweep.sweep(instance, queues).queues[0].retired == 0   # poll recorded them first
    rows = _rows(instance)
    assert all(r.status == "cancelled" and r.lock_owner is None for r in rows.values())
    assert rows[2].diag.startswith("retired while still queued after ") and "(CANCELLED): not needed" in rows[2].diag
    assert updates.worker_update(rows[2], [], "Q")["errorCode"] == 1014
    monitor.after_command(instance, [monitor.Run("sweep", 0.0, 1.0, 0)])
    assert monitor.summary(instance, ["Q"], 3600)["retired"]["total"] == 2


def test_the_hold_of_a_retirement_is_not_recorded_and_its_mark_stays(harness, sim, told, monkeypatch):
    """Slurm's retirement holds the pilot before it cancels it. Another host's poll in between must not record a
    held (idle) worker: the rule would take the mark off a pilot that is no longer queued, and the cancel that
    follows would read as an operator's."""
    instance = harness.instance({"Q": {"mode": "pull", "empty_pilot_floor": 0}})
    _queued(instance, 1)
    queues = list(instance.config.queues.values())
    submit.submit(instance, queues)
    seen = {"status": model.HELD}
    monkeypatch.setattr(LocalBackend, "check", lambda self, refs: [
        Observation(r.worker_id, seen["status"], "PENDING", diag="JobHeldUser", started=False) for r in refs])
    assert poll.poll(instance, queues).queues[0].changes == {}
    submit.submit(instance, queues)   # the rule again, while the sweep holds it
    (row,) = _rows(instance).values()
    assert row.status == "submitted" and model.is_retirement(row.kill_reason)
    seen["status"] = model.CANCELLED
    poll.poll(instance, queues)
    (row,) = _rows(instance).values()
    assert row.status == "cancelled" and row.diag.startswith("retired while still queued")
