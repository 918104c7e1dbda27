"""Read-only views of the state database: for `status`, `workers` and `jobs`, the CE fanout's recent
throughput, and the workers whose logs clean-logs must keep."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import case, func, or_, select

from harvester_cli import model
from harvester_cli.state.schema import job_workers, jobs, reports, workers
from harvester_cli.state.store import Store, chunks


def status_counts(store: Store, queues: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {q: {"jobs": defaultdict(int), "workers": defaultdict(int)} for q in queues}
    with store.reading() as tx:
        for queue, status, n in tx.execute(select(workers.c.queue, workers.c.status, func.count())
                                             .where(workers.c.queue.in_(queues))
                                             .group_by(workers.c.queue, workers.c.status)):
            out[queue]["workers"][status] = n
        for queue, status, sub, n in tx.execute(select(jobs.c.queue, jobs.c.status, jobs.c.sub_status, func.count())
                                                  .where(jobs.c.queue.in_(queues))
                                                  .group_by(jobs.c.queue, jobs.c.status, jobs.c.sub_status)):
            out[queue]["jobs"][f"{status}/{sub}"] = n
    return {q: {"jobs": dict(v["jobs"]), "workers": dict(v["workers"])} for q, v in out.items()}


def list_workers(store: Store, queues: list[str], statuses: tuple[str, ...] = (), limit: int = 100, *,
                 ces: tuple[str, ...] = (), since: float | None = None, worker_ids: tuple[int, ...] = (),
                 batch_ids: tuple[str, ...] = ()) -> list[dict]:
    """Newest first; `since`: created at or after this epoch; `worker_ids`, `batch_ids`: only these."""
    query = select(workers).where(workers.c.queue.in_(queues)).order_by(workers.c.worker_id.desc()).limit(limit)
    if statuses:
        query = query.where(workers.c.status.in_(statuses))
    if ces:
        query = query.where(workers.c.computing_element.in_(ces))
    if since is not None:
        query = query.where(workers.c.created >= since)
    if worker_ids:
        query = query.where(workers.c.worker_id.in_(worker_ids))
    if batch_ids:   # a cluster (HTCondor 1234 -> 1234.0, 1234.1) or job array (Slurm 5678 -> 5678_0) whole
        query = query.where(or_(workers.c.batch_id.in_(batch_ids),
                                *(workers.c.batch_id.startswith(f"{b}{sep}", autoescape=True)
                                  for b in batch_ids if b.isdigit() for sep in "._")))
    with store.reading() as tx:
        rows = tx.execute(query).all()
        links = defaultdict(list)
        for chunk in chunks([r.worker_id for r in rows], 500):
            for panda_id, worker_id in tx.execute(select(job_workers.c.panda_id, job_workers.c.worker_id).where(
                    job_workers.c.worker_id.in_(chunk))):
                links[worker_id].append(panda_id)
    return [{
        "worker_id": r.worker_id, "queue": r.queue, "status": r.status, "backend": r.backend, "mode": r.mode,
        "resource_type": r.resource_type, "job_type": r.job_type, "n_core": r.n_core, "memory_mb": r.memory_mb,
        "batch_id": r.batch_id, "computing_element": r.computing_element, "submission_host": r.submission_host,
        "harvester_host": r.harvester_host, "created": model.iso_time(r.created),
        "submit_time": model.iso_time(r.submit_time), "start_time": model.iso_time(r.start_time),
        "end_time": model.iso_time(r.end_time), "modified": model.iso_time(r.modified),
        "native_status": r.native_status, "exit_code": r.native_exit_code, "error_code": r.error_code,
        "diag": r.diag, "kill_reason": r.kill_reason, "log_dir": r.log_dir, "stdout": r.stdout_url,
        "stderr": r.stderr_url, "batch_log": r.batch_log_url, "panda_ids": sorted(links[r.worker_id]),
        # the same times as epoch seconds (ages and run times without parsing)
        "epoch": {"created": r.created, "submitted": r.submit_time, "started": r.start_time, "ended": r.end_time,
                  "modified": r.modified},
    } for r in rows]


def list_jobs(store: Store, queues: list[str], statuses: tuple[str, ...] = (), limit: int = 100, *,
              panda_ids: tuple[int, ...] = (), description: bool = False) -> list[dict]:
    """Newest first, one row per job with its latest worker (`workers`: every worker it had, newest first);
    `description`: with the job dict PanDA sent (`job_json`, for one job at a time)."""
    query = select(jobs.c.panda_id, jobs.c.queue, jobs.c.status, jobs.c.sub_status, jobs.c.resource_type,
                   jobs.c.attempt_nr, jobs.c.core_count, jobs.c.submit_attempts, jobs.c.created, jobs.c.modified,
                   jobs.c.diag, jobs.c.pilot_log_sent, *((jobs.c.job_json,) if description else ()))
    query = query.where(jobs.c.queue.in_(queues)).order_by(jobs.c.panda_id.desc()).limit(limit)
    if statuses:
        query = query.where(jobs.c.status.in_(statuses) | jobs.c.sub_status.in_(statuses))
    if panda_ids:
        query = query.where(jobs.c.panda_id.in_(panda_ids))
    with store.reading() as tx:
        rows = tx.execute(query).all()
        bound = defaultdict(list)
        for chunk in chunks([r.panda_id for r in rows], 500):
            for w in tx.execute(select(job_workers.c.panda_id, workers.c.worker_id, workers.c.status,
                                       workers.c.batch_id, workers.c.computing_element, workers.c.stdout_url,
                                       workers.c.stderr_url, workers.c.batch_log_url)
                                .join(workers, workers.c.worker_id == job_workers.c.worker_id)
                                .where(job_workers.c.panda_id.in_(chunk)).order_by(workers.c.worker_id.desc())):
                bound[w.panda_id].append({"worker_id": w.worker_id, "status": w.status, "batch_id": w.batch_id,
                                          "computing_element": w.computing_element, "stdout": w.stdout_url,
                                          "stderr": w.stderr_url, "batch_log": w.batch_log_url})
    out = []
    for r in rows:
        latest = bound[r.panda_id][0] if bound[r.panda_id] else {}
        out.append({
            "panda_id": r.panda_id, "queue": r.queue, "status": r.status, "sub_status": r.sub_status,
            "resource_type": r.resource_type, "attempt_nr": r.attempt_nr, "core_count": r.core_count,
            "submit_attempts": r.submit_attempts, "worker_id": latest.get("worker_id"),
            "batch_id": latest.get("batch_id"), "computing_element": latest.get("computing_element"),
            "created": model.iso_time(r.created), "modified": model.iso_time(r.modified), "diag": r.diag,
            "log": latest.get("stdout"), "pilot_log_sent": bool(r.pilot_log_sent), "workers": bound[r.panda_id],
            "epoch": {"created": r.created, "modified": r.modified},
            **({"job_json": r.job_json} if description else {}),
        })
    return out


def report_problems(store: Store, limit: int = 5) -> list[dict]:
    """Updates PanDA refused or could not take yet, most retried first (they are retried every run)."""
    with store.reading() as tx:
        rows = tx.execute(select(reports.c.kind, reports.c.key, reports.c.queue, reports.c.attempts,
                                   reports.c.last_error).where(reports.c.attempts > 0)
                            .order_by(reports.c.attempts.desc(), reports.c.key).limit(limit)).all()
    return [{"kind": r.kind, "id": r.key, "queue": r.queue, "attempts": r.attempts, "last_error": r.last_error}
            for r in rows]


def ce_statistics(store: Store, queue: str, since: float, by: str = "computing_element") -> dict[str, dict[str, int]]:
    """Per CE (or per schedd: by="submission_host"), this queue's workers submitted since `since`: all of
    them, started (reached running at some point), still queued, and missed. The fanout weighs by it."""
    place = workers.c[by]
    started = func.sum(case((workers.c.start_time.is_not(None), 1), else_=0))
    queued = func.sum(case((workers.c.status.in_([model.PENDING, model.SUBMITTED]), 1), else_=0))
    missed = func.sum(case((workers.c.status == model.MISSED, 1), else_=0))
    with store.reading() as tx:
        rows = tx.execute(select(place, func.count(), started, queued, missed)
                            .where(workers.c.queue == queue, workers.c.created >= since)
                            .group_by(place)).all()
    return {ce: {"submitted": int(n), "started": int(s or 0), "queued": int(q or 0), "missed": int(m or 0)}
            for ce, n, s, q, m in rows if ce}


def active_worker_logs(store: Store) -> list[tuple[str, int, str | None]]:
    """(queue, worker id, log directory) of every worker that is not final: clean-logs keeps their files."""
    with store.reading() as tx:
        return [tuple(r) for r in tx.execute(select(workers.c.queue, workers.c.worker_id, workers.c.log_dir)
                                               .where(workers.c.status.not_in(model.WORKER_FINAL)))]


# -- monitoring: `status`, the metrics, the status page ------------------------------------------

def worker_counts(store: Store, queues: list[str]) -> list[dict]:
    """Workers per queue, CE, resource type and state."""
    with store.reading() as tx:
        rows = tx.execute(select(workers.c.queue, workers.c.computing_element, workers.c.resource_type,
                                   workers.c.status, func.count()).where(workers.c.queue.in_(queues))
                            .group_by(workers.c.queue, workers.c.computing_element, workers.c.resource_type,
                                      workers.c.status)).all()
    return [{"queue": q, "computing_element": ce or "", "resource_type": rt or "", "state": s, "count": int(n)}
            for q, ce, rt, s, n in rows]


def job_counts(store: Store, queues: list[str]) -> list[dict]:
    with store.reading() as tx:
        rows = tx.execute(select(jobs.c.queue, jobs.c.status, jobs.c.sub_status, func.count())
                            .where(jobs.c.queue.in_(queues))
                            .group_by(jobs.c.queue, jobs.c.status, jobs.c.sub_status)).all()
    return [{"queue": q, "status": s, "sub_status": sub, "count": int(n)} for q, s, sub, n in rows]


def workers_since(store: Store, queues: list[str], since: float) -> list:
    """Workers created, started or ended since `since` (for the window's rates, medians and errors)."""
    columns = (workers.c.worker_id, workers.c.queue, workers.c.computing_element, workers.c.resource_type,
               workers.c.status, workers.c.submit_time, workers.c.start_time, workers.c.end_time, workers.c.diag,
               workers.c.native_exit_code, workers.c.error_code, workers.c.log_dir, workers.c.stdout_url,
               workers.c.created, workers.c.backend)
    with store.reading() as tx:
        return tx.execute(select(*columns).where(
            workers.c.queue.in_(queues),
            (workers.c.created >= since) | (workers.c.submit_time >= since) | (workers.c.start_time >= since)
            | (workers.c.end_time >= since)).order_by(workers.c.worker_id)).all()


def pending_report_ages(store: Store) -> dict[str, dict]:
    """Per kind (job, worker): updates waiting for PanDA and when the oldest was queued."""
    with store.reading() as tx:
        rows = tx.execute(select(reports.c.kind, func.count(), func.min(reports.c.created))
                            .group_by(reports.c.kind)).all()
    return {kind: {"count": int(n), "oldest": oldest} for kind, n, oldest in rows}


def command_runs(store: Store) -> list[dict]:
    from harvester_cli.state.schema import command_runs as runs

    with store.reading() as tx:
        rows = tx.execute(select(runs).order_by(runs.c.command, runs.c.host)).all()
    return [dict(r._mapping) for r in rows]


def login_nodes(store: Store, queues: list[str]) -> list[dict]:
    """Each queue's login nodes as each harvester host last tried them."""
    from harvester_cli.state.schema import login_nodes as nodes

    with store.reading() as tx:
        rows = tx.execute(select(nodes).where(nodes.c.queue.in_(queues))
                          .order_by(nodes.c.queue, nodes.c.host, nodes.c.node)).all()
    return [dict(r._mapping) for r in rows]


def running_commands(store: Store) -> list[dict]:
    """The commands running now (started, not yet ended), oldest first."""
    from harvester_cli.state.schema import running_commands as running

    with store.reading() as tx:
        rows = tx.execute(select(running).order_by(running.c.started)).all()
    return [dict(r._mapping) for r in rows]


def counters(store: Store) -> list[dict]:
    import json

    from harvester_cli.state.schema import metric_counters

    with store.reading() as tx:
        rows = tx.execute(select(metric_counters)).all()
    return [{"name": r.name, "host": r.host, "labels": json.loads(r.labels), "value": r.value} for r in rows]


def history(store: Store, queues: list[str], since: float) -> dict[str, list[tuple[int, dict[str, int]]]]:
    """Per queue, [(time, {state: workers})] from the snapshots since `since`, summed over CEs and
    resource types, oldest first."""
    from harvester_cli.state.schema import HISTORY_STATES, history_series, status_history

    sums = [func.sum(getattr(status_history.c, s)) for s in HISTORY_STATES]
    with store.reading() as tx:
        rows = tx.execute(
            select(history_series.c.queue, status_history.c.taken, *sums)
            .join(history_series, history_series.c.series_id == status_history.c.series_id)
            .where(history_series.c.queue.in_(queues), status_history.c.taken >= int(since))
            .group_by(history_series.c.queue, status_history.c.taken)
            .order_by(history_series.c.queue, status_history.c.taken)).all()
    out: dict[str, list] = {q: [] for q in queues}
    for queue, taken, *counts in rows:
        out[queue].append((int(taken), {s: int(n or 0) for s, n in zip(HISTORY_STATES, counts)}))
    return out

