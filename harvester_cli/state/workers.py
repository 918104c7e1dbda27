"""The workers table: every statement that reads or writes a worker, named for what it means.

A worker is recorded `pending` (claimed by the submitting run) before the backend is called, moves to
`submitted` or `missed` with what the backend said, then follows what poll observes; a kill is first a
mark (kill_reason) that sweep carries out. Writes of what poll or sweep observed are compare-and-set on
(status, modified): overlapping runs look at the same workers, but each change is recorded once.

`host` arguments: None for every host's workers, or this host's name when the queue's backend is
host-bound (only the host that made a worker may work it; workers from before hosts were recorded too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, exists, func, literal_column, null, or_, select, true, update

from harvester_cli import model
from harvester_cli.state import bulk, claims
from harvester_cli.state.schema import job_workers, jobs, reports, workers
from harvester_cli.state.store import Tx, chunks


def _here(host: str | None):
    if host is None:
        return true()
    return workers.c.harvester_host.is_(None) | (workers.c.harvester_host == host)


# -- submit: recording before the backend call, and what it said ----------------------------------

PENDING_COLUMNS = ("worker_id", "queue", "backend", "mode", "resource_type", "job_type", "n_core", "memory_mb",
                   "status", "log_dir", "created", "modified", "lock_owner", "lock_expires", "harvester_host")
_INSERT_PENDING = workers.insert().values({name: bindparam(name) for name in PENDING_COLUMNS})


def record_pending(tx: Tx, rows: Sequence[tuple]) -> None:
    """New workers, `pending` and claimed by this run (rows in PENDING_COLUMNS order)."""
    bulk.execute_many(tx.conn, _INSERT_PENDING, PENDING_COLUMNS, rows)


def claim_interrupted(tx: Tx, queue: str, host: str | None, limit: int) -> list:
    """Claim workers left `pending` by a submission that did not finish: its claim expired, or its process
    on this host is gone (looked at every time: a submission may have died a moment ago)."""
    pending = (workers.c.queue == queue) & (workers.c.status == model.PENDING)
    claims.release_dead(tx, workers, pending, every_time=True)
    return claims.claim(tx, workers, pending & _here(host), limit)


def release(tx: Tx, worker_ids: Iterable[int]) -> None:
    claims.release(tx, workers, worker_ids)


def renew(tx: Tx, worker_ids: Iterable[int]) -> None:
    claims.renew(tx, workers, worker_ids)


def log_dirs(tx: Tx, worker_ids: Sequence[int]) -> dict[int, str | None]:
    return dict(tx.execute(select(workers.c.worker_id, workers.c.log_dir)
                           .where(workers.c.worker_id.in_(list(worker_ids)))).all())


SUBMITTED_COLUMNS = ("b", "h", "ce", "at", "o", "e", "l", "w")
_RECORD_SUBMITTED = (
    update(workers).where(workers.c.worker_id == bindparam("w"), workers.c.status == literal_column(f"'{model.PENDING}'"))
    .values(status=literal_column(f"'{model.SUBMITTED}'"), batch_id=bindparam("b"), submission_host=bindparam("h"),
            computing_element=bindparam("ce"), submit_time=bindparam("at"), modified=bindparam("at"),
            stdout_url=bindparam("o"), stderr_url=bindparam("e"), batch_log_url=bindparam("l"),
            lock_owner=null(), lock_expires=null()))


def record_submitted(tx: Tx, rows: Sequence[tuple]) -> None:
    """(batch id, submission host, CE, submit time, stdout, stderr, batch log, worker id) per worker that
    the backend took. Only a worker still `pending` moves: one cancelled meanwhile stays cancelled."""
    bulk.execute_many(tx.conn, _RECORD_SUBMITTED, SUBMITTED_COLUMNS, rows)


def record_missed(tx: Tx, rows: Sequence[tuple[int, str, str | None, str | None]], at: float) -> None:
    """(worker id, diag, CE, submission host) per worker the backend did not take; the CE (and schedd) a
    failed submission went to, when the backend says, feeds the fanout's back-off."""
    if not rows:
        return
    tx.execute(update(workers).where(workers.c.worker_id == bindparam("w"), workers.c.status == model.PENDING)
               .values(status=model.MISSED, diag=bindparam("d"), computing_element=bindparam("ce"),
                       submission_host=bindparam("h"), end_time=at, modified=at, lock_owner=None, lock_expires=None),
               [{"w": w, "d": diag[:2000], "ce": ce, "h": h} for w, diag, ce, h in rows])


