"""poll: check active workers at the backend, record state changes, and in push mode turn the pilot's
outputs of ended workers into the final job updates."""

from __future__ import annotations

import json
import logging
from collections import Counter, namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, update

from harvester_cli import model
from harvester_cli.backends.base import Observation
from harvester_cli.config import QueueConfig
from harvester_cli.faults import fault_point
from harvester_cli.panda import pilot_outputs
from harvester_cli.state import bulk, monitoring, transitions
from harvester_cli.state.schema import job_workers, jobs, workers
from harvester_cli.steps.instance import Instance, worker_ref

log = logging.getLogger(__name__)

# Harvester's default: at most 500 workers per monitor round.
CHUNK = 500


@dataclass
class QueuePoll:
    queue: str
    checked: int = 0
    changes: Counter = field(default_factory=Counter)   # new status -> count
    jobs_final: int = 0
    kill_requested: int = 0
    resubmitted: int = 0
    error: str | None = None


@dataclass
class PollRun:
    queues: list[QueuePoll] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return any(q.error for q in self.queues)

    def problems(self) -> list[str]:
        return [f"queue {q.queue}: {q.error}" for q in self.queues if q.error]


def _decide(queue: QueueConfig, row, seen: Observation, at: float) -> tuple[str, str | None, str | None]:
    """(new status, diag, kill reason) for one worker from what the backend saw."""
    status, diag, kill = seen.status, seen.diag, None
    if status == model.MISSING:
        since = row.submit_time or row.created
        if at - since < queue.lost_grace_seconds:
            return row.status, row.diag, None
        return model.FAILED, f"lost: {diag or 'the backend has no trace of this worker'}", None
    if status == model.HELD:
        return model.IDLE, f"held: {diag or 'no reason given'}", None
    if status == model.SUBMITTED and row.start_time is not None:
        status = model.IDLE
    if status in (model.SUBMITTED, model.IDLE) and row.submit_time and at - row.submit_time > queue.max_queued_seconds:
        kill = f"queued longer than {queue.max_queued_seconds} s"
    return status, diag, kill


# The columns poll reads per worker: what the backend needs (worker_ref) and what a change compares. A
# named tuple, not SQLAlchemy's Row: its attributes are read a few million times per poll of 200k workers.
_COLUMNS = ("worker_id", "queue", "batch_id", "submission_host", "computing_element", "status", "log_dir",
            "submit_time", "kill_reason", "diag", "native_status", "native_exit_code", "start_time", "created",
            "modified")
PollRow = namedtuple("PollRow", _COLUMNS)
_PAGE = (select(*(workers.c[name] for name in _COLUMNS))
         .where(workers.c.queue == bindparam("queue"), workers.c.status.in_(model.WORKER_ACTIVE),
                workers.c.worker_id > bindparam("after"))
         .order_by(workers.c.worker_id).limit(CHUNK))
# A host-bound backend (local processes, this host's schedd): only the workers this host made.
_PAGE_HOST = _PAGE.where(workers.c.harvester_host.is_(None) | (workers.c.harvester_host == bindparam("host")))


