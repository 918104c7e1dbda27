"""The outbox: what still has to reach PanDA, one row per job or worker (`pending_reports`).

A newer update of the same item bumps the row's version and replaces its payload; after PanDA's success
only the version that was sent is deleted, so nothing newer is lost. A final update is never replaced by
one that is not final: on PostgreSQL and MariaDB a run that read a job as running (propagate's periodic
'running') can queue its update just after another run queued the job's final one. Job rows carry their update; worker
rows carry none (the update is built from the worker's row when it is sent).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from functools import cache
from types import SimpleNamespace
from typing import Any, NamedTuple

from sqlalchemy import bindparam, case, delete, func, literal_column, or_, select, update

from harvester_cli import model
from harvester_cli.state import bulk, claims
from harvester_cli.state.schema import reports
from harvester_cli.state.store import Store, Tx, chunks

log = logging.getLogger(__name__)

JOB = "job"
WORKER = "worker"


def enqueue(tx: Tx, kind: str, items: Sequence[tuple[int, str, dict | None, bool]]) -> None:
    """Queue (key, queue, payload, final) updates for PanDA; a newer one replaces an unsent older one."""
    if not items:
        return
    at = model.now()
    rows = [(kind, key, queue, None if payload is None else json.dumps(payload), final, at)
            for key, queue, payload, final in items]
    for chunk in chunks(rows, 500):
        bulk.execute_many(tx.conn, _upsert(tx.dialect), _UPSERT_NAMES, chunk)


def enqueue_workers(tx: Tx, queue: str, worker_ids) -> None:
    """These workers changed: their update is built from their row when propagate sends it."""
    enqueue(tx, WORKER, [(w, queue, None, False) for w in worker_ids])


class Report(NamedTuple):
    """A pending report as a page holds it (the table's columns, in order)."""

    kind: str
    key: int
    queue: str
    version: int
    payload: str | None
    final: bool
    created: float
    attempts: int
    last_error: str | None
    lock_owner: str | None
    lock_expires: float | None


@cache
def _by_keys() -> SimpleNamespace:
    """The statements of a page by its keys (built on first use: a command that never sends adds nothing to its
    start-up)."""
    keys = bindparam(bulk.IN_LIST, expanding=True)
    kind, owner = reports.c.kind == bindparam("kind"), reports.c.lock_owner == bindparam("owner")
    return SimpleNamespace(
        take=(update(reports).where(kind, reports.c.key.in_(keys),
                                    or_(reports.c.lock_owner.is_(None), reports.c.lock_expires < bindparam("at")))
              .values(lock_owner=bindparam("owner"), lock_expires=bindparam("expires"))),
        taken=select(*reports.c).where(kind, reports.c.key.in_(keys), owner).order_by(reports.c.key),
        # by primary key, one statement per version sent (almost always one): a row with a newer version stays
        delete_sent=delete(reports).where(kind, owner, reports.c.version == bindparam("version"),
                                          reports.c.key.in_(keys)),
        release=update(reports).where(kind, owner, reports.c.key.in_(keys)).values(lock_owner=None, lock_expires=None),
    )


# Pages claimed in one transaction. A claim is a commit, as is each page's acknowledgement, and on PostgreSQL
# and MariaDB every commit waits for the log's flush: claiming ten pages at once makes eleven commits of twenty.
CLAIM_PAGES = 10


def pages(store: Store, kind: str, queues: list[str], size: int) -> Iterator[list[Report]]:
    """Claimed pages of pending reports of these queues, by key (keyset pagination: items refused in this
    run are not taken again), `size` per page. A claim as claims.claim makes it, with the keys written into
    the statements once per length (bulk.execute_in): SQLAlchemy rendered them afresh for every page.
    CLAIM_PAGES pages are claimed at a time. Those claimed ahead are claimed again when a quarter of the lease
    has gone by (slow answers from PanDA), so none is sent near its lease's end, when another host may take
    it; a run that stops early gives them back at once."""
    after, held, claimed = -1, [], 0.0
    try:
        while True:
            if not held or time.monotonic() - claimed > store.lease_seconds / 4:
                with store.transaction() as tx:
                    if held:
                        claims.release(tx, reports, [(kind, r.key) for r in held])
                        after = held[0].key - 1
                    held = _claim_page(tx, kind, queues, after, size * CLAIM_PAGES)
                claimed = time.monotonic()
                if not held:
                    return
                after = held[-1].key
            page, held = held[:size], held[size:]
            yield page
    finally:
        if held:
            _give_back(store, kind, held)


def _give_back(store: Store, kind: str, held: list[Report]) -> None:
    try:
        with store.transaction() as tx:
            claims.release(tx, reports, [(kind, r.key) for r in held])
    except Exception as exc:   # the run is ending on its own error: their lease frees them, or release_dead
        log.info("outbox: could not give back %d %s report(s) claimed ahead: %s", len(held), kind, exc)


def _claim_page(tx: Tx, kind: str, queues: list[str], after: int, size: int) -> list[Report]:
    claims.release_dead(tx, reports)
    at = tx.lease_now()
    query = (select(reports.c.key).where(reports.c.kind == kind, reports.c.queue.in_(queues), reports.c.key > after,
                                         claims.free(reports, at))
             .order_by(reports.c.key).limit(size))
    if not tx.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    keys = list(tx.scalars(query))
    if not keys:
        return []
    conn, statements = tx.conn, _by_keys()
    bulk.execute_in(conn, statements.take, ("kind", "at", "owner", "expires"),
                    (kind, at, tx.owner, at + tx.lease_seconds), keys)
    return [Report(*r) for r in bulk.query_in(conn, statements.taken, ("kind", "owner"), (kind, tx.owner), keys)]


def sent(tx: Tx, kind: str, items: Sequence[tuple[int, int]]) -> None:
    """Forget (key, version) pairs PanDA accepted; a row with a newer version stays, released for the next run."""
    by_version: dict[int, list[int]] = {}
    for key, version in items:
        by_version.setdefault(version, []).append(key)
    statements = _by_keys()
    for version, keys in by_version.items():
        bulk.execute_in(tx.conn, statements.delete_sent, ("kind", "owner", "version"), (kind, tx.owner, version), keys)
    bulk.execute_in(tx.conn, statements.release, ("kind", "owner"), (kind, tx.owner), [k for k, _ in items])


def still_claimed(tx: Tx, kind: str, keys: Sequence[int]) -> bool:
    """Whether one of these reports is still here, claimed by this run (after a COMMIT of `sent` whose answer
    never came: it was not kept)."""
    return any(tx.execute(select(reports.c.key).where(reports.c.kind == kind, reports.c.key.in_(list(chunk)),
                                                      claims.owned(tx, reports)).limit(1)).first()
               for chunk in chunks(list(keys), 500))


def refused(store: Store, kind: str, failures: Sequence[tuple[int, str]]) -> None:
    """Record why items were not accepted and release them for the next run."""
    with store.transaction() as tx:
        if failures:
            tx.execute(update(reports).where(reports.c.kind == kind, reports.c.key == bindparam("k"),
                                             claims.owned(tx, reports))
                       .values(attempts=reports.c.attempts + 1, last_error=bindparam("e")),
                       [{"k": k, "e": e[:1000]} for k, e in failures])
        claims.release(tx, reports, [(kind, k) for k, _ in failures])


def pending_counts(store: Store) -> dict[str, int]:
    with store.reading() as tx:
        return {kind: n for kind, n in tx.execute(select(reports.c.kind, func.count()).group_by(reports.c.kind))}


_UPSERT_NAMES = ("kind", "key", "queue", "payload", "final", "created")
_upserts: dict[str, Any] = {}


def _upsert(dialect: str):
    """The outbox's upsert for this database, built once: a newer report replaces the unsent one."""
    if dialect not in _upserts:
        # constants as literals: the rows go to the driver as they are (in the table's column order)
        values = {name: bindparam(name) for name in _UPSERT_NAMES} | {"version": literal_column("1"),
                                                                      "attempts": literal_column("0")}
        # `+ 1` as a literal: PyMySQL's executemany formats what follows VALUES (...) without parameters,
        # so a bound 1 there fails every bulk upsert of two rows or more ("format requires a mapping").
        newer = reports.c.version + literal_column("1")

        def assignments(incoming) -> list[tuple[str, object]]:
            # A pending final update stays as it is (version too: a run sending it now deletes it after).
            keep = reports.c.final & ~incoming.final
            # In this order: MariaDB evaluates each assignment with the columns assigned before it.
            return [("version", case((keep, reports.c.version), else_=newer)),
                    ("payload", case((keep, reports.c.payload), else_=incoming.payload)),
                    ("final", reports.c.final | incoming.final)]

        if dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert

            stmt = insert(reports).values(values)
            _upserts[dialect] = stmt.on_duplicate_key_update(assignments(stmt.inserted))
        else:
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            stmt = insert(reports).values(values)
            _upserts[dialect] = stmt.on_conflict_do_update(index_elements=[reports.c.kind, reports.c.key],
                                                           set_=dict(assignments(stmt.excluded)))
    return _upserts[dialect]
