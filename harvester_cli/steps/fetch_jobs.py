"""fetch-jobs: get jobs from PanDA for push-mode queues and store them verbatim, in bulk. A queue down
everywhere (an announced downtime of the queue, or of every CE it has) fetches nothing."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.config import downtimes as downtime_rules
from harvester_cli.errors import CommitUnknown, PandaError, PandaUnreachable, StateUnreachable
from harvester_cli.faults import fault_point
from harvester_cli.instance import Instance
from harvester_cli.panda import jobs as panda_jobs
from harvester_cli.panda import updates
from harvester_cli.panda.jobs import PandaJob
from harvester_cli.state import jobs, locks, outbox
from harvester_cli.state.store import DatabaseFailure, chunks
from harvester_cli.steps import allocation, registration

log = logging.getLogger(__name__)

# Harvester's default: at most 500 jobs per queue and call.
MAX_JOBS_PER_CALL = 500
# Jobs stored per transaction: one commit for what one call brings, and memory flat beyond that.
STORE_CHUNK = 5000


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
    unknown: int = 0   # jobs whose storing COMMIT went unanswered and that could not be looked up since


@dataclass
class FetchResult:
    queues: list[QueueFetch] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(q.error for q in self.queues)

    def problems(self) -> list[str]:
        return [f"queue {q.queue}: {q.error}" for q in self.queues if q.error]


def job_row(queue: QueueConfig, job: PandaJob, at: float, problem: str | None = None) -> jobs.NewJob:
    """The jobs table's row of a received job: waiting for a worker, or (with a problem: why it is invalid,
    or refused) failed at once."""
    resource_type = job.resource_type if job.resource_type in queue.resource_types else queue.resource_types[0]
    if problem:
        return jobs.NewJob(job.panda_id, queue.name, model.JOB_FAILED, model.SUB_REPORTING, job.attempt_nr,
                           resource_type, job.core_count or queue.core_count, 0, job.description, problem, at, at)
    return jobs.NewJob(job.panda_id, queue.name, model.JOB_STARTING, model.SUB_FETCHED, job.attempt_nr, resource_type,
                       job.core_count or queue.core_count, 0, job.description, None, at, at)


def store_jobs(instance: Instance, queue: QueueConfig, received: list[dict]) -> QueueFetch:
    """Insert new jobs in bulk; a PandaID already stored is skipped. Returns the counts. When the state
    database fails (a full disk), the jobs surely not stored are in `unstored` and the reason in `error`.
    A chunk whose COMMIT went unanswered (the server went away: a failover) is looked up after reconnecting
    and stored again if it was not kept; if the database does not come back within db_reconnect_seconds,
    its jobs may be stored or not: they count as `unknown`, never as unstored (given back to PanDA as
    failed, they might still run here)."""
    store = instance.store
    result = QueueFetch(queue.name)
    for index, received_chunk in enumerate(chunks(received, STORE_CHUNK)):
        unknown_before = store.unknown_commits
        try:
            _store_chunk(store, queue, received_chunk, result)
        except (DatabaseFailure, OSError, StateUnreachable, CommitUnknown) as exc:
            reason = str(exc).splitlines()[0][:300]
            if store.unknown_commits > unknown_before:
                result.unknown = len(received_chunk)
                result.unstored = list(received[(index + 1) * STORE_CHUNK:])
                result.error = (f"{result.unknown} jobs may or may not be stored (the database's answer to their "
                                f"COMMIT never came, and it could not be asked since: {reason}): not given back "
                                "to PanDA, which takes back jobs left 'sent' that never start")
            else:
                result.unstored = list(received[index * STORE_CHUNK:])
                result.error = f"the state database could not store them: {reason}"
            break
    return result


def _store_chunk(store, queue: QueueConfig, received_chunk, result: QueueFetch) -> None:
    at = model.now()
    received = panda_jobs.sort_received(received_chunk, queue.resource_types)
    for job in received.unusable:
        log.error("queue %s: PanDA sent a job without a usable PandaID (%.120r); it cannot be reported back",
                  queue.name, job)
    refused = []
    if queue.many_to_one is not None:   # a job no allocation of this queue can hold: refused, with why
        refused = [(job, why) for job in received.good if (why := allocation.refusal(queue, job))]
        out = {job.panda_id for job, _ in refused}
        received.good = [job for job in received.good if job.panda_id not in out]
    rows = [job_row(queue, job, at) for job in received.good]
    failed: dict[int, dict] = {}   # PandaID -> the failed update PanDA must hear of
    for job, problem in received.bad:
        log.error("queue %s: job %s: invalid job from PanDA: %s", queue.name, job.panda_id, problem)
        rows.append(job_row(queue, job, at, f"invalid job from PanDA: {problem}"))
        failed[job.panda_id] = updates.job_failed(job, updates.ERR_SUBMISSION,
                                                  f"harvester: invalid job from PanDA: {problem}")
    for job, why in refused:
        log.warning("queue %s: job %s refused: %s", queue.name, job.panda_id, why)
        rows.append(job_row(queue, job, at, f"refused: {why}"))
        failed[job.panda_id] = updates.job_failed(job, updates.ERR_SUBMISSION, f"harvester: refused: {why}")

    def insert(tx) -> jobs.Stored:
        stored = jobs.store_new(tx, rows)
        for row in stored.refused:   # PanDA must still hear of them: a failed update, without a row
            failed.setdefault(row.panda_id, updates.job_failed(
                PandaJob.from_json(row.job_json), updates.ERR_SUBMISSION,
                "harvester: invalid job from PanDA: the state database cannot store it"))
        new_ids = {r.panda_id for r in stored.stored} | {r.panda_id for r in stored.refused}
        outbox.enqueue(tx, outbox.JOB, [(p, queue.name, u, True) for p, u in failed.items() if p in new_ids])
        return stored

    # PanDA has handed these jobs out: a deadlock or a server that went away before the COMMIT stores them
    # again; a COMMIT whose answer never came is looked up (stored jobs are never stored twice either way).
    ids = [row.panda_id for row in rows]
    stored = store.retrying(insert, committed=lambda tx: bool(ids) and len(jobs.known(tx, ids)) == len(ids))
    result.invalid += len(received.unusable) + len(failed)
    result.duplicate += stored.duplicates
    result.stored += len(stored.stored)


def give_back(instance: Instance, queue: QueueConfig, received: list[dict], reason: str) -> int:
    """PanDA counts these jobs as sent to us, but they could not be stored (the state database is full or
    gone): tell PanDA at once that they failed here, so it retries them, rather than leaving them to its
    lost-heartbeat timeout. Returns how many PanDA took; best effort, as the outbox is unusable."""
    failed = [updates.job_failed(PandaJob.from_dict(job), updates.ERR_SUBMISSION, f"harvester: not started: {reason}")
              for job in received if panda_jobs.panda_id_of(job) is not None]
    taken = 0
    for chunk in chunks(failed, instance.config.panda.bulk_size):
        try:
            outcomes = instance.panda.update_jobs_bulk(list(chunk))
        except PandaError as exc:
            log.error("queue %s: could not give %d jobs back to PanDA: %s", queue.name, len(chunk), exc)
            continue
        taken += sum(1 for o in outcomes if o.accepted)
    return taken


def fetch_queue(instance: Instance, queue: QueueConfig) -> QueueFetch:
    with locks.lease(instance.store, f"fetch:{queue.name}") as got:
        if not got:
            return QueueFetch(queue.name, skipped="another run is fetching for this queue")
        wanted = min(MAX_JOBS_PER_CALL, queue.queued_job_limit() - jobs.waiting(instance.store, queue.name))
        if queue.status != "online":
            return QueueFetch(queue.name, skipped=f"queue status is {queue.status}")
        down = downtime_rules.queue_down(instance.downtimes(), queue.name, downtime_rules.fanout_ces(queue),
                                         model.now(), queue.walltime)
        if down:   # no worker could take a job now: it would wait here instead of running elsewhere
            return QueueFetch(queue.name, skipped=f"not fetching: {down}")
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
        except PandaUnreachable as exc:   # the request may have reached PanDA, and only its reply been lost
            return QueueFetch(queue.name, requested=wanted, error=(
                f"{exc}; PanDA may have handed out up to {wanted} jobs whose reply never came: they are not "
                "here, and PanDA takes back jobs left 'sent' that never start"))
        except PandaError as exc:
            return QueueFetch(queue.name, requested=wanted, error=str(exc))
        fault_point("fetch_after_acquire")   # PanDA handed the jobs out; nothing of them is stored yet
        result = store_jobs(instance, queue, received)
        if result.unstored:
            taken = give_back(instance, queue, result.unstored, result.error)
            result.error += (f"; {taken} of {len(result.unstored)} jobs reported failed to PanDA so it retries them"
                             " elsewhere")
        if result.error and instance.store.gave_up:   # the run ends with the database's one line: say this too
            log.warning("queue %s: %s", queue.name, result.error)
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