def pending_of_mine(tx: Tx, worker_ids: Sequence[int]) -> dict[int, object]:
    """Whole rows of these workers that are still pending and claimed by this run, by id."""
    return {w.worker_id: w for w in tx.execute(select(workers).where(
        workers.c.worker_id.in_(list(worker_ids)), workers.c.status == model.PENDING, claims.owned(tx, workers)))}


def record_withdrawn(tx: Tx, worker_ids: Sequence[int], diag: str, at: float) -> list[int]:
    """These workers, still pending and claimed by this run, never reached the backend (it said so): they
    end cancelled, not missed (no failure of the backend's to count). Returns the ids that ended so."""
    ids = [w for w, in tx.execute(select(workers.c.worker_id).where(
        workers.c.worker_id.in_(list(worker_ids)), workers.c.status == model.PENDING, claims.owned(tx, workers)))]
    if ids:
        tx.execute(update(workers).where(workers.c.worker_id.in_(ids))
                   .values(status=model.CANCELLED, diag=diag[:2000], end_time=at, modified=at, lock_owner=None,
                           lock_expires=None))
    return ids


# -- planning: what a queue has now ---------------------------------------------------------------

@dataclass
class QueueLoad:
    """A queue's live workers per resource type, and what its queued ones hold."""

    queued: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    queued_cores: int = 0
    queued_memory_mb: int = 0


def queue_load(tx: Tx, queue: str) -> QueueLoad:
    load = QueueLoad(defaultdict(int), defaultdict(int))
    for rt, status, n, cores, memory in tx.execute(
        select(workers.c.resource_type, workers.c.status, func.count(), func.sum(workers.c.n_core),
               func.sum(workers.c.memory_mb))
        .where(workers.c.queue == queue, workers.c.status.in_([*model.WORKER_QUEUED, model.RUNNING]))
        .group_by(workers.c.resource_type, workers.c.status)
    ):
        (load.running if status == model.RUNNING else load.queued)[rt] += n
        if status != model.RUNNING:
            load.queued_cores += int(cores or 0)
            load.queued_memory_mb += int(memory or 0)
    load.queued, load.running = dict(load.queued), dict(load.running)
    return load


def missed_since(tx: Tx, queue: str, since: float, until: float) -> int:
    """Workers of this queue marked missed between `since` and `until`. A stamp after `until` was written by
    a host whose clock ran ahead: counted, it would throttle the queue until this clock caught up."""
    return tx.scalar(select(func.count()).select_from(workers).where(
        workers.c.queue == queue, workers.c.status == model.MISSED, workers.c.modified >= since,
        workers.c.modified <= until)) or 0


def made_since(tx: Tx, queue: str, since: float, until: float) -> int:
    """Every host's workers of this queue recorded between `since` and `until` (the per-cycle cap over all
    hosts; a stamp after `until` is a clock ahead, as for missed_since)."""
    return tx.scalar(select(func.count()).select_from(workers).where(
        workers.c.queue == queue, workers.c.created > since, workers.c.created <= until)) or 0


def started_since(tx: Tx, queue: str, since: float) -> dict[str, int]:
    """The queue's workers that started since `since`, per resource type. One that finished with no start
    seen (it ran between two polls, on a CE that gives no start time: ARC) counts when it ended since."""
    unseen_start = and_(workers.c.start_time.is_(None), workers.c.status == model.FINISHED,
                        workers.c.end_time >= since)
    return dict(tx.execute(select(workers.c.resource_type, func.count())
                           .where(workers.c.queue == queue, or_(workers.c.start_time >= since, unseen_start))
                           .group_by(workers.c.resource_type)).all())


