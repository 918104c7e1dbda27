"""fetch-jobs: get jobs from PanDA for push-mode queues and store them verbatim, in bulk."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError, StatementError

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.errors import PandaError
from harvester_cli.faults import fault_point
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
    unstored: list = field(default_factory=list)   # jobs PanDA sent that the state database could not keep


@dataclass
class FetchResult:
    queues: list[QueueFetch] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(q.error for q in self.queues)

    def problems(self) -> list[str]:
        return [f"queue {q.queue}: {q.error}" for q in self.queues if q.error]


# What the columns and PanDA's own database hold: a value beyond these is not a real job's.
MAX_PANDA_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1
MAX_CORES = 100_000


def bounded_int(value, low: int = 0, high: int = MAX_INT32) -> int | None:
    """An integer PanDA wrote (int, or its digits as a string) within [low, high]; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit() or len(value) > 25:
            return None
    elif not isinstance(value, int):
        return None
    number = int(value)
    return number if low <= number <= high else None


def _unset(value) -> bool:
    return value is None or value == "NULL" or value == ""


def job_problem(job: dict, queue: QueueConfig) -> str | None:
    """Why a job dict from PanDA cannot be run on this queue, or None. Every field a worker is built from
    is checked, so one absurd value fails that job alone, never the fetch or the submission of others."""
    if not isinstance(job.get("jobPars"), str):
        return "jobPars is missing or not a string"
    if bounded_int(job.get("attemptNr")) is None:
        return f"attemptNr={str(job.get('attemptNr'))[:40]!r} is not an integer from 0 to {MAX_INT32}"
    for key, high in (("coreCount", MAX_CORES), ("minRamCount", MAX_INT32)):
        if not _unset(job.get(key)) and bounded_int(job.get(key), 0, high) is None:
            return f"{key}={str(job.get(key))[:40]!r} is not an integer from 0 to {high}"
    resource_type = job.get("resource_type")
    if not _unset(resource_type) and resource_type not in queue.resource_types:
        return (f"resource_type={str(resource_type)[:64]!r} is not served by this queue "
                f"(resource_types={queue.resource_types})")
    return None


