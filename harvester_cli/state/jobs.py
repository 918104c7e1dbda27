"""The jobs table (push mode): every statement that reads or writes a job, and its link to the worker it
runs in (`job_workers`).

A job is stored verbatim as PanDA sent it (`job_json`), `starting/fetched`; a submission binds it to a
worker (`submitted`), the worker's progress moves it (`running`, then `reporting` with its final state),
PanDA's acknowledgement of the final update makes it `done`, and sweep forgets it after its retention.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import DataError, IntegrityError, StatementError

from harvester_cli import model
from harvester_cli.state import bulk, claims
from harvester_cli.state.schema import job_workers, jobs, workers
from harvester_cli.state.store import Store, Tx, chunks

log = logging.getLogger(__name__)

# What the database says of a row it will not take (a full disk or a lost connection is not about a row).
REFUSED_ROW = (IntegrityError, DataError, StatementError, OverflowError, ValueError)


class NewJob(NamedTuple):
    """A row of the jobs table for a job as received (in the table's column order: the rows go to the driver
    as they are)."""

    panda_id: int
    queue: str
    status: str
    sub_status: str
    attempt_nr: int | None
    resource_type: str
    core_count: int
    submit_attempts: int
    job_json: str
    diag: str | None
    created: float
    modified: float


_INSERT_JOB = jobs.insert().values({name: bindparam(name) for name in NewJob._fields})


@dataclass
class Stored:
    """What storing a batch of received jobs did: rows stored, PandaIDs already there, rows refused."""

    stored: list[NewJob]
    duplicates: int
    refused: list[NewJob]


def store_new(tx: Tx, rows: list[NewJob]) -> Stored:
    """Insert the rows whose PandaID is not stored yet, in bulk; if the bulk insert fails, each on its own,
    so one row the database refuses does not keep the others out."""
    existing = set(tx.scalars(select(jobs.c.panda_id).where(jobs.c.panda_id.in_([r.panda_id for r in rows]))))
    new = [r for r in rows if r.panda_id not in existing] if existing else rows
    if not new:
        return Stored([], len(rows), [])
    try:
        with tx.conn.begin_nested():
            bulk.execute_many(tx.conn, _INSERT_JOB, NewJob._fields, new)
        return Stored(new, len(rows) - len(new), [])
    except REFUSED_ROW:
        stored, refused = [], []
        for row in new:
            try:
                with tx.conn.begin_nested():
                    bulk.execute_many(tx.conn, _INSERT_JOB, NewJob._fields, [row])
                stored.append(row)
            except REFUSED_ROW as exc:
                log.error("job %s: the state database refused it (%s)", row.panda_id, str(exc).splitlines()[0][:200])
                refused.append(row)
        return Stored(stored, len(rows) - len(new), refused)


def known(tx: Tx, panda_ids: Sequence[int]) -> set[int]:
    """Which of these PandaIDs are stored (after a COMMIT whose answer never came: whether it was kept)."""
    found: set[int] = set()
    for chunk in chunks(list(panda_ids), 500):
        found |= set(tx.scalars(select(jobs.c.panda_id).where(jobs.c.panda_id.in_(chunk))))
    return found


def waiting(store: Store, queue: str) -> int:
    """Jobs of the queue that are stored and not running yet (fetched, waiting to retry, or bound to a queued
    worker)."""
    with store.reading() as tx:
        return tx.scalar(select(func.count()).select_from(jobs).where(
            jobs.c.queue == queue,
            jobs.c.sub_status.in_([model.SUB_FETCHED, model.SUB_RETRY, model.SUB_SUBMITTED]))) or 0


def unbound_by_type(tx: Tx, queue: str, at: float) -> dict[str, int]:
    """Fetched jobs without a worker (and not claimed by a submission), per resource type."""
    return dict(tx.execute(
        select(jobs.c.resource_type, func.count())
        .where(jobs.c.queue == queue, jobs.c.sub_status == model.SUB_FETCHED,
               jobs.c.lock_owner.is_(None) | (jobs.c.lock_expires < tx.lease_now()))
        .group_by(jobs.c.resource_type)).all())


def release_dead_claims(tx: Tx, queue: str) -> None:
    """Free the queue's fetched jobs claimed by a submit of this host that ended before it bound them to
    workers (killed, or failed on a database error): the plan counts only unclaimed jobs, so they would wait
    for the claim to expire. Looked at every time, as the interrupted workers are."""
    claims.release_dead(tx, jobs, (jobs.c.queue == queue) & (jobs.c.sub_status == model.SUB_FETCHED),
                        every_time=True)
def unbound_ages(tx: Tx, queue: str, at: float) -> dict[str, list[float]]:
    """The ages (seconds) of the fetched jobs without a worker (and not claimed), oldest first, per resource
    type: when many jobs share a worker, how long they have waited decides when a half-filled one goes."""
    ages: dict[str, list[float]] = {}
    for resource_type, created in tx.execute(
            select(jobs.c.resource_type, jobs.c.created)
            .where(jobs.c.queue == queue, jobs.c.sub_status == model.SUB_FETCHED,
                   jobs.c.lock_owner.is_(None) | (jobs.c.lock_expires < tx.lease_now()))
            .order_by(jobs.c.created)):
        ages.setdefault(resource_type, []).append(at - created)
    return ages


def claim_unbound(tx: Tx, queue: str, resource_type: str, limit: int) -> list:
    """Claim up to `limit` fetched jobs of this resource type, oldest first, for new workers."""
    return claims.claim(tx, jobs, (jobs.c.queue == queue) & (jobs.c.sub_status == model.SUB_FETCHED)
                        & (jobs.c.resource_type == resource_type), limit, order_by=jobs.c.created)


def release(tx: Tx, panda_ids: Iterable[int]) -> None:
    claims.release(tx, jobs, panda_ids)


def bind(tx: Tx, links: Sequence[tuple[int, int]], at: float) -> None:
    """(panda id, worker id): the claimed jobs run in these new workers."""
    if not links:
        return
    tx.execute(job_workers.insert(), [{"panda_id": p, "worker_id": w} for p, w in links])
    tx.execute(update(jobs).where(jobs.c.panda_id.in_([p for p, _ in links]), claims.owned(tx, jobs))
               .values(sub_status=model.SUB_SUBMITTED, modified=at, lock_owner=None, lock_expires=None))


@dataclass
class BoundJob:
    panda_id: int
    job_json: str
    submit_attempts: int
    worker_id: int


def bound_to(tx: Tx, worker_ids: Iterable[int], sub_statuses: Iterable[str]) -> list[BoundJob]:
    """The jobs bound to these workers that are at one of these steps."""
    found: list[BoundJob] = []
    for chunk in chunks(list(worker_ids), 500):
        found += [BoundJob(p, j, a or 0, w) for p, j, a, w in tx.execute(
            select(jobs.c.panda_id, jobs.c.job_json, jobs.c.submit_attempts, job_workers.c.worker_id)
            .join(job_workers, job_workers.c.panda_id == jobs.c.panda_id)
            .where(job_workers.c.worker_id.in_(list(chunk)), jobs.c.sub_status.in_(list(sub_statuses))))]
    return found


def move(tx: Tx, panda_ids: Sequence[int], status: str, sub_status: str, at: float) -> None:
    for chunk in chunks(list(panda_ids), 500):
        tx.execute(update(jobs).where(jobs.c.panda_id.in_(chunk))
                   .values(status=status, sub_status=sub_status, modified=at))


def back_to_wait(tx: Tx, panda_id: int, attempts: int, diag: str, at: float,
                 sub_status: str = model.SUB_FETCHED) -> None:
    """The job waits for another worker (SUB_FETCHED), or first for PanDA's word (SUB_RETRY); `attempts`
    submissions failed so far."""
    tx.execute(update(jobs).where(jobs.c.panda_id == panda_id).values(
        status=model.JOB_STARTING, sub_status=sub_status, submit_attempts=attempts, diag=diag, modified=at))


# -- retries: a job whose worker failed for a transient CE reason before it started ----------------

@dataclass
class RetryingJob:
    panda_id: int
    job_json: str
    submit_attempts: int
    diag: str | None


def claim_retries(tx: Tx, queue: str, limit: int) -> list[RetryingJob]:
    """Claim up to `limit` jobs of the queue that wait for PanDA's word before a new worker, oldest first."""
    rows = claims.claim(tx, jobs, (jobs.c.queue == queue) & (jobs.c.sub_status == model.SUB_RETRY), limit,
                        order_by=jobs.c.modified)
    return [RetryingJob(r.panda_id, r.job_json, r.submit_attempts or 0, r.diag) for r in rows]


