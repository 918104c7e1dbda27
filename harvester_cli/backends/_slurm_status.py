"""Reading Slurm's answers (squeue, sacct, scontrol, sbatch, sinfo, scancel) and turning job states into
worker observations. Pure functions over text, so the tests feed them output captured from Slurm 22.05.

Why fixed text formats and not `--json`: the JSON output needs Slurm's data_parser/openapi plugins, which
not every site's build carries, and its schema changes between releases; the -O/-o/-P formats have been
stable for a decade. Fields are separated by ASCII unit separator (0x1f), which Slurm never prints and
nobody types into a job name; the free-text field (the job name) comes last, so even a separator inside
it cannot shift the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from harvester_cli import model
from harvester_cli.backends.base import Observation

SEP = "\x1f"

# squeue -O: the array-aware id ("123_4", or "123"), state, raw wait status (exit code << 8 | signal),
# reason, times, partition, and the job name last.
SQUEUE_FIELDS = ("JobArrayID", "State", "exit_code", "Reason", "StartTime", "EndTime", "Partition", "Name")
SQUEUE_FORMAT = ",".join(f"{name}:0{SEP}" for name in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:0"
# sacct -P --delimiter: ExitCode is "code:signal"; JobName last.
SACCT_FIELDS = ("JobID", "State", "ExitCode", "Start", "End", "Partition", "JobName")
SACCT_FORMAT = ",".join(SACCT_FIELDS)

# Worker state per Slurm job state (squeue's long names; sacct appends "by <uid>" to CANCELLED).
SUBMITTED_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"})
IDLE_STATES = frozenset({"SUSPENDED", "STOPPED"})
HELD_STATES = frozenset({"REQUEUE_HOLD", "RESV_DEL_HOLD"})
FAILED_STATES = frozenset({"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                           "PREEMPTED", "SPECIAL_EXIT"})
CANCELLED_STATES = frozenset({"CANCELLED", "REVOKED"})
ENDED_STATES = FAILED_STATES | CANCELLED_STATES | {"COMPLETED"}

# What each failure means, for the diag an operator reads in PanDA (diagnostics.py gives each a code).
EXPLAIN = {
    "FAILED": "the batch job ended with a non-zero exit code or could not start",
    "TIMEOUT": "the job reached its time limit (--time) and was killed",
    "NODE_FAIL": "a node of the job failed",
    "OUT_OF_MEMORY": "the job exceeded its memory (--mem) and was killed",
    "BOOT_FAIL": "a node of the job failed to boot",
    "DEADLINE": "the job reached its deadline before it could run",
    "PREEMPTED": "the job was preempted by a higher-priority job",
    "SPECIAL_EXIT": "the job was requeued in a special exit state",
    "CANCELLED": "the job was cancelled in Slurm (scancel by its owner or an administrator)",
    "REVOKED": "the job was revoked (a federation sibling ran it)",
}

UNSET = frozenset({"", "N/A", "NONE", "None", "Unknown", "(null)"})


@dataclass(frozen=True)
class JobRecord:
    """One Slurm job (or array task) as a listing showed it."""

    job_id: str                 # "123", or "123_4" for an array task
    state: str                  # the long state name, e.g. RUNNING, TIMEOUT
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    start: float | None = None
    end: float | None = None
    partition: str | None = None
    name: str | None = None
    cluster: str | None = None
    source: str = "squeue"


def _time(text: str) -> float | None:
    """Slurm prints local times without a zone (YYYY-MM-DDTHH:MM:SS)."""
    text = text.strip()
    if text in UNSET:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _text(text: str) -> str | None:
    text = text.strip()
    return None if text in UNSET else text


def _pair(text: str) -> tuple[int | None, int | None]:
    """ "3:0" (exit code:signal) as sacct and scontrol print it."""
    code, _, signal = text.strip().partition(":")
    try:
        return int(code), int(signal or 0)
    except ValueError:
        return None, None


def _cluster_header(line: str) -> str | None:
    """With --clusters, squeue/sinfo put 'CLUSTER: name' before each cluster's lines."""
    return line.split(":", 1)[1].strip() if line.startswith("CLUSTER: ") else None