def job_rows(queue: QueueConfig, received: list, at: float) -> tuple[list[dict], list[tuple], int]:
    """Rows for the jobs table, the failed updates for invalid jobs, and how many had no usable PandaID."""
    rows, failed, unusable = [], [], 0
    for job in received:
        panda_id = bounded_int(job.get("PandaID"), 1, MAX_PANDA_ID) if isinstance(job, dict) else None
        if panda_id is None:
            unusable += 1
            log.error("queue %s: PanDA sent a job without a usable PandaID (%.120r); it cannot be reported back",
                      queue.name, job)
            continue
        problem = job_problem(job, queue)
        resource_type = job.get("resource_type")
        row = {
            "panda_id": panda_id, "queue": queue.name, "status": model.JOB_STARTING, "sub_status": model.SUB_FETCHED,
            "attempt_nr": bounded_int(job.get("attemptNr")),
            "resource_type": resource_type if resource_type in queue.resource_types else queue.resource_types[0],
            "core_count": bounded_int(job.get("coreCount"), 1, MAX_CORES) or queue.core_count, "submit_attempts": 0,
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


# What the database says of a row it will not take (a full disk or a lost connection is not about a row).
REFUSED_ROW = (IntegrityError, DataError, StatementError, OverflowError, ValueError)


def _insert(conn, rows: list[dict]) -> list[dict]:
    """Insert the rows; if the bulk insert fails, each on its own, so one the database refuses does not
    keep the others out. Returns the rows stored."""
    try:
        with conn.begin_nested():
            conn.execute(jobs.insert(), rows)
        return rows
    except REFUSED_ROW:
        stored = []
        for row in rows:
            try:
                with conn.begin_nested():
                    conn.execute(jobs.insert(), [row])
                stored.append(row)
            except REFUSED_ROW as exc:
                log.error("job %s: the state database refused it (%s): reported failed to PanDA without being stored",
                          row["panda_id"], str(exc).splitlines()[0][:200])
        return stored


def store_jobs(instance: Instance, queue: QueueConfig, received: list[dict]) -> QueueFetch:
    """Insert new jobs in bulk; a PandaID already stored is skipped. Returns the counts. When the state
    database fails (a full disk), the jobs not stored are in `unstored` and the reason in `error`."""
    store = instance.store
    result = QueueFetch(queue.name)
    for index, received_chunk in enumerate(chunks(received, 1000)):   # memory flat in the chunk size
        try:
            _store_chunk(store, queue, received_chunk, result)
        except (SQLAlchemyError, OSError) as exc:
            result.error = f"the state database could not store them: {str(exc).splitlines()[0][:200]}"
            result.unstored = list(received[index * 1000:])
            break
    return result


def _store_chunk(store, queue: QueueConfig, received_chunk, result: QueueFetch) -> None:
    rows, failed, unusable = job_rows(queue, received_chunk, model.now())
    with store.write() as conn:
        existing = set(conn.scalars(select(jobs.c.panda_id).where(jobs.c.panda_id.in_([r["panda_id"] for r in rows]))))
        new = [r for r in rows if r["panda_id"] not in existing]
        stored = _insert(conn, new) if new else []
        new_ids = {r["panda_id"] for r in new}
        refused = [r for r in new if r not in stored]
        if refused:   # PanDA must still hear of them: a failed update, without a row
            failed += [(r["panda_id"], queue.name, pilot_outputs.failed_update(
                json.loads(r["job_json"]), pilot_outputs.ERR_SUBMISSION,
                "harvester: invalid job from PanDA: the state database cannot store it"), True) for r in refused
                if not any(f[0] == r["panda_id"] for f in failed)]
        store.enqueue_reports(conn, "job", [f for f in failed if f[0] in new_ids])
    result.invalid += unusable + len(failed)
    result.duplicate += len(rows) - len(new)
    result.stored += len(stored)


def give_back(instance: Instance, queue: QueueConfig, received: list[dict], reason: str) -> int:
    """PanDA counts these jobs as sent to us, but they could not be stored (the state database is full or
    gone): tell PanDA at once that they failed here, so it retries them, rather than leaving them to its
    lost-heartbeat timeout. Returns how many PanDA took; best effort, as the outbox is unusable."""
    updates = [pilot_outputs.failed_update(job, pilot_outputs.ERR_SUBMISSION, f"harvester: not started: {reason}")
               for job in received if isinstance(job, dict)
               and bounded_int(job.get("PandaID"), 1, MAX_PANDA_ID) is not None]
    taken = 0
    for chunk in chunks(updates, instance.config.panda.bulk_size):
        try:
            answers = instance.panda.update_jobs_bulk(list(chunk))
        except PandaError as exc:
            log.error("queue %s: could not give %d jobs back to PanDA: %s", queue.name, len(chunk), exc)
            continue
        taken += sum(1 for a in answers if isinstance(a, dict) and a.get("success"))
    return taken


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
        low = _low_disk(instance, wanted)
        if low:   # jobs PanDA hands out are "sent": ask only for what there is room to keep
            return QueueFetch(queue.name, error=low)
        try:
            received = instance.panda.acquire_jobs(
                queue.site, wanted, prod_source_label=queue.prod_source_label, job_type=queue.job_type,
                node=instance.host, computing_element=queue.backend, background=queue.background or None,
            )
        except PandaError as exc:
            return QueueFetch(queue.name, requested=wanted, error=str(exc))
        result = store_jobs(instance, queue, received)
        if result.unstored:
            taken = give_back(instance, queue, result.unstored, result.error)
            result.error += (f"; {taken} of {len(result.unstored)} jobs reported failed to PanDA so it retries them"
                             " elsewhere")
        fault_point("fetch_after_store")
        result.requested = wanted
        return result


# Room a SQLite state database should have before more jobs are asked for: the job dicts (a few kB each,
# more with many input files) plus their updates, and some margin for everything else.
MIN_FREE_BYTES = 20 * 1024 * 1024
BYTES_PER_JOB = 64 * 1024


def _low_disk(instance: Instance, wanted: int) -> str | None:
    path = instance.store.sqlite_path
    if path is None:
        return None
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    needed = MIN_FREE_BYTES + wanted * BYTES_PER_JOB
    if free >= needed:
        return None
    return (f"not asking PanDA for jobs: {free // 1024 // 1024} MB free beside the state database {path}, "
            f"{needed // 1024 // 1024} MB needed for {wanted} jobs: free some space")


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
