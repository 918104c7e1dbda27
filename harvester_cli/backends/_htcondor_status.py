"""HTCondor job ad -> what harvester-cli records of the worker (pure: no schedd, no htcondor2 import).

JobStatus (docs/domain.md): 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring output,
7 suspended. 2 and 6 -> running; 1 and 7 -> idle if the job ran before, else submitted; 3 -> cancelled;
4 -> finished if it exited 0, else failed; 5 -> held (the monitor keeps it idle with the hold reason), and
the backend's policy asks for removal when it is held too long or for a reason on the kill list. A grid
job whose CE cannot be reached stays idle with GridResourceUnavailableTime: removed after a limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from harvester_cli import model
from harvester_cli.backends.base import Observation

STATUS_NAMES = {1: "IDLE", 2: "RUNNING", 3: "REMOVED", 4: "COMPLETED", 5: "HELD", 6: "TRANSFERRING_OUTPUT",
                7: "SUSPENDED"}

# What poll asks the schedd for: nothing more (projection).
ATTRIBUTES = [
    "ClusterId", "ProcId", "JobStatus", "harvesterWorkerID", "harvesterCE", "ExitCode", "ExitBySignal",
    "ExitSignal", "HoldReason", "HoldReasonCode", "HoldReasonSubCode", "RemoveReason", "EnteredCurrentStatus",
    "JobStartDate", "JobCurrentStartDate", "CompletionDate", "NumJobStarts", "GridResource", "GridJobStatus",
    "GridResourceUnavailableTime", "LastRemoteStatusUpdate", "GridJobId", "harvesterRetrieved",
]


@dataclass(frozen=True)
class Policy:
    """When a held or stuck job is to be removed (the queue's backend options)."""

    held_timeout: int = 3600
    kill_hold_reasons: tuple[str, ...] = ()
    unavailable_timeout: int = 3600


def value(ad: Mapping[str, Any], key: str) -> Any:
    """An attribute's value, None when missing, undefined or an error (classad2.Value)."""
    v = ad.get(key)
    if v is None or type(v).__name__ == "Value":
        return None
    return v


def _time(ad: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        v = value(ad, key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_id(ad: Mapping[str, Any]) -> str:
    return f"{value(ad, 'ClusterId')}.{value(ad, 'ProcId')}"


def hold_text(ad: Mapping[str, Any]) -> str:
    reason = value(ad, "HoldReason") or "no reason given"
    code, sub = value(ad, "HoldReasonCode"), value(ad, "HoldReasonSubCode")
    return f"{reason} (HoldReasonCode {code}, subcode {sub})" if code is not None else str(reason)


def hold_on_kill_list(ad: Mapping[str, Any], kill_list: tuple[str, ...]) -> str | None:
    """The kill-list entry this hold matches: a number is a HoldReasonCode, text a substring of HoldReason."""
    reason = str(value(ad, "HoldReason") or "").lower()
    code = value(ad, "HoldReasonCode")
    for entry in kill_list:
        if entry.strip().isdigit():
            if code is not None and int(entry) == int(code):
                return entry
        elif entry.lower() in reason:
            return entry
    return None


def never_started(ad: Mapping[str, Any]) -> bool | None:
    """The schedd's word on whether the job's executable ever started: False when it never did (no start
    recorded and, for a grid job, never handed to its CE: a job the CE has may run there unseen), True when
    it did, None when it cannot tell."""
    if _time(ad, "JobStartDate", "JobCurrentStartDate") is not None or (value(ad, "NumJobStarts") or 0) > 0:
        return True
    if value(ad, "GridResource") and value(ad, "GridJobId"):
        return None
    return False


def observe(worker_id: int, ad: Mapping[str, Any], at: float, policy: Policy) -> Observation:
    seen = _observe(worker_id, ad, at, policy)
    started = never_started(ad)
    seen.started = started if seen.status not in (model.RUNNING, model.FINISHED) else True
    return seen


def _observe(worker_id: int, ad: Mapping[str, Any], at: float, policy: Policy) -> Observation:
    status = value(ad, "JobStatus")
    if status == 3 and value(ad, "harvesterRetrieved"):
        status = 4   # a spooled job harvester-cli removed once its outputs were back: it completed
    native = STATUS_NAMES.get(status, f"JobStatus {status}")
    grid = value(ad, "GridJobStatus")
    if grid:
        native = f"{native} (grid {grid})"
    started = _time(ad, "JobStartDate", "JobCurrentStartDate")
    entered = _time(ad, "EnteredCurrentStatus")
    ran_before = started is not None or (value(ad, "NumJobStarts") or 0) > 0
    if status in (2, 6):
        return Observation(worker_id, model.RUNNING, native,
                           start_time=_time(ad, "JobCurrentStartDate", "JobStartDate") or entered)
    if status in (1, 7):
        seen = Observation(worker_id, model.IDLE if ran_before else model.SUBMITTED, native, start_time=started)
        unavailable = _time(ad, "GridResourceUnavailableTime")
        if unavailable is not None:
            resource = value(ad, "GridResource")
            where = f" ({resource})" if resource else ""
            seen.diag = f"CE unreachable since {_iso(unavailable)}{where}"
            if at - unavailable > policy.unavailable_timeout:
                seen.kill_reason = f"CE unreachable for more than {policy.unavailable_timeout} s{where}"
        return seen
    if status == 3:
        reason = value(ad, "RemoveReason") or "no reason given"
        return Observation(worker_id, model.CANCELLED, native, diag=f"removed: {reason}", start_time=started,
                           end_time=entered or at)
    if status == 4:
        end = _time(ad, "CompletionDate", "EnteredCurrentStatus") or at
        if value(ad, "ExitBySignal"):
            signal = value(ad, "ExitSignal")
            return Observation(worker_id, model.FAILED, native, None, f"pilot killed by signal {signal}",
                               started, end)
        code = value(ad, "ExitCode")
        if code == 0:
            return Observation(worker_id, model.FINISHED, native, 0, None, started, end)
        return Observation(worker_id, model.FAILED, native, code,
                           f"pilot exited with code {code}" if code is not None else "completed without an exit code",
                           started, end)
    if status == 5:
        text = hold_text(ad)
        seen = Observation(worker_id, model.HELD, native, diag=text, start_time=started)
        matched = hold_on_kill_list(ad, policy.kill_hold_reasons)
        if matched is not None:
            seen.kill_reason = f"held for a reason on the kill list ({matched!r}): {text}"
        elif entered is not None and at - entered > policy.held_timeout:
            seen.kill_reason = f"held longer than {policy.held_timeout} s: {text}"
        return seen
    return Observation(worker_id, model.SUBMITTED, native, diag=f"unknown JobStatus {status!r}")