def confirm_retries(tx: Tx, panda_ids: Sequence[int], at: float) -> int:
    """PanDA still has these (claimed) jobs as ours: they wait for a new worker, heard from now."""
    if not panda_ids:
        return 0
    return tx.execute(update(jobs).where(jobs.c.panda_id.in_(list(panda_ids)), jobs.c.sub_status == model.SUB_RETRY,
                                         claims.owned(tx, jobs))
                      .values(sub_status=model.SUB_FETCHED, modified=at, lock_owner=None, lock_expires=None)).rowcount


def abandon(tx: Tx, reasons: dict[int, str], at: float) -> None:
    """PanDA no longer has these (claimed) jobs as ours (killed, reassigned, ended): they are over here, with
    nothing left to tell PanDA."""
    for panda_id, diag in reasons.items():
        tx.execute(update(jobs).where(jobs.c.panda_id == panda_id, jobs.c.sub_status == model.SUB_RETRY,
                                      claims.owned(tx, jobs))
                   .values(status=model.JOB_FAILED, sub_status=model.SUB_DONE, diag=diag[:2000], modified=at,
                           lock_owner=None, lock_expires=None))


def waiting_again_unheard_since(tx: Tx, queue: str, before: float, limit: int = 5000) -> list[tuple[int, str]]:
    """(panda id, job json) of the queue's jobs that had a worker once and wait for another (fetched again,
    or waiting for PanDA's word) whose last update is older than `before`: PanDA must keep hearing that
    they are starting."""
    return [tuple(r) for r in tx.execute(select(jobs.c.panda_id, jobs.c.job_json).where(
        jobs.c.queue == queue, jobs.c.sub_status.in_([model.SUB_FETCHED, model.SUB_RETRY]),
        jobs.c.submit_attempts > 0, jobs.c.modified < before).limit(limit))]


