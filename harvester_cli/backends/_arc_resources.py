"""What can start now on an ARC CE (ArcBackend.free_resources): A-REX's GLUE2 information, parsing only.

A-REX 6.17 publishes its GLUE2 document over REST (GET <endpoint>/rest/1.0/info, JSON), refreshed by its
infoprovider every few minutes (the test CE: every 30 s). Per ComputingShare (an ARC queue; MappingQueue
names the batch queue) it gives FreeSlots (slots the batch system has free now), FreeSlotsWithDuration
("n[:t] n[:t] ...": n slots free for t seconds, no t: without limit; GLUE2's free slots by duration, the
backfill windows of the batch system when its ARC module reports them) and WaitingJobs. The document's
CreationTime is an XML attribute that A-REX's JSON rendering leaves empty, so the figures' age is counted
from the question, not from the CE's measurement: up to one infoprovider period older.
"""

from __future__ import annotations


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def number(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def shares(info: dict) -> list[dict]:
    """Every ComputingShare of the document (GLUE2's JSON gives one as an object, several as a list)."""
    domains = info.get("Domains", {}) if isinstance(info, dict) else {}
    out = []
    for domain in _as_list(domains.get("AdminDomain")):
        services = domain.get("Services", {}) if isinstance(domain, dict) else {}
        for service in _as_list(services.get("ComputingService")):
            if isinstance(service, dict):
                out += [s for s in _as_list(service.get("ComputingShare")) if isinstance(s, dict)]
    return out


def pick(found: list[dict], queue: str | None) -> list[dict]:
    """The shares of the ARC queue jobs go to (its Name or MappingQueue), or every share without one."""
    if queue is None:
        return found
    return [s for s in found if queue in (s.get("Name"), s.get("MappingQueue"))]


def durations(text) -> list[tuple[int, int | None]]:
    """FreeSlotsWithDuration "4:3600 2" -> [(4, 3600), (2, None)] (None: no limit)."""
    out = []
    for part in str(text or "").split():
        slots, _, seconds = part.partition(":")
        n = number(slots)
        if n is None:
            continue
        out.append((n, number(seconds) if seconds else None))
    return out


def window(entries: list[tuple[int, int | None]], cores: int, walltime: int, min_walltime: int | None) -> int:
    """The longest walltime a worker of `cores` could start with now: the queue's if a free slot group lasts that
    long, else the longest group's duration if it reaches min_walltime, else 0."""
    longest = 0
    for n, seconds in entries:
        if n >= cores:
            longest = max(longest, walltime if seconds is None else seconds)
    if longest >= walltime:
        return walltime
    if min_walltime and longest >= min_walltime:
        return longest
    return 0
