"""Retiring queued pilots nobody needs any more: the rule (pure), the marks `submit` records, and what `sweep`
does with each pilot once the backend has answered.

PanDA Harvester removes a queued pilot only after `max_queued_seconds` (48 h) or on PanDA's command, so pilots
outlive the demand that made them: they hold fair share, start later and find no job. GlideinWMS's frontend
removes excess idle glideins; AutoPyFactory retires pilots in kill order. Here:

1. `submit` (under the queue's lease, so one host decides at a time) works out what the queue's demand
   needs queued, the same target the planner submits towards: pull, activated jobs (minus pilots started
   since PanDA counted them) x `activated_factor`, never below `empty_pilot_floor`, per resource type
   when PanDA gives counts per type; push, every pilot whose job still waits for it. Pilots queued beyond
   that are marked for retirement in the state database (a kill mark, `model.RETIRE_MARK`), youngest
   first (the oldest start first in a batch queue), only pilots that never ran and have waited longer than
   `retire_min_age`, at most `retire_max_per_run` marks outstanding. Marks not yet carried out come off
   again when the demand comes back. `plan` shows the rule with its inputs.
2. `sweep` (any host, each row claimed once; `max_kills_per_run` counts these marks too) asks the backend
   to remove each marked pilot only if it still waits at that moment (`Backend.retire`: HTCondor
   constraint JobStatus == 1, Slurm a hold then a cancel of what is held pending, ARC only before A-REX
   hands the job to its batch system). A retired pilot ends `cancelled` with a diag of its own (error code
   1014 to PanDA); one that started meanwhile keeps running, its mark is taken off and it is counted.

The rule is not used for pilot-streaming queues (PanDA's SET_N_WORKERS_JOBTYPE numbers decide), for a queue
whose status is not online (pilots an operator submitted by hand stay), when PanDA could not say how many
jobs are activated, or for a backend without a batch queue to retire from (local processes start at once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from harvester_cli import model
from harvester_cli.backends.base import RetireResult
from harvester_cli.config import QueueConfig
from harvester_cli.instance import Instance, worker_ref
from harvester_cli.state import outbox, workers
from harvester_cli.steps import transitions
from harvester_cli.steps.planner import QueueState, Step

log = logging.getLogger(__name__)

RULE = "retire queued pilots"
SHOWN_IDS = 5


@dataclass(frozen=True)
class Pilot:
    """A worker waiting in the batch queue, as the rule weighs it (state.workers.QueuedWorker)."""

    worker_id: int
    resource_type: str
    status: str = model.SUBMITTED
    queued_since: float | None = None       # its submit time
    started_before: bool = False
    mark: str | None = None                 # None, "retire" (marked, not carried out yet) or "kill"
    carries_job: bool = False               # push: its job waits for it


@dataclass
class Decision:
    retire: list[int] = field(default_factory=list)     # mark these now
    withdraw: list[int] = field(default_factory=list)   # take their marks off: the demand came back
    keep: list[int] = field(default_factory=list)       # marked before, still to retire
    step: Step = field(default_factory=lambda: Step(RULE, "", 0))
    reason: str = "not needed"                          # the marks' kill reason (then the retired pilot's diag)

    @property
    def retiring(self) -> int:
        return len(self.retire) + len(self.keep)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f", ... ({len(ids)})" if len(ids) > SHOWN_IDS else "")


def _nothing(pilots: list[Pilot], why: str) -> Decision:
    marked = [p.worker_id for p in pilots if p.mark == "retire"]
    if marked:
        why += f"; marks taken off: {_ids(marked)}"
    return Decision(withdraw=marked, step=Step(RULE, why, 0))


def _demand(queue: QueueConfig, state: QueueState, rts: list[str]) -> tuple[dict[str, int] | None, int, str]:
    """(what each resource type needs queued, or None when PanDA gave site totals only; what the queue needs
    queued in all; how that was reached) for a pull queue with known activated jobs."""
    factor, floor = queue.activated_factor, queue.empty_pilot_floor
    started = state.started_recently
    since = f" - started since={sum(started.values())}" if state.stats_age is not None else ""
    if state.activated_by_type is not None:
        need = {rt: int(max(0, state.activated_by_type.get(rt, 0) - started.get(rt, 0)) * factor) for rt in rts}
        total = max(sum(need.values()), floor)
        shown = ", ".join(f"{rt}={n}" for rt, n in need.items())
        return need, total, (f"activated={state.activated} (per resource type){since} x {factor:g} -> need {shown}, "
                             f"floor={floor}")
    left = max(0, state.activated - sum(started.values()))
    total = max(int(left * factor), floor)
    return None, total, (f"activated={state.activated} ({state.activated_source}){since} -> {left} x {factor:g}, "
                         f"floor={floor} -> need {total}")


def decide(queue: QueueConfig, state: QueueState, pilots: list[Pilot], now: float, *,
           backend_retires: bool = True, sweep_room: int | None = None) -> Decision:
    """Which queued pilots to mark for retirement, and which marks to take off, with the trace line.
    `sweep_room`: how many more marks sweep takes in one run (its max_kills_per_run less the queue's kill
    marks of other kinds), so retirements never make it refuse the queue's kills."""
    if queue.retire_max_per_run == 0:
        return _nothing(pilots, "retire_max_per_run=0: never")
    if not backend_retires:
        return _nothing(pilots, f"backend {queue.backend}: no batch queue to retire pilots from")
    if queue.status != "online":
        return _nothing(pilots, f"status={queue.status}: pilots submitted by hand stay")
    rts = list(queue.resource_types)
    # What waits and stays: every queued worker but those marked for a kill of another kind.
    staying = [p for p in pilots if p.mark != "kill"]
    queued = {rt: 0 for rt in rts}
    for p in staying:
        queued[p.resource_type] = queued.get(p.resource_type, 0) + 1
    queued_total = len(staying)

    if queue.mode == "pull":
        if queue.pilot_streaming:
            return _nothing(pilots, "pilot streaming: PanDA's SET_N_WORKERS_JOBTYPE numbers decide")
        if state.activated is None:
            return _nothing(pilots, "activated jobs unknown (PanDA did not answer): nothing retired")
        need, need_total, demand = _demand(queue, state, rts)
        if need is None:   # site totals: the queue as a whole
            excess, allowed = None, max(0, queued_total - need_total)
        else:   # a pilot serves its own resource type's jobs; the floor holds for the queue
            excess = {rt: max(0, n - need.get(rt, 0)) for rt, n in queued.items()}
            allowed = max(0, min(sum(excess.values()), queued_total - queue.empty_pilot_floor))

        def retirable(p: Pilot) -> bool:
            return True
    else:
        carrying = sum(1 for p in staying if p.carries_job)
        excess, allowed = None, queued_total - carrying
        demand = f"push: {carrying} of them carry a job that waits for them -> need {carrying}"

        def retirable(p: Pilot) -> bool:
            return not p.carries_job

    min_age = queue.retire_min_age
    eligible = [p for p in staying if p.mark is None and p.status == model.SUBMITTED and not p.started_before
                and p.queued_since is not None and now - p.queued_since >= min_age and retirable(p)]
    marked = [p for p in staying if p.mark == "retire"]

    def youngest_first(ps: list[Pilot]) -> list[Pilot]:
        return sorted(ps, key=lambda p: (-(p.queued_since or 0), -p.worker_id))

    taken: dict[str, int] = {}
    decision = Decision()

    def fits(p: Pilot) -> bool:
        if decision.retiring >= allowed:
            return False
        return excess is None or taken.get(p.resource_type, 0) < excess.get(p.resource_type, 0)

    # Marks already made are on their way: they keep their place first, then the youngest of the others.
    for p in youngest_first(marked):
        if retirable(p) and fits(p):
            decision.keep.append(p.worker_id)
            taken[p.resource_type] = taken.get(p.resource_type, 0) + 1
        else:
            decision.withdraw.append(p.worker_id)
    cap = queue.retire_max_per_run if sweep_room is None else min(queue.retire_max_per_run, sweep_room)
    budget = max(0, cap - len(decision.keep))
    for p in youngest_first(eligible):
        if len(decision.retire) >= budget:
            break
        if fits(p):
            decision.retire.append(p.worker_id)
            taken[p.resource_type] = taken.get(p.resource_type, 0) + 1

    inputs = [demand, f"queued={queued_total}"]
    if excess is not None and len(rts) > 1:
        inputs[-1] += " (" + ", ".join(f"{rt}={n}" for rt, n in queued.items()) + ")"
    inputs.append(f"waited longer than retire_min_age={min_age} s and never ran={len(eligible) + len(marked)}")
    if marked:
        inputs.append(f"marked before={len(marked)}")
    inputs.append(f"retire_max_per_run={queue.retire_max_per_run}")
    if sweep_room is not None and sweep_room < queue.retire_max_per_run:
        inputs.append(f"room in sweep's max_kills_per_run={max(0, sweep_room)}")
    result = decision.retiring
    text = ", ".join(inputs)
    if decision.retire:
        text += f"; youngest first: {_ids(decision.retire)}"
    if decision.withdraw:
        text += f"; marks taken off (needed again): {_ids(decision.withdraw)}"
    decision.step = Step(RULE, text, result)
    decision.reason = f"not needed: {demand}, queued={queued_total}"
    return decision


