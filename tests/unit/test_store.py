"""State store: exclusive claims with expiring leases, the outbox's versions, worker ids, schema checks."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import select

from harvester_cli.errors import StateError
from harvester_cli.state import claims, meta, outbox
from harvester_cli.state import workers as worker_state
from harvester_cli.state.schema import reports, workers
from harvester_cli.state.store import Store, Tx
from tests.support.harness import new_state
from tests.support.outbox import assert_acknowledged_exactly, assert_final_update_stays


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


def test_acknowledging_more_updates_than_one_statement_holds_forgets_exactly_those_sent(url):
    assert_acknowledged_exactly(url)


def test_pages_claimed_ahead_are_given_back_when_a_run_stops_and_claimed_again_when_their_lease_ages(
        url, monkeypatch):
    store = Store(url)
    with store.transaction() as tx:
        outbox.enqueue(tx, "job", [(k, "Q", {"job_status": "finished"}, True) for k in range(1, 61)])

    def owners() -> dict[int, str | None]:
        with store.reading() as tx:
            return dict(tx.execute(select(reports.c.key, reports.c.lock_owner)).all())

    run = outbox.pages(store, "job", ["Q"], 10)
    assert [r.key for r in next(run)] == list(range(1, 11))
    assert {k for k, o in owners().items() if o == store.owner} == set(range(1, 61))   # five pages ahead
    run.close()   # the run stops (PanDA down): the pages it holds go back for the next run or another host
    assert {k for k, o in owners().items() if o is not None} == set(range(1, 11))   # the caller's page
    with store.transaction() as tx:   # which the caller gives back as refused
        claims.release(tx, reports, [("job", k) for k in range(1, 11)])

    clock = [1000.0]
    monkeypatch.setattr(outbox.time, "monotonic", lambda: clock[0])
    run = outbox.pages(store, "job", ["Q"], 10)
    assert [r.key for r in next(run)] == list(range(1, 11))
    clock[0] += store.lease_seconds / 4 + 1   # PanDA answered slowly: the rest are claimed again, renewed
    with store.transaction() as tx:   # one of them was given back meanwhile and another run has it now
        claims.release(tx, reports, [("job", 15)])
    other = Store(url)
    with other.transaction() as tx:
        assert [r.key for r in claims.claim(tx, reports, reports.c.key == 15, 1)] == [15]
    assert [[r.key for r in page] for page in run] == [[*range(11, 15), *range(16, 22)], list(range(22, 32)),
                                                        list(range(32, 42)), list(range(42, 52)),
                                                        list(range(52, 61))]
    assert owners()[15] == other.owner
    store.close()
    other.close()


def test_pilots_started_on_the_refresh_second_or_ended_unseen_count_as_started_since_the_counts(url):
    """PanDA's counts were made on the full minute: a pilot whose whole-second start is that second started
    after them, and so did one that ran between two polls on a CE that gives no start time (seen finished)."""
    from harvester_cli.steps.submit import stats_made

    minute = 1_800_000_000.0
    assert stats_made(60, minute + 0.7) == minute and stats_made(0, minute) is None
    store = Store(url)
    rows = worker_rows(5)
    for row, (status, start, end) in zip(rows, [("running", minute, None), ("running", minute - 1, None),
                                                ("finished", None, minute + 5), ("finished", None, minute - 5),
                                                ("failed", None, minute + 5)]):
        row.update(status=status, start_time=start, end_time=end, resource_type="SCORE")
    with store.transaction() as tx:
        tx.execute(workers.insert(), rows)
    with store.reading() as tx:
        assert worker_state.started_since(tx, "Q", minute) == {"SCORE": 2}
    store.close()


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


# -- a COMMIT whose answer never came (a failover under it): looked up, never redone blindly ------------


def losing_commits(store: Store, kept: bool, times: int = 1):
    """store.transaction whose first `times` COMMITs lose their answer: kept (committed, then the error) or
    not (rolled back, then the error), as a server that went away under the COMMIT leaves it."""
    from contextlib import contextmanager

    from harvester_cli.errors import CommitUnknown

    real = store.transaction
    left = [times]

    @contextmanager
    def transaction():
        if left[0] <= 0:
            with real() as tx:
                yield tx
            return
        left[0] -= 1
        if kept:
            with real() as tx:
                yield tx
        else:
            with store.engine.connect() as conn:
                conn.begin()
                yield Tx(conn, store)
                conn.rollback()
        store.unknown_commits += 1
        raise CommitUnknown("the server went away while a COMMIT was on its way")

    store.transaction = transaction


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "lost"])
def test_an_unanswered_commit_is_looked_up_and_written_once(url, kept):
    store = Store(url)
    losing_commits(store, kept)
    runs = []

    def work(tx):
        runs.append(1)
        meta.put(tx, "failover_test", 7)
        return "done"

    def committed(tx):
        return tx.execute(select(meta.meta.c.ivalue).where(meta.meta.c.key == "failover_test")).first() is not None

    assert store.retrying(work, committed=committed) == "done"
    assert len(runs) == (1 if kept else 2)   # kept: found by looking, not run again
    assert store.stats()["unknown_commits"] == 1


def test_an_unanswered_commit_goes_on_up_unless_the_work_says_how_to_resolve_it(url):
    from harvester_cli.errors import CommitUnknown

    store = Store(url)
    losing_commits(store, kept=False)
    with pytest.raises(CommitUnknown):
        store.retrying(lambda tx: meta.put(tx, "failover_test", 1))
    losing_commits(store, kept=True, times=10)   # a server that never answers a COMMIT: the work stops
    with pytest.raises(CommitUnknown):
        store.retrying(lambda tx: meta.put(tx, "failover_test", 1), rerun_unknown=True)


def test_what_counts_as_a_server_gone_rather_than_a_refusal():
    import psycopg
    import pymysql

    from harvester_cli.state.store import not_writable_yet, server_gone

    gone = [psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
            psycopg.errors.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only transaction"),
            psycopg.OperationalError("connection failed: connection to server at \"10.0.0.1\", port 5432 failed: "
                                     "Connection refused"),
            psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
            psycopg.OperationalError("connection failed: connection to server at \"10.0.0.2\", port 5432 failed: "
                                     "session is read-only"),
            pymysql.err.OperationalError(2003, "Can't connect to MySQL server"),
            pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
            pymysql.err.OperationalError(1290, "The MariaDB server is running with the --read-only option")]
    refused = [psycopg.OperationalError("connection failed: FATAL:  password authentication failed for user \"h\""),
               psycopg.errors.UndefinedTable("relation \"workers\" does not exist"),
               pymysql.err.OperationalError(1045, "Access denied for user"),
               pymysql.err.OperationalError(1049, "Unknown database 'h'")]
    assert [server_gone(e) for e in gone] == [True] * len(gone)
    assert [server_gone(e) for e in refused] == [False] * len(refused)
    # worth waiting for even before this command ever reached a server: one that answers but is shutting down
    # or read-only (a standby not promoted yet), not one that never answered
    assert [not_writable_yet(e) for e in gone] == [True, True, False, False, True, False, False, True]
