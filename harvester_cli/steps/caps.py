"""Caps several queues share over every host ([caps.NAME]): what a queue's plan needs to know of them, and
the demand each queue leaves for the hosts that do not run it.

A host plans one queue at a time under its lease and under the lease of every cap it is in ("cap:NAME"),
so no two hosts take the same room of a cap. It splits a cap by the demand of all its queues: a queue it
has in its own configuration is planned here (without the shared caps) for its demand now; a queue only
other hosts run counts with the demand its host last recorded (queue_demand), for as long as that is
fresh (three cycle intervals, at least ten minutes), and with its workers alone after that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.instance import Instance
from harvester_cli.state import caps as stored
from harvester_cli.state.caps import Demand, Usage
from harvester_cli.steps import planner

# The unit of each kind of cap, as a queue's usage and demand count it.
_KINDS = {"queued": "queued", "running": "active", "cores": "cores"}
MIN_DEMAND_TTL = 600


@dataclass
class CapInputs:
    caps: tuple[planner.SharedCap, ...]
    usage: dict[str, Usage]


def lease_names(instance: Instance, queue: QueueConfig) -> list[str]:
    """The leases a submission of `queue` holds beside its own: one per shared cap it is in."""
    return [f"cap:{cap.name}" for cap in instance.config.caps_of(queue.name)]


def local_members(instance: Instance, queues: list[QueueConfig]) -> list[QueueConfig]:
    """The queues of this host's configuration that share a cap with one of `queues` (their demand is
    planned here), `queues` left out."""
    names = {q.name for q in queues}
    wanted = {member for q in queues for cap in instance.config.caps_of(q.name) for member in cap.queues}
    return [instance.config.queues[n] for n in sorted(wanted - names) if n in instance.config.queues]


def demand_ttl(instance: Instance) -> float:
    return max(MIN_DEMAND_TTL, 3 * instance.config.instance.cycle_interval)


def demand(plan: planner.Plan, usage: Usage, worker_cores: int, host: str, at: float) -> Demand:
    """What a queue's plan wants, as the levels it would reach (what the other hosts split the caps by)."""
    return Demand(plan.demand, usage.queued + plan.wanted, usage.active + plan.wanted,
                  usage.cores + plan.wanted * worker_cores, host, at)


def inputs(instance: Instance, queue: QueueConfig,
           demand_of: Callable[[QueueConfig, Usage], Demand]) -> CapInputs:
    """The shared caps of `queue` as its plan sees them. `demand_of(queue, usage)` plans a queue of this
    host's configuration for its demand now."""
    caps = instance.config.caps_of(queue.name)
    if not caps:
        return CapInputs((), {})
    members = sorted({q for cap in caps for q in cap.queues} | {queue.name})
    at = model.now()
    with instance.store.reading() as tx:
        usage = stored.usage(tx, members)
        recorded = stored.demands(tx, members, at - demand_ttl(instance))
    known: dict[str, Demand] = {}
    for name in members:
        if name == queue.name:
            continue
        local = instance.config.queues.get(name)
        if local is not None:
            known[name] = demand_of(local, usage[name])
        elif name in recorded:
            known[name] = recorded[name]
    out = []
    for cap in caps:
        for kind, limit in cap.limits().items():
            attribute = _KINDS[kind]
            out.append(planner.SharedCap(
                cap.name, kind, limit, used={q: getattr(usage[q], attribute) for q in cap.queues},
                targets={q: getattr(known[q], attribute) for q in cap.queues if q in known},
                demand={q: known[q].demand for q in cap.queues if q in known}))
    return CapInputs(tuple(out), usage)


def record(instance: Instance, queue: QueueConfig, found: Demand) -> None:
    """Leave this queue's demand for the hosts that do not run it."""
    with instance.store.transaction() as tx:
        stored.record_demand(tx, queue.name, found)


def samples(instance: Instance) -> list[tuple[str, float, dict]]:
    """The shared caps' metrics: (family, value, labels) for each cap and kind, its limit and its use."""
    caps = list(instance.config.caps.values())
    if not caps:
        return []
    with instance.store.reading() as tx:
        usage = stored.usage(tx, sorted({q for cap in caps for q in cap.queues}))
    out = []
    for cap in caps:
        for kind, limit in cap.limits().items():
            labels = {"cap": cap.name, "kind": kind}
            out.append(("harvester_cli_shared_cap_limit", limit, labels))
            out.append(("harvester_cli_shared_cap_used", sum(getattr(usage[q], _KINDS[kind]) for q in cap.queues),
                        labels))
    return out
