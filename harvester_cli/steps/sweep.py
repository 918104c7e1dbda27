"""sweep: kill workers marked for killing (with a cap against mass accidents), then forget final workers
and done jobs after their retention time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, exists, func, select, update

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.faults import fault_point
from harvester_cli.state import monitoring, transitions
from harvester_cli.state.schema import jobs, reports, workers
from harvester_cli.state.store import chunks
from harvester_cli.steps.instance import Instance, worker_ref

log = logging.getLogger(__name__)


@dataclass
class QueueSweep:
    queue: str
    to_kill: int = 0
    killed: int = 0
    kill_failed: list[tuple[int, str]] = field(default_factory=list)
    refused: str | None = None
    cleaned: int = 0
    jobs_deleted: int = 0


@dataclass
class SweepRun:
    queues: list[QueueSweep] = field(default_factory=list)
    history_trimmed: int = 0

    @property
    def partial(self) -> bool:
        return any(q.kill_failed or q.refused for q in self.queues)

    def problems(self) -> list[str]:
        out = []
        for q in self.queues:
            if q.refused:
                out.append(f"queue {q.queue}: {q.refused}")
            out += [f"queue {q.queue}: worker {w}: kill failed: {e}" for w, e in q.kill_failed]
        return out


@dataclass
class KillMarks:
    """`kill-workers`: the workers an operator's selection matched, and whether they were marked."""

    matched: list[dict] = field(default_factory=list)
    marked: int = 0
    refused: str | None = None


def mark_for_kill(instance: Instance, queues: list[str], *, worker_ids: tuple[int, ...] = (),
                  ces: tuple[str, ...] = (), statuses: tuple[str, ...] = (), older_than: int | None = None,
                  reason: str = "requested by an operator", force: bool = False, dry_run: bool = False) -> KillMarks:
    """Mark the workers that match every given filter (and are not final, nor marked yet) for the next
    sweep to kill; more than sweep.max_kills_per_run need `force`, as in sweep."""
    where = [workers.c.queue.in_(queues), workers.c.status.in_(statuses or model.WORKER_ACTIVE),
             workers.c.kill_reason.is_(None)]
    if worker_ids:
        where.append(workers.c.worker_id.in_(worker_ids))
    if ces:
        where.append(workers.c.computing_element.in_(ces))
    if older_than is not None:
        where.append(workers.c.created <= model.now() - older_than)
    result = KillMarks()
    cap = instance.config.sweep.max_kills_per_run
    with instance.store.write() as conn:
        rows = conn.execute(select(workers.c.worker_id, workers.c.queue, workers.c.status,
                                   workers.c.computing_element).where(*where).order_by(workers.c.worker_id)).all()
        result.matched = [dict(r._mapping) for r in rows]
        if len(rows) > cap and not force:
            result.refused = (f"{len(rows)} workers match, more than sweep.max_kills_per_run={cap}: narrow the "
                              "selection, or add --force")
        elif not dry_run and rows:
            result.marked = conn.execute(update(workers).where(*where)
                                         .values(kill_reason=f"operator: {reason}")).rowcount
    return result


def _kill_condition(queue: str):
    return ((workers.c.queue == queue) & workers.c.kill_reason.is_not(None)
            & workers.c.status.not_in(model.WORKER_FINAL) & (workers.c.status != model.PENDING))


