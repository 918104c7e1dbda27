"""sweep: kill workers marked for killing (with a cap against mass accidents; queued pilots marked for
retirement are removed only while still queued, steps/retire.py), then forget final workers and done jobs
after their retention time.

A kill is recorded (cancelled) after the backend's answer; when the state database fails over under that
COMMIT, the record is looked up after reconnecting and written again if it was not kept, so the next sweep
does not kill the same workers again."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from harvester_cli import model
from harvester_cli.backends.base import JobKillResult
from harvester_cli.config import QueueConfig
from harvester_cli.errors import exit_code_of
from harvester_cli.faults import fault_point
from harvester_cli.instance import Instance, worker_ref
from harvester_cli.state import jobs, monitoring, outbox, workers
from harvester_cli.steps import retire, transitions

log = logging.getLogger(__name__)


@dataclass
class QueueSweep:
    queue: str
    to_kill: int = 0
    killed: int = 0
    retired: int = 0            # queued pilots nobody needed, removed while still queued (steps/retire.py)
    retire_started: int = 0     # marked for retirement but started meanwhile: left running
    kill_failed: list[tuple[int, str]] = field(default_factory=list)
    refused: str | None = None
    cleaned: int = 0
    jobs_deleted: int = 0
    clean_failed: str | None = None   # the backend could not clean (the next sweep tries again)
    exit_code: int = 0                # what a backend error asks of the run: 2 for a configuration problem
    jobs_killed: int = 0                                                  # jobs whose own step was stopped
    job_kill_failed: list[tuple[int, str]] = field(default_factory=list)  # (PandaID, why)


@dataclass
class SweepRun:
    queues: list[QueueSweep] = field(default_factory=list)
    history_trimmed: int = 0

    @property
    def partial(self) -> bool:
        return any(q.kill_failed or q.job_kill_failed or q.refused for q in self.queues)

    @property
    def exit_code(self) -> int:
        return max([q.exit_code for q in self.queues] + [1 if self.partial else 0])

    def problems(self) -> list[str]:
        out = []
        for q in self.queues:
            if q.refused:
                out.append(f"queue {q.queue}: {q.refused}")
            if q.clean_failed and q.exit_code > 1:
                out.append(f"queue {q.queue}: clean failed: {q.clean_failed}")
            by_error: dict[str, list[int]] = {}
            for w, e in q.kill_failed:   # a backend that failed as a whole: one line for its workers, not one each
                by_error.setdefault(e, []).append(w)
            for e, ids in by_error.items():
                who = f"worker {ids[0]}" if len(ids) == 1 else f"{len(ids)} workers ({ids[0]}, ...)"
                out.append(f"queue {q.queue}: {who}: kill failed: {e}")
            out += [f"queue {q.queue}: job {p}: kill failed: {e}" for p, e in q.job_kill_failed]
        return out


@dataclass
class KillMarks:
    """`kill-workers`: the workers an operator's selection matched, and whether they were marked."""

    matched: list[dict] = field(default_factory=list)
    marked: int = 0
    refused: str | None = None
    # --worker ids that matched nothing, one line each: `unmatched` is a mistake in the selection (exit 1),
    # `done` a worker with nothing left to kill (already final, or marked already).
    unmatched: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


def why_not_killable(row, queues: list[str]) -> tuple[str, bool]:
    """Why a worker named by id matched nothing: (reason, whether the selection was wrong). `row` is the
    worker's row, None when the state database has no such worker."""
    if row is None:
        return "no such worker in the state database", True
    if row.queue not in queues:
        return f"belongs to queue {row.queue}, which is not selected", True
    if row.status in model.WORKER_FINAL:
        return f"already {row.status}: nothing to kill", False
    if row.kill_reason is not None:
        return "already marked for killing: the next sweep kills it", False
    if row.status == model.PENDING:
        return "pending: its submission is still going on; kill it once it is submitted", True
    return f"{row.status}: does not match the other filters", True


