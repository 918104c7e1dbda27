"""Caps shared by several queues ([caps.NAME]): what the queues of a cap use now, over every host, and what
each wanted when a host last planned it (queue_demand), for the hosts that do not run that queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from harvester_cli import model
from harvester_cli.state.schema import queue_demand, workers
from harvester_cli.state.store import Tx


@dataclass
class Usage:
    """A queue's workers now: queued (pending, submitted, idle), active (queued or running), their cores."""

    queued: int = 0
    active: int = 0
    cores: int = 0


@dataclass(frozen=True)
class Demand:
    """What a queue wanted when it was last planned: its demand (activated jobs, PanDA's pilot-streaming
    numbers, or fetched jobs waiting) and the levels it would have reached (workers queued, workers queued
    or running, their cores)."""

    demand: float
    queued: int
    active: int
    cores: int
    host: str | None
    updated: float


def usage(tx: Tx, queues: Sequence[str]) -> dict[str, Usage]:
    out = {q: Usage() for q in queues}
    for queue, status, n, cores in tx.execute(
        select(workers.c.queue, workers.c.status, func.count(), func.sum(workers.c.n_core))
        .where(workers.c.queue.in_(list(queues)), workers.c.status.in_([*model.WORKER_QUEUED, model.RUNNING]))
        .group_by(workers.c.queue, workers.c.status)
    ):
        found = out[queue]
        found.active += n
        found.cores += int(cores or 0)
        if status != model.RUNNING:
            found.queued += n
    return out


def record_demand(tx: Tx, queue: str, demand: Demand) -> None:
    values = {"demand": demand.demand, "queued_target": demand.queued, "running_target": demand.active,
              "cores_target": demand.cores, "host": demand.host, "updated": demand.updated}
    if tx.execute(update(queue_demand).where(queue_demand.c.queue == queue).values(**values)).rowcount:
        return
    try:
        with tx.conn.begin_nested():   # another host may record the same queue at this moment
            tx.execute(queue_demand.insert().values(queue=queue, **values))
    except IntegrityError:
        tx.execute(update(queue_demand).where(queue_demand.c.queue == queue).values(**values))


def demands(tx: Tx, queues: Sequence[str], since: float) -> dict[str, Demand]:
    """The demand recorded for these queues since `since` (older records say nothing)."""
    rows = tx.execute(select(queue_demand).where(queue_demand.c.queue.in_(list(queues)),
                                                 queue_demand.c.updated >= since))
    return {r.queue: Demand(r.demand, r.queued_target, r.running_target, r.cores_target, r.host, r.updated)
            for r in rows}
