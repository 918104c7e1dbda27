"""Announced downtimes: adding, listing and removing those the state database keeps (every host sees
them), and what is down now or soon for status, plan, `downtime list` and the metrics. The rules (which
CE or queue a new worker may not go to) are config.downtimes'; submit and fetch-jobs apply them."""

from __future__ import annotations

from dataclasses import dataclass, field

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.config import downtimes as rules
from harvester_cli.config.downtimes import Downtime
from harvester_cli.errors import UsageError
from harvester_cli.instance import Instance
from harvester_cli.state import downtimes as stored


def add(instance: Instance, *, queue: str | None, ce: str | None, start: float | None, end: float,
        severity: str, reason: str) -> Downtime:
    """Announce a downtime in the state database (from now when `start` is None); returns it."""
    at = model.now()
    start = at if start is None else start
    if queue is None and ce is None:
        raise UsageError("name what is down: --queue, --ce, or both")
    if end <= at:
        raise UsageError(f"the end ({rules.utc(end)}) has passed already: times are UTC")
    if end <= start:
        raise UsageError(f"the end ({rules.utc(end)}) must be after the start ({rules.utc(start)})")
    with instance.store.transaction() as tx:
        downtime_id = stored.add(tx, queue=queue, ce=ce, start=start, end=end, severity=severity, reason=reason,
                                 at=at, host=instance.host)
    instance.downtimes(fresh=True)   # this process's next submission sees it
    return Downtime(start, end, severity, reason, queue, ce, "database", str(downtime_id))


def remove(instance: Instance, ids: list[int]) -> tuple[list[int], list[int]]:
    """Withdraw downtimes by id; returns (removed, not found)."""
    with instance.store.transaction() as tx:
        removed = stored.remove(tx, ids)
    instance.downtimes(fresh=True)
    return removed, [i for i in ids if i not in removed]


def remove_ended(instance: Instance) -> int:
    with instance.store.transaction() as tx:
        return stored.forget_ended(tx, model.now())


def affected(downtime: Downtime, queues: list[QueueConfig]) -> list[str]:
    """The queues (of `queues`) a downtime concerns: the queue it names, or those whose fanout has its CE."""
    if downtime.ce is None:
        return [q.name for q in queues if downtime.covers(q.name, None)]
    return [q.name for q in queues if any(downtime.covers(q.name, ce) for ce in rules.fanout_ces(q))]


@dataclass
class QueueDown:
    """What keeps new workers of one queue off now: the whole queue (why), or some of its CEs."""

    queue: str
    why: str | None = None
    ces: dict[str, str] = field(default_factory=dict)


def state(instance: Instance, queues: list[QueueConfig], at: float | None = None) -> dict[str, QueueDown]:
    """For each queue, whether a new worker may go anywhere now (walltime included), and which CEs not."""
    at = model.now() if at is None else at
    announced = instance.downtimes()
    out = {}
    for queue in queues:
        ces = rules.fanout_ces(queue)
        out[queue.name] = QueueDown(queue.name, rules.queue_down(announced, queue.name, ces, at, queue.walltime),
                                    rules.blocked_ces(announced, queue.name, ces, at, queue.walltime))
    return out


def listing(instance: Instance, queues: list[QueueConfig], *, every: bool = False, ended: bool = False,
            at: float | None = None) -> list[dict]:
    """The downtimes not over yet (with `ended`, the state database's ended ones too), as plain data: what,
    when (UTC), why, from where, and the queues of `queues` they concern. Only those concerning `queues`
    unless `every`."""
    at = model.now() if at is None else at
    found = list(instance.downtimes(fresh=True))
    if ended:
        with instance.store.reading() as tx:
            found += [d for d in stored.listed(tx) if d.end <= at]
    rows = []
    for downtime in sorted(found, key=lambda d: (d.start, d.end, d.source, d.id or "")):
        concerned = affected(downtime, queues)
        if concerned or every:
            rows.append({**downtime.as_dict(at), "queues": concerned, "ended": downtime.end <= at})
    return rows


def summary(instance: Instance, queues: list[QueueConfig], at: float | None = None) -> dict:
    """What `status` and `plan` show: the downtimes of these queues and their CEs not over yet, each queue
    that gets no new worker now and why, the CEs the fanout leaves out, and problems reading a feed."""
    at = model.now() if at is None else at
    down = state(instance, queues, at)
    return {"downtimes": listing(instance, queues, at=at),
            "queues_down": [{"queue": d.queue, "why": d.why} for d in down.values() if d.why],
            "ces_down": [{"queue": d.queue, "computing_element": ce, "why": why}
                         for d in down.values() if not d.why for ce, why in d.ces.items()],
            "problems": list(instance.downtime_problems)}


def samples(instance: Instance, queues: list[QueueConfig], at: float | None = None) -> list[tuple[str, float, dict]]:
    """The downtime metrics: (family, value, labels) for each downtime not over yet and each queue it
    concerns, whether each queue and each of its CEs may get new workers now."""
    at = model.now() if at is None else at
    out = []
    for row in listing(instance, queues, at=at):
        for queue in row["queues"]:
            labels = {"queue": queue, "computing_element": row["computing_element"] or "", "severity": row["severity"],
                      "source": row["source"], "reason": row["reason"][:100]}
            out.append(("harvester_cli_downtime_start_timestamp_seconds", rules.parse_time(row["start"]), labels))
            out.append(("harvester_cli_downtime_end_timestamp_seconds", rules.parse_time(row["end"]), labels))
    for name, down in state(instance, queues, at).items():
        out.append(("harvester_cli_queue_down", 1 if down.why else 0, {"queue": name}))
        queue = next(q for q in queues if q.name == name)
        for ce in rules.fanout_ces(queue):
            out.append(("harvester_cli_computing_element_down", 1 if down.why or ce in down.ces else 0,
                        {"queue": name, "computing_element": ce}))
    return out
