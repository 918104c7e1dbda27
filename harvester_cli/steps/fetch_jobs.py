"""fetch-jobs: get jobs from PanDA for push-mode queues and store them verbatim, in bulk."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.errors import PandaError
from harvester_cli.panda import pilot_outputs
from harvester_cli.state.schema import jobs
from harvester_cli.state.store import chunks
from harvester_cli.steps import registration
from harvester_cli.steps.instance import Instance

log = logging.getLogger(__name__)

# Harvester's default: at most 500 jobs per queue and call.
MAX_JOBS_PER_CALL = 500


@dataclass
class QueueFetch:
    queue: str
    requested: int = 0
    stored: int = 0
    invalid: int = 0
    duplicate: int = 0
    skipped: str | None = None
    error: str | None = None


@dataclass
class FetchResult:
    queues: list[QueueFetch] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(q.error for q in self.queues)

    def problems(self) -> list[str]:
        return [f"queue {q.queue}: {q.error}" for q in self.queues if q.error]


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def job_problem(job: dict, queue: QueueConfig) -> str | None:
    """Why a job dict from PanDA cannot be run on this queue, or None."""
    if not isinstance(job.get("jobPars"), str):
        return "jobPars is missing or not a string"
    for key in ("attemptNr",):
        if _int(job.get(key)) is None:
            return f"{key}={job.get(key)!r} is not an integer"
    core = job.get("coreCount")
    if core not in (None, "NULL") and (_int(core) is None or _int(core) < 0):
        return f"coreCount={core!r} is not a non-negative integer"
    resource_type = job.get("resource_type")
    if resource_type not in (None, "NULL") and resource_type not in queue.resource_types:
        return f"resource_type={resource_type!r} is not served by this queue (resource_types={queue.resource_types})"
    return None


def job_rows(queue: QueueConfig, received: list[dict], at: float) -> tuple[list[dict], list[tuple], int]:
    """Rows for the jobs table, the failed updates for invalid jobs, and how many had no PandaID at all."""
    rows, failed, unusable = [], [], 0
    for job in received:
        panda_id = _int(job.get("PandaID")) if isinstance(job, dict) else None
        if panda_id is None:
            unusable += 1
            log.error("queue %s: PanDA sent a job without a usable PandaID (%.120r); it cannot be reported back",
                      queue.name, job)
            continue
        problem = job_problem(job, queue)
        row = {
            "panda_id": panda_id, "queue": queue.name, "status": model.JOB_STARTING, "sub_status": model.SUB_FETCHED,
            "attempt_nr": _int(job.get("attemptNr")), "resource_type": (job.get("resource_type") if job.get("resource_type") not in (None, "NULL")
                              else queue.resource_types[0]),
            "core_count": _int(job.get("coreCount")) or queue.core_count, "submit_attempts": 0,
            "job_json": json.dumps(job), "diag": None, "created": at, "modified": at,
        }
        if problem:
            diag = f"invalid job from PanDA: {problem}"
            log.error("queue %s: job %s: %s", queue.name, panda_id, diag)
            row.update(status=model.JOB_FAILED, sub_status=model.SUB_REPORTING, diag=diag)
            failed.append((panda_id, queue.name, pilot_outputs.failed_update(
                job, pilot_outputs.ERR_SUBMISSION, f"harvester: {diag}"), True))
        rows.append(row)
    return rows, failed, unusable


def store_jobs(instance: Instance, queue: QueueConfig, received: list[dict]) -> QueueFetch:
    """Insert new jobs in bulk; a PandaID already stored is skipped. Returns the counts."""
    store = instance.store
    result = QueueFetch(queue.name)
    for received_chunk in chunks(received, 1000):   # rows (and their JSON) per chunk: memory flat in batch size
        rows, failed, unusable = job_rows(queue, received_chunk, model.now())
        result.invalid += unusable + len(failed)
        with store.write() as conn:
            existing = set(conn.scalars(select(jobs.c.panda_id).where(jobs.c.panda_id.in_([r["panda_id"] for r in rows]))))
            new = [r for r in rows if r["panda_id"] not in existing]
            if new:
                conn.execute(jobs.insert(), new)
            new_ids = {r["panda_id"] for r in new}
            store.enqueue_reports(conn, "job", [f for f in failed if f[0] in new_ids])
        result.duplicate += len(rows) - len(new)
        result.stored += len(new)
    return result


def waiting_jobs(instance: Instance, queue: QueueConfig) -> int:
    with instance.store.read() as conn:
        return conn.scalar(select(func.count()).select_from(jobs).where(
            jobs.c.queue == queue.name, jobs.c.sub_status.in_([model.SUB_FETCHED, model.SUB_SUBMITTED]))) or 0


def fetch_queue(instance: Instance, queue: QueueConfig) -> QueueFetch:
    with instance.store.lock(f"fetch:{queue.name}") as got:
        if not got:
            return QueueFetch(queue.name, skipped="another run is fetching for this queue")
        wanted = min(MAX_JOBS_PER_CALL, queue.queued_job_limit() - waiting_jobs(instance, queue))
        if queue.status != "online":
            return QueueFetch(queue.name, skipped=f"queue status is {queue.status}")
        if wanted <= 0:
            return QueueFetch(queue.name, skipped="enough jobs wait for workers")
        try:
            received = instance.panda.acquire_jobs(
                queue.site, wanted, prod_source_label=queue.prod_source_label, job_type=queue.job_type,
                node=_hostname(), computing_element=queue.backend, background=queue.background or None,
            )
        except PandaError as exc:
            return QueueFetch(queue.name, requested=wanted, error=str(exc))
        result = store_jobs(instance, queue, received)
        result.requested = wanted
        return result


def fetch_jobs(instance: Instance, queues: list[QueueConfig]) -> FetchResult:
    result = FetchResult()
    push = [q for q in queues if q.mode == "push"]
    if not push:
        return result
    known = registration.ensure_registered(instance)
    for queue in push:
        if known.registered is None:   # jobs fetched now would run in workers PanDA cannot relate to them
            result.queues.append(QueueFetch(queue.name, error=f"not registered at PanDA: {known.problem}"))
        else:
            result.queues.append(fetch_queue(instance, queue))
    return result


def _hostname() -> str:
    import socket

    return socket.gethostname()