def fail(tx: Tx, panda_id: int, diag: str, at: float, attempts: int | None = None) -> None:
    """The job's final state is failed; its update waits for PanDA."""
    values = {"status": model.JOB_FAILED, "sub_status": model.SUB_REPORTING, "diag": diag, "modified": at}
    if attempts is not None:
        values["submit_attempts"] = attempts
    tx.execute(update(jobs).where(jobs.c.panda_id == panda_id).values(**values))


def unbind(tx: Tx, worker_ids: Iterable[int]) -> None:
    tx.execute(delete(job_workers).where(job_workers.c.worker_id.in_(list(worker_ids))))


def record_final(tx: Tx, finals: Sequence[tuple[int, str, str | None]], at: float) -> None:
    """(panda id, final status, diag) from the ended workers' pilot outputs; a job PanDA already
    acknowledged stays done."""
    for panda_id, status, diag in finals:
        tx.execute(update(jobs).where(jobs.c.panda_id == panda_id, jobs.c.sub_status != model.SUB_DONE)
                   .values(status=status, sub_status=model.SUB_REPORTING, diag=diag, modified=at))


def record_final_of_live(tx: Tx, finals: Sequence[tuple[int, str, str | None]], at: float) -> set[int]:
    """(panda id, final status, diag) of jobs whose own step ended (a many-job worker): each is written only
    while the job is still live, so two polls that saw the same step end record it once, and a job sweep
    already reported killed keeps that. Returns the jobs written."""
    written = set()
    for panda_id, status, diag in finals:
        if tx.execute(update(jobs).where(jobs.c.panda_id == panda_id, jobs.c.sub_status.in_(model.SUB_LIVE))
                      .values(status=status, sub_status=model.SUB_REPORTING, diag=diag, modified=at)).rowcount:
            written.add(panda_id)
    return written


def mark_kill(tx: Tx, panda_ids: Sequence[int], reason: str, at: float) -> int:
    """PanDA asked to kill these jobs, each alone (its worker runs others): sweep stops their steps. Only jobs
    still running or about to are marked; returns how many were marked now."""
    if not panda_ids:
        return 0
    return tx.execute(update(jobs).where(jobs.c.panda_id.in_(list(panda_ids)),
                                         jobs.c.sub_status.in_((model.SUB_SUBMITTED, model.SUB_RUNNING)))
                      .values(sub_status=model.SUB_KILLING, diag=reason, modified=at)).rowcount


def claim_to_kill(tx: Tx, queue: str, host: str | None, limit: int) -> list:
    """Claim up to `limit` of the queue's jobs marked for killing, with their worker (`worker_id`). With a host,
    only the jobs of workers that host made (a host-bound backend)."""
    bound = select(job_workers.c.panda_id).join(workers, workers.c.worker_id == job_workers.c.worker_id)
    if host is not None:
        bound = bound.where(workers.c.harvester_host.is_(None) | (workers.c.harvester_host == host))
    rows = claims.claim(tx, jobs, (jobs.c.queue == queue) & (jobs.c.sub_status == model.SUB_KILLING)
                        & jobs.c.panda_id.in_(bound), limit)
    if not rows:
        return []
    worker_of = dict(tx.execute(select(job_workers.c.panda_id, job_workers.c.worker_id)
                                .where(job_workers.c.panda_id.in_([r.panda_id for r in rows]))).all())
    return [BoundJob(r.panda_id, r.job_json, r.submit_attempts or 0, worker_of[r.panda_id]) for r in rows]


