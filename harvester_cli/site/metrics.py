"""Prometheus metrics: every family harvester-cli exports, rendered in the text exposition format, and
written atomically for node_exporter's textfile collector (`[metrics] textfile`), or served by serve-logs
at /metrics.

The file is a rendering of the state database, not of one process: every command rewrites all of it
from the database (each command's last run is stored there, and so are the counters), so one command's
run never wipes another command's metrics, and two runs at once each write a complete file (the last
rename wins).

prometheus_client is imported only here, inside the calls: a cron command without `[metrics]` never
pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "harvester_cli_"

# name -> (type, help, label names). Every series also carries harvester_id.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "harvester_cli_workers": ("gauge", "Workers in the state database per queue, CE, resource type and state.",
                              ("queue", "computing_element", "resource_type", "state")),
    "harvester_cli_jobs": ("gauge", "Jobs in the state database per queue, PanDA status and pipeline step.",
                           ("queue", "status", "sub_status")),
    "harvester_cli_pending_updates": ("gauge", "Job and worker updates waiting for PanDA.", ("kind",)),
    "harvester_cli_pending_update_oldest_age_seconds": (
        "gauge", "Age of the oldest update waiting for PanDA (0 when none waits).", ("kind",)),
    "harvester_cli_credential_expiry_timestamp_seconds": (
        "gauge", "When a proxy or token expires (Unix time).", ("kind", "profile", "file")),
    "harvester_cli_credential_remaining_seconds": (
        "gauge", "Seconds left on a proxy or token when the metrics were written (negative: expired; "
                 "-1 and credential_problem: unreadable).", ("kind", "profile", "file")),
    "harvester_cli_credential_problem": (
        "gauge", "1 when a proxy or token file is missing or unreadable.", ("kind", "profile", "file")),
    "harvester_cli_command_last_run_timestamp_seconds": (
        "gauge", "When the last run of a command on a host ended (Unix time).", ("command", "host")),
    "harvester_cli_command_last_success_timestamp_seconds": (
        "gauge", "When the last run of a command on a host that exited 0 ended (Unix time).", ("command", "host")),
    "harvester_cli_command_last_exit_code": (
        "gauge", "Exit code of the last run (0 ok, 1 partial failure, 2 bad usage or configuration).",
        ("command", "host")),
    "harvester_cli_command_duration_seconds": ("gauge", "How long the last run took.", ("command", "host")),
    "harvester_cli_command_items": (
        "gauge", "Items the last run handled (jobs stored, workers submitted or checked, updates sent, ...).",
        ("command", "host")),
    "harvester_cli_command_runs_total": ("counter", "Runs of a command on a host.", ("command", "host")),
    "harvester_cli_command_failed_runs_total": (
        "counter", "Runs of a command on a host that did not exit 0.", ("command", "host")),
    "harvester_cli_command_items_total": ("counter", "Items handled by all runs.", ("command", "host")),
    "harvester_cli_panda_call_errors_total": (
        "counter", "PanDA calls that failed, per API endpoint and kind (network, http, refused).",
        ("endpoint", "kind", "host")),
    "harvester_cli_pilots_retired_total": (
        "counter", "Queued pilots nobody needed any more, removed while they still waited, per queue and CE.",
        ("queue", "computing_element", "host")),
    "harvester_cli_pilots_started_during_retirement_total": (
        "counter", "Pilots marked for retirement that had started when sweep came to remove them: left running.",
        ("queue", "computing_element", "host")),
    "harvester_cli_downtime_start_timestamp_seconds": (
        "gauge", "When a downtime of a queue or of one of its CEs starts (Unix time); one series per downtime "
                 "(under way or announced) and queue.", ("queue", "computing_element", "severity", "source", "reason")),
    "harvester_cli_downtime_end_timestamp_seconds": (
        "gauge", "When that downtime ends (Unix time).",
        ("queue", "computing_element", "severity", "source", "reason")),
    "harvester_cli_queue_down": (
        "gauge", "1 when no new worker of the queue may go anywhere now (a downtime of the queue or of every CE it "
                 "has, walltime included).", ("queue",)),
    "harvester_cli_computing_element_down": (
        "gauge", "1 when the CE fanout sends no new worker of the queue to this CE now (a downtime, walltime "
                 "included).", ("queue", "computing_element")),
    "harvester_cli_shared_cap_limit": ("gauge", "A cap several queues share ([caps.NAME]), per kind.", ("cap", "kind")),
    "harvester_cli_shared_cap_used": (
        "gauge", "What the queues of a shared cap use now over every host (workers queued; queued or running; "
                 "their cores).", ("cap", "kind")),
    "harvester_cli_free_workers": (
        "gauge", ("Workers of the queue's shape its batch system said would start now, per queue and CE "
                  "(free_resources)."), ("queue", "computing_element")),
    "harvester_cli_free_cores": ("gauge", "Idle cores (Slurm) or free slots (ARC) per queue and CE (free_resources).",
                                 ("queue", "computing_element")),
    "harvester_cli_free_nodes": ("gauge", "Idle nodes per queue and CE (free_resources, Slurm).",
                                 ("queue", "computing_element")),
    "harvester_cli_batch_jobs_waiting": (
        "gauge", "Every user's jobs waiting in the batch queue per queue and CE (free_resources: Slurm's pending jobs "
                 "of the partition, held ones too, an array once; ARC's WaitingJobs of the share). Queues sharing a "
                 "partition show the same jobs.", ("queue", "computing_element")),
    "harvester_cli_free_resources_timestamp_seconds": (
        "gauge", "When the batch system was last asked what can start now (Unix time).",
        ("queue", "computing_element")),
    "harvester_cli_submission_failures_total": (
        "counter", "Workers whose submission failed (missed), per queue and CE.", ("queue", "computing_element",
                                                                                   "host")),
    "harvester_cli_ce_errors_total": (
        "counter", ("CE and batch system errors seen (a refused submission, a hold, a failure), per queue, CE, "
                    "error code (panda.ce_errors) and whether it is transient."),
        ("queue", "computing_element", "code", "transient", "host")),
    "harvester_cli_jobs_resubmitted_total": (
        "counter", ("Push jobs given back to wait for a new worker after a transient CE error before they "
                    "started, per queue, CE and error code."), ("queue", "computing_element", "code", "host")),
    "harvester_cli_retries_abandoned_total": (
        "counter", ("Push jobs waiting for a new worker that PanDA no longer had as theirs (killed, reassigned, "
                    "ended) when asked before the retry."), ("queue", "host")),
}


@dataclass
class Samples:
    """The values of every family, as plain data: {family: [(labels, value)]}."""

    harvester_id: str
    values: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def add(self, name: str, value: float, **labels: object) -> None:
        if name not in FAMILIES:
            raise KeyError(f"{name} is not a declared metric family")
        self.values.setdefault(name, []).append(({k: "" if v is None else str(v) for k, v in labels.items()},
                                                 float(value)))


def _registry(samples: Samples):
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Collector:
        def collect(self):
            for name, (kind, help_text, labels) in FAMILIES.items():
                rows = samples.values.get(name)
                if not rows:
                    continue
                names = ["harvester_id", *labels]
                if kind == "counter":
                    family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=names)
                else:
                    family = GaugeMetricFamily(name, help_text, labels=names)
                for row_labels, value in rows:
                    family.add_metric([samples.harvester_id, *(row_labels.get(n, "") for n in labels)], value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return registry


def render(samples: Samples) -> bytes:
    """The text exposition format (what /metrics answers)."""
    from prometheus_client import generate_latest

    return generate_latest(_registry(samples))


def write_textfile(path: Path, samples: Samples) -> None:
    """Replace `path` at once (a temporary file renamed over it): node_exporter never reads half a file."""
    from prometheus_client import write_to_textfile

    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), _registry(samples))