# -- submit: the marks ----------------------------------------------------------------------------

def pilots_of(instance: Instance, queue: QueueConfig) -> tuple[list[Pilot], int]:
    """The queue's queued workers as the rule weighs them, and how many of all its workers are marked for a kill
    of another kind (every host's: what sweep's cap counts)."""
    with instance.store.reading() as tx:
        rows = workers.queued_workers(tx, queue.name)
        marked = workers.count_to_kill(tx, queue.name, None)
    first = queue.resource_types[0]
    pilots = [Pilot(r.worker_id, r.resource_type or first, r.status, r.submit_time, r.started_before, r.kill_mark,
                    r.carries_job) for r in rows]
    return pilots, marked - sum(1 for p in pilots if p.mark == "retire")


def mark_excess(instance: Instance, queue: QueueConfig, state: QueueState, *, dry_run: bool = False) -> Step:
    """The rule for one queue (its submit lease held): record its marks, unless a dry run; the trace line."""
    at = model.now()
    pilots, other_kills = pilots_of(instance, queue)
    decision = decide(queue, state, pilots, at, backend_retires=instance.retires_queued(queue),
                      sweep_room=instance.config.sweep.max_kills_per_run - other_kills)
    if dry_run or not (decision.retire or decision.withdraw):
        return decision.step
    def record(tx) -> int:
        workers.withdraw_retirement(tx, decision.withdraw)
        return workers.mark_retirement(tx, decision.retire, decision.reason[:1000])

    marked = instance.store.retrying(record)
    if marked != len(decision.retire):   # poll moved some meanwhile (started, ended): they stay as they are
        log.info("queue %s: %d of %d pilots marked for retirement (the others changed meanwhile)", queue.name,
                 marked, len(decision.retire))
    return decision.step


