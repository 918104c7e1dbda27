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


def assert_acknowledged_exactly(url: str) -> None:
    """1,201 keys (three IN lists of at most 500), two versions among them: the rows sent go; a newer version
    stays, released; rows not sent stay claimed; rows another run claimed are not touched; pages of what is
    left free are claimed in key order."""
    store, other = Store(url), Store(url)
    with store.transaction() as tx:
        outbox.enqueue(tx, "job", [(k, "Q", {"job_status": "finished"}, True) for k in range(1, 1301)])
        outbox.enqueue(tx, "job", [(k, "Q", {"job_status": "finished", "n": 2}, True) for k in range(1, 11)])
    with other.transaction() as tx:
        theirs = {r.key for r in claims.claim(tx, reports, reports.c.key > 1250, 100)}
    with store.transaction() as tx:
        mine = claims.claim(tx, reports, reports.c.kind == "job", 1300)
        versions = {r.key: r.version for r in mine}
        outbox.enqueue(tx, "job", [(5, "Q", {"job_status": "finished", "n": 3}, True)])   # 5 is newer meanwhile
        outbox.sent(tx, "job", [(k, versions[k]) for k in range(1, 1202)])
    with store.reading() as tx:
        left = {r.key: r for r in tx.execute(select(reports))}
    assert theirs == set(range(1251, 1301)) and set(versions) == set(range(1, 1251))
    assert sorted(left) == [5, *range(1202, 1301)] and left[5].version == 3
    assert left[5].lock_owner is None   # released for the next run
    assert all(left[k].lock_owner == store.owner for k in range(1202, 1251))   # not sent: still this run's
    assert all(left[k].lock_owner == other.owner for k in theirs)
    with store.transaction() as tx:
        claims.release(tx, reports, [("job", k) for k in range(1202, 1251)])
    third = Store(url)   # a propagate: pages of what is free, claimed as it goes
    pages = list(outbox.pages(third, "job", ["Q"], 40))
    assert [[r.key for r in page] for page in pages] == [[5, *range(1202, 1241)], list(range(1241, 1251))]
    first = pages[0][0]
    assert (first.version, bool(first.final), json.loads(first.payload)["n"], first.lock_owner) == (3, True, 3,
                                                                                                 third.owner)
    for s in (store, other, third):
        s.close()