def end_times_since(tx: Tx, queue: str, since: float) -> list[float]:
    """When the queue's workers that finished since `since` ended: the slots they held are free again. Failed
    ones are left out: pilots failing at once on a broken node must not call for more pilots to wait."""
    return [t for (t,) in tx.execute(select(workers.c.end_time).where(
        workers.c.queue == queue, workers.c.end_time >= since, workers.c.status == model.FINISHED,
        workers.c.start_time.is_not(None)))]


# -- retirement: queued pilots nobody needs any more ----------------------------------------------

@dataclass(frozen=True)
class QueuedWorker:
    """A worker that waits in the batch queue (pending, submitted or idle), as the retirement rule sees it."""

    worker_id: int
    resource_type: str | None
    status: str
    submit_time: float | None
    started_before: bool      # it ran once (idle again: suspended, requeued)
    kill_mark: str | None     # None, "retire" (marked for retirement, not carried out yet) or "kill"
    carries_job: bool         # push: a job waits for it to run


def queued_workers(tx: Tx, queue: str) -> list[QueuedWorker]:
    """Every worker of the queue waiting in the batch queue, oldest first."""
    carries = exists().where(job_workers.c.worker_id == workers.c.worker_id, jobs.c.panda_id == job_workers.c.panda_id,
                             jobs.c.sub_status.in_([model.SUB_FETCHED, model.SUB_SUBMITTED]))
    rows = tx.execute(select(workers.c.worker_id, workers.c.resource_type, workers.c.status, workers.c.submit_time,
                             workers.c.start_time, workers.c.kill_reason, carries.label("carries"))
                      .where(workers.c.queue == queue, workers.c.status.in_(model.WORKER_QUEUED))
                      .order_by(workers.c.worker_id))
    return [QueuedWorker(w, rt, status, submitted, started is not None,
                         None if reason is None else "retire" if model.is_retirement(reason) else "kill", bool(job))
            for w, rt, status, submitted, started, reason, job in rows]


def mark_retirement(tx: Tx, worker_ids: Sequence[int], reason: str) -> int:
    """Mark these workers for sweep to retire (kill_reason = model.RETIRE_MARK + reason): only those still
    submitted, never started and not marked for anything else (compare-and-set); returns how many were."""
    count = 0
    for chunk in chunks(list(worker_ids), 500):
        count += tx.execute(update(workers).where(
            workers.c.worker_id.in_(chunk), workers.c.status == model.SUBMITTED, workers.c.start_time.is_(None),
            workers.c.kill_reason.is_(None)).values(kill_reason=model.RETIRE_MARK + reason)).rowcount
    return count


def withdraw_retirement(tx: Tx, worker_ids: Sequence[int], *, claimed: bool = False) -> int:
    """Take the retirement mark off these workers (the demand came back, or the pilot started): not claimed by
    a sweep, or (`claimed`) claimed by this run, whose claim is then released. A kill mark of another kind
    stays. Returns how many marks were taken off."""
    count = 0
    for chunk in chunks(list(worker_ids), 500):
        where = [workers.c.worker_id.in_(chunk), workers.c.kill_reason.startswith(model.RETIRE_MARK, autoescape=True)]
        if claimed:
            where.append(claims.owned(tx, workers))
        else:
            where.append(claims.free(workers, tx.lease_now()))
        count += tx.execute(update(workers).where(*where).values(kill_reason=None)).rowcount
    if claimed:
        release(tx, worker_ids)
    return count


# -- poll: pages of active workers, and what changed ----------------------------------------------

# The columns poll reads per worker, in this order: what the backend needs (a backends.base.WorkerRef takes
# them as they are) and what a change compares.
# A WorkerRef's fields in order, without the queue (the caller puts it second): every row would decode the same
# name again (a tenth of reading a page, profiled).
POLL_COLUMNS = ("worker_id", "batch_id", "submission_host", "computing_element", "status", "log_dir",
                "submit_time", "kill_reason", "diag", "native_status", "native_exit_code", "start_time", "created",
                "modified")
