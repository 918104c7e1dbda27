"""Monitoring: the worker status summary (`status`, the status page), the Prometheus metrics (after every
command, and serve-logs' /metrics), each command's runs, and the credentials' lifetimes.

Everything here reads the state database and the credential files; the only writes are a command's run
record and its counters (`after_command`). Rendering lives in site.metrics (exposition format) and
site.statuspage (HTML).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from harvester_cli import model
from harvester_cli.config import Config
from harvester_cli.errors import StateError, StateUnreachable
from harvester_cli.instance import Instance
from harvester_cli.panda import diagnostics
from harvester_cli.site.lifetimes import Credential, credentials
from harvester_cli.site.logs import redact
from harvester_cli.state import monitoring, resources, views
from harvester_cli.state.schema import HISTORY_STATES

log = logging.getLogger(__name__)

# The error code of a queued pilot retired as no longer needed (steps/retire.py), and the counters of them.
RETIRED_CODE = diagnostics.classify(model.CANCELLED, model.RETIRED, None)[0]
RETIREMENT_COUNTERS = {"harvester_cli_pilots_retired_total": "retired",
                       "harvester_cli_pilots_started_during_retirement_total": "started"}
# Commands whose runs are recorded (what cron runs); cycle also records each of its steps.
RECORDED = ("fetch-jobs", "submit", "poll", "propagate", "sweep", "cycle", "renew-proxy", "clean-logs")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> int:
    """'90m', '1h', '6h', '2d', '1w' (or plain seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: write e.g. 30m, 1h, 6h or 2d")
    return int(float(match.group(1)) * _UNITS[match.group(2) or "s"])


# -- the summary -----------------------------------------------------------------------------------

def _median(values: list[float]) -> float | None:
    if not values:
        return None
    import statistics  # 4 ms of imports (fractions, decimal) that only the summary needs

    return round(statistics.median(values), 1)


def log_path(config: Config, log_dir: str | None) -> str | None:
    """A worker's log directory relative to the log tree (what serve-logs serves under its prefix)."""
    if not log_dir:
        return None
    try:
        return Path(log_dir).relative_to(config.logs).as_posix() + "/"
    except ValueError:
        return None


def summary(instance: Instance, queues: list[str], since_seconds: int, now: float | None = None,
            examples: int = 10) -> dict:
    """Everything `status` shows, as plain JSON-able data."""
    config = instance.config
    store = instance.store
    now = time.time() if now is None else now
    since = now - since_seconds
    hours = since_seconds / 3600

    per_series: dict[tuple, dict] = {}
    for row in views.worker_counts(store, queues):
        key = (row["queue"], row["computing_element"], row["resource_type"])
        per_series.setdefault(key, {})[row["state"]] = row["count"]
    workers = [{"queue": q, "computing_element": ce, "resource_type": rt, "states": states,
                "total": sum(states.values())} for (q, ce, rt), states in sorted(per_series.items())]

    window: dict[tuple, dict] = defaultdict(lambda: {"submitted": 0, "started": 0, "finished": 0, "failed": 0,
                                                     "cancelled": 0, "missed": 0, "queued": [], "running": []})
    errors: dict[int, dict] = {}
    per_ce: Counter = Counter()   # (queue, CE, error code) -> workers that ended with it
    lost, missed, retired = [], [], []
    for w in views.workers_since(store, queues, since):
        key = (w.queue, w.computing_element or "", w.resource_type or "")
        stats = window[key]
        if (w.submit_time or 0) >= since:
            stats["submitted"] += 1
        if (w.start_time or 0) >= since:
            stats["started"] += 1
            if w.submit_time:   # never below 0: a backend's clock may be behind this host's
                stats["queued"].append(max(0.0, w.start_time - w.submit_time))
        ended = w.status in model.WORKER_FINAL and (w.end_time or w.created) >= since
        if not ended:
            continue
        stats[w.status] += 1
        if w.start_time and w.end_time:
            stats["running"].append(w.end_time - w.start_time)
        if w.status == model.FINISHED:
            continue
        code, meaning = diagnostics.classify(w.status, w.diag, w.native_exit_code, w.backend)
        code = w.error_code if w.error_code is not None else code
        example = {"worker_id": w.worker_id, "queue": w.queue, "computing_element": w.computing_element,
                   "status": w.status, "diag": (w.diag or "")[:300], "log": w.stdout_url,
                   "log_path": log_path(config, w.log_dir), "ended": model.iso_time(w.end_time)}
        entry = errors.setdefault(code if code is not None else 0, {
            "code": code, "meaning": meaning or diagnostics.meaning(code), "transient": diagnostics.transient(code),
            "count": 0, "queues": Counter()})
        entry["count"] += 1
        entry["queues"][w.queue] += 1
        per_ce[(w.queue, w.computing_element or "", code)] += 1
        entry["example"] = example   # the latest (rows come by worker id)
        if code == 1030:
            lost.append(example)
        if code == RETIRED_CODE:
            retired.append(example)
        if w.status == model.MISSED:
            missed.append(example)
    window_rows = []
    for (q, ce, rt), s in sorted(window.items()):
        window_rows.append({
            "queue": q, "computing_element": ce, "resource_type": rt,
            **{k: s[k] for k in ("submitted", "started", "finished", "failed", "cancelled", "missed")},
            "per_hour": {k: round(s[k] / hours, 2) for k in ("submitted", "started", "finished", "failed")},
            "median_queued_seconds": _median(s["queued"]), "median_running_seconds": _median(s["running"]),
        })
    top = sorted(errors.values(), key=lambda e: (-e["count"], e["code"] or 0))
    for e in top:
        e["queues"] = dict(e["queues"].most_common())
    ce_errors = [{"queue": q, "computing_element": ce, "code": code, "meaning": errors[code or 0]["meaning"],
                  "transient": errors[code or 0]["transient"], "count": n}
                 for (q, ce, code), n in sorted(per_ce.items(), key=lambda i: (-i[1], i[0][0], i[0][1], i[0][2] or 0))]

    pending = {}
    for kind in ("job", "worker"):
        found = views.pending_report_ages(store).get(kind, {"count": 0, "oldest": None})
        pending[kind] = {"count": found["count"],
                         "oldest_age_seconds": round(now - found["oldest"], 1) if found["oldest"] else None}

    runs = []
    for r in views.command_runs(store):
        runs.append({"command": r["command"], "host": r["host"], "last_end": model.iso_time(r["last_end"]),
                     "last_exit": r["last_exit"], "last_seconds": round(r["last_end"] - r["last_start"], 3),
                     "last_items": r["last_items"], "last_success": model.iso_time(r["last_success"]),
                     "since_last_success_seconds": round(now - r["last_success"], 1) if r["last_success"] else None,
                     "since_last_run_seconds": round(now - r["last_end"], 1), "runs": r["runs"],
                     "failed_runs": r["failed_runs"], "last_failure": r["last_failure"],
                     "last_failure_exit": r["last_failure_exit"],
                     "last_failure_at": model.iso_time(r["last_failure_at"]),
                     "since_last_failure_seconds": round(now - r["last_failure_at"], 1) if r["last_failure_at"]
                     else None})
    jobs = views.job_counts(store, queues)
    # Every host's retirements since the counters began: removed while queued, and started before removal.
    counted = {"retired": 0, "started": 0}
    for c in views.counters(store):
        kind = RETIREMENT_COUNTERS.get(c["name"])
        if kind and c["labels"].get("queue") in queues:
            counted[kind] += int(c["value"])
    return {
        "generated": model.iso_time(now), "harvester_id": config.harvester_id,
        "window": {"since": model.iso_time(since), "seconds": since_seconds},
        "workers": workers, "jobs": jobs, "window_stats": window_rows, "errors": top[:examples],
        "ce_errors": ce_errors,
        "lost": {"count": len(lost), "latest": lost[-examples:][::-1]},
        "missed": {"count": len(missed), "latest": missed[-examples:][::-1]},
        "retired": {"count": len(retired), "latest": retired[-examples:][::-1], "total": counted["retired"],
                    "started_during_removal": counted["started"]},
        "pending_updates": pending, "commands": runs, "running": running_now(instance, now),
        "credentials": [asdict(c) for c in credentials(config, now)],
        "login_nodes": login_nodes(store, queues, now),
        "free_resources": free_resources(instance, queues, now),
    }


def free_resources(instance: Instance, queues: list[str], now: float) -> list[dict]:
    """What each queue's batch system last said can start now, per CE (queues with free_resources): how old
    the figures are, and whether the planner would still use them (within free_resources_max_age)."""
    with instance.store.reading() as tx:
        rows = resources.of_queues(tx, queues)
    out = []
    for r in rows:
        queue = instance.config.queues.get(r["queue"])
        age = round(max(0.0, now - r["measured"]), 1)
        out.append({"queue": r["queue"], "computing_element": r["computing_element"], "workers": r["workers"],
                    "window_seconds": r["window"], "idle_nodes": r["idle_nodes"], "idle_cores": r["idle_cores"],
                    "total_cores": r["total_cores"], "waiting": r["waiting"], "source": r["source"],
                    "measured": model.iso_time(r["measured"]), "age_seconds": age,
                    "stale": queue is None or age > queue.free_resources_max_age})
    return out


def login_nodes(store, queues: list[str], now: float) -> list[dict]:
    """Per queue and harvester host, the login nodes tried: when each last answered and why it did not the
    last time; `answering` marks the one that answered the host's latest attempt (the one its runs use)."""
    rows = views.login_nodes(store, queues)
    latest: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["answered"] is not None:
            key = (r["queue"], r["host"])
            latest[key] = max(latest.get(key, 0.0), r["answered"])
    return [{"queue": r["queue"], "host": r["host"], "node": r["node"],
             "answering": r["answered"] is not None and r["answered"] == latest.get((r["queue"], r["host"]))
             and r["problem"] is None,
             "last_answer": model.iso_time(r["answered"]),
             "since_last_answer_seconds": round(now - r["answered"], 1) if r["answered"] else None,
             "last_try": model.iso_time(r["tried"]), "since_last_try_seconds": round(now - r["tried"], 1),
             "problem": r["problem"]} for r in rows]


def running_now(instance: Instance, now: float) -> list[dict]:
    """The commands running now on every host: since when, and whether one runs longer than its interval
    (the time between its last two starts on that host, what cron or a timer keeps) or its process is gone
    (seen from its own host only; the next run there forgets it)."""
    out = []
    for r in views.running_commands(instance.store):
        seconds = max(0.0, now - r["started"])
        interval = r["started"] - r["previous_start"] if r["previous_start"] else None
        here = r["host"] == instance.host
        out.append({"command": r["command"], "host": r["host"], "pid": r["pid"],
                    "started": model.iso_time(r["started"]), "seconds": round(seconds, 1),
                    "interval_seconds": round(interval, 1) if interval else None,
                    "overdue": bool(interval) and seconds > max(interval, 60.0),
                    "gone": monitoring.process_gone(r["pid"], r["started"], r["host"]) if here else None})
    return out


# -- metrics ---------------------------------------------------------------------------------------

def metric_samples(instance: Instance, now: float | None = None):
    """Every metric family's values, from the state database and the credential files."""
    from harvester_cli.site.metrics import Samples
    from harvester_cli.steps import caps, downtimes  # the planner's modules: only the metrics need them here

    config = instance.config
    store = instance.store
    now = time.time() if now is None else now
    queues = list(config.queues)
    samples = Samples(config.harvester_id)
    seen = set()
    for row in views.worker_counts(store, queues):
        seen.add((row["queue"], row["computing_element"], row["resource_type"]))
        samples.add("harvester_cli_workers", row["count"], queue=row["queue"], state=row["state"],
                    computing_element=row["computing_element"], resource_type=row["resource_type"])
    for queue in set(queues) - {s[0] for s in seen}:   # a queue without workers still shows, at zero
        for state in model.WORKER_ACTIVE:
            samples.add("harvester_cli_workers", 0, queue=queue, state=state, computing_element="",
                        resource_type=config.queues[queue].resource_types[0])
    for row in views.job_counts(store, queues):
        samples.add("harvester_cli_jobs", row["count"], queue=row["queue"], status=row["status"],
                    sub_status=row["sub_status"])
    ages = views.pending_report_ages(store)
    for kind in ("job", "worker"):
        found = ages.get(kind, {"count": 0, "oldest": None})
        samples.add("harvester_cli_pending_updates", found["count"], kind=kind)
        samples.add("harvester_cli_pending_update_oldest_age_seconds",
                    max(0.0, now - found["oldest"]) if found["oldest"] else 0, kind=kind)
    for c in credentials(config, now):
        labels = {"kind": c.kind, "profile": c.profile, "file": c.file}
        samples.add("harvester_cli_credential_problem", 1 if c.problem and c.seconds_left is None else 0, **labels)
        if c.expires is not None:
            samples.add("harvester_cli_credential_expiry_timestamp_seconds", c.expires, **labels)
        samples.add("harvester_cli_credential_remaining_seconds",
                    c.seconds_left if c.seconds_left is not None else -1, **labels)
    for r in views.command_runs(store):
        labels = {"command": r["command"], "host": r["host"]}
        samples.add("harvester_cli_command_last_run_timestamp_seconds", r["last_end"], **labels)
        if r["last_success"]:
            samples.add("harvester_cli_command_last_success_timestamp_seconds", r["last_success"], **labels)
        samples.add("harvester_cli_command_last_exit_code", r["last_exit"], **labels)
        samples.add("harvester_cli_command_duration_seconds", r["last_end"] - r["last_start"], **labels)
        samples.add("harvester_cli_command_items", r["last_items"] or 0, **labels)
        samples.add("harvester_cli_command_runs_total", r["runs"], **labels)
        samples.add("harvester_cli_command_failed_runs_total", r["failed_runs"], **labels)
        samples.add("harvester_cli_command_items_total", r["items"], **labels)
    for r in free_resources(instance, queues, now):
        labels = {"queue": r["queue"], "computing_element": r["computing_element"]}
        samples.add("harvester_cli_free_resources_timestamp_seconds", now - r["age_seconds"], **labels)
        for family, key in (("harvester_cli_free_workers", "workers"), ("harvester_cli_free_cores", "idle_cores"),
                            ("harvester_cli_free_nodes", "idle_nodes"),
                            ("harvester_cli_batch_jobs_waiting", "waiting")):
            if r[key] is not None:
                samples.add(family, r[key], **labels)
    for c in views.counters(store):
        try:
            samples.add(c["name"], c["value"], host=c["host"], **c["labels"])
        except KeyError:   # a counter an older or newer version declared: not ours to show
            continue
    for name, value, labels in downtimes.samples(instance, list(config.queues.values()), now) + caps.samples(instance):
        samples.add(name, value, **labels)
    return samples


def metrics_text(instance: Instance) -> bytes:
    from harvester_cli.site import metrics

    return metrics.render(metric_samples(instance))


def write_metrics(instance: Instance) -> Path | None:
    """Rewrite [metrics] textfile from the state database, if configured."""
    path = instance.config.metrics.textfile
    if path is None:
        return None
    from harvester_cli.site import metrics

    metrics.write_textfile(path, metric_samples(instance))
    return path


@dataclass
class Run:
    command: str
    started: float
    ended: float
    exit_code: int
    items: int | None = None
    failure: str | None = None   # why it exited non-zero (its first error)


def command_started(instance: Instance, command: str, started: float) -> int | None:
    """Record that a command runs on this host from now (`status` shows it); returns the run's id. Never
    raises: a database this code cannot use is the command's to report, in its own words."""
    try:
        if not instance.store_exists():
            return None
        return monitoring.start_run(instance.store, command, instance.host, os.getpid(), started)
    except (StateError, StateUnreachable) as exc:
        log.debug("monitoring before %s: %s", command, exc)
    except Exception as exc:   # a locked database, a full disk
        log.warning("monitoring before %s: %s: %s", command, type(exc).__name__, exc)
        log.debug("details", exc_info=True)
    return None


def after_command(instance: Instance, runs: list[Run], run_id: int | None = None) -> None:
    """Record a command's run (and a cycle's steps): it runs no more, its end, exit code and, if it failed,
    the first line of why; add what it counted to the counters, rewrite the metrics file. Never raises:
    monitoring must not turn a good run into a failed one."""
    try:
        if not instance.store_exists():
            return
        store = instance.store
        host = instance.host
        for n, run in enumerate(runs):
            monitoring.record_run(store, run.command, host, run.started, run.ended, run.exit_code, run.items,
                                  failure=redact(run.failure) if run.failure else None,
                                  run_id=run_id if n == 0 else None)
        increments: Counter = Counter()
        if "panda" in instance.__dict__:
            for (endpoint, kind), n in instance.panda.errors.items():
                increments[("harvester_cli_panda_call_errors_total",
                            monitoring.counter_key({"endpoint": endpoint, "kind": kind}))] += n
        for (family, labels), n in instance.tally.items():
            increments[(family, monitoring.counter_key(dict(labels)))] += n
        monitoring.add_counters(store, host, increments)
        monitoring.record_login_nodes(store, host, instance.contacts())
        write_metrics(instance)
    except (StateError, StateUnreachable) as exc:   # the command itself has said so, in its own line
        log.debug("monitoring after %s: %s", runs[0].command if runs else "?", exc)
    except Exception as exc:   # a locked database, a full disk, a read-only metrics directory
        log.warning("monitoring after %s: %s: %s", runs[0].command if runs else "?", type(exc).__name__, exc)
        log.debug("details", exc_info=True)


# -- history -----------------------------------------------------------------------------------------

def snapshot(instance: Instance, queues: list[str], at: float | None = None) -> int:
    return monitoring.record_snapshot(instance.store, queues, at)


def charts(instance: Instance, queues: list[str], hours: float = 24, points: int = 288,
           now: float | None = None) -> dict[str, list[tuple[int, dict[str, int]]]]:
    """Per queue, the workers per state over the last `hours`, at most `points` points (the latest
    snapshot of each bucket)."""
    now = time.time() if now is None else now
    bucket = max(60, int(hours * 3600 / points))
    out = {}
    for queue, rows in views.history(instance.store, queues, now - hours * 3600).items():
        by_bucket: dict[int, tuple[int, dict[str, int]]] = {}
        for taken, counts in rows:
            by_bucket[taken // bucket] = (taken, counts)
        out[queue] = [by_bucket[k] for k in sorted(by_bucket)]
    return out


__all__ = ["HISTORY_STATES", "RECORDED", "Credential", "Run", "after_command", "charts", "credentials",
           "metric_samples", "metrics_text", "parse_since", "snapshot", "summary", "write_metrics"]


# -- serve-logs: /status and /metrics ----------------------------------------------------------------

class Pages:
    """What serve-logs answers at /status and /metrics, made from the state database at most every
    `ttl` seconds (many browsers or scrapers at once cost one set of queries), one at a time."""

    def __init__(self, instance: Instance, prefix: str, ttl: float = 5.0, window: int = 3600):
        self.instance = instance
        self.prefix = prefix
        self.ttl = ttl
        self.window = window
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, bytes]] = {}

    def _cached(self, name: str, make) -> bytes:
        with self._lock:
            hit = self._cache.get(name)
            if hit and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            body = make()
            self._cache[name] = (time.monotonic(), body)
            return body

    def status(self) -> bytes:
        return self._cached("status", self._status)

    def metrics(self) -> bytes:
        return self._cached("metrics", lambda: metrics_text(self.instance))

    def _status(self) -> bytes:
        from datetime import datetime, timezone

        from harvester_cli.site import statuspage

        now = time.time()
        queues = list(self.instance.config.queues)
        data = summary(self.instance, queues, self.window, now)
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        links = {q: f"workers/{day}/{q}/" for q in queues if (self.instance.config.logs / "workers" / day / q).is_dir()}
        return statuspage.render(data, charts(self.instance, queues, now=now), self.prefix, now, links)
