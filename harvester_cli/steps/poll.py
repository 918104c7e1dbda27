"""poll: check active workers at the backend, record state changes, and in push mode turn the pilot's
outputs of ended workers into the final job updates."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from harvester_cli import model
from harvester_cli.backends.base import Observation, WorkerRef
from harvester_cli.config import QueueConfig
from harvester_cli.errors import exit_code_of
from harvester_cli.faults import fault_point
from harvester_cli.instance import Instance
from harvester_cli.panda import ce_errors, pilot_outputs, updates
from harvester_cli.panda.jobs import PandaJob
from harvester_cli.state import jobs, monitoring, outbox, workers
from harvester_cli.state.store import Tx
from harvester_cli.steps import transitions

log = logging.getLogger(__name__)

@dataclass
class QueuePoll:
    queue: str
    checked: int = 0
    changes: Counter = field(default_factory=Counter)   # new status -> count
    jobs_final: int = 0
    kill_requested: int = 0
    resubmitted: int = 0
    error: str | None = None
    exit_code: int = 0   # what the error asks of the run: 2 for a configuration problem, else 1


@dataclass
class PollRun:
    queues: list[QueuePoll] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return any(q.error for q in self.queues)

    @property
    def exit_code(self) -> int:
        return max([q.exit_code for q in self.queues if q.error] + [0])

    def problems(self) -> list[str]:
        return [f"queue {q.queue}: {q.error}" for q in self.queues if q.error]


def _decide(queue: QueueConfig, row, seen: Observation, at: float) -> tuple[str, str | None, str | None]:
    """(new status, diag, kill reason) for one worker from what the backend saw."""
    status, diag, kill = seen.status, seen.diag, None
    if status == model.MISSING:   # within the grace (apply_observations skips those): lost
        return model.FAILED, f"lost: {diag or 'the backend has no trace of this worker'}", None
    if status == model.HELD:
        return model.IDLE, f"held: {diag or 'no reason given'}", None
    if status == model.SUBMITTED and row.start_time is not None:
        status = model.IDLE
    if status in (model.SUBMITTED, model.IDLE) and row.submit_time and at - row.submit_time > queue.max_queued_seconds:
        kill = f"queued longer than {queue.max_queued_seconds} s"
    return status, diag, kill


def poll_queue(instance: Instance, queue: QueueConfig, progress: Callable[[int], None] | None = None) -> QueuePoll:
    """Check the queue's active workers page by page. A page is read without locking anything; what the
    backend reports as changed is written only for workers nobody changed meanwhile (their status and
    modification time are compared in the write): overlapping polls may look at the same workers, but
    each change is recorded, and its job update queued, once. A page where nothing changed writes nothing."""
    store = instance.store
    backend = instance.backend(queue)
    result = QueuePoll(queue.name)
    last_id = -1   # keyset pagination: each round takes the next workers by id, memory stays flat
    host = instance.host_filter(queue)
    while True:
        with store.reading() as tx:
            page = workers.active_page(tx, queue.name, last_id, backend.check_page, host)
        rows = [WorkerRef(row[0], queue.name, *row[1:]) for row in page]
        if not rows:
            break
        last_id = rows[-1].worker_id
        try:
            observations = backend.check(rows)
            fault_point("poll_after_check")
        except Exception as exc:  # one backend failing must not stop the other queues
            log.info("queue %s: backend check failed: %s", queue.name, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            result.error = f"backend check failed: {exc}"
            result.exit_code = exit_code_of(exc)
            break
        apply_observations(instance, queue, rows, observations, result)
        result.checked += len(rows)
        if progress:
            progress(len(rows))
    return result


def apply_observations(instance: Instance, queue: QueueConfig, rows, observations: list[Observation],
                       result: QueuePoll) -> None:
    at = model.now()
    changed, kills, ended, started, resubmit, retired = [], [], [], [], {}, {}
    retry_ended, retry_kills = [], []   # transient CE errors of push workers: a new worker if they never started
    grace = queue.lost_grace_seconds
    push = queue.mode == "push"
    for row, seen in zip(rows, observations):
        if seen.status == model.MISSING and at - (row.submit_time or row.created) < grace:
            continue   # not seen yet (a batch system can take a while to list a job): nothing changed
        if seen.status == model.HELD and model.is_retirement(row.kill_reason):
            # A sweep retiring it holds it first (Slurm), then cancels it if still pending or releases it.
            # Recorded as held (idle), it would no longer count as a queued pilot, and the rule would take the
            # mark off before the cancel lands: a retired pilot reported as an operator's cancel.
            continue
        status, diag, kill = _decide(queue, row, seen, at)
        if status != row.status and not model.allowed_worker_transition(row.status, status):
            status = row.status
        if (status == model.CANCELLED != row.status and model.is_retirement(row.kill_reason)
                and row.start_time is None and not seen.start_time and seen.started is not True):
            # A sweep (this host's or another's) removed it as marked and has not recorded that yet: it was
            # retired, its job (if one was bound) never ran and waits for another worker, as the sweep would do.
            diag = model.retired_diag(row.kill_reason, row.submit_time, at, diag or seen.native_status)
            retired[row.worker_id] = "its pilot was retired before it ran"
        if not kill and seen.kill_reason and not row.kill_reason:
            kill = seen.kill_reason
            if push and seen.started is False and _transient(queue, kill, seen):
                retry_kills.append((row, kill, seen))
                kill = None
        if kill and not row.kill_reason:
            kills.append((row.worker_id, kill, row.status, row.modified))
        if (status == row.status and diag == row.diag and seen.native_status == row.native_status
                and seen.exit_code == row.native_exit_code):
            continue
        changed.append((   # workers.OBSERVED_COLUMNS; the worker id last
            status, diag, seen.native_status, seen.exit_code,
            row.start_time or seen.start_time or (at if status == model.RUNNING else None),
            (seen.end_time or at) if status in model.WORKER_FINAL else None, at, row.worker_id,
            row.status, row.modified,
        ))
        if status != row.status and row.worker_id not in retired:
            if status in model.WORKER_FINAL and push and seen.started is False and _transient(queue, diag, seen):
                retry_ended.append((row, status, diag, seen))
            elif status in model.WORKER_FINAL and seen.jobs is None:   # a many-job worker's jobs end on their own
                ended.append((row, status, diag))
            elif status == model.RUNNING:
                started.append(row)
    if retry_ended or retry_kills:
        backend = instance.backend(queue)
        for row, status, diag, seen in retry_ended:
            if _never_started(backend, queue, row, seen):
                resubmit[row.worker_id] = f"transient CE error before the job started: {diag or seen.native_status}"
            elif seen.jobs is None:
                ended.append((row, status, diag))
        for row, kill, seen in retry_kills:
            proven = _never_started(backend, queue, row, seen)
            kills.append((row.worker_id, (model.RESUBMIT_MARK if proven else "") + kill, row.status, row.modified))
    steps_ended = [(row, seen) for row, seen in zip(rows, observations)
                   if seen.jobs and any(j.ended for j in seen.jobs.values())]
    if not changed and not kills and not steps_ended:
        return
    final_jobs = _final_job_updates(instance, queue, ended) if push else []
    step_finals = _step_final_updates(instance, queue, steps_ended)
    # One transaction, run again whole if another host's transaction deadlocked it; the counts go to the
    # result once it committed. A COMMIT whose answer never came (a failover) is looked up: the changes are
    # there as written at `at`, or they are written again (never a worker's job requeued twice).
    changed_ids = [c[7] for c in changed]
    counts = instance.store.retrying(
        lambda tx: _write_changes(tx, queue, rows, changed, kills, started, resubmit, final_jobs, at, step_finals,
                                  retired),
        committed=lambda tx: workers.written_at(tx, changed_ids, at))
    changes, kill_requested, resubmitted, jobs_final, written = counts
    result.changes.update(changes)
    result.kill_requested += kill_requested
    result.resubmitted += len(resubmitted)
    result.jobs_final += jobs_final
    _count_errors(instance, queue, rows, changed, written, resubmitted)
    by_id = {r.worker_id: r for r in rows}
    for worker_id in retired:
        if worker_id in written:
            instance.count("harvester_cli_pilots_retired_total", queue=queue.name,
                           computing_element=by_id[worker_id].computing_element or "")


def _transient(queue: QueueConfig, text: str | None, seen: Observation) -> bool:
    """Whether the CE's error (a diag or a kill reason) is a transient one: by the backend's table, or the
    queue's own list (seen.resubmit)."""
    entry = ce_errors.match(text, queue.backend)
    return seen.resubmit or (entry is not None and entry.transient)


