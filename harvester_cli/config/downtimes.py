"""Announced downtimes of queues and computing elements, and the rules that read them (pure: no I/O; the
GOCDB feed's text is handed in).

A downtime covers a whole queue (`queue` without `ce`), a CE for every queue that submits to it (`ce`
without `queue`), or one CE of one queue (both). It comes from the configuration
([[downtimes.scheduled]]), from the state database (`harvester-cli downtime add`, so every host sharing
the database sees it), or from a GOCDB downtime feed: the XML its programmatic interface answers to
method=get_downtime, saved in a file ([downtimes] gocdb_file), whose HOSTNAME is matched against the
queues' CE hosts.

Severity follows GOCDB: an OUTAGE blocks (no new worker goes there, nor one whose walltime would run into
it); AT_RISK is shown and blocks nothing. Every downtime has a start and an end; times are UTC.

A queue's CEs are those its fanout picks from: HTCondor `ces` (or the CRIC file's ACTIVE ones), ARC
`endpoints`, Slurm `partitions`. A CE named by its host alone (as GOCDB names it) matches that host on
any port; named with a port or as a URL, that endpoint only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from harvester_cli.config.ces import queue_ces

OUTAGE = "OUTAGE"
AT_RISK = "AT_RISK"
SEVERITIES = (OUTAGE, AT_RISK)
SOURCES = ("config", "database", "gocdb")


@dataclass(frozen=True)
class Downtime:
    start: float
    end: float
    severity: str = OUTAGE
    reason: str = ""
    queue: str | None = None
    ce: str | None = None
    source: str = "config"
    id: str | None = None   # the state database's id (what `downtime remove` takes), GOCDB's primary key

    @property
    def blocks(self) -> bool:
        return self.severity == OUTAGE

    def active(self, at: float) -> bool:
        return self.start <= at < self.end

    @property
    def scope(self) -> str:
        """What is down, as an operator reads it: `queue Q`, `CE X`, `CE X of Q`."""
        if self.ce is None:
            return f"queue {self.queue}"
        return f"CE {self.ce}" + (f" of {self.queue}" if self.queue else "")

    def covers(self, queue: str, ce: str | None) -> bool:
        """Whether a new worker of `queue` on `ce` (None: the queue as a whole) falls under this downtime."""
        if self.queue is not None and self.queue != queue:
            return False
        if self.ce is None:
            return True
        return ce is not None and ce_matches(self.ce, ce)

    def as_dict(self, at: float) -> dict:
        return {"id": self.id, "queue": self.queue, "computing_element": self.ce, "severity": self.severity,
                "start": iso(self.start), "end": iso(self.end), "reason": self.reason, "source": self.source,
                "active": self.active(at), "blocks": self.blocks}


# -- times ------------------------------------------------------------------------------------

def parse_time(value) -> float:
    """A moment as epoch seconds, from an ISO 8601 text ('2026-03-01T08:00Z', '2026-03-01 08:00', an
    offset converted, none taken as UTC), a TOML date or datetime (a local one taken as UTC), or epoch
    seconds. Raises ValueError saying what it expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected a time in UTC such as 2026-03-01T08:00Z, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text.upper().endswith(" UTC"):
            text = text[:-4]
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a time: write it in UTC, e.g. 2026-03-01T08:00Z") from None
    else:
        raise ValueError(f"expected a time in UTC such as 2026-03-01T08:00Z, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(epoch: float) -> str:
    """2026-03-01T08:00:00Z"""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc(epoch: float, short: bool = False) -> str:
    """2026-03-01 08:00Z (short: 03-01 08:00Z, for a narrow column)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%m-%d %H:%MZ" if short else "%Y-%m-%d %H:%MZ")


# -- CEs --------------------------------------------------------------------------------------

def _host_port(name: str) -> tuple[str, str | None]:
    rest = name.strip().lower().split("://", 1)[-1].split("/", 1)[0]
    host, colon, port = rest.rpartition(":")
    if colon and port.isdigit() and host and (":" not in host or (host.startswith("[") and host.endswith("]"))):
        return host, port   # host:port, or [IPv6]:port
    return rest, None


def ce_matches(named: str, endpoint: str) -> bool:
    """Whether the CE a downtime names is `endpoint`: the same host, and the same port when it names one."""
    host, port = _host_port(named)
    other_host, other_port = _host_port(endpoint)
    return host == other_host and (port is None or port == other_port)


def fanout_ces(queue) -> list[str]:
    """The CEs a queue's fanout picks from (names as its workers record them); empty when it has none."""
    options = queue.backend_options
    if queue.backend == "slurm":
        return list(options.partitions) if options is not None else []
    try:
        return [entry.endpoint for entry in queue_ces(queue)]
    except ValueError:   # an unreadable CRIC file: the backend says so when it submits
        return []


# -- the rules --------------------------------------------------------------------------------

def why(downtime: Downtime, at: float) -> str:
    """Why a downtime keeps new workers off, with until when."""
    reason = f" ({downtime.reason})" if downtime.reason else ""
    if downtime.active(at):
        return f"{downtime.severity} until {utc(downtime.end)}{reason}"
    return (f"{downtime.severity} from {utc(downtime.start)} to {utc(downtime.end)}{reason}, within the "
            "walltime of a worker submitted now")


def blocking(downtimes: list[Downtime], queue: str, ce: str | None, at: float, walltime: float) -> Downtime | None:
    """The OUTAGE that keeps a new worker of `queue` off `ce` (None: off the queue as a whole): one under
    way, or one that starts before a worker submitted now would end. The one ending last, when several."""
    found = [d for d in downtimes if d.blocks and d.start < at + walltime and d.end > at
             and (d.covers(queue, ce) if ce is not None else d.ce is None and d.covers(queue, None))]
    return max(found, key=lambda d: d.end) if found else None


def blocked_ces(downtimes: list[Downtime], queue: str, ces: list[str], at: float, walltime: float) -> dict[str, str]:
    """{CE: why} for each of `ces` no new worker of `queue` may go to now."""
    out = {}
    for ce in ces:
        found = blocking(downtimes, queue, ce, at, walltime)
        if found is not None:
            out[ce] = why(found, at)
    return out


def queue_down(downtimes: list[Downtime], queue: str, ces: list[str], at: float, walltime: float) -> str | None:
    """Why no new worker of `queue` may go anywhere now (a downtime of the whole queue, or of every one of
    its CEs), or None."""
    found = blocking(downtimes, queue, None, at, walltime)
    if found is not None:
        return f"queue {queue} in downtime: {why(found, at)}"
    down = blocked_ces(downtimes, queue, ces, at, walltime)
    if ces and len(down) == len(ces):
        return "every CE in downtime: " + "; ".join(f"{ce}: {reason}" for ce, reason in down.items())
    return None


def relevant(downtimes: list[Downtime], queue: str, ces: list[str], at: float) -> list[Downtime]:
    """The downtimes of `queue` or of one of its CEs not over yet, soonest first."""
    return sorted((d for d in downtimes if d.end > at and (
        d.covers(queue, None) if d.ce is None else any(d.covers(queue, ce) for ce in ces))),
        key=lambda d: (d.start, d.end))


# -- GOCDB ------------------------------------------------------------------------------------

def _gocdb_time(element, epoch_tag: str, formatted_tag: str) -> float | None:
    epoch = (element.findtext(epoch_tag) or "").strip()
    if epoch.isdigit():
        return float(epoch)
    formatted = (element.findtext(formatted_tag) or "").strip()
    return parse_time(formatted) if formatted else None


def from_gocdb(text: str | bytes) -> list[Downtime]:
    """The downtimes of a GOCDB get_downtime answer (<results><DOWNTIME>...), one per service endpoint:
    HOSTNAME is the CE, SEVERITY OUTAGE or AT_RISK, START_DATE and END_DATE epoch seconds
    (FORMATED_START_DATE and FORMATED_END_DATE, 'YYYY-MM-DD HH:MM' in UTC, when those are missing),
    DESCRIPTION the reason. An entry without a host, a known severity, a start or an end is left out.
    Raises ValueError when the text is not such XML."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from None
    if root.tag != "results":
        raise ValueError(f"not a GOCDB get_downtime answer: its root element is <{root.tag}>, not <results>")
    out = []
    for element in root.iter("DOWNTIME"):
        host = (element.findtext("HOSTNAME") or "").strip()
        severity = (element.findtext("SEVERITY") or "").strip().upper()
        try:
            start = _gocdb_time(element, "START_DATE", "FORMATED_START_DATE")
            end = _gocdb_time(element, "END_DATE", "FORMATED_END_DATE")
        except ValueError:
            continue
        if not host or severity not in SEVERITIES or start is None or end is None or end <= start:
            continue
        key = element.get("PRIMARY_KEY") or element.findtext("PRIMARY_KEY") or element.get("ID")
        reason = " ".join((element.findtext("DESCRIPTION") or "").split())
        out.append(Downtime(start, end, severity, reason, ce=host, source="gocdb", id=key))
    return out