# -- sweep: carrying the marks out ----------------------------------------------------------------

@dataclass
class Outcomes:
    retired: int = 0
    started: int = 0     # left running: they had started when sweep came
    gone: int = 0        # the backend no longer had them: poll says what became of them
    failed: list[tuple[int, str]] = field(default_factory=list)


def carry_out(instance: Instance, queue: QueueConfig, rows: list) -> Outcomes:
    """Retire these workers (claimed by this sweep, each marked for retirement): removed by the backend only
    while still queued. Every row's claim is released; a mark stays only where the backend failed."""
    store = instance.store
    outcomes = Outcomes()
    ask = [r for r in rows if r.status == model.SUBMITTED]
    ran = [r for r in rows if r.status != model.SUBMITTED]   # poll saw it start since it was marked
    results: list[RetireResult] = [RetireResult(r.worker_id, RetireResult.STARTED, f"state database: {r.status}")
                                   for r in ran]
    if ask and not instance.retires_queued(queue):
        results += [RetireResult(r.worker_id, RetireResult.GONE, f"backend {queue.backend} cannot retire")
                    for r in ask]
        ask = []
    if ask:
        refs = [worker_ref(r) for r in ask]
        try:
            results += instance.backend(queue).retire(refs, "retired: queued pilot no longer needed")
        except Exception as exc:   # release at once, or these workers stay claimed for a whole lease
            log.warning("queue %s: backend retire failed: %s", queue.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            results += [RetireResult(r.worker_id, RetireResult.FAILED, f"backend error: {exc}") for r in ask]
    by_id = {r.worker_id: r for r in rows}
    retired = [(by_id[r.worker_id], r) for r in results if r.outcome == RetireResult.RETIRED]
    left = [r.worker_id for r in results if r.outcome in (RetireResult.STARTED, RetireResult.GONE)]
    at = model.now()

    def record(tx) -> list:
        # poll does not claim: a worker it saw end (or start) meanwhile keeps what poll recorded.
        fresh = workers.unchanged(tx, [row for row, _ in retired])
        done = [(row, r) for row, r in retired if row.worker_id in fresh]
        if done:
            workers.record_cancelled(tx, [(row.worker_id, _diag(row, r, at)) for row, r in done], at)
            outbox.enqueue_workers(tx, queue.name, [row.worker_id for row, _ in done])
            # A push pilot's job (if one was still bound) never ran: it waits for another worker.
            transitions.requeue_jobs(tx, queue, {row.worker_id: "its pilot was retired before it ran"
                                                 for row, _ in done}, at, attempt=False)
        workers.withdraw_retirement(tx, left, claimed=True)
        workers.release(tx, [r.worker_id for r in rows])
        return done

    done = store.retrying(record)
    outcomes.retired = len(done)
    for result in results:
        if result.outcome == RetireResult.STARTED:
            outcomes.started += 1
        elif result.outcome == RetireResult.GONE:
            outcomes.gone += 1
        elif result.outcome == RetireResult.FAILED:
            outcomes.failed.append((result.worker_id, f"retire failed: {result.detail or 'no reason given'}"))
    for row, _ in done:
        instance.count("harvester_cli_pilots_retired_total", queue=queue.name,
                       computing_element=row.computing_element or "")
    for result in results:
        if result.outcome == RetireResult.STARTED:
            instance.count("harvester_cli_pilots_started_during_retirement_total", queue=queue.name,
                           computing_element=by_id[result.worker_id].computing_element or "")
    if outcomes.started:
        log.info("queue %s: %d pilot(s) marked for retirement had started: left running", queue.name, outcomes.started)
    return outcomes


def _diag(row, result: RetireResult, at: float) -> str:
    return model.retired_diag(row.kill_reason, row.submit_time, at, result.detail)
