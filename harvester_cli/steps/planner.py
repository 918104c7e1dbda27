"""How many new workers a queue needs, per resource type, with a trace of every rule (pure, no I/O).

The trace is what an operator reads to answer "why no pilots?": each step names its rule, its inputs
and the number that came out, as APF printed "Ready=40, MaxPerCycle=20, MaxPending=12 -> 12".
Rules in order (docs/domain.md): queue status, an announced downtime of the queue (or of every CE it
has), missed-worker throttle, max_workers, the queued limit (absolute, or a percentage of running with a
floor), with free_resources what can start now (below), the demand (pull: activated jobs x factor with an
empty-pilot floor; push: jobs waiting, or with many_to_one the allocations they make (steps.allocation);
pilot streaming: PanDA's numbers), the caps shared with other queues ([caps.NAME], split by demand when they
bind), per-cycle and per-run caps, the split over resource types (largest remainder), caps on queued cores
and memory, and last the PanDA registration (no pilot before PanDA knows this instance).

A shared cap holds over all its queues and hosts: each queue's share of it is the cap split in proportion
to the queues' demand, no queue given more than it wants (what it leaves goes to the others), and a
queue gets new workers only within its share and within what is left of the cap. Every host computes
the same shares from the same numbers: the workers in the state database, and each queue's demand (its
own plan's, or the one its host last recorded).

With free_resources, what the batch system says can start now comes right after the queued limit: the
queue keeps queued the N workers that would start at once plus those that wait for the next free slots
(queued_when_full, or the most of its workers that ended within one cycle lately when more; within the queued
limit), no more: where nothing can start, more would only wait for hours or become empty pilots; where N can
start, the queued limit does not hold back those N (they will not wait), every other cap still holding.
Figures older than free_resources_max_age are not used. A backfill window (only a shorter walltime starts now, down to
min_walltime) gives the new workers that walltime (Plan.walltime). A many_to_one queue's allocations are sized to
the idle nodes when fewer than nodes_max (and at least nodes_min) stand idle in one place (Plan.nodes): an
allocation that starts now on the nodes there are beats a full one that waits for nodes to free up. The figures
count workers of the queue's first resource type; when its types differ in size (a unified queue's 1-core and
8-core pilots), the split over types is fitted into the cores that start now, plus the workers that may wait.

PanDA's activated-job counts lag by up to a minute (a materialized view refreshed on every full minute).
A pilot that started since the last refresh has probably taken one of the jobs still counted, so those
pilots are taken off the count: without it, every one-minute cycle sends a pilot for a job that is
already gone (an empty pilot). With
counts per resource type (a unified queue), each type's demand is its own activated jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harvester_cli.config import QueueConfig
from harvester_cli.steps import allocation


NO_ANSWER = "no answer from PanDA"   # QueueState.activated_source when PanDA was asked and could not say
# With free_resources, as many pilots may wait while the site is full as the most of the queue's workers that
# ended within one cycle over this many recent cycles: slots free up in bursts (jobs started together end
# together), and those a waiting pilot does not take stay idle until the next cycle.
TURNOVER_CYCLES = 10


@dataclass(frozen=True)
class FreeCE:
    """One CE's figures of what can start now (queues with free_resources), as a plan reads them."""

    computing_element: str
    workers: int | None        # workers of the queue's shape that would start now (None: it could not tell)
    window: int | None         # seconds such a worker could run if started now
    age: int                   # seconds since the batch system said so
    source: str
    pool: str | None = None    # CEs drawing on the same nodes: counted once
    idle_nodes: int | None = None


@dataclass(frozen=True)
class FreeResources:
    """What the batch system says can start now, per CE; `problem`: why it could not be asked this time
    (then the figures are the last stored ones); `unsupported`: this backend cannot say."""

    ces: tuple[FreeCE, ...] = ()
    problem: str | None = None
    unsupported: bool = False


