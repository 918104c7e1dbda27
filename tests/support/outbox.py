"""The outbox's rules, checked on any state database (SQLite in tests/unit, the servers in tests/integration)."""

from __future__ import annotations

import json

from sqlalchemy import select

from harvester_cli.state import claims, outbox
from harvester_cli.state.schema import reports
from harvester_cli.state.store import Store


def assert_final_update_stays(store: Store) -> None:
    """A job's final update, once queued, is replaced by a later final one only: an update that is not final
    (queued by a run that read the job before it ended) leaves it as it is, version too."""
    def pending() -> tuple[int, bool, str]:
        with store.reading() as tx:
            (row,) = tx.execute(select(reports).where(reports.c.kind == outbox.JOB, reports.c.key == 7)).all()
        return row.version, bool(row.final), json.loads(row.payload)["job_status"]

    with store.transaction() as tx:
        outbox.enqueue(tx, outbox.JOB, [(7, "Q", {"job_status": "running"}, False)])
        outbox.enqueue(tx, outbox.JOB, [(7, "Q", {"job_status": "finished"}, True)])
    assert pending() == (2, True, "finished")
    with store.transaction() as tx:   # the final update in flight to PanDA
        (row,) = claims.claim(tx, reports, reports.c.kind == outbox.JOB, 10)
    with store.transaction() as tx:
        outbox.enqueue(tx, outbox.JOB, [(7, "Q", {"job_status": "running"}, False)])
    assert pending() == (2, True, "finished")
    with store.transaction() as tx:   # PanDA took it: nothing is left to send
        outbox.sent(tx, outbox.JOB, [(7, row.version)])
    assert outbox.pending_counts(store) == {}
    with store.transaction() as tx:   # a later final update replaces a final one
        outbox.enqueue(tx, outbox.JOB, [(7, "Q", {"job_status": "finished"}, True)])
        outbox.enqueue(tx, outbox.JOB, [(7, "Q", {"job_status": "failed"}, True)])
    assert pending() == (2, True, "failed")