def mark_for_kill(instance: Instance, queues: list[str], *, worker_ids: tuple[int, ...] = (),
                  ces: tuple[str, ...] = (), statuses: tuple[str, ...] = (), older_than: int | None = None,
                  reason: str = "requested by an operator", force: bool = False, dry_run: bool = False) -> KillMarks:
    """Mark the workers that match every given filter (and are not final, nor marked yet) for the next
    sweep to kill; more than sweep.max_kills_per_run need `force`, as in sweep."""
    selection = {"worker_ids": worker_ids, "ces": ces, "statuses": statuses,
                 "created_before": None if older_than is None else model.now() - older_than}
    result = KillMarks()
    cap = instance.config.sweep.max_kills_per_run
    with instance.store.transaction() as tx:
        rows = workers.killable(tx, queues, **selection)
        result.matched = rows
        named = [w for w in dict.fromkeys(worker_ids) if w not in {r["worker_id"] for r in rows}]
        known = workers.by_ids(tx, named) if named else {}
        for worker_id in named:
            why, wrong = why_not_killable(known.get(worker_id), queues)
            (result.unmatched if wrong else result.done).append(f"worker {worker_id}: {why}")
        if len(rows) > cap and not force:
            result.refused = (f"{len(rows)} workers match, more than sweep.max_kills_per_run={cap}: narrow the "
                              "selection, or add --force")
        elif not dry_run and rows:
            result.marked = workers.mark_killable(tx, queues, f"operator: {reason}", **selection)
    return result


