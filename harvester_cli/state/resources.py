"""What each queue's batch system last said can start now, per CE (`free_resources`): written when a queue
with free_resources asks its backend, read by its plan (within free_resources_max_age), `status` and the
metrics. Rows are plain dicts with the table's columns."""

from __future__ import annotations

from sqlalchemy import delete, select

from harvester_cli.state.schema import free_resources
from harvester_cli.state.store import Tx

COLUMNS = ("computing_element", "measured", "source", "workers", "window", "idle_nodes", "idle_cores",
           "total_cores", "waiting", "pool")


def replace(tx: Tx, queue: str, rows: list[dict]) -> None:
    """The queue's figures, instead of what it had (a CE no longer answered for is forgotten)."""
    tx.execute(delete(free_resources).where(free_resources.c.queue == queue))
    if rows:
        tx.execute(free_resources.insert(), [{"queue": queue, **{c: r.get(c) for c in COLUMNS}} for r in rows])


def of_queues(tx: Tx, queues: list[str]) -> list[dict]:
    """The figures of these queues, per queue and CE."""
    found = tx.execute(select(free_resources).where(free_resources.c.queue.in_(queues))
                       .order_by(free_resources.c.queue, free_resources.c.computing_element)).all()
    return [dict(r._mapping) for r in found]
