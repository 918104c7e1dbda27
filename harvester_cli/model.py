"""Job and worker states and the transitions between them (pure, no I/O)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

# Worker states (docs/domain.md). `pending` is local only: recorded before the batch call.
PENDING = "pending"
SUBMITTED = "submitted"
RUNNING = "running"
IDLE = "idle"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
MISSED = "missed"

WORKER_ACTIVE = (SUBMITTED, RUNNING, IDLE)
WORKER_QUEUED = (PENDING, SUBMITTED, IDLE)
WORKER_FINAL = (FINISHED, FAILED, CANCELLED, MISSED)
WORKER_STATES = (PENDING, *WORKER_ACTIVE, *WORKER_FINAL)

# What a backend may report about a worker, beyond the worker states: held (the monitor decides),
# and missing (the backend has no trace of it; failed after a grace period).
HELD = "held"
MISSING = "missing"

# A kill mark (the workers table's kill_reason) that asks sweep to retire a queued pilot nobody needs any
# more: removed only while it still waits in the batch queue (a pilot that started meanwhile is left alone).
# Its diag once retired starts with RETIRED.
RETIRE_MARK = "retire: "
RETIRED = "retired"


def is_retirement(kill_reason: str | None) -> bool:
    """Whether a kill mark asks for a retirement (conditional on the pilot still queued), not a kill."""
    return kill_reason is not None and kill_reason.startswith(RETIRE_MARK)


def retired_diag(kill_reason: str | None, submit_time: float | None, at: float, detail: str | None) -> str:
    """The diag of a pilot retired while still queued (PanDA's error code 1014 is read from its start)."""
    why = (kill_reason or "").removeprefix(RETIRE_MARK) or "not needed"
    queued = f" after {duration(at - submit_time)} queued" if submit_time else ""
    seen = f" ({detail})" if detail else ""
    return f"{RETIRED} while still queued{queued}{seen}: {why}"

# Job states as PanDA sees them, and our pipeline step (sub_status).
JOB_STARTING = "starting"
JOB_RUNNING = "running"
JOB_TRANSFERRING = "transferring"
JOB_FINISHED = "finished"
JOB_FAILED = "failed"
JOB_FINAL = (JOB_FINISHED, JOB_FAILED)

SUB_FETCHED = "fetched"        # stored, waiting for a worker
SUB_RETRY = "retry"            # its worker failed for a transient CE reason before it started: waits for
                               # PanDA's word (still ours, not killed, not reassigned) before a new worker
SUB_SUBMITTED = "submitted"    # bound to a submitted worker
SUB_RUNNING = "running"        # its worker runs
SUB_KILLING = "killing"        # PanDA asked to kill it, not its many-job worker: sweep stops its step
SUB_REPORTING = "reporting"    # final state known, final update not yet acknowledged by PanDA
SUB_DONE = "done"              # PanDA acknowledged the final update
JOB_STATES = (JOB_STARTING, JOB_RUNNING, JOB_TRANSFERRING, JOB_FINISHED, JOB_FAILED)
JOB_SUB_STATES = (SUB_FETCHED, SUB_RETRY, SUB_SUBMITTED, SUB_RUNNING, SUB_KILLING, SUB_REPORTING, SUB_DONE)
# A job bound to a live worker, not final yet: poll gives each its final update when its worker (or, in a
# many-job worker, its own step) ends.
SUB_LIVE = (SUB_SUBMITTED, SUB_RUNNING, SUB_KILLING)
# PanDA's statuses of a job a harvester may give a new worker: sent (acquired, no worker took it yet),
# starting, and running (a worker was reported running, but its pilot never started: ARC's RUNNING is the
# CE's batch system, queued or not).
JOB_RETRYABLE_AT_PANDA = ("sent", JOB_STARTING, JOB_RUNNING)

# A kill reason that says the worker is killed for a transient CE error before its job started (poll checked
# the batch system's word and the pilot's outputs): its push job gets a new worker instead of failing.
RESUBMIT_MARK = "transient CE error, the job never started: "


def allowed_worker_transition(old: str, new: str) -> bool:
    """Final states never change; everything else may move forward or between running and idle."""
    if old in WORKER_FINAL:
        return False
    if new == PENDING:
        return old == PENDING
    return new in WORKER_STATES


def now() -> float:
    return time.time()


def panda_time(epoch: float | None) -> str | None:
    """PanDA's timestamp format ("YYYY-MM-DD HH:MM:SS", UTC)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float | None) -> str:
    """A time span as an operator reads it: 45s, 3h07m, 2d04h00m."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    if abs(seconds) < 120:   # a queue time or a run of seconds, not of hours
        return f"{sign}{abs(seconds):.0f}s"
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return f"{sign}{days}d{hours:02d}h{minutes:02d}m" if days else f"{sign}{hours}h{minutes:02d}m"


def clock(seconds: float | None) -> str:
    """A run time as squeue's TIME shows it: MM:SS under an hour, HH:MM:SS, D-HH:MM:SS beyond a day."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def utc_time(epoch: float | None) -> str | None:
    """A moment as an operator reads it in a terminal: 2026-01-02 03:04:05 UTC."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    """A time span in at most five characters, for a narrow column (as kubectl shows ages): 45s, 12m,
    5h37m, 1d09h, 12d."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds < 10 * 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    return f"{seconds // 86400}d"