def _never_started(backend, queue: QueueConfig, row, seen: Observation) -> bool:
    """The proof that a push worker's job never started: the batch system says so (seen.started is False,
    no exit code), and the pilot left nothing: no heartbeat, no job report (a payload exit code would be in
    them)."""
    if seen.started is not False or seen.exit_code is not None:
        return False
    try:
        files = backend.fetch_outputs(row, list(pilot_outputs.PILOT_OUTPUTS))
    except Exception as exc:   # outputs that cannot be looked at prove nothing
        log.warning("queue %s: worker %s: cannot look for pilot outputs: %s", queue.name, row.worker_id, exc)
        return False
    return not files


def _count_errors(instance: Instance, queue: QueueConfig, rows, changed, written: set[int],
                  resubmitted: dict[int, str]) -> None:
    """The CE errors this page saw newly (a worker's diag now names another table entry), and the push jobs
    that got a new worker after one, per CE (the metrics' counters)."""
    by_id = {r.worker_id: r for r in rows}
    for c in changed:
        if c[7] not in written:
            continue
        row = by_id[c[7]]
        entry = ce_errors.match(c[1], queue.backend)
        if entry is None or entry == ce_errors.match(row.diag, queue.backend):
            continue
        instance.count("harvester_cli_ce_errors_total", queue=queue.name, computing_element=row.computing_element,
                       code=entry.code, transient=str(entry.transient).lower())
    for worker_id, why in resubmitted.items():
        entry = ce_errors.match(why, queue.backend)
        instance.count("harvester_cli_jobs_resubmitted_total", queue=queue.name,
                       computing_element=by_id[worker_id].computing_element, code=entry.code if entry else "")