def kill_workers(instance: Instance, queue: QueueConfig, result: QueueSweep, cap: int, force: bool) -> None:
    store = instance.store
    with store.read() as conn:
        result.to_kill = conn.scalar(select(func.count()).select_from(workers).where(
            _kill_condition(queue.name), instance.workers_here(queue))) or 0
    if result.to_kill > cap and not force:
        result.refused = (f"{result.to_kill} workers marked for killing exceed the cap of {cap} per run "
                          "(sweep.max_kills_per_run); check why, then run `sweep --force`")
        return
    while True:
        with store.write() as conn:
            rows = store.claim(conn, workers, _kill_condition(queue.name) & instance.workers_here(queue), 500)
        if not rows:
            return
        refs = [worker_ref(r) for r in rows]
        try:
            outcomes = instance.backend(queue).kill(refs, "killed by harvester-cli sweep")
        except Exception as exc:   # release at once, or these workers stay claimed for a whole lease
            log.warning("queue %s: backend kill failed: %s", queue.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            with store.write() as conn:
                store.release(conn, workers, [r.worker_id for r in rows])
            result.kill_failed += [(r.worker_id, f"backend error: {exc}") for r in rows]
            return
        fault_point("sweep_after_backend_kill")
        at = model.now()
        killed = [(r, o) for r, o in zip(rows, outcomes) if o.ok]
        failed = [(r, o) for r, o in zip(rows, outcomes) if not o.ok]
        with store.write() as conn:
            if killed:
                # poll does not claim: a worker it saw end meanwhile keeps the final state poll recorded.
                current = select(workers.c.worker_id, workers.c.status, workers.c.modified).where(
                    workers.c.worker_id.in_([r.worker_id for r, _ in killed]))
                if not store.is_sqlite:
                    current = current.with_for_update()
                now_seen = {w: (s, m) for w, s, m in conn.execute(current)}
                killed = [(r, o) for r, o in killed if now_seen.get(r.worker_id) == (r.status, r.modified)]
            if killed:
                conn.execute(update(workers).where(workers.c.worker_id == bindparam("w"), store.owned(workers))
                             .values(status=model.CANCELLED, diag=bindparam("d"), end_time=at, modified=at),
                             [{"w": r.worker_id, "d": f"killed: {r.kill_reason}"} for r, _ in killed])
                store.enqueue_reports(conn, "worker", [(r.worker_id, queue.name, None, False) for r, _ in killed])
                transitions.fail_jobs_of_killed(store, conn, queue, {r.worker_id: r.kill_reason for r, _ in killed}, at)
            store.release(conn, workers, [r.worker_id for r in rows])
        result.killed += len(killed)
        result.kill_failed += [(r.worker_id, o.error or "kill failed") for r, o in failed]
        if failed:
            return   # the backend refuses: do not spin on the same workers; the next run retries


def clean_workers(instance: Instance, queue: QueueConfig, result: QueueSweep, retention: int) -> None:
    """Forget final workers older than the retention whose last update reached PanDA."""
    store = instance.store
    cutoff = model.now() - retention
    unreported = exists().where(reports.c.kind == "worker", reports.c.key == workers.c.worker_id)
    while True:
        with store.write() as conn:
            rows = store.claim(conn, workers, (workers.c.queue == queue.name)
                               & workers.c.status.in_(model.WORKER_FINAL) & (workers.c.modified < cutoff)
                               & ~unreported & instance.workers_here(queue), 500)
        if not rows:
            return
        try:
            instance.backend(queue).clean([worker_ref(r) for r in rows])
        except Exception as exc:   # keep the rows (released) so the next sweep cleans again
            log.warning("queue %s: backend clean failed: %s", queue.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            with store.write() as conn:
                store.release(conn, workers, [r.worker_id for r in rows])
            return
        with store.write() as conn:
            result.cleaned += conn.execute(delete(workers).where(
                workers.c.worker_id.in_([r.worker_id for r in rows]), store.owned(workers))).rowcount


def delete_done_jobs(instance: Instance, queue: QueueConfig, result: QueueSweep, retention: int) -> None:
    cutoff = model.now() - retention
    done = ((jobs.c.queue == queue.name) & (jobs.c.sub_status == model.SUB_DONE) & (jobs.c.modified < cutoff)
            & jobs.c.lock_owner.is_(None))
    with instance.store.read() as conn:
        ids = list(conn.scalars(select(jobs.c.panda_id).where(done)))
    # By key, in chunks: no range delete (its gap locks deadlock other hosts' inserts on MariaDB), and a row
    # another run changed meanwhile is left alone.
    for chunk in chunks(ids, 500):
        with instance.store.write() as conn:
            result.jobs_deleted += conn.execute(delete(jobs).where(jobs.c.panda_id.in_(chunk), done)).rowcount


def sweep(instance: Instance, queues: list[QueueConfig], *, force: bool = False,
          retention: int | None = None) -> SweepRun:
    settings = instance.config.sweep
    run = SweepRun()
    for queue in queues:
        result = QueueSweep(queue.name)
        kill_workers(instance, queue, result, settings.max_kills_per_run, force)
        clean_workers(instance, queue, result, settings.worker_retention if retention is None else retention)
        delete_done_jobs(instance, queue, result, settings.job_retention if retention is None else retention)
        run.queues.append(result)
    run.history_trimmed = monitoring.trim_history(instance.store, model.now() - settings.history_retention)
    return run