def parse_squeue(text: str) -> list[JobRecord]:
    """`squeue -h -r -t all -O SQUEUE_FORMAT` output (one array task per line)."""
    records, cluster = [], None
    for line in text.splitlines():
        if not line.strip():
            continue
        header = _cluster_header(line)
        if header is not None:
            cluster = header
            continue
        fields = line.split(SEP, len(SQUEUE_FIELDS) - 1)
        if len(fields) != len(SQUEUE_FIELDS):
            continue   # not a line of our format (a warning squeue printed to stdout)
        job_id, state, status, reason, start, end, partition, name = fields
        try:
            raw = int(status)
        except ValueError:
            raw = None
        records.append(JobRecord(
            job_id=job_id.strip(), state=state.strip().split()[0] if state.strip() else "",
            exit_code=None if raw is None else (raw >> 8) & 0xFF, signal=None if raw is None else raw & 0x7F,
            reason=_text(reason), start=_time(start), end=_time(end), partition=_text(partition),
            name=name.rstrip("\n"), cluster=cluster, source="squeue"))
    return records


def parse_sacct(text: str, source: str = "sacct") -> list[JobRecord]:
    """`sacct -X -n -P --delimiter=SEP -o SACCT_FORMAT` output (also with -c, the job-completion log)."""
    records = []
    for line in text.splitlines():
        fields = line.split(SEP, len(SACCT_FIELDS) - 1)
        if len(fields) != len(SACCT_FIELDS) or not fields[0].strip():
            continue
        job_id, state, exit_code, start, end, partition, name = fields
        if "." in job_id:   # a step (batch, extern): -X should leave these out
            continue
        code, signal = _pair(exit_code)
        records.append(JobRecord(
            job_id=job_id.strip(), state=state.strip().split()[0] if state.strip() else "", exit_code=code,
            signal=signal, start=_time(start), end=_time(end), partition=_text(partition), name=name,
            source=source))
    return records


_SCONTROL_KEYS = ("JobId", "ArrayJobId", "ArrayTaskId", "JobName", "JobState", "Reason", "ExitCode", "StartTime",
                  "EndTime", "Partition")


def parse_scontrol(text: str) -> JobRecord | None:
    """`scontrol -o show job ID`: one line of Key=Value pairs (values of free-text keys may hold spaces)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if not line.startswith("JobId="):
        return None
    values = {}
    for key in _SCONTROL_KEYS:
        match = re.search(rf"(?:^| ){key}=(\S*)", line)
        if match:
            values[key] = match.group(1)
    job_id = values["JobId"]
    if values.get("ArrayTaskId") not in (None, "", "N/A") and values.get("ArrayJobId"):
        job_id = f"{values['ArrayJobId']}_{values['ArrayTaskId']}"
    code, signal = _pair(values.get("ExitCode", ""))
    return JobRecord(job_id=job_id, state=values.get("JobState", ""), exit_code=code, signal=signal,
                     reason=_text(values.get("Reason", "")), start=_time(values.get("StartTime", "")),
                     end=_time(values.get("EndTime", "")), partition=_text(values.get("Partition", "")),
                     name=values.get("JobName"), source="scontrol")


def parse_sbatch(text: str) -> tuple[str, str | None] | None:
    """`sbatch --parsable`: "123" or "123;cluster" -> (job id, cluster); None if there is no id."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if not lines:
        return None
    job_id, _, cluster = lines[-1].partition(";")
    return (job_id, cluster or None) if job_id.isdigit() else None


def parse_sinfo(text: str) -> tuple[dict[str, str], str | None]:
    """`sinfo -h -o '%P<SEP>%a'` -> ({partition[@cluster]: availability}, default partition)."""
    states: dict[str, str] = {}
    default, cluster = None, None
    for line in text.splitlines():
        header = _cluster_header(line)
        if header is not None:
            cluster = header
            continue
        name, _, availability = line.partition(SEP)
        name = name.strip()
        if not name:
            continue
        if name.endswith("*"):
            name = name[:-1]
            default = default or name
        key = f"{name}@{cluster}" if cluster else name
        states[key] = availability.strip() or states.get(key, "")
    return states, default


# squeue -s -o: a step's id ("123.4") and its name (a many-job worker names each step by its job's PandaID).
STEPS_FORMAT = f"%i{SEP}%j"


def parse_steps(text: str) -> dict[str, str]:
    """`squeue -h -s -j JOB -o STEPS_FORMAT` -> {step name: step id}, the batch and extern steps left out."""
    steps = {}
    for line in text.splitlines():
        step_id, _, name = line.strip().partition(SEP)
        if step_id and name and step_id.rpartition(".")[2].isdigit():
            steps[name.strip()] = step_id.strip()
    return steps


