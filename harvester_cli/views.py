"""Read-only views of the state database for `status`, `workers` and `jobs`."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from harvester_cli import model
from harvester_cli.instance import Instance
from harvester_cli.store import job_workers, jobs, workers


def status_counts(instance: Instance, queues: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {q: {"jobs": defaultdict(int), "workers": defaultdict(int)} for q in queues}
    with instance.store.read() as conn:
        for queue, status, n in conn.execute(select(workers.c.queue, workers.c.status, func.count())
                                             .where(workers.c.queue.in_(queues))
                                             .group_by(workers.c.queue, workers.c.status)):
            out[queue]["workers"][status] = n
        for queue, status, sub, n in conn.execute(select(jobs.c.queue, jobs.c.status, jobs.c.sub_status, func.count())
                                                  .where(jobs.c.queue.in_(queues))
                                                  .group_by(jobs.c.queue, jobs.c.status, jobs.c.sub_status)):
            out[queue]["jobs"][f"{status}/{sub}"] = n
    return {q: {"jobs": dict(v["jobs"]), "workers": dict(v["workers"])} for q, v in out.items()}


def list_workers(instance: Instance, queues: list[str], statuses: tuple[str, ...] = (), limit: int = 100) -> list[dict]:
    query = select(workers).where(workers.c.queue.in_(queues)).order_by(workers.c.worker_id.desc()).limit(limit)
    if statuses:
        query = query.where(workers.c.status.in_(statuses))
    with instance.store.read() as conn:
        rows = conn.execute(query).all()
        links = defaultdict(list)
        for panda_id, worker_id in conn.execute(select(job_workers.c.panda_id, job_workers.c.worker_id).where(
                job_workers.c.worker_id.in_([r.worker_id for r in rows]))):
            links[worker_id].append(panda_id)
    return [{
        "worker_id": r.worker_id, "queue": r.queue, "status": r.status, "backend": r.backend,
        "resource_type": r.resource_type, "n_core": r.n_core, "batch_id": r.batch_id,
        "computing_element": r.computing_element, "submission_host": r.submission_host,
        "submit_time": model.iso_time(r.submit_time), "start_time": model.iso_time(r.start_time),
        "end_time": model.iso_time(r.end_time), "native_status": r.native_status, "exit_code": r.native_exit_code,
        "diag": r.diag, "kill_reason": r.kill_reason, "stdout": r.stdout_url, "stderr": r.stderr_url,
        "batch_log": r.batch_log_url, "panda_ids": links[r.worker_id],
    } for r in rows]


def list_jobs(instance: Instance, queues: list[str], statuses: tuple[str, ...] = (), limit: int = 100) -> list[dict]:
    query = (select(jobs.c.panda_id, jobs.c.queue, jobs.c.status, jobs.c.sub_status, jobs.c.resource_type,
                    jobs.c.attempt_nr, jobs.c.created, jobs.c.modified, jobs.c.diag, workers.c.worker_id,
                    workers.c.batch_id, workers.c.computing_element, workers.c.stdout_url)
             .select_from(jobs.outerjoin(job_workers, job_workers.c.panda_id == jobs.c.panda_id)
                          .outerjoin(workers, workers.c.worker_id == job_workers.c.worker_id))
             .where(jobs.c.queue.in_(queues)).order_by(jobs.c.panda_id.desc()).limit(limit))
    if statuses:
        query = query.where(jobs.c.status.in_(statuses) | jobs.c.sub_status.in_(statuses))
    with instance.store.read() as conn:
        rows = conn.execute(query).all()
    return [{
        "panda_id": r.panda_id, "queue": r.queue, "status": r.status, "sub_status": r.sub_status,
        "resource_type": r.resource_type, "attempt_nr": r.attempt_nr, "worker_id": r.worker_id,
        "batch_id": r.batch_id, "computing_element": r.computing_element, "created": model.iso_time(r.created),
        "modified": model.iso_time(r.modified), "diag": r.diag, "log": r.stdout_url,
    } for r in rows]


def report_problems(instance: Instance, limit: int = 5) -> list[dict]:
    """Updates PanDA refused or could not take yet, most retried first (they are retried every run)."""
    from harvester_cli.store import reports

    with instance.store.read() as conn:
        rows = conn.execute(select(reports.c.kind, reports.c.key, reports.c.queue, reports.c.attempts,
                                   reports.c.last_error).where(reports.c.attempts > 0)
                            .order_by(reports.c.attempts.desc(), reports.c.key).limit(limit)).all()
    return [{"kind": r.kind, "id": r.key, "queue": r.queue, "attempts": r.attempts, "last_error": r.last_error}
            for r in rows]
