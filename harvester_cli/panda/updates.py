"""What harvester-cli tells PanDA, in PanDA's own words: job updates (update_job / update_jobs_bulk), worker
updates (update_workers), worker statistics and the heartbeat's data. Only this package knows PanDA's field
names; the steps hand over typed values and rows.

Job updates carry v1's snake_case names with strict types (an int sent as a string is refused); worker
updates carry the worker dict's camelCase names, timestamps as "YYYY-MM-DD HH:MM:SS", None left out.
"""

from __future__ import annotations

import json
import socket
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from harvester_cli import __version__, model
from harvester_cli.panda import diagnostics
from harvester_cli.panda.jobs import PandaJob

# Pilot error codes for what the harvester itself diagnoses (aCT uses 9000 for lost outputs).
ERR_NO_HEARTBEAT = 9000
ERR_BAD_HEARTBEAT = 9001
ERR_WORKER_CANCELLED = 9002
ERR_SUBMISSION = 9003

# A job update's status field: the pilot outputs' final state is read from it.
JOB_STATUS = "job_status"


def job_update(job: PandaJob, status: str, **fields: Any) -> dict:
    """An update of `job` to `status`: the fields every update carries, and these (None left out).
    Keyword names are v1's update fields (batch_id, start_time, ...)."""
    update = {"job_id": job.panda_id, JOB_STATUS: status}
    if job.attempt_nr is not None:   # what PanDA's column holds, or nothing
        update["attempt_nr"] = job.attempt_nr
    update.update({k: v for k, v in fields.items() if v is not None})
    return update


def job_failed(job: PandaJob, code: int, diag: str, sub_status: str | None = None) -> dict:
    """A final `failed` update with the harvester's own pilot error code and diag."""
    return job_update(job, model.JOB_FAILED, pilot_error_code=code, pilot_error_diag=diag[:250],
                      job_sub_status=sub_status)


def job_running(job: PandaJob, batch_id: str | None, at: float | None = None) -> dict:
    return job_update(job, model.JOB_RUNNING, batch_id=batch_id, start_time=model.panda_time(at) if at else None)


def status_of(update: dict) -> str:
    return update[JOB_STATUS]


def with_pilot_links(update: dict, stdout_url: str | None, batch_id: str | None, pilot_log: str | None) -> dict:
    """harvester-cli speaks for push-mode pilots, so it names the pilot the way PanDA's monitor links to it:
    pilot_id is the worker's public stdout URL unless the pilot's own heartbeat gave one, batch_id the batch
    job, and pilot_log (the batch log URL, as Harvester sends it) when given: PanDA stores a new log record
    for every call that carries it, so the caller gives it once per job."""
    update = dict(update)
    if stdout_url:
        update.setdefault("pilot_id", stdout_url)
    if batch_id:
        update.setdefault("batch_id", batch_id)
    if pilot_log:
        update["pilot_log"] = pilot_log
    return update


def with_node(update: dict, node: str | None) -> dict:
    """The node the job ran on (one node of a many-job worker's allocation), unless the pilot named it."""
    if node:
        update = dict(update)
        update.setdefault("node", node)
    return update
def monitor_link(stdout_url: str | None, suffix: str) -> str | None:
    """What PanDA's monitor makes of a pilot's stdout URL for its stderr, batch log and submit description:
    the .out suffix replaced by .err, .log or .jdl (harvester-cli names a worker's files so that these exist)."""
    if not stdout_url or not stdout_url.endswith(".out"):
        return None
    return stdout_url[:-len(".out")] + suffix


def worker_update(row, panda_ids: list[int], site: str, host: str | None = None) -> dict:
    """A worker (a state row: worker_id, status, diag, times, URLs, ...) as update_workers wants it."""
    status = model.SUBMITTED if row.status == model.PENDING else row.status
    code, short = diagnostics.classify(row.status, row.diag, row.native_exit_code, getattr(row, "backend", None))
    diag = f"{short}: {row.diag}" if short and row.diag else (short or row.diag)
    data = {
        "workerID": row.worker_id, "batchID": row.batch_id, "queueName": row.queue, "status": status,
        "computingSite": site, "computingElement": row.computing_element, "nCore": row.n_core,
        "submitTime": model.panda_time(row.submit_time), "startTime": model.panda_time(row.start_time),
        "endTime": model.panda_time(row.end_time), "lastUpdate": model.panda_time(row.modified),
        "stdOut": row.stdout_url, "stdErr": row.stderr_url, "batchLog": row.batch_log_url,
        "jdl": monitor_link(row.stdout_url, ".jdl"),
        "resourceType": row.resource_type, "jobType": row.job_type, "nativeExitCode": row.native_exit_code,
        "nativeStatus": row.native_status, "diagMessage": (diag or "")[:500] or None,
        "submissionHost": row.submission_host, "harvesterHost": host or socket.gethostname(),
        "errorCode": row.error_code if row.error_code is not None else code,
        "minRamCount": row.memory_mb, "nJobs": len(panda_ids) or None, "pandaid_list": panda_ids or None,
    }
    return {k: v for k, v in data.items() if v is not None}


def worker_statistics(counts: Iterable[tuple[str | None, str | None, str, int]]) -> dict:
    """{jobType: {resourceType: {status: n}}} from (job type, resource type, status, workers); pending
    counts as submitted (PanDA knows no pending)."""
    stats: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for job_type, rt, status, n in counts:
        status = model.SUBMITTED if status == model.PENDING else status
        stats[job_type or "managed"][rt or "Undefined"][status] += n
    return json.loads(json.dumps(stats))


def heartbeat_data(start_time: float, streaming_sites: Iterable[str] = ()) -> dict:
    """The heartbeat's data: the instance's start and version, and a subscription to PanDA's
    pilot-streaming commands for the queues in that mode."""
    data = {"startTime": model.panda_time(start_time), "sw_version": f"harvester-cli {__version__}",
            "commit_stamp": __version__}
    sites = sorted(set(streaming_sites))
    if sites:
        data["commands"] = [{"command": command, "computingSite": site, "resourceType": "ANY"}
                            for site in sites for command in ("SET_N_WORKERS_JOBTYPE", "REPORT_WORKER_STATS")]
    return data