@dataclass(frozen=True)
class FreeCores:
    """A unified queue's free-resources rule in cores. The batch system weighed workers of the queue's first
    resource type; a worker of a larger type takes that many more of the cores that start now."""

    start: int      # cores that can start now, less what the pilots already waiting beyond the allowance take
    wait: int       # workers that may wait for the next free slots, of any size (a waiting pilot holds no cores)
    unit: int       # the first resource type's cores (the figures' workers are of its size)


@dataclass(frozen=True)
class QueueState:
    """Local counts and PanDA's view of one queue."""

    queued: dict[str, int] = field(default_factory=dict)     # pending + submitted + idle, per resource type
    running: dict[str, int] = field(default_factory=dict)
    activated: int | None = None                             # pull: activated jobs in PanDA (None: unknown)
    activated_by_type: dict[str, int] | None = None          # the same per resource type, when PanDA says
    activated_source: str = "site totals"
    started_recently: dict[str, int] = field(default_factory=dict)  # pilots started since the counts were made
    stats_age: int | None = None                              # seconds since PanDA made them (None: live)
    registration: str | None = None                           # why PanDA does not know this instance (None: it does)
    waiting_jobs: dict[str, int] = field(default_factory=dict)  # push: fetched jobs without a worker
    # many_to_one: the ages (s) of the jobs without a worker, oldest first, per resource type
    waiting_ages: dict[str, list[float]] = field(default_factory=dict)
    streaming_targets: dict[str, int] | None = None          # pilot streaming: PanDA's numbers still to submit
    missed_recent: int = 0                                    # workers missed within the throttle window
    queued_cores: int = 0
    queued_memory_mb: int = 0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # resource type -> (cores, memory MB)
    # Workers every host made for the queue within the last cycle interval ([instance] cycle_interval), and
    # that interval; None: the per-cycle cap counts this run only.
    made_recently: int | None = None
    cycle_interval: int = 0
    downtime: str | None = None                               # why no new worker may go anywhere now (None: it may)
    ces_down: dict[str, str] = field(default_factory=dict)    # CEs of the fanout in downtime, and why
    shared_caps: tuple[SharedCap, ...] = ()
    free: FreeResources | None = None                         # queues with free_resources: what can start now
    # with free_resources: the queue's workers that ran and ended within the last TURNOVER_CYCLES cycles of
    # turnover_cycle seconds each, and the most of them that ended within one cycle (None: not counted)
    ended_recently: int | None = None
    ended_peak: int | None = None
    turnover_cycle: int = 60
    # with free_resources: how many queued workers still wait, asked of the batch system right before the plan
    # (the state database counts as queued those that started since the last poll); None: not asked, and why
    queued_seen: int | None = None
    queued_unasked: str | None = None


@dataclass(frozen=True)
class SharedCap:
    """A cap several queues share ([caps.NAME]) as one queue's plan sees it: one kind of limit (workers
    "queued", "running" = queued or running, "cores" of those), what each of its queues uses now over
    every host (this one included), and for the others the level they would reach and their demand."""

    name: str
    kind: str
    limit: int
    used: dict[str, int]
    targets: dict[str, int] = field(default_factory=dict)
    demand: dict[str, float] = field(default_factory=dict)


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
    shortfall: str | None = None   # `submit --count N`: why fewer than N (the caps that cut it)
    demand: float = 0.0            # what the shared caps are split by: activated jobs, PanDA's numbers, jobs waiting
    wanted: int = 0                # new workers it wants before the shared caps and the per-cycle and per-run caps
    caps: list[dict] = field(default_factory=list)   # each shared cap: limit, use and every queue's share
    walltime: int | None = None    # the new workers' walltime when a backfill window shortens it (None: the queue's)
    nodes: int | None = None       # many_to_one: the largest new allocation's nodes when fewer than nodes_max are idle

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


def fair_shares(limit: int, targets: dict[str, int], demand: dict[str, float]) -> dict[str, int]:
    """A shared cap split between its queues: each gets the level it would reach (`targets`) if all of them
    fit; otherwise the cap in proportion to `demand`, none above its target, what one leaves split again
    among the others (queues in name order, so every host computes the same)."""
    names = sorted(targets)
    if sum(targets.values()) <= limit:
        return dict(targets)
    shares = {q: 0 for q in names}
    open_ = [q for q in names if demand.get(q, 0) > 0 and targets[q] > 0]
    left = limit
    while left > 0 and open_:
        part = split(left, {q: demand[q] for q in open_})
        taken = 0
        for q in list(open_):
            take = min(part[q], targets[q] - shares[q])
            shares[q] += take
            taken += take
            if shares[q] >= targets[q]:
                open_.remove(q)
        left -= taken
        if not taken:
            break
    return shares