def _write_changes(tx: Tx, queue: QueueConfig, rows, changed, kills, started, resubmit, final_jobs,
                   at: float, step_finals=(), retired=None) -> tuple[Counter, int, dict[int, str], int, set[int]]:
    """Write a page's changes; returns (new status -> count, kills asked, the workers whose jobs were requeued,
    final job updates, the workers whose change was written).
    Every write is compare-and-set on what the page read: another poll (or sweep) may have moved a worker
    meanwhile, and then its change stands and this one is dropped, with everything that follows from it. A
    job whose own step ended (a many-job worker) is final only if it is still live when written. The jobs of
    pilots seen removed while marked for retirement (`retired`) wait for another worker, as sweep would leave them."""
    changes: Counter = Counter()
    kill_requested = workers.mark_kill(tx, kills)   # first: it leaves status and modified as they were read
    fresh = workers.record_observed(tx, changed)
    changed = [c for c in changed if c[7] in fresh]
    outbox.enqueue_workers(tx, queue.name, [c[7] for c in changed])
    for c in changed:
        if c[0] != c[8]:
            changes[c[0]] += 1
    fault_point("poll_mid_transaction")   # the worker updates are written, not yet committed
    started = [r for r in started if r.worker_id in fresh]
    if started and queue.mode == "push":
        transitions.jobs_running(tx, queue, {r.worker_id: r.batch_id for r in started}, at)
    resubmit = {w: why for w, why in resubmit.items() if w in fresh}
    if resubmit:
        transitions.requeue_jobs(tx, queue, resubmit, at)
    retired = {w: why for w, why in (retired or {}).items() if w in fresh}
    if retired:
        transitions.requeue_jobs(tx, queue, retired, at, attempt=False)
    final_jobs = [(p, u, d) for p, u, d, w in final_jobs if w in fresh]
    jobs.record_final(tx, [(p, updates.status_of(u), d) for p, u, d in final_jobs], at)
    live = jobs.record_final_of_live(tx, [(p, updates.status_of(u), d) for p, u, d, _ in step_finals], at)
    final_jobs += [(p, u, d) for p, u, d, _ in step_finals if p in live]
    outbox.enqueue(tx, outbox.JOB, [(p, queue.name, u, True) for p, u, _ in final_jobs])
    return changes, kill_requested, resubmit, len(final_jobs), fresh