def poll_queue(instance: Instance, queue: QueueConfig, progress: Callable[[int], None] | None = None) -> QueuePoll:
    """Check the queue's active workers page by page. A page is read without locking anything; what the
    backend reports as changed is written only for workers nobody changed meanwhile (their status and
    modification time are compared in the write): overlapping polls may look at the same workers, but
    each change is recorded, and its job update queued, once. A page where nothing changed writes nothing."""
    store = instance.store
    backend = instance.backend(queue)
    result = QueuePoll(queue.name)
    last_id = -1   # keyset pagination: each round takes the next workers by id, memory stays flat
    page, params = (_PAGE_HOST, {"host": instance.host}) if backend.host_bound else (_PAGE, {})
    while True:
        with store.read() as conn:
            rows = list(map(PollRow._make, conn.execute(page, {"queue": queue.name, "after": last_id,
                                                               **params}).fetchall()))
        if not rows:
            break
        last_id = rows[-1].worker_id
        try:
            observations = backend.check([worker_ref(r) for r in rows])
            fault_point("poll_after_check")
        except Exception as exc:  # one backend failing must not stop the other queues
            log.warning("queue %s: backend check failed: %s", queue.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            result.error = f"backend check failed: {exc}"
            break
        apply_observations(instance, queue, rows, observations, result)
        result.checked += len(rows)
        if progress:
            progress(len(rows))
    return result


def apply_observations(instance: Instance, queue: QueueConfig, rows, observations: list[Observation],
                       result: QueuePoll) -> None:
    at = model.now()
    changed, kills, ended, started, resubmit = [], [], [], [], {}
    for row, seen in zip(rows, observations):
        status, diag, kill = _decide(queue, row, seen, at)
        if status != row.status and not model.allowed_worker_transition(row.status, status):
            status = row.status
        kill = kill or seen.kill_reason
        if kill and not row.kill_reason:
            kills.append({"w": row.worker_id, "k": kill})
        if (status == row.status and diag == row.diag and seen.native_status == row.native_status
                and seen.exit_code == row.native_exit_code):
            continue
        changed.append((   # _UPDATE_NAMES; the worker id last
            status, diag, seen.native_status, seen.exit_code,
            row.start_time or seen.start_time or (at if status == model.RUNNING else None),
            (seen.end_time or at) if status in model.WORKER_FINAL else None, at, row.worker_id,
        ))
        if status != row.status:
            if status in model.WORKER_FINAL and seen.resubmit and queue.mode == "push":
                resubmit[row.worker_id] = f"transient backend error: {diag or seen.native_status}"
            elif status in model.WORKER_FINAL:
                ended.append((row, status, diag))
            elif status == model.RUNNING:
                started.append(row)
    if not changed and not kills:
        return
    final_jobs = _final_job_updates(instance, queue, ended) if queue.mode == "push" else []
    # One transaction, run again whole if another host's transaction deadlocked it; the counts go to the
    # result once it committed.
    counts = instance.store.retrying(lambda conn: _write_changes(instance, queue, conn, rows, changed, kills, started,
                                                        resubmit, final_jobs, at))
    changes, kill_requested, resubmitted, jobs_final = counts
    result.changes.update(changes)
    result.kill_requested += kill_requested
    result.resubmitted += resubmitted
    result.jobs_final += jobs_final


def _write_changes(instance: Instance, queue: QueueConfig, conn, rows, changed, kills, started, resubmit,
                   final_jobs, at: float) -> tuple[Counter, int, int, int]:
    """Write a page's changes; returns (new status -> count, kills asked, jobs requeued, final job updates)."""
    store = instance.store
    changes: Counter = Counter()
    # Only workers that are as this page read them: another poll (or sweep) may have moved them meanwhile.
    ids = {c[-1] for c in changed} | {k["w"] for k in kills}
    current = select(workers.c.worker_id, workers.c.status, workers.c.modified).where(workers.c.worker_id.in_(ids))
    if not store.is_sqlite:   # SQLite's write transaction already excludes every other writer
        current = current.with_for_update()
    now_seen = {w: (s, m) for w, s, m in conn.execute(current)}
    fresh = {r.worker_id for r in rows if now_seen.get(r.worker_id) == (r.status, r.modified)}
    changed = [c for c in changed if c[-1] in fresh]
    kills = [k for k in kills if k["w"] in fresh]
    if changed:
        bulk.execute_many(conn, _UPDATE_WORKER, _UPDATE_NAMES, changed)
        store.enqueue_reports(conn, "worker", [(c[-1], queue.name, None, False) for c in changed])
    statuses = {r.worker_id: r.status for r in rows}
    for c in changed:
        if c[0] != statuses[c[-1]]:
            changes[c[0]] += 1
    fault_point("poll_mid_transaction")   # the worker updates are written, not yet committed
    if kills:
        conn.execute(update(workers).where(workers.c.worker_id == bindparam("w"))
                     .values(kill_reason=bindparam("k")), kills)
    started = [r for r in started if r.worker_id in fresh]
    if started and queue.mode == "push":
        transitions.jobs_running(store, conn, queue, {r.worker_id: r.batch_id for r in started}, at)
    resubmit = {w: why for w, why in resubmit.items() if w in fresh}
    if resubmit:
        transitions.requeue_jobs(store, conn, queue, resubmit, at)
    final_jobs = [(p, u, d) for p, u, d, w in final_jobs if w in fresh]
    for panda_id, update_, diag in final_jobs:
        conn.execute(update(jobs).where(jobs.c.panda_id == panda_id, jobs.c.sub_status != model.SUB_DONE)
                     .values(status=update_["job_status"], sub_status=model.SUB_REPORTING, diag=diag,
                             modified=at))
    store.enqueue_reports(conn, "job", [(p, queue.name, u, True) for p, u, _ in final_jobs])
    return changes, len(kills), len(resubmit), len(final_jobs)


_UPDATE_NAMES = ("s", "d", "n", "x", "st", "et", "m", "w")
_UPDATE_WORKER = (update(workers).where(workers.c.worker_id == bindparam("w"))
                  .values(status=bindparam("s"), diag=bindparam("d"), native_status=bindparam("n"),
                          native_exit_code=bindparam("x"), start_time=bindparam("st"), end_time=bindparam("et"),
                          modified=bindparam("m")))


def _final_job_updates(instance: Instance, queue: QueueConfig, ended) -> list[tuple[int, dict, str | None, int]]:
    """Push mode: for each ended worker, its job's final update from the pilot's files."""
    if not ended:
        return []
    backend = instance.backend(queue)
    with instance.store.read() as conn:
        bound = conn.execute(select(jobs.c.panda_id, jobs.c.job_json, job_workers.c.worker_id)
                             .join(job_workers, job_workers.c.panda_id == jobs.c.panda_id)
                             .where(job_workers.c.worker_id.in_([r.worker_id for r, _, _ in ended]),
                                    jobs.c.sub_status.in_([model.SUB_SUBMITTED, model.SUB_RUNNING]))).all()
    by_worker = {w: (p, json.loads(j)) for p, j, w in bound}
    out = []
    for row, status, diag in ended:
        if row.worker_id not in by_worker:
            continue
        panda_id, job = by_worker[row.worker_id]
        if status == model.CANCELLED:
            update_ = pilot_outputs.failed_update(job, pilot_outputs.ERR_WORKER_CANCELLED,
                                                  f"worker {row.worker_id} cancelled: {diag or row.kill_reason}",
                                                  sub_status="cancelled")
            out.append((panda_id, update_, diag, row.worker_id))
            continue
        try:
            files = backend.fetch_outputs(worker_ref(row), list(pilot_outputs.PILOT_OUTPUTS))
        except Exception as exc:  # outputs that cannot be fetched are reported as missing
            log.warning("queue %s: worker %s: cannot fetch outputs: %s", queue.name, row.worker_id, exc)
            files, diag = {}, f"{diag + '; ' if diag else ''}cannot fetch outputs: {exc}"
        update_, note = pilot_outputs.final_update(job, files, diag)
        update_.setdefault("batch_id", row.batch_id)
        out.append((panda_id, update_, note, row.worker_id))
    return out


def poll(instance: Instance, queues: list[QueueConfig], progress: Callable[[int], None] | None = None) -> PollRun:
    run = PollRun()
    for queue in queues:
        run.queues.append(poll_queue(instance, queue, progress))
    # The history `status` and the status page chart: workers per queue, CE, resource type and state.
    monitoring.record_snapshot(instance.store, [q.name for q in queues])
    return run
