"""State store: exclusive claims with expiring leases, the outbox's versions, worker ids, schema checks."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import select

from harvester_cli.errors import StateError
from harvester_cli.state import claims, meta, outbox
from harvester_cli.state.schema import reports, workers
from harvester_cli.state.store import Store
from tests.support.harness import new_state
from tests.support.outbox import assert_final_update_stays


def worker_rows(n):
    return [{"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull", "status": "submitted",
             "created": 0.0, "modified": 0.0} for i in range(1, n + 1)]


@pytest.fixture
def url(tmp_path):
    return new_state(tmp_path / "state.db")


def test_two_stores_never_claim_the_same_rows(url):
    first, second = Store(url), Store(url)
    with first.transaction() as tx:
        tx.execute(workers.insert(), worker_rows(10))
    with first.transaction() as tx:
        a = {r.worker_id for r in claims.claim(tx, workers, workers.c.queue == "Q", 6)}
    with second.transaction() as tx:
        b = {r.worker_id for r in claims.claim(tx, workers, workers.c.queue == "Q", 6)}
    assert len(a) == 6 and len(b) == 4 and not a & b


def test_an_expired_lease_is_taken_over_and_a_released_row_is_free_again(url):
    first, second = Store(url, lease_seconds=0), Store(url)
    with first.transaction() as tx:
        tx.execute(workers.insert(), worker_rows(3))
        claimed = claims.claim(tx, workers, workers.c.queue == "Q", 3)
    time.sleep(0.01)
    with second.transaction() as tx:
        taken = claims.claim(tx, workers, workers.c.queue == "Q", 3)
    assert len(claimed) == 3 and len(taken) == 3
    with second.transaction() as tx:
        claims.release(tx, workers, [r.worker_id for r in taken])
    holder = Store(url)
    with holder.transaction() as tx:
        assert len(claims.claim(tx, workers, workers.c.queue == "Q", 3)) == 3


def test_a_newer_update_survives_the_acknowledgement_of_an_older_one(url):
    store = Store(url)
    with store.transaction() as tx:
        outbox.enqueue(tx, "job", [(7, "Q", {"job_status": "running"}, False)])
        (row,) = claims.claim(tx, reports, reports.c.kind == "job", 10)
        outbox.enqueue(tx, "job", [(7, "Q", {"job_status": "finished"}, True)])   # while row 1 is in flight
        outbox.sent(tx, "job", [(7, row.version)])
        (left,) = tx.execute(select(reports)).all()
    assert left.version == 2 and left.final and "finished" in left.payload


def test_a_final_update_is_never_replaced_by_one_that_is_not_final(url):
    """On PostgreSQL and MariaDB propagate's periodic 'running' for a job it read as running could be queued
    just after poll queued the job's final update, and replaced it: PanDA got 'running' last, for ever."""
    assert_final_update_stays(Store(url))


def test_worker_ids_are_never_reused_and_respect_pandas_floor(url):
    store = Store(url)
    assert meta.allocate_worker_ids(store, 3, floor=41) == [42, 43, 44]
    assert meta.allocate_worker_ids(Store(url), 2) == [45, 46]


@pytest.mark.parametrize("revision,needle", [("9999_from_the_future", "newer than this harvester-cli"),
                                             ("0001_base", "run `harvester-cli db upgrade`")])
def test_wrong_schema_revision_is_refused_with_what_to_do(tmp_path, revision, needle):
    path = tmp_path / "state.db"
    new_state(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    with pytest.raises(StateError, match=needle.replace("`", ".")):
        Store(f"sqlite:///{path}")


def test_sqlite_runs_in_wal_mode_with_foreign_keys(url):
    store = Store(url)
    with store.reading() as tx:
        assert tx.conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert tx.conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert tx.conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10000