_PAGE = (select(*(workers.c[name] for name in POLL_COLUMNS))
         # the states as literals: the statement runs as compiled, on the driver's own cursor (bulk.query)
         .where(workers.c.queue == bindparam("queue"),
                workers.c.status.in_([literal_column(f"'{s}'") for s in model.WORKER_ACTIVE]),
                workers.c.worker_id > bindparam("after"))
         .order_by(workers.c.worker_id).limit(bindparam("limit")))
_PAGE_HOST = _PAGE.where(workers.c.harvester_host.is_(None) | (workers.c.harvester_host == bindparam("host")))
_QUEUED = (select(*(workers.c[name] for name in POLL_COLUMNS))
           .where(workers.c.queue == bindparam("queue"),
                  workers.c.status.in_([literal_column(f"'{s}'") for s in model.WORKER_QUEUED if s != model.PENDING]))
           .order_by(workers.c.worker_id).limit(bindparam("limit")))
_QUEUED_HOST = _QUEUED.where(workers.c.harvester_host.is_(None) | (workers.c.harvester_host == bindparam("host")))


def active_page(tx: Tx, queue: str, after: int, limit: int, host: str | None = None) -> list[tuple]:
    """The next `limit` active workers of the queue after worker id `after`, as POLL_COLUMNS tuples (keyset
    pagination: memory stays flat whatever the queue's size). Read without claiming anything; plain tuples
    from the driver, as poll reads every live worker every run."""
    if host is not None:
        return bulk.query(tx.conn, _PAGE_HOST, ("queue", "after", "limit", "host"), (queue, after, limit, host))
    return bulk.query(tx.conn, _PAGE, ("queue", "after", "limit"), (queue, after, limit))


def queued_page(tx: Tx, queue: str, limit: int, host: str | None = None) -> list[tuple]:
    """The queue's first `limit` workers handed to the backend and still waiting there by the last poll
    (submitted, idle), as POLL_COLUMNS tuples."""
    if host is not None:
        return bulk.query(tx.conn, _QUEUED_HOST, ("queue", "limit", "host"), (queue, limit, host))
    return bulk.query(tx.conn, _QUEUED, ("queue", "limit"), (queue, limit))


def _now_seen(tx: Tx, worker_ids: Sequence[int], lock: bool) -> dict[int, tuple[str, float]]:
    seen: dict[int, tuple[str, float]] = {}
    for chunk in chunks(list(worker_ids), 500):   # a poll page can hold 10,000 (an old SQLite takes 999 variables)
        current = select(workers.c.worker_id, workers.c.status, workers.c.modified).where(
            workers.c.worker_id.in_(list(chunk)))
        if lock and not tx.is_sqlite:
            current = current.with_for_update()
        seen.update({w: (s, m) for w, s, m in tx.execute(current)})
    return seen


def written_at(tx: Tx, worker_ids: Sequence[int], at: float) -> bool:
    """Whether one of these workers was last changed at `at` (a run's own write, after a COMMIT whose answer
    never came: whether it was kept)."""
    return bool(worker_ids) and any(m == at for _, m in _now_seen(tx, worker_ids, lock=False).values())


def unchanged(tx: Tx, seen: Sequence) -> set[int]:
    """The workers (rows with worker_id, status, modified as a page read them) that nobody changed since,
    locked until the transaction ends on PostgreSQL/MariaDB (SQLite's write transaction already excludes
    every other writer)."""
    if not seen:
        return set()
    now_seen = _now_seen(tx, [r.worker_id for r in seen], lock=True)
    return {r.worker_id for r in seen if now_seen.get(r.worker_id) == (r.status, r.modified)}


# In the order of the statement's parameters (SET, then WHERE): the rows go to the driver as they are.
OBSERVED_COLUMNS = ("s", "d", "n", "x", "st", "et", "m", "w", "os", "om")
_RECORD_OBSERVED = (update(workers)
                    .where(workers.c.worker_id == bindparam("w"), workers.c.status == bindparam("os"),
                           workers.c.modified == bindparam("om"))
                    .ordered_values((workers.c.status, bindparam("s")), (workers.c.diag, bindparam("d")),
                                    (workers.c.native_status, bindparam("n")),
                                    (workers.c.native_exit_code, bindparam("x")),
                                    (workers.c.start_time, bindparam("st")), (workers.c.end_time, bindparam("et")),
                                    (workers.c.modified, bindparam("m"))))


