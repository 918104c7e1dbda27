"""PanDA's commands to a harvester (acquire_commands), typed, and what each asks of this instance.

The `command` string and `params` come exactly as the server writes them (panda-api.md, "Commands a
harvester receives"); `interpret` turns one into an action the propagate step applies to the state
database, or a rejection with the reason that stays in the commands table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SET_N_WORKERS = "SET_N_WORKERS_JOBTYPE"
KILL_WORKERS = "KILL_WORKERS"
SYNC_WORKERS_KILL = "SYNC_WORKERS_KILL"
SYNC_WORKERS_ACTIVATE = "SYNC_WORKERS_ACTIVATE"
REPORT_WORKER_STATS = "REPORT_WORKER_STATS"
# What a pilot-streaming harvester subscribes to in its heartbeat.
STREAMING_SUBSCRIPTIONS = (SET_N_WORKERS, REPORT_WORKER_STATS)


@dataclass(frozen=True)
class PandaCommand:
    """One command as acquired: its id, the command string ("NAME:target"), params, whether to acknowledge."""

    command_id: int
    command: str
    params: Any
    ack_requested: bool
    created: str | None = None   # creation_date as the server wrote it (ISO, from its datetime encoding)

    @property
    def name(self) -> str:
        return self.command.partition(":")[0]

    @property
    def target(self) -> str:
        """The PanDA queue a command names after its colon ("" when none)."""
        return self.command.partition(":")[2]


def parse(answer: Any) -> list[PandaCommand]:
    """acquire_commands' data as commands; an entry without a usable id is dropped with a log line (it could
    never be acknowledged)."""
    out = []
    for entry in answer or []:
        try:
            created = entry.get("creation_date")
            out.append(PandaCommand(int(entry["command_id"]), str(entry["command"]), entry.get("params"),
                                    bool(entry.get("ack_requested")), None if created is None else str(created)))
        except (KeyError, TypeError, ValueError, AttributeError):
            log.error("PanDA sent a command without a usable command_id or command: %.200r", entry)
    return out


# -- what a command asks -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetWorkerTargets:
    """Pilot streaming: submit this many new workers per job type and resource type for `site`."""

    site: str
    targets: dict[str, dict[str, int]]


def _wanted(value, wanted) -> bool:
    return wanted in (None, "ALL") or value in (wanted if isinstance(wanted, list) else [wanted])


@dataclass(frozen=True)
class KillWorkers:
    """An operator's sweep request: kill the live workers matching every given criterion (None: any)."""

    statuses: Any = None
    sites: Any = None
    computing_elements: Any = None
    submission_hosts: Any = None

    def matches(self, status: str, site: str, computing_element: str | None, submission_host: str | None) -> bool:
        return (_wanted(status, self.statuses) and _wanted(site, self.sites)
                and _wanted(computing_element, self.computing_elements)
                and _wanted(submission_host, self.submission_hosts))


@dataclass(frozen=True)
class KillWorkerIds:
    """PanDA saw these workers' pilots end: kill them here too."""

    worker_ids: frozenset[int]


@dataclass(frozen=True)
class Nothing:
    """Nothing to apply: worker updates and statistics go out in every propagate run anyway."""


@dataclass(frozen=True)
class Rejected:
    reason: str


Action = SetWorkerTargets | KillWorkers | KillWorkerIds | Nothing | Rejected


def interpret(command: PandaCommand, *, configured_sites: set[str], streaming_sites: set[str]) -> Action:
    """What `command` asks of an instance serving these PanDA queues (those in pilot-streaming mode)."""
    name, target, params = command.name, command.target, command.params
    try:
        if name == SET_N_WORKERS:
            if target not in configured_sites:
                return Rejected(f"queue {target!r} is not configured here")
            if target not in streaming_sites:
                return Rejected(f"queue {target!r} is not in pilot-streaming mode here (pilot_streaming = false)")
            if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
                return Rejected(f"params are not {{jobType: {{resourceType: n}}}}: {str(params)[:200]}")
            return SetWorkerTargets(target, {job_type: {rt: max(0, int(n)) for rt, n in per_type.items()}
                                             for job_type, per_type in params.items()})
        if name == SYNC_WORKERS_KILL:
            return KillWorkerIds(frozenset(int(i) for i in (params or [])))
        if name == KILL_WORKERS:
            params = params or {}
            return KillWorkers(params.get("status"), params.get("computingSite"), params.get("computingElement"),
                               params.get("submissionHost"))
        if name in (SYNC_WORKERS_ACTIVATE, REPORT_WORKER_STATS):
            return Nothing()
    except (ValueError, TypeError, AttributeError) as exc:   # malformed params: keep the reason, do not loop
        return Rejected(f"malformed params: {exc}")
    return Rejected(f"unknown command {name!r}")