def others_running(tx: Tx, worker_ids: Iterable[int]) -> dict[int, int]:
    """Per worker, its jobs still submitted or running (not final, not being killed)."""
    return dict(tx.execute(
        select(job_workers.c.worker_id, func.count())
        .join(jobs, jobs.c.panda_id == job_workers.c.panda_id)
        .where(job_workers.c.worker_id.in_(list(worker_ids)),
               jobs.c.sub_status.in_((model.SUB_SUBMITTED, model.SUB_RUNNING)))
        .group_by(job_workers.c.worker_id)).all())


def killed(tx: Tx, panda_ids: Sequence[int], diag: str, at: float) -> set[int]:
    """These claimed jobs' steps were stopped: their final state is failed; returns those written (still
    marked and ours: a step that ended first keeps what poll recorded)."""
    written = set()
    for panda_id in panda_ids:
        if tx.execute(update(jobs).where(jobs.c.panda_id == panda_id, jobs.c.sub_status == model.SUB_KILLING,
                                         claims.owned(tx, jobs))
                      .values(status=model.JOB_FAILED, sub_status=model.SUB_REPORTING, diag=diag, modified=at,
                              lock_owner=None, lock_expires=None)).rowcount:
            written.add(panda_id)
    return written


def running_unheard_since(tx: Tx, queue: str, before: float, limit: int = 5000) -> list[tuple[int, str]]:
    """(panda id, job json) of the queue's running jobs whose last update is older than `before`."""
    return [tuple(r) for r in tx.execute(select(jobs.c.panda_id, jobs.c.job_json).where(
        jobs.c.queue == queue, jobs.c.sub_status == model.SUB_RUNNING, jobs.c.modified < before).limit(limit))]


def touch(tx: Tx, panda_ids: Sequence[int], at: float) -> None:
    tx.execute(update(jobs).where(jobs.c.panda_id.in_(list(panda_ids))).values(modified=at))


@dataclass
class PilotLinks:
    """Where PanDA's monitor finds a job's pilot: its worker's public log URLs and batch id."""

    panda_id: int
    pilot_log_sent: bool
    stdout_url: str | None
    batch_log_url: str | None
    batch_id: str | None
    log_dir: str | None = None


@cache
def _acknowledging() -> tuple:
    """propagate's statements (built on first use: a command that never sends adds nothing to its start-up)."""
    ids = bindparam(bulk.IN_LIST, expanding=True)
    links = (select(jobs.c.panda_id, jobs.c.pilot_log_sent, workers.c.stdout_url, workers.c.batch_log_url,
                    workers.c.batch_id, workers.c.log_dir)
             .join(job_workers, job_workers.c.panda_id == jobs.c.panda_id)
             .join(workers, workers.c.worker_id == job_workers.c.worker_id)
             .where(jobs.c.panda_id.in_(ids)))
    log_sent = update(jobs).where(jobs.c.panda_id.in_(ids)).values(pilot_log_sent=bindparam("sent"))
    done = (update(jobs).where(jobs.c.panda_id.in_(ids), jobs.c.sub_status == bindparam("reporting"))
            .values(sub_status=bindparam("done"), modified=bindparam("at")))
    return links, log_sent, done


def pilot_links(tx: Tx, panda_ids: Sequence[int]) -> dict[int, PilotLinks]:
    return {r[0]: PilotLinks(r[0], bool(r[1]), *r[2:])
            for r in bulk.query_in(tx.conn, _acknowledging()[0], (), (), panda_ids)}


def acknowledged(tx: Tx, pilot_log_sent: Sequence[int], final: Sequence[int], at: float) -> None:
    """PanDA accepted these updates: the ones that carried pilot_log never carry it again, and jobs whose
    final update it took are done."""
    _, log_sent, done = _acknowledging()
    if pilot_log_sent:
        bulk.execute_in(tx.conn, log_sent, ("sent",), (True,), pilot_log_sent)
    if final:
        bulk.execute_in(tx.conn, done, ("reporting", "done", "at"), (model.SUB_REPORTING, model.SUB_DONE, at), final)


def _done(queue: str, before: float):
    return ((jobs.c.queue == queue) & (jobs.c.sub_status == model.SUB_DONE) & (jobs.c.modified < before)
            & jobs.c.lock_owner.is_(None))


def forget_done(store: Store, queue: str, before: float) -> int:
    """Delete the queue's done jobs last changed before `before`. By key, in chunks: no range delete (its
    gap locks deadlock other hosts' inserts on MariaDB), and a row another run changed meanwhile stays."""
    with store.reading() as tx:
        ids = list(tx.scalars(select(jobs.c.panda_id).where(_done(queue, before))))
    deleted = 0
    for chunk in chunks(ids, 500):
        with store.transaction() as tx:
            deleted += tx.execute(delete(jobs).where(jobs.c.panda_id.in_(chunk), _done(queue, before))).rowcount
    return deleted