def scancel_errors(stderr: str) -> dict[str, str]:
    """scancel's complaints per job id ("scancel: error: Kill job error on job id 5: <message>")."""
    errors = {}
    for line in stderr.splitlines():
        match = re.search(r"error on job id (\S+?):? (.*)$", line, re.IGNORECASE)
        if match:
            errors[match.group(1)] = match.group(2).strip()
    return errors


def nothing_to_kill(message: str) -> bool:
    """A complaint that means the job is gone or ending anyway: the kill has nothing left to do."""
    return bool(re.search(r"Invalid job id|already completing or completed|already completed", message,
                          re.IGNORECASE))


# -- states -> observations -------------------------------------------------------------------

def held(record: JobRecord) -> bool:
    return record.state in HELD_STATES or (record.state == "PENDING" and bool(record.reason)
                                           and (record.reason.startswith("JobHeld") or "held" in record.reason))


def shell_exit_code(record: JobRecord) -> int | None:
    """The exit code as a shell reports it: the code, or 128 + the signal that ended the job."""
    if record.exit_code:
        return record.exit_code
    if record.signal:
        return 128 + record.signal
    return record.exit_code


def diag(record: JobRecord) -> str:
    """One line for the worker's diag; starts with "slurm <STATE>" (diagnostics.py matches on it)."""
    parts = [f"job {record.job_id}"]
    if record.partition:
        parts.append(f"partition {record.partition}")
    if record.exit_code is not None:
        parts.append(f"exit code {record.exit_code}" + (f", signal {record.signal}" if record.signal else ""))
    if record.reason and record.reason != "None":
        parts.append(f"reason {record.reason}")
    return f"slurm {record.state}: {EXPLAIN.get(record.state, record.state.lower())} ({'; '.join(parts)})"


def observe(worker_id: int, current_status: str, record: JobRecord,
            kill_pending_reasons: tuple[str, ...] = ()) -> Observation:
    """What a Slurm job record means for its worker."""
    state = record.state
    if state in ENDED_STATES:
        end = record.end
        if state == "COMPLETED":
            return Observation(worker_id, model.FINISHED, state, shell_exit_code(record) or 0, None, record.start, end)
        status = model.CANCELLED if state in CANCELLED_STATES else model.FAILED
        return Observation(worker_id, status, state, shell_exit_code(record), diag(record), record.start, end,
                           started=False if record.start is None else None)
    if held(record):
        return Observation(worker_id, model.HELD, state, diag=f"{record.reason or state} (job {record.job_id})")
    if state in SUBMITTED_STATES:
        kill = None
        if record.reason and any(record.reason.startswith(r) for r in kill_pending_reasons):
            kill = f"pending in Slurm for a reason that does not clear by itself: {record.reason}"
        note = f"pending: {record.reason}" if record.reason and record.reason != "None" else None
        return Observation(worker_id, model.SUBMITTED, state, diag=note, kill_reason=kill)
    if state in RUNNING_STATES:
        return Observation(worker_id, model.RUNNING, state, start_time=record.start)
    if state in IDLE_STATES:
        return Observation(worker_id, model.IDLE, state, start_time=record.start, diag=f"slurm {state}")
    # A state this code does not know (a newer Slurm): keep the worker as it is, say what was seen.
    return Observation(worker_id, current_status, state, diag=f"slurm state {state!r} is not one harvester-cli "
                                                                 "maps; worker status kept")


# -- job names: the tag that finds a job again ---------------------------------------------------

def job_name(harvester_id: str, worker_id: int) -> str:
    return f"{harvester_id}:{worker_id}"


def array_name(harvester_id: str, base: int) -> str:
    """An array's tasks run workers base + task id."""
    return f"{harvester_id}:{base}+"


def worker_of(name: str | None, job_id: str, harvester_id: str) -> int | None:
    """The worker id a job of this harvester runs, from its name (and array task id); None if not ours."""
    if not name:
        return None
    prefix, _, rest = name.rpartition(":")
    if prefix != harvester_id:
        return None
    if rest.endswith("+"):
        task = job_id.partition("_")[2]
        if not rest[:-1].isdigit() or not task.isdigit():
            return None
        return int(rest[:-1]) + int(task)
    return int(rest) if rest.isdigit() else None


def compress(numbers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (Slurm's --array syntax)."""
    out: list[str] = []
    numbers = sorted(set(numbers))
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ",".join(out)
