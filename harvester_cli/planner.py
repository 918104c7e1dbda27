"""How many new workers a queue needs, per resource type, with a trace of every rule (pure, no I/O).

The trace is what an operator reads to answer "why no pilots?": each step names its rule, its inputs
and the number that came out, as APF printed "Ready=40, MaxPerCycle=20, MaxPending=12 -> 12".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harvester_cli.config import QueueConfig


@dataclass(frozen=True)
class QueueState:
    """Local counts and PanDA's view of one queue, per resource type."""

    queued: dict[str, int] = field(default_factory=dict)     # pending + submitted + idle
    running: dict[str, int] = field(default_factory=dict)
    activated: int | None = None                             # pull: activated jobs in PanDA (None: unknown)
    waiting_jobs: dict[str, int] = field(default_factory=dict)  # push: fetched jobs without a worker


@dataclass(frozen=True)
class Step:
    rule: str
    inputs: str
    result: int

    def __str__(self) -> str:
        return f"{self.rule}: {self.inputs} -> {self.result}"


@dataclass
class Plan:
    queue: str
    per_resource_type: dict[str, int]
    trace: list[Step]

    @property
    def total(self) -> int:
        return sum(self.per_resource_type.values())


def _sum(counts: dict[str, int]) -> int:
    return sum(counts.values())


def split(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` over keys proportionally to weights, largest remainder first (ties: key order)."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if total <= 0 or not positive:
        return {k: 0 for k in weights}
    scale = sum(positive.values())
    shares = {k: total * w / scale for k, w in positive.items()}
    out = {k: int(shares.get(k, 0)) for k in weights}
    remainder = total - sum(out.values())
    order = sorted(positive, key=lambda k: (-(shares[k] - int(shares[k])), list(weights).index(k)))
    for key in order[:remainder]:
        out[key] += 1
    return out


def plan(queue: QueueConfig, state: QueueState, run_remaining: int) -> Plan:
    trace: list[Step] = []
    rts = list(queue.resource_types)
    queued, running = _sum(state.queued), _sum(state.running)

    def done(result: dict[str, int]) -> Plan:
        return Plan(queue.name, {rt: result.get(rt, 0) for rt in rts}, trace)

    if queue.status != "online":
        trace.append(Step("queue status", f"status={queue.status}", 0))
        return done({})

    headroom = max(0, queue.max_workers - queued - running)
    trace.append(Step("max_workers", f"max={queue.max_workers}, queued={queued}, running={running}", headroom))
    limit = max(0, queue.n_queue_limit_worker - queued)
    headroom = min(headroom, limit)
    trace.append(Step("n_queue_limit_worker", f"limit={queue.n_queue_limit_worker}, queued={queued}", headroom))

    if queue.mode == "pull":
        if state.activated is None:
            # PanDA could not say: be conservative, as if no job were activated.
            headroom = min(headroom, max(0, queue.empty_pilot_floor - queued))
            trace.append(Step("activated jobs", f"unknown (PanDA did not answer), floor={queue.empty_pilot_floor}, "
                                                f"queued={queued}", headroom))
            demand = {rts[0]: 1.0}
        else:
            target = max(int(state.activated * queue.activated_factor), queue.empty_pilot_floor)
            headroom = min(headroom, max(0, target - queued))
            trace.append(Step("activated jobs", f"activated={state.activated} x {queue.activated_factor}, "
                                                f"floor={queue.empty_pilot_floor}, queued={queued}", headroom))
            # Empty pilots go to the cheapest resource type only (the seed: "send empty pilots only to SCORE").
            demand = {rt: 1.0 for rt in rts} if state.activated else {rts[0]: 1.0}
    else:
        waiting = {rt: state.waiting_jobs.get(rt, 0) for rt in rts}
        headroom = min(headroom, _sum(waiting))
        trace.append(Step("waiting jobs", f"fetched jobs without a worker={_sum(waiting)}", headroom))
        demand = {rt: float(n) for rt, n in waiting.items()}

    headroom = min(headroom, queue.max_new_workers_per_cycle)
    trace.append(Step("max_new_workers_per_cycle", f"cap={queue.max_new_workers_per_cycle}", headroom))
    headroom = min(headroom, max(0, run_remaining))
    trace.append(Step("max_new_workers_per_run", f"left this run={run_remaining}", headroom))

    result = split(headroom, demand)
    if queue.mode == "push":   # never more workers of a type than jobs of that type wait
        result = {rt: min(n, state.waiting_jobs.get(rt, 0)) for rt, n in result.items()}
    if len(rts) > 1:
        trace.append(Step("split over resource types", ", ".join(f"{rt}={result.get(rt, 0)}" for rt in rts),
                          sum(result.values())))
    return done(result)
