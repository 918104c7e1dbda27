"""A PanDA job as harvester-cli reads it: the typed fields a worker is built from, and the verbatim job
description (the dict from acquire_jobs) that a push worker ships to the pilot as pandaJobData.out.

PanDA writes unset values as "NULL" (or ""), numbers as ints or their digits as strings, and nothing stops a
broken task from sending absurd values: every field a worker is built from is checked here, so one bad job
fails alone, never the fetch or the submission of the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# What the state database's columns and PanDA's own database hold: a value beyond these is not a real job's.
MAX_PANDA_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1
MAX_CORES = 100_000


def bounded_int(value, low: int = 0, high: int = MAX_INT32) -> int | None:
    """An integer PanDA wrote (int, or its digits as a string) within [low, high]; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        # isascii: "²" is a digit to str.isdigit() but not to int()
        if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 25:
            return None
    elif not isinstance(value, int):
        return None
    number = int(value)
    return number if low <= number <= high else None


def _unset(value) -> bool:
    return value is None or value == "NULL" or value == ""


def _listed(value) -> list[str]:
    """A comma-joined file list as its entries, by position ("a,,NULL" -> ["a", "", ""]): PanDA's file lists
    are parallel (inFiles with scopeIn, GUID, fsize, ...), so an empty entry keeps its place."""
    if value is None or str(value).strip() in ("", "NULL"):
        return []
    return ["" if v.strip() == "NULL" else v.strip() for v in str(value).split(",")]


def _seconds(value) -> int | None:
    """A positive number of seconds as PanDA writes it (an int, a float, or their text); None otherwise."""
    if isinstance(value, bool):
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 < number <= MAX_INT32 else None


def _attempt(value) -> int | None:
    """attemptNr as PanDA's column holds it (0 to 2**31 - 1), or None (inf and NaN included)."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 <= number < 2**31 else None


def panda_id_of(received: Any) -> int | None:
    """The PandaID of something acquire_jobs returned, if it has a usable one (needed to report it back)."""
    return bounded_int(received.get("PandaID"), 1, MAX_PANDA_ID) if isinstance(received, dict) else None


def _number(job: dict, key: str, low: int = 0, high: int = MAX_INT32) -> int | None:
    value = job.get(key)
    return None if _unset(value) else bounded_int(value, low, high)


class PandaJob:
    """One job from acquire_jobs: typed fields for the harvester, the dict itself for the pilot. A field that
    does not convert reads as None. What fetch-jobs stores of thousands of jobs is read at once; what only a
    backend reads (limits, input files) when asked."""

    __slots__ = ("raw", "_description", "panda_id", "attempt_nr", "core_count", "min_ram_count", "resource_type")

    def __init__(self, raw: dict, description: str | None = None):
        self.raw = raw
        self._description = description
        self.panda_id: int = bounded_int(raw.get("PandaID"), 1, MAX_PANDA_ID) or 0
        self.attempt_nr = _attempt(raw.get("attemptNr"))
        self.core_count = _number(raw, "coreCount", 1, MAX_CORES)   # None: the job does not say
        self.min_ram_count = _number(raw, "minRamCount", 1)          # MB
        value = raw.get("resource_type")
        self.resource_type: str | None = None if _unset(value) or not isinstance(value, str) else value

    @classmethod
    def from_dict(cls, job: dict) -> PandaJob:
        return cls(job)

    @classmethod
    def from_json(cls, text: str) -> PandaJob:
        return cls(json.loads(text), text)

    def __repr__(self) -> str:
        return f"PandaJob({self.panda_id})"

    @property
    def max_walltime(self) -> int | None:
        return _seconds(self.raw.get("maxWalltime"))

    @property
    def max_cpu_count(self) -> int | None:
        return _seconds(self.raw.get("maxCpuCount"))

    @property
    def walltime_limit(self) -> int | None:
        """The job's own time limit in seconds: maxWalltime, else maxCpuCount; None when it says nothing."""
        return self.max_walltime or self.max_cpu_count

    @property
    def job_pars(self) -> str | None:
        value = self.raw.get("jobPars")
        return value if isinstance(value, str) else None

    @property
    def inputs(self) -> list[tuple[str, str]]:
        """(file name, scope) of each input file: PanDA's inFiles and scopeIn, parallel by position."""
        return _inputs(self.raw)

    @property
    def name(self) -> str | None:
        """The job's name (jobName), for an operator's eyes only."""
        value = self.raw.get("jobName")
        return None if _unset(value) else str(value)

    @property
    def task_id(self) -> int | None:
        """The JEDI task the job belongs to (jediTaskID, or taskID from older servers)."""
        for key in ("jediTaskID", "taskID"):
            if not _unset(self.raw.get(key)):
                return bounded_int(self.raw.get(key), 1, MAX_PANDA_ID)
        return None

    @property
    def description(self) -> str:
        """The job as PanDA sent it, JSON: what the pilot reads from pandaJobData.out (never edited here)."""
        if self._description is None:
            self._description = json.dumps(self.raw)
        return self._description


def _inputs(job: dict) -> list[tuple[str, str]]:
    files = _listed(job.get("inFiles"))
    scopes = _listed(job.get("scopeIn"))
    return [(name, scopes[i] if i < len(scopes) else "") for i, name in enumerate(files) if name]


def problem(job: dict, resource_types: list[str]) -> str | None:
    """Why a job dict from PanDA cannot run on a queue serving these resource types, or None."""
    if not isinstance(job.get("jobPars"), str):
        return "jobPars is missing or not a string"
    if bounded_int(job.get("attemptNr")) is None:
        return f"attemptNr={str(job.get('attemptNr'))[:40]!r} is not an integer from 0 to {MAX_INT32}"
    for key, high in (("coreCount", MAX_CORES), ("minRamCount", MAX_INT32)):
        if not _unset(job.get(key)) and bounded_int(job.get(key), 0, high) is None:
            return f"{key}={str(job.get(key))[:40]!r} is not an integer from 0 to {high}"
    resource_type = job.get("resource_type")
    if not _unset(resource_type) and resource_type not in resource_types:
        return f"resource_type={str(resource_type)[:64]!r} is not served by this queue (resource_types={resource_types})"
    return None


@dataclass
class Received:
    """acquire_jobs' answer sorted: jobs a queue can run, jobs it cannot (with why), and what came without a
    usable PandaID (it cannot even be reported back)."""

    good: list[PandaJob] = field(default_factory=list)
    bad: list[tuple[PandaJob, str]] = field(default_factory=list)
    unusable: list = field(default_factory=list)


def sort_received(received: list, resource_types: list[str]) -> Received:
    out = Received()
    for raw in received:
        job = PandaJob(raw) if isinstance(raw, dict) else None
        if job is None or not job.panda_id:
            out.unusable.append(raw)
            continue
        why = problem(raw, resource_types)
        if why:
            out.bad.append((job, why))
        else:
            out.good.append(job)
    return out