def record_observed(tx: Tx, rows: Sequence[tuple]) -> set[int]:
    """(status, diag, native status, exit code, start, end, modified, worker id, status read, modified read)
    per worker poll saw change: written only where the row is still as poll read it (compare-and-set in the
    statement). Returns the ids written; another run's change in between keeps its own."""
    if not rows:
        return set()
    written = bulk.execute_many(tx.conn, _RECORD_OBSERVED, OBSERVED_COLUMNS, rows)
    if written == len(rows):   # the usual case: nobody else touched them
        return {r[7] for r in rows}
    now_seen = _now_seen(tx, [r[7] for r in rows], lock=False)
    return {r[7] for r in rows if now_seen.get(r[7]) == (r[0], r[6])}


_MARK_KILL = (update(workers)
              .where(workers.c.worker_id == bindparam("w"), workers.c.status == bindparam("os"),
                     workers.c.modified == bindparam("om"), workers.c.kill_reason.is_(None))
              .values(kill_reason=bindparam("k")))


def mark_kill(tx: Tx, kills: Sequence[tuple[int, str, str, float]]) -> int:
    """(worker id, reason, status read, modified read): sweep kills these workers. Only a worker still as it
    was read, and not marked yet, is marked (compare-and-set); returns how many were."""
    if not kills:
        return 0
    return tx.execute(_MARK_KILL, [{"w": w, "k": k, "os": s, "om": m} for w, k, s, m in kills]).rowcount


# -- sweep: killing and forgetting ----------------------------------------------------------------

def _to_kill(queue: str, host: str | None):
    return ((workers.c.queue == queue) & workers.c.kill_reason.is_not(None)
            & workers.c.status.not_in(model.WORKER_FINAL) & (workers.c.status != model.PENDING) & _here(host))


def count_to_kill(tx: Tx, queue: str, host: str | None) -> int:
    return tx.scalar(select(func.count()).select_from(workers).where(_to_kill(queue, host))) or 0


def claim_to_kill(tx: Tx, queue: str, host: str | None, limit: int) -> list:
    return claims.claim(tx, workers, _to_kill(queue, host), limit)


def record_cancelled(tx: Tx, killed: Sequence[tuple[int, str]], at: float) -> None:
    """(worker id, diag) per worker the backend killed, still claimed by this run."""
    if killed:
        tx.execute(update(workers).where(workers.c.worker_id == bindparam("w"), claims.owned(tx, workers))
                   .values(status=model.CANCELLED, diag=bindparam("d"), end_time=at, modified=at),
                   [{"w": w, "d": d} for w, d in killed])


def claim_forgettable(tx: Tx, queue: str, host: str | None, before: float, limit: int) -> list:
    """Final workers last changed before `before` whose last update reached PanDA."""
    unreported = exists().where(reports.c.kind == "worker", reports.c.key == workers.c.worker_id)
    return claims.claim(tx, workers, (workers.c.queue == queue) & workers.c.status.in_(model.WORKER_FINAL)
                        & (workers.c.modified < before) & ~unreported & _here(host), limit)


def forget(tx: Tx, worker_ids: Sequence[int]) -> int:
    """Delete these workers (claimed by this run); their job links go with them."""
    return tx.execute(workers.delete().where(workers.c.worker_id.in_(list(worker_ids)),
                                             claims.owned(tx, workers))).rowcount


def killable(tx: Tx, queues: list[str], *, worker_ids: Sequence[int] = (), ces: Sequence[str] = (),
             statuses: Sequence[str] = (), created_before: float | None = None) -> list[dict]:
    """An operator's selection (`kill-workers`): live workers not marked yet that match every given filter,
    by id ({worker_id, queue, status, computing_element})."""
    query = select(workers.c.worker_id, workers.c.queue, workers.c.status, workers.c.computing_element).where(
        *_killable(queues, worker_ids, ces, statuses, created_before)).order_by(workers.c.worker_id)
    return [dict(r._mapping) for r in tx.execute(query)]


