"""What happens to a push job when its worker moves: the job-side state transitions that submit, poll and
sweep share, each applied in the caller's transaction and queued in the outbox for PanDA.

A job follows its worker: submitted -> starting/submitted, running -> running, cancelled or killed ->
failed; a worker that never ran (missed, transient backend error) gives its job back to wait for another
worker, until the queue's max_submit_attempts are used up and the job is reported failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.panda import pilot_outputs
from harvester_cli.state.schema import job_workers, jobs
from harvester_cli.state.store import Store


def bound_jobs(conn: Connection, worker_ids: Iterable[int], sub_statuses: Iterable[str]) -> list:
    """(panda_id, job_json, submit_attempts, worker_id) of the jobs bound to these workers, in these steps."""
    return conn.execute(select(jobs.c.panda_id, jobs.c.job_json, jobs.c.submit_attempts, job_workers.c.worker_id)
                        .join(job_workers, job_workers.c.panda_id == jobs.c.panda_id)
                        .where(job_workers.c.worker_id.in_(list(worker_ids)),
                               jobs.c.sub_status.in_(list(sub_statuses)))).all()


def _move(store: Store, conn: Connection, queue: QueueConfig, batch_ids: dict[int, str | None], status: str,
          sub_status: str, from_sub: tuple[str, ...], at: float, **extra) -> None:
    bound = bound_jobs(conn, batch_ids, from_sub)
    if not bound:
        return
    conn.execute(update(jobs).where(jobs.c.panda_id.in_([b.panda_id for b in bound]))
                 .values(status=status, sub_status=sub_status, modified=at))
    updates = []
    for panda_id, job_json, _, worker_id in bound:
        update_ = pilot_outputs.base_update(json.loads(job_json), status)
        update_.update(batch_id=batch_ids[worker_id], **extra)
        updates.append((panda_id, queue.name, update_, False))
    store.enqueue_reports(conn, "job", updates)


def jobs_submitted(store: Store, conn: Connection, queue: QueueConfig, batch_ids: dict[int, str | None],
                   at: float) -> None:
    """The workers (worker id -> batch id) were submitted: their jobs are starting."""
    _move(store, conn, queue, batch_ids, model.JOB_STARTING, model.SUB_SUBMITTED,
          (model.SUB_FETCHED, model.SUB_SUBMITTED), at)


def jobs_running(store: Store, conn: Connection, queue: QueueConfig, batch_ids: dict[int, str | None],
                 at: float) -> None:
    """The workers started running: so do their jobs."""
    _move(store, conn, queue, batch_ids, model.JOB_RUNNING, model.SUB_RUNNING, (model.SUB_SUBMITTED,), at,
          start_time=model.panda_time(at))


def requeue_jobs(store: Store, conn: Connection, queue: QueueConfig, reasons: dict[int, str], at: float) -> None:
    """The jobs of these workers (that never ran, or hit a transient error) wait for a new worker, or
    are reported failed once the queue's max_submit_attempts are used up."""
    bound = bound_jobs(conn, reasons, (model.SUB_FETCHED, model.SUB_SUBMITTED, model.SUB_RUNNING))
    failed_updates = []
    for panda_id, job_json, attempts, worker_id in bound:
        attempts = (attempts or 0) + 1
        if attempts >= queue.max_submit_attempts:
            diag = f"setup failure: {attempts} attempts failed, last: {reasons[worker_id]}"
            conn.execute(update(jobs).where(jobs.c.panda_id == panda_id).values(
                status=model.JOB_FAILED, sub_status=model.SUB_REPORTING, submit_attempts=attempts, diag=diag,
                modified=at))
            failed_updates.append((panda_id, queue.name, pilot_outputs.failed_update(
                json.loads(job_json), pilot_outputs.ERR_SUBMISSION, diag), True))
        else:
            conn.execute(update(jobs).where(jobs.c.panda_id == panda_id).values(
                status=model.JOB_STARTING, sub_status=model.SUB_FETCHED, submit_attempts=attempts,
                diag=reasons[worker_id], modified=at))
    conn.execute(delete(job_workers).where(job_workers.c.worker_id.in_(list(reasons))))
    store.enqueue_reports(conn, "job", failed_updates)


def fail_jobs_of_killed(store: Store, conn: Connection, queue: QueueConfig, reasons: dict[int, str],
                        at: float) -> None:
    """These workers were killed (worker id -> why): their jobs are reported failed, sub-status cancelled."""
    bound = bound_jobs(conn, reasons, (model.SUB_SUBMITTED, model.SUB_RUNNING))
    if not bound:
        return
    conn.execute(update(jobs).where(jobs.c.panda_id.in_([b.panda_id for b in bound]))
                 .values(status=model.JOB_FAILED, sub_status=model.SUB_REPORTING, modified=at))
    store.enqueue_reports(conn, "job", [
        (panda_id, queue.name, pilot_outputs.failed_update(
            json.loads(job_json), pilot_outputs.ERR_WORKER_CANCELLED,
            f"worker {worker_id} killed: {reasons[worker_id]}", sub_status="cancelled"), True)
        for panda_id, job_json, _, worker_id in bound])
