"""The downtimes table: downtimes announced with `harvester-cli downtime add`, seen by every host that
shares the state database (the configuration's and a GOCDB feed's are read where they are)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from harvester_cli.config.downtimes import Downtime
from harvester_cli.state.schema import downtimes
from harvester_cli.state.store import Tx


def add(tx: Tx, *, queue: str | None, ce: str | None, start: float, end: float, severity: str, reason: str,
        at: float, host: str) -> int:
    """Announce a downtime; returns its id."""
    result = tx.execute(downtimes.insert().values(
        queue=queue, computing_element=ce, start_time=start, end_time=end, severity=severity, reason=reason,
        created=at, created_by=host))
    return int(result.inserted_primary_key[0])


def _downtime(row) -> Downtime:
    return Downtime(row.start_time, row.end_time, row.severity, row.reason or "", row.queue, row.computing_element,
                    "database", str(row.downtime_id))


def listed(tx: Tx, after: float | None = None) -> list[Downtime]:
    """The downtimes ending after `after` (None: every one), soonest first."""
    query = select(downtimes).order_by(downtimes.c.start_time, downtimes.c.downtime_id)
    if after is not None:
        query = query.where(downtimes.c.end_time > after)
    return [_downtime(row) for row in tx.execute(query)]


def remove(tx: Tx, ids: Sequence[int]) -> list[int]:
    """Withdraw these downtimes; returns the ids there were."""
    found = [r[0] for r in tx.execute(select(downtimes.c.downtime_id).where(downtimes.c.downtime_id.in_(list(ids))))]
    if found:
        tx.execute(delete(downtimes).where(downtimes.c.downtime_id.in_(found)))
    return found


def forget_ended(tx: Tx, before: float) -> int:
    """Delete the downtimes that ended before `before`; returns how many."""
    return tx.execute(delete(downtimes).where(downtimes.c.end_time <= before)).rowcount