def mark_killable(tx: Tx, queues: list[str], reason: str, *, worker_ids: Sequence[int] = (), ces: Sequence[str] = (),
                  statuses: Sequence[str] = (), created_before: float | None = None) -> int:
    return tx.execute(update(workers).where(*_killable(queues, worker_ids, ces, statuses, created_before))
                      .values(kill_reason=reason)).rowcount


def _killable(queues, worker_ids, ces, statuses, created_before) -> list:
    where = [workers.c.queue.in_(queues), workers.c.status.in_(list(statuses) or model.WORKER_ACTIVE),
             workers.c.kill_reason.is_(None)]
    if worker_ids:
        where.append(workers.c.worker_id.in_(list(worker_ids)))
    if ces:
        where.append(workers.c.computing_element.in_(list(ces)))
    if created_before is not None:
        where.append(workers.c.created <= created_before)
    return where


# -- propagate: what PanDA is told, and what PanDA asks -------------------------------------------

def by_ids(tx: Tx, worker_ids: Sequence[int]) -> dict[int, object]:
    """Whole rows of these workers, by id (a swept worker is absent)."""
    return {w.worker_id: w for w in tx.execute(select(workers).where(workers.c.worker_id.in_(list(worker_ids))))}


def panda_ids(tx: Tx, worker_ids: Sequence[int]) -> dict[int, list[int]]:
    """The jobs each worker ran (push mode), by worker id."""
    links: dict[int, list[int]] = defaultdict(list)
    for panda_id, worker_id in tx.execute(select(job_workers.c.panda_id, job_workers.c.worker_id)
                                          .where(job_workers.c.worker_id.in_(list(worker_ids)))):
        links[worker_id].append(panda_id)
    return links


def live_counts(tx: Tx, queues: list[str]) -> list[tuple[str | None, str | None, str, int]]:
    """(job type, resource type, status, workers) of these queues' live workers, pending included."""
    return [tuple(r) for r in tx.execute(
        select(workers.c.job_type, workers.c.resource_type, workers.c.status, func.count())
        .where(workers.c.queue.in_(queues), workers.c.status.in_([model.PENDING, *model.WORKER_ACTIVE]))
        .group_by(workers.c.job_type, workers.c.resource_type, workers.c.status))]


def mark_kill_of_jobs(tx: Tx, panda_ids: Sequence[int], reason: str) -> int:
    """Mark the live workers of these jobs for killing; returns how many were marked now."""
    if not panda_ids:
        return 0
    worker_ids = select(job_workers.c.worker_id).where(job_workers.c.panda_id.in_(list(panda_ids)))
    return tx.execute(update(workers).where(workers.c.worker_id.in_(worker_ids), workers.c.kill_reason.is_(None),
                                            workers.c.status.not_in(model.WORKER_FINAL))
                      .values(kill_reason=reason)).rowcount


def live_unmarked(tx: Tx) -> list:
    """Every live worker not marked for killing yet (what a PanDA kill command chooses from)."""
    return tx.execute(select(workers.c.worker_id, workers.c.queue, workers.c.status, workers.c.computing_element,
                             workers.c.submission_host)
                      .where(workers.c.status.not_in(model.WORKER_FINAL), workers.c.kill_reason.is_(None))).all()


def mark_kill_ids(tx: Tx, worker_ids: Sequence[int], reason: str) -> int:
    count = 0
    for chunk in chunks(list(worker_ids), 500):
        count += tx.execute(update(workers).where(workers.c.worker_id.in_(chunk)).values(kill_reason=reason)).rowcount
    return count


def never_started(tx: Tx, worker_ids: Sequence[int]) -> set[int]:
    """Those of these workers that have no start recorded."""
    return set(tx.scalars(select(workers.c.worker_id).where(workers.c.worker_id.in_(list(worker_ids)),
                                                           workers.c.start_time.is_(None))))


def statuses(tx: Tx, worker_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """(status, diag) of these workers, by id."""
    return {w: (s, d) for w, s, d in tx.execute(select(workers.c.worker_id, workers.c.status, workers.c.diag)
                                                 .where(workers.c.worker_id.in_(list(worker_ids))))}
