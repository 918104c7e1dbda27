"""This host's service metrics as PanDA Harvester's service monitor sends them to PanDA
(`harvester/update_service_metrics`), which PanDA's monitor shows per harvester instance:

  rss_mib            resident memory of this process, MiB (Harvester: its master process and children)
  memory_pc          that memory as a percentage of the host's RAM
  cpu_pc             CPU time of this process over its life, as a percentage of all the host's CPUs
  volume_<name>_pc   used percentage of a file system, as `df -P` computes it (used / (used + available))
  cert_lifetime      {proxy file: hours left, rounded}

All values are rounded to 2 decimals like Harvester's; the JSON text must fit PanDA's 4000-byte column.
Standard library only (Linux /proc, statvfs).
"""

from __future__ import annotations

import json
import os
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

MAX_BYTES = 4000   # HARVESTER_METRICS.METRICS is VARCHAR2(4000)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # the peak: better than nothing


def _process_age() -> float | None:
    """Seconds since this process started (from /proc: start time in clock ticks after boot)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 1e-3)
    except (OSError, ValueError, IndexError):
        return None


def volume_used_pc(path: Path) -> float | None:
    """Used percentage of the file system holding `path` (its nearest existing parent), like df's Use%."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    used = st.f_blocks - st.f_bfree
    total = used + st.f_bavail
    return round(100.0 * used / total, 2) if total else None


def collect(volumes: dict[str, Path], cert_hours: dict[str, float]) -> dict:
    """The metrics dict; `volumes` names the file systems to report, {name: a path on it}."""
    rss = _rss_bytes()
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    times = os.times()
    age = _process_age()
    cpu = (times.user + times.system) / age / (os.cpu_count() or 1) * 100 if age else 0.0
    metrics: dict = {"rss_mib": round(rss / 2**20, 2), "memory_pc": round(100.0 * rss / ram, 2) if ram else None,
                     "cpu_pc": round(cpu, 2)}
    for name, path in volumes.items():
        metrics[f"volume_{name}_pc"] = volume_used_pc(path)
    metrics["cert_lifetime"] = {str(p): int(round(h)) for p, h in cert_hours.items()}
    return metrics


def encode(metrics: dict) -> str:
    """The JSON text PanDA stores, within its 4000 bytes: proxies with the longest paths go first if not."""
    text = json.dumps(metrics, separators=(", ", ": "))
    lifetimes = dict(metrics.get("cert_lifetime") or {})
    while len(text.encode()) > MAX_BYTES and lifetimes:
        lifetimes.pop(max(lifetimes, key=len))
        text = json.dumps({**metrics, "cert_lifetime": lifetimes}, separators=(", ", ": "))
    return text


def entry(metrics: dict, host: str, at: float | None = None) -> list:
    """One element of update_service_metrics' `metrics` list: [creation time (UTC, microseconds), host, JSON]."""
    when = datetime.fromtimestamp(time.time() if at is None else at, timezone.utc)
    return [when.strftime("%Y-%m-%d %H:%M:%S.%f"), host[:100], encode(metrics)]
