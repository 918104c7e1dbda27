"""Monitoring against the real things: Debian's prometheus-node-exporter serving the [metrics] textfile,
Debian's prometheus scraping it (and serve-logs' /metrics directly), PromQL through Prometheus's HTTP API.

The scenario every test reads (tests/support/monitoring.py): the real CLI against the PanDA simulator,
with a queue whose pilots finish, one whose pilots exit 3, one whose submissions fail, a PanDA outage
during one propagate, then sweep. Every number Prometheus shows is compared with the state database.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

from harvester_cli import config as config_module
from harvester_cli.state import views
from tests.support import ROOT
from tests.support.harness import free_port, wait_until
from tests.support.monitoring import need, start, stop

DASHBOARD = ROOT / "contrib" / "grafana" / "harvester-cli.json"


# -- Prometheus and node_exporter ---------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, promql: str) -> list[dict]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]

    def values(self, promql: str, *keys: str) -> dict[tuple, float]:
        return {tuple(r["metric"].get(k, "") for k in keys): float(r["value"][1]) for r in self.query(promql)}

    def names(self) -> set[str]:
        return set(requests.get(f"{self.url}/api/v1/label/__name__/values", timeout=10).json()["data"])


@pytest.fixture(scope="module")
def prometheus(site, serve_logs, tmp_path_factory):
    exporter_bin = need("prometheus-node-exporter", "prometheus-node-exporter")
    prometheus_bin = need("prometheus", "prometheus")
    base = tmp_path_factory.mktemp("prometheus")
    exporter_port, prometheus_port = free_port(), free_port()
    exporter = start([exporter_bin, f"--web.listen-address=127.0.0.1:{exporter_port}", "--collector.disable-defaults",
                       "--collector.textfile", f"--collector.textfile.directory={site.textfile_dir}"],
                      base / "node-exporter.log")
    (base / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}"]
  - job_name: harvester-cli
    static_configs:
      - targets: ["{serve_logs.removeprefix('http://')}"]
""")
    server = start([prometheus_bin, f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'data'}",
                     f"--web.listen-address=127.0.0.1:{prometheus_port}"], base / "prometheus.log")
    client = Prometheus(f"http://127.0.0.1:{prometheus_port}")

    def scraped() -> bool:
        for process, name in ((exporter, "node-exporter"), (server, "prometheus")):
            if process.poll() is not None:
                raise AssertionError(f"{name} ended:\n{(base / f'{name}.log').read_text()[-2000:]}")
        try:
            up = client.values("up", "job")
        except (requests.ConnectionError, ValueError, KeyError):
            return False
        return up.get(("node",)) == 1 and up.get(("harvester-cli",)) == 1 and \
            bool(client.query('harvester_cli_workers{job="node"}'))

    try:
        wait_until(scraped, timeout=60, interval=0.5, what="Prometheus scraping node_exporter and serve-logs")
        yield client
    finally:
        stop(server)
        stop(exporter)


@pytest.mark.metrics
def test_worker_counts_in_prometheus_are_the_state_database(site, prometheus):
    expected = {(r["queue"], r["computing_element"], r["resource_type"], r["state"]): r["count"]
                for r in views.worker_counts(site.instance().store, list(site.config.queues))}
    assert expected[("GOOD", "localhost", "SCORE", "finished")] == 2
    assert expected[("FAIL", "localhost", "SCORE", "failed")] == 2
    assert expected[("BROKEN", "", "SCORE", "missed")] == 2
    for job in ("node", "harvester-cli"):   # through the textfile and scraped directly from serve-logs
        got = prometheus.values(f'harvester_cli_workers{{job="{job}", harvester_id="{site.harvester_id}"}}',
                                "queue", "computing_element", "resource_type", "state")
        assert got == expected, job
    totals = prometheus.values('sum by (state) (harvester_cli_workers{job="node"})', "state")
    assert totals == {("finished",): 3, ("failed",): 2, ("missed",): 2}
    jobs = prometheus.values('harvester_cli_jobs{job="node"}', "queue", "status", "sub_status")
    assert jobs == {("PUSH", "finished", "done"): 1}


@pytest.mark.metrics
def test_every_command_keeps_its_metrics_after_the_others_ran(site, prometheus):
    """sweep ran last; submit, poll and propagate are still there, with the state database's numbers."""
    runs = {r["command"]: r for r in views.command_runs(site.instance().store)}
    assert set(runs) == {"fetch-jobs", "submit", "poll", "propagate", "sweep"}
    success = prometheus.values('harvester_cli_command_last_success_timestamp_seconds{job="node"}', "command")
    assert success == {(c,): pytest.approx(r["last_success"], abs=1e-3) for c, r in runs.items()}
    exits = prometheus.values('harvester_cli_command_last_exit_code{job="node"}', "command")
    assert exits == {("fetch-jobs",): 0, ("submit",): 1, ("poll",): 0, ("propagate",): 0, ("sweep",): 0}   # BROKEN's
    # submit failed
    failed = prometheus.values('harvester_cli_command_failed_runs_total{job="node"}', "command")
    assert failed[("propagate",)] == 1 and failed[("sweep",)] == 0
    items = prometheus.values('harvester_cli_command_items{job="node"}', "command")
    assert items[("poll",)] == runs["poll"]["last_items"]
    total = prometheus.values('harvester_cli_command_items_total{job="node"}', "command")
    assert total[("propagate",)] == runs["propagate"]["items"] >= 8   # every worker's update and the job's


@pytest.mark.metrics
def test_counters_of_panda_errors_and_submission_failures(site, prometheus):
    errors = prometheus.values('harvester_cli_panda_call_errors_total{job="node"}', "endpoint", "kind")
    assert errors == {("harvester/heartbeat", "http"): 1}
    failures = prometheus.values('harvester_cli_submission_failures_total{job="node"}', "queue", "computing_element")
    assert failures == {("BROKEN", ""): 2}


@pytest.mark.metrics
def test_pending_updates_and_credential_lifetimes(site, prometheus):
    from harvester_cli.site.proxies import inspect_proxy
    from harvester_cli.steps.monitor import credentials

    pending = prometheus.values('harvester_cli_pending_updates{job="node"}', "kind")
    assert pending == {("job",): 0, ("worker",): 0}   # the second propagate sent everything
    (proxy,) = [c for c in credentials(site.config) if c.kind == "proxy"]
    expiry = prometheus.values('harvester_cli_credential_expiry_timestamp_seconds{job="node"}', "profile", "file")
    assert expiry == {("panda", proxy.file): proxy.expires}
    left = prometheus.values('harvester_cli_credential_expiry_timestamp_seconds{job="node"} - time()', "profile")
    assert 0 < left[("panda",)] <= proxy.seconds_left
    assert proxy.expires == inspect_proxy(config_module.ProxyProfile("p", Path(proxy.file), [])).not_after


@pytest.mark.metrics
def test_grafana_dashboard_queries_run_on_real_prometheus(site, prometheus):
    """Every metric the dashboard's queries name exists in Prometheus, and every query runs."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    known = prometheus.names()
    for expr in exprs:
        for name in set(re.findall(r"harvester_cli_[a-z_]+", expr)):
            assert name in known, (name, expr)
        prometheus.query(expr.replace("$harvester_id", site.harvester_id).replace("$queue", ".*")
                         .replace("$__rate_interval", "1m").replace("$__range", "1h"))
