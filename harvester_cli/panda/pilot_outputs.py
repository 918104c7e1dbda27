"""Push mode messenger: the pilot's heartbeat.json and jobReport.json -> the final PanDA job update.

The pilot writes heartbeat.json with the legacy camelCase names of its last job update; PanDA's v1 API
wants snake_case names with strict types (an int sent as a string is refused). Each field is converted
to its type here, and a value that does not convert is dropped and named in the diag rather than
making PanDA refuse the whole update.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harvester_cli.panda.jobs import PandaJob
from harvester_cli.panda.updates import ERR_BAD_HEARTBEAT, ERR_NO_HEARTBEAT, job_failed, job_update

HEARTBEAT = "heartbeat.json"
JOB_REPORT = "jobReport.json"
PILOT_OUTPUTS = (HEARTBEAT, JOB_REPORT)
# Push mode: the job description (PanDA's job dict, verbatim) the pilot reads in its working directory.
JOB_DESCRIPTION = "pandaJobData.out"


# jobReport.json larger than this after slimming is not sent (PanDA stores it in a column).
MAX_META_DATA = 1_000_000

_NUM = (int, float)
# heartbeat.json name -> (v1 update name, type)
_FIELDS: dict[str, tuple[str, Any]] = {
    "state": ("job_status", str), "subStatus": ("job_sub_status", str), "attemptNr": ("attempt_nr", int),
    "siteName": ("site_name", str), "node": ("node", str), "schedulerID": ("scheduler_id", str),
    "pilotID": ("pilot_id", str), "batchID": ("batch_id", str), "coreCount": ("core_count", int),
    "startTime": ("start_time", str), "endTime": ("end_time", str),
    "cpuConsumptionTime": ("cpu_consumption_time", int), "cpuConsumptionUnit": ("cpu_consumption_unit", str),
    "cpuConversionFactor": ("cpu_conversion_factor", _NUM), "transExitCode": ("trans_exit_code", int),
    "pilotErrorCode": ("pilot_error_code", int), "pilotErrorDiag": ("pilot_error_diag", str),
    "exeErrorCode": ("exe_error_code", int), "exeErrorDiag": ("exe_error_diag", str),
    "pilotTiming": ("pilot_timing", str), "nEvents": ("n_events", int), "nInputFiles": ("n_input_files", int),
    "jobMetrics": ("job_metrics", str), "xml": ("job_output_report", str),
    **{f"{a}{b}": (f"{a}_{b.lower()}", _NUM) for a in ("max", "avg") for b in ("RSS", "VMEM", "SWAP", "PSS")},
    **{f"{a}{b}": (f"{a}_{b.lower()}", _NUM) for a in ("tot", "rate") for b in ("RCHAR", "WCHAR", "RBYTES", "WBYTES")},
}


def _convert(value: Any, kind: Any) -> Any:
    if kind is int:
        if isinstance(value, bool):
            raise ValueError
        return int(value) if not isinstance(value, float) or value.is_integer() else int(round(value))
    if kind is _NUM:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):   # JSON has no NaN or Infinity: PanDA could not parse the update
            raise ValueError
        if isinstance(value, (int, float)):
            return value
        return int(number) if number.is_integer() else number
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def from_heartbeat(job: PandaJob, heartbeat: dict) -> tuple[dict, list[str]]:
    """The final update from a heartbeat; returns (update, problems)."""
    update = job_update(job, "failed")   # unless the heartbeat's state says finished
    problems = []
    for name, value in heartbeat.items():
        if name not in _FIELDS or value is None or value == "":
            continue
        target, kind = _FIELDS[name]
        try:
            update[target] = _convert(value, kind)
        except (TypeError, ValueError, OverflowError):
            problems.append(f"{name}={value!r} is not {getattr(kind, '__name__', 'a number')}")
    if heartbeat.get("state") in (None, ""):   # never read as finished: the pilot did not say how it ended
        problems.append("heartbeat has no state")
        update.setdefault("pilot_error_code", ERR_BAD_HEARTBEAT)
    elif update.get("job_status") not in ("finished", "failed"):
        problems.append(f"pilot's last state was {update.get('job_status')!r}, not finished or failed")
        update["job_status"] = "failed"
        update.setdefault("pilot_error_code", ERR_BAD_HEARTBEAT)
    if str(heartbeat.get("jobId", job.panda_id)) != str(job.panda_id):
        problems.append(f"heartbeat is for job {heartbeat.get('jobId')}, not {job.panda_id}")
        update = job_failed(job, ERR_BAD_HEARTBEAT, "heartbeat.json belongs to another job")
    if job.attempt_nr is not None:   # the job's own attempt wins over the pilot's idea of it
        update["attempt_nr"] = job.attempt_nr
    return update, problems


def slim_job_report(data: dict) -> dict:
    """Drop executor[*].logfileReport: it repeats log lines (one report went from 8 MB to 3 kB)."""
    for executor in data.get("executor") or []:
        if isinstance(executor, dict) and "logfileReport" in executor:
            executor["logfileReport"] = {}
    return data


def final_update(job: PandaJob, files: dict[str, Path], backend_diag: str | None) -> tuple[dict, str | None]:
    """The final update of a push-mode job from the pilot's files; returns (update, note for the job's diag)."""
    note = None
    heartbeat_file = files.get(HEARTBEAT)
    if heartbeat_file is None:
        diag = f"no {HEARTBEAT} from the worker" + (f": {backend_diag}" if backend_diag else "")
        update = job_failed(job, ERR_NO_HEARTBEAT, diag)
        note = diag
    else:
        try:
            heartbeat = json.loads(heartbeat_file.read_text())
            if not isinstance(heartbeat, dict):
                raise ValueError("not a JSON object")
            update, problems = from_heartbeat(job, heartbeat)
            if problems:
                note = "; ".join(problems)
        except (OSError, ValueError) as exc:
            note = f"unreadable {HEARTBEAT}: {exc}"
            update = job_failed(job, ERR_BAD_HEARTBEAT, note)
    report_file = files.get(JOB_REPORT)
    if report_file is not None:
        try:
            report = json.loads(report_file.read_text())
            text = json.dumps(slim_job_report(report)) if isinstance(report, dict) else None
            if text and len(text) <= MAX_META_DATA:
                update["meta_data"] = text
        except (OSError, ValueError) as exc:
            note = ((note + "; ") if note else "") + f"unreadable {JOB_REPORT}: {exc}"
    return update, note
