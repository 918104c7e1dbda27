"""Pilot streaming: PanDA's SET_N_WORKERS_JOBTYPE numbers still to submit, per PanDA queue, job type and
resource type (`worker_targets`). A newer command replaces a queue's numbers; submit consumes them."""

from __future__ import annotations

from sqlalchemy import case, delete, select, update

from harvester_cli.state.schema import worker_targets
from harvester_cli.state.store import Tx


def replace(tx: Tx, site: str, targets: dict[str, dict[str, int]], command_id: int, at: float) -> None:
    """{job type: {resource type: n}} for this PanDA queue, instead of what it had."""
    tx.execute(delete(worker_targets).where(worker_targets.c.site == site))
    rows = [{"site": site, "job_type": job_type, "resource_type": rt, "remaining": max(0, int(n)),
             "command_id": command_id, "updated": at}
            for job_type, per_type in targets.items() for rt, n in per_type.items()]
    if rows:
        tx.execute(worker_targets.insert(), rows)


def remaining(tx: Tx, site: str, job_type: str) -> dict[str, int] | None:
    """{resource type: workers still to submit}, or None when PanDA has given no numbers for this queue."""
    found = tx.execute(select(worker_targets.c.resource_type, worker_targets.c.remaining).where(
        worker_targets.c.site == site, worker_targets.c.job_type == job_type)).all()
    return dict(found) if found else None


def consume(tx: Tx, site: str, job_type: str, submitted: dict[str, int], at: float) -> None:
    """What was submitted comes off PanDA's numbers (never below zero)."""
    for rt, n in submitted.items():
        tx.execute(update(worker_targets).where(
            worker_targets.c.site == site, worker_targets.c.job_type == job_type,
            worker_targets.c.resource_type == rt).values(
            remaining=case((worker_targets.c.remaining > n, worker_targets.c.remaining - n), else_=0), updated=at))