def _final_job_updates(instance: Instance, queue: QueueConfig, ended) -> list[tuple[int, dict, str | None, int]]:
    """Push mode: for each ended worker, its jobs' final updates from the pilots' files (one job, or with
    many_to_one each job's own files: a many-job worker the backend lost ends all of its jobs here)."""
    if not ended:
        return []
    backend = instance.backend(queue)
    with instance.store.reading() as tx:
        bound = jobs.bound_to(tx, [r.worker_id for r, _, _ in ended], model.SUB_LIVE)
    by_worker: dict[int, list[tuple[int, PandaJob]]] = {}
    for b in bound:
        by_worker.setdefault(b.worker_id, []).append((b.panda_id, PandaJob.from_json(b.job_json)))
    names = list(pilot_outputs.PILOT_OUTPUTS)
    out = []
    for row, status, diag in ended:
        for panda_id, job in by_worker.get(row.worker_id, []):
            if status == model.CANCELLED:
                update_ = updates.job_failed(job, updates.ERR_WORKER_CANCELLED,
                                             f"worker {row.worker_id} cancelled: {diag or row.kill_reason}",
                                             sub_status="cancelled")
                out.append((panda_id, update_, diag, row.worker_id))
                continue
            try:
                files = (backend.fetch_job_outputs(row, panda_id, names) if queue.many_to_one is not None
                         else backend.fetch_outputs(row, names))
                why = diag
            except Exception as exc:  # outputs that cannot be fetched are reported as missing
                log.warning("queue %s: worker %s: cannot fetch outputs: %s", queue.name, row.worker_id, exc)
                files, why = {}, f"{diag + '; ' if diag else ''}cannot fetch outputs: {exc}"
            update_, note = pilot_outputs.final_update(job, files, why)
            update_ = updates.with_pilot_links(update_, None, row.batch_id, None)
            out.append((panda_id, update_, note, row.worker_id))
    return out


def _step_final_updates(instance: Instance, queue: QueueConfig, steps_ended) -> list[tuple[int, dict, str | None, int]]:
    """Many jobs per worker: the final update of each live job whose own step has ended (its node failed, it
    was cancelled, its pilot finished, or the allocation ended under it), from that job's pilot outputs."""
    if not steps_ended:
        return []
    backend = instance.backend(queue)
    with instance.store.reading() as tx:
        live = {b.panda_id: b for b in jobs.bound_to(tx, [r.worker_id for r, _ in steps_ended], model.SUB_LIVE)}
    out = []
    for row, seen in steps_ended:
        for panda_id, step in seen.jobs.items():
            if not step.ended or panda_id not in live:
                continue
            job = PandaJob.from_json(live[panda_id].job_json)
            try:
                files = backend.fetch_job_outputs(row, panda_id, list(pilot_outputs.PILOT_OUTPUTS))
                diag = step.diag
            except Exception as exc:  # outputs that cannot be fetched are reported as missing
                log.warning("queue %s: worker %s: job %s: cannot fetch outputs: %s", queue.name, row.worker_id,
                            panda_id, exc)
                files, diag = {}, f"{step.diag + '; ' if step.diag else ''}cannot fetch outputs: {exc}"
            update_, note = pilot_outputs.final_update(job, files, diag)
            update_ = updates.with_node(updates.with_pilot_links(update_, None, row.batch_id, None), step.node)
            out.append((panda_id, update_, note, row.worker_id))
    return out


def poll(instance: Instance, queues: list[QueueConfig], progress: Callable[[int], None] | None = None) -> PollRun:
    run = PollRun()
    for queue in queues:
        run.queues.append(poll_queue(instance, queue, progress))
    # The history `status` and the status page chart: workers per queue, CE, resource type and state.
    monitoring.record_snapshot(instance.store, [q.name for q in queues])
    return run