def _unit(queue: QueueConfig, state: QueueState, kind: str) -> int:
    """A new worker in the unit of a cap: one worker, or the cores of the queue's largest resource type."""
    if kind != "cores":
        return 1
    return max((state.sizes.get(rt, (queue.core_count, 0))[0] for rt in queue.resource_types), default=1) or 1


def _shared(queue: QueueConfig, state: QueueState, cap: SharedCap, headroom: int, demand: float,
            trace: list[Step], shown: list[dict]) -> int:
    """New workers within this queue's share of a shared cap and what is left of it."""
    unit = _unit(queue, state, cap.kind)
    used = {q: cap.used.get(q, 0) for q in {*cap.used, queue.name}}
    targets = {q: max(cap.targets.get(q, used[q]), used[q]) for q in used}
    targets[queue.name] = used[queue.name] + headroom * unit
    demands = {q: cap.demand.get(q, 0.0) for q in used}
    demands[queue.name] = demand
    shares = fair_shares(cap.limit, targets, demands)
    total = sum(used.values())
    room = max(0, min(shares[queue.name] - used[queue.name], cap.limit - total))
    result = min(headroom, room // unit)
    binding = sum(targets.values()) > cap.limit
    others = sorted(q for q in used if q != queue.name)
    inputs = (f"max_{cap.kind}={cap.limit}, used={total} ("
              + ", ".join(f"{q}={used[q]}" for q in [queue.name, *others]) + ")")
    if binding:
        inputs += ("; split by demand " + ", ".join(f"{q}={demands[q]:g}" for q in [queue.name, *others])
                   + f": share of {queue.name}={shares[queue.name]}")
    else:
        inputs += "; not binding"
    if unit != 1:
        inputs += f", {unit} cores a worker"
    trace.append(Step(f"shared cap {cap.name}", inputs, result))
    shown.append({"cap": cap.name, "kind": cap.kind, "limit": cap.limit, "used": total, "binding": binding,
                  "queues": {q: {"used": used[q], "target": targets[q], "demand": demands[q], "share": shares[q]}
                             for q in sorted(used)}})
    return result


def queued_limit(queue: QueueConfig, running: int) -> tuple[int, str]:
    if queue.n_queue_limit_worker_ratio is None:
        return queue.n_queue_limit_worker, f"limit={queue.n_queue_limit_worker}"
    limit = max(queue.n_queue_limit_worker_min, int(running * queue.n_queue_limit_worker_ratio / 100))
    return limit, (f"limit={queue.n_queue_limit_worker_ratio:g}% of running={running}, "
                   f"min={queue.n_queue_limit_worker_min} -> {limit}")


def _cap_resources(queue: QueueConfig, state: QueueState, wanted: dict[str, int], trace: list[Step]) -> dict[str, int]:
    """Accept workers one by one, in proportion, while queued cores and memory stay within their caps."""
    if queue.max_queued_cores is None and queue.max_queued_memory_mb is None:
        return wanted
    cores_left = None if queue.max_queued_cores is None else queue.max_queued_cores - state.queued_cores
    memory_left = None if queue.max_queued_memory_mb is None else queue.max_queued_memory_mb - state.queued_memory_mb
    accepted = {rt: 0 for rt in wanted}

    def fits(rt: str) -> bool:
        nonlocal cores_left, memory_left
        cores, memory = state.sizes.get(rt, (queue.core_count, queue.core_count * queue.memory_mb_per_core))
        if (cores_left is not None and cores > cores_left) or (memory_left is not None and memory > memory_left):
            return False
        cores_left = None if cores_left is None else cores_left - cores
        memory_left = None if memory_left is None else memory_left - memory
        return True

    _in_proportion(wanted, accepted, fits)
    inputs = []
    if queue.max_queued_cores is not None:
        inputs.append(f"max_queued_cores={queue.max_queued_cores}, queued cores={state.queued_cores}")
    if queue.max_queued_memory_mb is not None:
        inputs.append(f"max_queued_memory_mb={queue.max_queued_memory_mb}, queued MB={state.queued_memory_mb}")
    trace.append(Step("queued cores/memory", "; ".join(inputs), sum(accepted.values())))
    return accepted


def most_within(times: list[float], span: float) -> int:
    """The most of these moments that fall within any interval of `span` seconds."""
    ordered = sorted(times)
    most = first = 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= span:
            first += 1
        most = max(most, last - first + 1)
    return most


def _describe(queue: QueueConfig, ce: FreeCE) -> str:
    if ce.workers is None:
        said = "cannot tell"
    else:
        said = f"{ce.workers} now"
        if ce.window is not None and ce.window < queue.walltime:
            said += (f" for {ce.window} s" if ce.window else " (not even for min_walltime)" if queue.min_walltime
                     else " (not for its walltime)")
    return f"{ce.computing_element}: {said} ({ce.source}, {ce.age} s ago)"


def _allocation_nodes(queue: QueueConfig, counted: list[FreeCE]) -> tuple[int | None, int | None, str]:
    """many_to_one: (the largest allocation's nodes when the idle nodes make it smaller than nodes_max, else
    None; the allocations of that size that start now; the words) from the idle nodes per pool. (None, None, "")
    when the batch system did not say them: its own count of workers stands."""
    shape = queue.many_to_one
    idle: dict[str, int] = {}
    for c in counted:
        if c.idle_nodes is None:
            return None, None, ""
        key = c.pool or c.computing_element
        idle[key] = max(idle.get(key, 0), c.idle_nodes)
    most = max(idle.values(), default=0)
    if most < shape.nodes_min:
        return None, None, ""
    size = min(most, shape.nodes_max)
    fitting = sum(n // size for n in idle.values())
    if size == shape.nodes_max:
        return None, fitting, ""
    return size, fitting, (f"; allocations of at most {size} node(s), the most idle in one place "
                           f"(nodes_max={shape.nodes_max})")


def _cores(queue: QueueConfig, state: QueueState, rt: str) -> int:
    return state.sizes.get(rt, (queue.core_count, 0))[0] or 1


def _weighed_in_cores(queue: QueueConfig, state: QueueState) -> int | None:
    """The first resource type's cores when the queue's types differ in size (one worker is not one slot
    of the figures), else None."""
    if queue.many_to_one is not None or len({_cores(queue, state, rt) for rt in queue.resource_types}) < 2:
        return None
    return _cores(queue, state, queue.resource_types[0])


def free_resources(queue: QueueConfig, state: QueueState, headroom: int, room: int, queued: int, limit: int,
                   trace: list[Step]) -> tuple[int, int | None, int | None, FreeCores | None]:
    """The free-resources rule (after the queued limit): the headroom, the walltime a backfill window gives
    (None: the queue's), with many_to_one the largest allocation's nodes when fewer than nodes_max stand
    idle (None: nodes_max), and for a queue whose resource types differ in size the rule in cores (applied
    after the split over types; None: not needed). `room` is what max_workers leaves, `limit` the queued
    limit."""
    free = state.free
    rule = "free resources"
    if free is None or free.unsupported:
        trace.append(Step(rule, f"the {queue.backend} backend cannot say what can start now: not used", headroom))
        return headroom, None, None, None
    max_age = queue.free_resources_max_age
    fresh = [c for c in free.ces if c.age <= max_age and c.workers is not None]
    asked = f"not asked now ({free.problem}); " if free.problem else ""
    if not fresh:
        old = [c for c in free.ces if c.age > max_age]
        if old:
            why = (f"figures older than free_resources_max_age={max_age} s ("
                   + "; ".join(_describe(queue, c) for c in old) + "): not used")
        elif free.ces:
            why = "; ".join(_describe(queue, c) for c in free.ces) + ": not used"
        else:
            why = "no figures: not used"
        trace.append(Step(rule, asked + why, headroom))
        return headroom, None, None, None
    full = [c for c in fresh if c.workers and (c.window is None or c.window >= queue.walltime)]
    windows = [c for c in fresh if c.workers and c.window]
    counted, walltime = (full, None) if full else (windows, min((c.window for c in windows), default=None))
    pools: dict[str, int] = {}
    for c in counted:
        key = c.pool or c.computing_element
        pools[key] = max(pools.get(key, 0), c.workers or 0)
    startable = sum(pools.values())
    nodes, sized = None, ""
    if queue.many_to_one is not None:
        nodes, fitting, sized = _allocation_nodes(queue, counted)
        startable = startable if fitting is None else fitting
    figures = asked + "; ".join(_describe(queue, c) for c in fresh)
    # What may wait for the next free slots: queued_when_full, or the most slots that freed up within one cycle
    # lately when that is more; never more than the queued limit allows.
    waiting_wanted, why_waiting = queue.queued_when_full, f"queued_when_full={queue.queued_when_full}"
    if state.ended_recently:
        why_waiting += (f", {state.ended_recently} ended in the last {TURNOVER_CYCLES * state.turnover_cycle} s, at "
                        f"most {state.ended_peak} within {state.turnover_cycle} s")
        waiting_wanted = max(waiting_wanted, state.ended_peak or 0)
    waiting = min(waiting_wanted, limit)
    # what waits now: the batch system's word when it was asked (the state database's may be a cycle old)
    waiting_now, queued_text = queued, f"queued={queued}"
    if state.queued_seen is not None:
        waiting_now = state.queued_seen
        if waiting_now != queued:
            queued_text = f"queued={waiting_now} (asked now; {queued} in the state database)"
    elif state.queued_unasked:
        queued_text += f" ({state.queued_unasked})"
    unit = _weighed_in_cores(queue, state)
    in_cores = None
    if unit is not None:
        # pilots waiting beyond the allowance take the first cores that free up, at the queued ones' mean size
        mean = state.queued_cores / queued if queued and state.queued_cores else unit
        taken = round(max(0, waiting_now - waiting) * mean)
        in_cores = FreeCores(max(0, startable * unit - taken), max(0, waiting - waiting_now), unit)
    if not startable:
        result = min(room, max(0, waiting - waiting_now))
        trace.append(Step(rule, f"nothing can start now ({figures}); {queued_text}, {why_waiting}", result))
        return result, None, None, in_cores
    result = min(room, max(0, startable + waiting - waiting_now))
    window = f", walltime {walltime} s (a backfill window)" if walltime is not None else ""
    trace.append(Step(rule, f"{startable} can start now{window}{sized} ({figures}) + {why_waiting}, {queued_text}",
                      result))
    return result, walltime, nodes, in_cores


def _in_proportion(wanted: dict[str, int], accepted: dict[str, int], fits: Callable[[str], bool]) -> None:
    """Accept workers one by one, the resource type furthest behind its share first, while `fits` says yes for
    one of that type (and counts it); a type it refuses gets no more."""
    order = list(wanted)
    blocked: set[str] = set()
    while True:
        candidates = [rt for rt, n in wanted.items() if accepted[rt] < n and rt not in blocked]
        if not candidates:
            return
        rt = min(candidates, key=lambda r: (accepted[r] / wanted[r], order.index(r)))
        if fits(rt):
            accepted[rt] += 1
        else:
            blocked.add(rt)


def _fit_free_cores(queue: QueueConfig, state: QueueState, wanted: dict[str, int], free: FreeCores,
                    trace: list[Step]) -> dict[str, int]:
    """The split's workers within the cores that can start now, and the workers that may wait beyond them."""
    sizes = {rt: _cores(queue, state, rt) for rt in wanted}
    accepted = {rt: 0 for rt in wanted}
    cores_left, may_wait = free.start, free.wait

    def starts(rt: str) -> bool:
        nonlocal cores_left
        if sizes[rt] > cores_left:
            return False
        cores_left -= sizes[rt]
        return True

    def waits(rt: str) -> bool:
        nonlocal may_wait
        if not may_wait:
            return False
        may_wait -= 1
        return True

    _in_proportion(wanted, accepted, starts)
    _in_proportion(wanted, accepted, waits)
    shape = ", ".join(f"{rt} {n} core{'s' if n > 1 else ''}" for rt, n in sizes.items())
    trace.append(Step("free cores", f"{free.start} cores can start now (workers of {free.unit} core"
                                    f"{'s' if free.unit > 1 else ''}), {free.wait} more may wait; {shape}",
                      sum(accepted.values())))
    return accepted


def plan(queue: QueueConfig, state: QueueState, run_remaining: int) -> Plan:
    trace: list[Step] = []
    rts = list(queue.resource_types)
    queued, running = _sum(state.queued), _sum(state.running)

    demand_total = 0.0
    wanted = 0
    caps: list[dict] = []
    walltime = nodes = None
    in_cores: FreeCores | None = None

    def done(result: dict[str, int]) -> Plan:
        return Plan(queue.name, {rt: result.get(rt, 0) for rt in rts}, trace, demand=demand_total, wanted=wanted,
                    caps=caps, walltime=walltime, nodes=nodes)

    if queue.status != "online":
        trace.append(Step("queue status", f"status={queue.status}", 0))
        return done({})
    if state.downtime is not None:
        trace.append(Step("downtime", state.downtime, 0))
        return done({})
    if queue.throttle_missed is not None and state.missed_recent > queue.throttle_missed:
        trace.append(Step("throttle", f"missed={state.missed_recent} in the last {queue.throttle_window} s "
                                      f"> throttle_missed={queue.throttle_missed}", 0))
        return done({})

    room = headroom = max(0, queue.max_workers - queued - running)
    trace.append(Step("max_workers", f"max={queue.max_workers}, queued={queued}, running={running}", headroom))
    limit, described = queued_limit(queue, running)
    headroom = min(headroom, max(0, limit - queued))
    trace.append(Step("n_queue_limit_worker", f"{described}, queued={queued}", headroom))
    if queue.free_resources:
        headroom, walltime, nodes, in_cores = free_resources(queue, state, headroom, room, queued, limit, trace)

    if queue.mode == "pull" and queue.pilot_streaming:
        if state.streaming_targets is None:
            trace.append(Step("pilot streaming", "no SET_N_WORKERS_JOBTYPE from PanDA yet", 0))
            return done({})
        targets = {rt: state.streaming_targets.get(rt, 0) for rt in rts}
        headroom = min(headroom, _sum(targets))
        trace.append(Step("pilot streaming", "PanDA asks " + ", ".join(f"{rt}={n}" for rt, n in targets.items()),
                          headroom))
        demand = {rt: float(n) for rt, n in targets.items()}
        demand_total = float(_sum(targets))
    elif queue.mode == "pull":
        if state.activated is None:
            # PanDA could not say: be conservative, as if no job were activated.
            headroom = min(headroom, max(0, queue.empty_pilot_floor - queued))
            trace.append(Step("activated jobs", f"unknown (PanDA did not answer), floor={queue.empty_pilot_floor}, "
                                                f"queued={queued}", headroom))
            demand = {rts[0]: 1.0}
        else:
            started = _sum(state.started_recently)
            by_type = state.activated_by_type
            if by_type is not None:
                effective = {rt: max(0, by_type.get(rt, 0) - state.started_recently.get(rt, 0)) for rt in rts}
                left = _sum(effective)
            else:
                left = max(0, state.activated - started)
            target = max(int(left * queue.activated_factor), queue.empty_pilot_floor)
            headroom = min(headroom, max(0, target - queued))
            counted = f"activated={state.activated} ({state.activated_source}"
            if state.stats_age is not None:
                counted += f", counted {state.stats_age} s ago) - pilots started since={started}"
            else:
                counted += ")"
            trace.append(Step("activated jobs", f"{counted} -> {left} x {queue.activated_factor}, "
                                                f"floor={queue.empty_pilot_floor}, queued={queued}", headroom))
            demand_total = float(left)
            if by_type is not None and left:
                # Each type's own demand: its activated jobs beyond what already waits for them.
                demand = {rt: max(0.0, effective[rt] * queue.activated_factor - state.queued.get(rt, 0)) for rt in rts}
                if not any(demand.values()):
                    demand = {rt: float(effective[rt]) for rt in rts}
            elif left:
                demand = {rt: 1.0 for rt in rts}
            else:
                # Empty pilots go to the cheapest resource type only (the seed: "send empty pilots only to SCORE").
                demand = {rts[0]: 1.0}
    else:
        waiting = {rt: state.waiting_jobs.get(rt, 0) for rt in rts}
        if queue.many_to_one is None:   # one worker per job (many_to_one: the allocations they make, below)
            headroom = min(headroom, _sum(waiting))
        if state.activated is not None:   # what fetch-jobs would bring next (a plan asks PanDA)
            at_panda = f"; at PanDA: activated={state.activated} ({state.activated_source}), for fetch-jobs"
        elif state.activated_source == NO_ANSWER:
            at_panda = f"; at PanDA: unknown ({NO_ANSWER})"
        else:
            at_panda = ""
        trace.append(Step("waiting jobs", "fetched jobs without a worker: "
                          + ", ".join(f"{rt}={n}" for rt, n in waiting.items()) + at_panda, headroom))
        demand = {rt: float(n) for rt, n in waiting.items()}
        demand_total = float(_sum(waiting))
        if queue.many_to_one is not None:   # many jobs per worker: the jobs waiting make the allocations
            made = {rt: allocation.allocations_for(state.waiting_ages.get(rt, []), queue, nodes_max=nodes)
                    for rt in rts}
            headroom = min(headroom, sum(n for n, _ in made.values()))
            trace.append(Step("jobs per allocation (many_to_one)",
                              "; ".join(f"{rt}: {why}" if len(rts) > 1 else why for rt, (_, why) in made.items()),
                              headroom))
            demand = {rt: float(n) for rt, (n, _) in made.items()}
            demand_total = float(sum(n for n, _ in made.values()))

    wanted = headroom
    if state.ces_down:
        trace.append(Step("CEs in downtime", "; ".join(f"{ce}: {why}" for ce, why in state.ces_down.items())
                          + "; the fanout sends the workers to the others", headroom))
    for cap in state.shared_caps:
        headroom = _shared(queue, state, cap, headroom, demand_total, trace, caps)

    if state.made_recently is None:
        headroom = min(headroom, queue.max_new_workers_per_cycle)
        trace.append(Step("max_new_workers_per_cycle", f"cap={queue.max_new_workers_per_cycle}", headroom))
    else:   # several hosts: the cap holds over all of them within the interval
        headroom = min(headroom, max(0, queue.max_new_workers_per_cycle - state.made_recently))
        trace.append(Step("max_new_workers_per_cycle", f"cap={queue.max_new_workers_per_cycle}, made by all hosts "
                                                       f"in the last {state.cycle_interval} s={state.made_recently}",
                          headroom))
    headroom = min(headroom, max(0, run_remaining))
    trace.append(Step("max_new_workers_per_run", f"left this run={run_remaining}", headroom))

    result = split(headroom, demand)
    if len(rts) > 1:
        how = ""
        if queue.mode == "pull" and not queue.pilot_streaming and state.activated:
            how = (" (by activated jobs per resource type)" if state.activated_by_type is not None
                   else " (evenly: PanDA gave site totals only)")
        trace.append(Step("split over resource types" + how, ", ".join(f"{rt}={result.get(rt, 0)}" for rt in rts),
                          sum(result.values())))
    result = {rt: result.get(rt, 0) for rt in rts}
    if in_cores is not None and any(result.values()):
        result = _fit_free_cores(queue, state, result, in_cores, trace)
    result = _cap_resources(queue, state, result, trace)
    if state.registration is not None:
        trace.append(Step("PanDA registration", state.registration, 0))
        return done({})
    return done(result)
