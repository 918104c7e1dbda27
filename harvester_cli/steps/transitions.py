"""What happens to a push job when its worker moves: the job-side transitions submit, poll and sweep share,
each applied in the caller's transaction and queued in the outbox for PanDA.

A job follows its worker: submitted -> starting/submitted, running -> running, cancelled or killed ->
failed; a worker that never ran (missed, transient CE error before the job started) gives its job back to
wait for another worker, until the queue's max_submit_attempts are used up and the job is reported failed.
A job given back waits first for PanDA's word (sub-status retry: submit asks PanDA whether the job is still
ours before it gets a worker again); one whose worker was refused for a reason that will not pass (a
permanent CE error) is reported failed at once.
"""

from __future__ import annotations

from collections.abc import Collection

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.panda import updates
from harvester_cli.panda.jobs import PandaJob
from harvester_cli.state import jobs, outbox, workers
from harvester_cli.state.store import Tx


def _follow(tx: Tx, queue: QueueConfig, batch_ids: dict[int, str | None], status: str, sub_status: str,
            from_sub: tuple[str, ...], at: float, started: float | None = None) -> None:
    bound = jobs.bound_to(tx, batch_ids, from_sub)
    if not bound:
        return
    jobs.move(tx, [b.panda_id for b in bound], status, sub_status, at)
    outbox.enqueue(tx, outbox.JOB, [
        (b.panda_id, queue.name, updates.job_update(PandaJob.from_json(b.job_json), status,
                                                    batch_id=batch_ids[b.worker_id],
                                                    start_time=model.panda_time(started)), False)
        for b in bound])


def jobs_submitted(tx: Tx, queue: QueueConfig, batch_ids: dict[int, str | None], at: float) -> None:
    """The workers (worker id -> batch id) were submitted: their jobs are starting."""
    _follow(tx, queue, batch_ids, model.JOB_STARTING, model.SUB_SUBMITTED, (model.SUB_FETCHED, model.SUB_SUBMITTED), at)


def jobs_running(tx: Tx, queue: QueueConfig, batch_ids: dict[int, str | None], at: float) -> None:
    """The workers started running: so do their jobs."""
    _follow(tx, queue, batch_ids, model.JOB_RUNNING, model.SUB_RUNNING, (model.SUB_SUBMITTED,), at, started=at)


def requeue_jobs(tx: Tx, queue: QueueConfig, reasons: dict[int, str], at: float, *, attempt: bool = True,
                 give_up: Collection[int] = ()) -> None:
    """The jobs of these workers (that never ran, or hit a transient error before they started) wait for a
    new worker, after PanDA's word (retry), or are reported failed once the queue's max_submit_attempts are
    used up, or at once for the workers in `give_up` (refused for a reason that will not pass). A submission
    withdrawn before the backend had it (`attempt=False`: an operator's Ctrl-C) was no attempt, and its job
    waits for a worker at once."""
    failed = []
    for b in jobs.bound_to(tx, reasons, (model.SUB_FETCHED, *model.SUB_LIVE)):
        attempts = b.submit_attempts + (1 if attempt else 0)
        if attempt and (attempts >= queue.max_submit_attempts or b.worker_id in give_up):
            why = "not retried (not a transient error)" if b.worker_id in give_up else f"{attempts} attempts failed"
            diag = f"setup failure: {why}, last: {reasons[b.worker_id]}"
            jobs.fail(tx, b.panda_id, diag, at, attempts)
            failed.append((b.panda_id, queue.name, updates.job_failed(
                PandaJob.from_json(b.job_json), updates.ERR_SUBMISSION, diag), True))
        else:
            jobs.back_to_wait(tx, b.panda_id, attempts, reasons[b.worker_id], at,
                              model.SUB_RETRY if attempt else model.SUB_FETCHED)
    jobs.unbind(tx, reasons)
    outbox.enqueue(tx, outbox.JOB, failed)


def fail_jobs_of_unknown(tx: Tx, queue: QueueConfig, reasons: dict[int, str], at: float) -> None:
    """Whether these workers reached the backend cannot be known: their jobs are reported failed, never
    handed to another worker (the first may still run them)."""
    bound = jobs.bound_to(tx, reasons, (model.SUB_FETCHED, model.SUB_SUBMITTED))
    for b in bound:
        jobs.fail(tx, b.panda_id, reasons[b.worker_id], at)
    outbox.enqueue(tx, outbox.JOB, [(b.panda_id, queue.name, updates.job_failed(
        PandaJob.from_json(b.job_json), updates.ERR_SUBMISSION, reasons[b.worker_id]), True) for b in bound])


def fail_jobs_of_killed(tx: Tx, queue: QueueConfig, reasons: dict[int, str], at: float) -> None:
    """These workers were killed (worker id -> why): their jobs are reported failed, sub-status cancelled;
    except the jobs of workers killed for a transient CE error before their job started (poll's mark in the
    kill reason, model.RESUBMIT_MARK, and still no start recorded), which get a new worker as a missed
    one's do."""
    transient = {w: why for w, why in reasons.items() if why and why.startswith(model.RESUBMIT_MARK)}
    if transient:
        never = workers.never_started(tx, list(transient))
        transient = {w: why for w, why in transient.items() if w in never}
        if transient:
            requeue_jobs(tx, queue, transient, at)
            reasons = {w: why for w, why in reasons.items() if w not in transient}
    bound = jobs.bound_to(tx, reasons, model.SUB_LIVE)
    if not bound:
        return
    jobs.move(tx, [b.panda_id for b in bound], model.JOB_FAILED, model.SUB_REPORTING, at)
    outbox.enqueue(tx, outbox.JOB, [
        (b.panda_id, queue.name, updates.job_failed(
            PandaJob.from_json(b.job_json), updates.ERR_WORKER_CANCELLED,
            f"worker {b.worker_id} killed: {reasons[b.worker_id]}", sub_status="cancelled"), True)
        for b in bound])


def report_killed_jobs(tx: Tx, queue: QueueConfig, bound: list) -> None:
    """These jobs' own steps were stopped (PanDA asked; their many-job worker runs on): each is reported
    failed, sub-status cancelled."""
    outbox.enqueue(tx, outbox.JOB, [
        (b.panda_id, queue.name, updates.job_failed(
            PandaJob.from_json(b.job_json), updates.ERR_WORKER_CANCELLED,
            f"job killed in worker {b.worker_id} (its step cancelled), as PanDA asked", sub_status="cancelled"), True)
        for b in bound])