def kill_workers(instance: Instance, queue: QueueConfig, result: QueueSweep, cap: int, force: bool) -> None:
    store = instance.store
    host = instance.host_filter(queue)
    with store.reading() as tx:
        result.to_kill = workers.count_to_kill(tx, queue.name, host)
    if result.to_kill > cap and not force:
        result.refused = (f"{result.to_kill} workers marked for killing exceed the cap of {cap} per run "
                          "(sweep.max_kills_per_run); check why, then run `sweep --force`")
        return
    while True:
        with store.transaction() as tx:
            rows = workers.claim_to_kill(tx, queue.name, host, 500)
        if not rows:
            return
        retiring = [r for r in rows if model.is_retirement(r.kill_reason)]
        if retiring:   # removed only while still queued, at the backend's own word
            retirement = retire.carry_out(instance, queue, retiring)
            result.retired += retirement.retired
            result.retire_started += retirement.started
            result.kill_failed += retirement.failed
            rows = [r for r in rows if not model.is_retirement(r.kill_reason)]
            if retirement.failed:
                with store.transaction() as tx:
                    workers.release(tx, [r.worker_id for r in rows])
                return   # the backend refuses: the next run retries
            if not rows:
                continue
        refs = [worker_ref(r) for r in rows]
        try:
            outcomes = instance.backend(queue).kill(refs, "killed by harvester-cli sweep")
        except Exception as exc:   # release at once, or these workers stay claimed for a whole lease
            log.info("queue %s: backend kill failed: %s", queue.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            with store.transaction() as tx:
                workers.release(tx, [r.worker_id for r in rows])
            result.kill_failed += [(r.worker_id, f"backend error: {exc}") for r in rows]
            result.exit_code = max(result.exit_code, exit_code_of(exc))
            return
        fault_point("sweep_after_backend_kill")
        at = model.now()
        killed = [(r, o) for r, o in zip(rows, outcomes) if o.ok]
        failed = [(r, o) for r, o in zip(rows, outcomes) if not o.ok]

        def record(tx) -> int:
            # poll does not claim: a worker it saw end meanwhile keeps the final state poll recorded.
            fresh = workers.unchanged(tx, [r for r, _ in killed])
            ended = [r for r, _ in killed if r.worker_id in fresh]
            if ended:
                workers.record_cancelled(tx, [(r.worker_id, f"killed: {r.kill_reason}") for r in ended], at)
                outbox.enqueue_workers(tx, queue.name, [r.worker_id for r in ended])
                transitions.fail_jobs_of_killed(tx, queue, {r.worker_id: r.kill_reason for r in ended}, at)
            workers.release(tx, [r.worker_id for r in rows])
            return len(ended)

        # The backend killed them: a deadlock, or a failover under the COMMIT (looked up: the workers are
        # cancelled as written at `at`, or written again), must not leave them to be killed a second time.
        killed_ids = [r.worker_id for r, _ in killed]
        result.killed += store.retrying(record, committed=lambda tx: workers.written_at(tx, killed_ids, at))
        result.kill_failed += [(r.worker_id, o.error or "kill failed") for r, o in failed]
        if failed:
            return   # the backend refuses: do not spin on the same workers; the next run retries


def kill_jobs(instance: Instance, queue: QueueConfig, result: QueueSweep) -> None:
    """Many jobs per worker: stop the jobs PanDA asked to kill, each alone (its step), and report each failed.
    The last jobs running in a worker take the worker with them: it is marked for killing, and kill_workers
    (next) ends the allocation, its jobs failed as killed. 500 jobs per run."""
    store = instance.store
    with store.transaction() as tx:
        rows = jobs.claim_to_kill(tx, queue.name, instance.host_filter(queue), 500)
        by_worker: dict[int, list] = {}
        for row in rows:
            by_worker.setdefault(row.worker_id, []).append(row)
        others = jobs.others_running(tx, list(by_worker))
        found = workers.by_ids(tx, list(by_worker))
        last = [r.panda_id for w, bound in by_worker.items() for r in bound
                if w in found and found[w].status not in model.WORKER_FINAL and not others.get(w)]
        workers.mark_kill_of_jobs(tx, last, "PanDA asked to kill its last running job")
        jobs.release(tx, last)
    reason = "PanDA answered tobekilled for this job"
    for worker_id, bound in by_worker.items():
        ids = [r.panda_id for r in bound if r.panda_id not in last]
        if not ids:
            continue
        row = found.get(worker_id)
        if row is None or row.status in model.WORKER_FINAL:   # its worker has ended: nothing runs the job
            outcomes = [JobKillResult(p, True) for p in ids]
        else:
            try:
                outcomes = instance.backend(queue).kill_jobs(worker_ref(row), ids, reason)
            except Exception as exc:   # released at once below, or these jobs stay claimed for a whole lease
                log.warning("queue %s: backend kill of jobs %s failed: %s", queue.name, ids, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                outcomes = [JobKillResult(p, False, f"backend error: {exc}") for p in ids]
        _record_killed_jobs(instance, queue, [r for r in bound if r.panda_id in ids], outcomes, result)


def _record_killed_jobs(instance: Instance, queue: QueueConfig, bound, outcomes, result: QueueSweep) -> None:
    at = model.now()
    killed = [b for b, o in zip(bound, outcomes) if o.ok]
    failed = [(b, o) for b, o in zip(bound, outcomes) if not o.ok]

    def record(tx) -> int:
        written = jobs.killed(tx, [b.panda_id for b in killed], "killed: PanDA asked to kill this job (its step "
                              "was cancelled; the other jobs of its worker run on)", at)
        transitions.report_killed_jobs(tx, queue, [b for b in killed if b.panda_id in written])
        jobs.release(tx, [b.panda_id for b, _ in failed])
        return len(written)

    result.jobs_killed += instance.store.retrying(record)
    result.job_kill_failed += [(b.panda_id, o.error or "kill failed") for b, o in failed]


def _retention_now(store) -> float:
    """What retention counts from: the earlier of this host's clock and the database server's. Stamps are
    written by each host's own clock; a sweep on a host a day ahead must not forget a day early what a host on
    time wrote, nor one a day behind what it wrote itself."""
    return min(model.now(), store.now())


def clean_workers(instance: Instance, queue: QueueConfig, result: QueueSweep, retention: int) -> None:
    """Forget final workers older than the retention whose last update reached PanDA."""
    store = instance.store
    cutoff = _retention_now(store) - retention
    host = instance.host_filter(queue)
    while True:
        with store.transaction() as tx:
            rows = workers.claim_forgettable(tx, queue.name, host, cutoff, 500)
        if not rows:
            return
        try:
            instance.backend(queue).clean([worker_ref(r) for r in rows])
        except Exception as exc:   # keep the rows (released) so the next sweep cleans again
            log.warning("queue %s: backend clean failed: %s", queue.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            with store.transaction() as tx:
                workers.release(tx, [r.worker_id for r in rows])
            result.clean_failed = str(exc)
            if exit_code_of(exc) > 1:   # a configuration problem says so; an outage waits for the next sweep
                result.exit_code = max(result.exit_code, exit_code_of(exc))
            return
        ids = [r.worker_id for r in rows]   # a COMMIT whose answer never came: gone, or forgotten now
        result.cleaned += store.retrying(lambda tx: workers.forget(tx, ids),
                                         committed=lambda tx: not workers.by_ids(tx, ids))


def delete_done_jobs(instance: Instance, queue: QueueConfig, result: QueueSweep, retention: int) -> None:
    result.jobs_deleted += jobs.forget_done(instance.store, queue.name, _retention_now(instance.store) - retention)


def sweep(instance: Instance, queues: list[QueueConfig], *, force: bool = False,
          retention: int | None = None) -> SweepRun:
    settings = instance.config.sweep
    run = SweepRun()
    for queue in queues:
        result = QueueSweep(queue.name)
        if queue.many_to_one is not None:
            kill_jobs(instance, queue, result)
        kill_workers(instance, queue, result, settings.max_kills_per_run, force)
        clean_workers(instance, queue, result, settings.worker_retention if retention is None else retention)
        delete_done_jobs(instance, queue, result, settings.job_retention if retention is None else retention)
        run.queues.append(result)
    run.history_trimmed = monitoring.trim_history(instance.store,
                                                  _retention_now(instance.store) - settings.history_retention)
    return run
