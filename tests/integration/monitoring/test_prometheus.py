"""Monitoring against the real things: Debian's prometheus-node-exporter serving the [metrics] textfile,
Debian's prometheus scraping it (and serve-logs' /metrics directly), PromQL through Prometheus's HTTP API;
and the status page in Debian's headless Chromium through selenium and chromium-driver.

One scenario feeds every test: the real CLI against the PanDA simulator, with a queue whose pilots
finish, one whose pilots exit 3, one whose submissions fail, a PanDA outage during one propagate, then
sweep. Every number the peers show is compared with the state database.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harvester_cli import config as config_module
from harvester_cli.config.sections import TEST_PILOT
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state import monitoring, views
from harvester_cli.state.schema import HISTORY_STATES, status_history
from harvester_cli.instance import Instance
from tests.conftest import new_state, to_toml, wait_until

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "contrib" / "grafana" / "harvester-cli.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if not path:
        pytest.fail(f"{binary} is not installed: `bash scripts/test` as root installs scripts/apt-packages.txt "
                    f"(apt-get install {package})")
    return path


class Site:
    """The scenario's configuration, state database and CLI."""

    def __init__(self, base: Path, sim: PandaSimulator, pki):
        self.base = base
        self.sim = sim
        self.textfile_dir = base / "textfile"
        self.harvester_id = f"mon-{os.getpid()}"
        data = {
            "harvester_id": self.harvester_id, "state": str(base / "state.db"), "log_dir": str(base / "logs"),
            "work_dir": str(base / "work"), "log_url": "http://127.0.0.1:8080/logs",
            "panda": {"url": sim.url, "proxy": str(pki.proxy), "ca": str(pki.ca_file), "retries": 2, "timeout": 20,
                      "allow_test_pilot": True},
            "metrics": {"textfile": str(self.textfile_dir / "harvester-cli.prom")},
            "queues": {
                "GOOD": {"mode": "pull", "backend": "local", "pilot": TEST_PILOT},
                "PUSH": {"mode": "push", "backend": "local", "pilot": TEST_PILOT},
                "FAIL": {"mode": "pull", "backend": "local", "pilot": "/bin/sh -c 'echo pilot fails; exit 3'"},
                # the queue's work directory is a file: the local backend cannot start the worker (missed)
                "BROKEN": {"mode": "pull", "backend": "local", "pilot": TEST_PILOT,
                           "backend_options": {"work_dir": str(base / "broken-work")}},
            },
        }
        (base / "broken-work").mkdir()
        (base / "broken-work" / "BROKEN").write_text("")
        self.config_path = base / "config.toml"
        self.config_path.write_text(to_toml(data))
        new_state(data["state"])
        self.config = config_module.load(self.config_path)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "XDG_STATE_HOME": str(self.base / "xdg"), "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(self.config_path), *args],
                              capture_output=True, text=True, env=env, timeout=180, cwd=ROOT)

    def instance(self) -> Instance:
        return Instance(self.config)

    def kill_workers(self) -> None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if f"HARVESTER_ID={self.harvester_id}\0".encode() in (entry / "environ").read_bytes():
                        os.killpg(int(entry.name), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass


def add_a_day_of_history(instance: Instance, now: float) -> None:
    """Snapshots every 10 minutes over the last day, as a day of polls would leave them: GOOD ramps up
    and down, FAIL keeps failing."""
    store = instance.store
    with store.transaction() as conn:
        ids = monitoring.series_ids(conn, [("GOOD", "localhost", "SCORE"), ("FAIL", "localhost", "SCORE")])
        rows = []
        for i in range(1, 144):
            taken = int(now - 86400 + i * 600)
            running = 5 + int(5 * (1 - abs(i - 72) / 72))
            rows.append({"taken": taken, "series_id": ids[("GOOD", "localhost", "SCORE")],
                         **{s: 0 for s in HISTORY_STATES}, "running": running, "submitted": i % 3, "finished": i // 10})
            rows.append({"taken": taken, "series_id": ids[("FAIL", "localhost", "SCORE")],
                         **{s: 0 for s in HISTORY_STATES}, "failed": i // 5})
        conn.execute(status_history.insert(), rows)


@pytest.fixture(scope="module")
def site(tmp_path_factory, pki):
    base = tmp_path_factory.mktemp("monitoring")
    with PandaSimulator(pki, finish_delay=0.0) as sim:
        site = Site(base, sim, pki)
        try:
            sim.add_jobs("GOOD", 2)
            sim.add_jobs("PUSH", 1)
            assert site.cli("fetch-jobs").returncode == 0
            for queue in ("GOOD", "PUSH", "FAIL", "BROKEN"):
                result = site.cli("submit", "--queue", queue, "--count", "2")
                assert result.returncode in (0, 1), result.stderr
            store = site.instance().store

            def all_final() -> bool:
                site.cli("poll")
                return not any(r["state"] in ("pending", "submitted", "running", "idle")
                               for r in views.worker_counts(store, list(site.config.queues)))

            wait_until(all_final, timeout=90, interval=1, what="every worker final")
            sim.fail_next = [503, 503]   # the heartbeat of this propagate fails (both tries)
            assert site.cli("propagate").returncode == 1
            assert site.cli("propagate").returncode == 0
            assert site.cli("sweep").returncode == 0
            add_a_day_of_history(site.instance(), time.time())
            yield site
        finally:
            site.kill_workers()


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


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def serve_logs(site):
    """The real serve-logs command on a free port (Prometheus scrapes its /metrics directly)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "harvester_cli", "--config", str(site.config_path), "serve-logs", "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve-logs ended: {process.stderr.read().decode()}")
        try:
            return requests.get(f"{url}/robots.txt", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(up, what="serve-logs listening")
    yield url
    _stop(process)
    process.stderr.close()


@pytest.fixture(scope="module")
def prometheus(site, serve_logs, tmp_path_factory):
    exporter_bin = need("prometheus-node-exporter", "prometheus-node-exporter")
    prometheus_bin = need("prometheus", "prometheus")
    base = tmp_path_factory.mktemp("prometheus")
    exporter_port, prometheus_port = free_port(), free_port()
    exporter = _start([exporter_bin, f"--web.listen-address=127.0.0.1:{exporter_port}", "--collector.disable-defaults",
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
    server = _start([prometheus_bin, f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'data'}",
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
        _stop(server)
        _stop(exporter)


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


# -- the status page in Chromium ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    need("chromium", "chromium")
    driver_path = need("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2400",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path, log_output=str(tmp_path_factory.getbasetemp()
                                                                              / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(site, serve_logs, browser, tmp_path_factory):
    browser.get(f"{serve_logs}/status")
    screenshot = tmp_path_factory.getbasetemp() / "status-page.png"
    browser.save_screenshot(str(screenshot))
    return browser, screenshot


@pytest.mark.browser
def test_status_page_loads_self_contained_without_console_errors(page):
    from selenium.webdriver.common.by import By

    driver, screenshot = page
    assert screenshot.stat().st_size > 10_000
    assert driver.find_element(By.ID, "harvester-id").text.startswith("mon-")
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == []
    # nothing was loaded beside the page itself: no script, font, stylesheet or image from anywhere
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert driver.find_elements(By.TAG_NAME, "script") == []


@pytest.mark.browser
def test_status_page_tables_match_the_state_database(site, page):
    from selenium.webdriver.common.by import By

    driver, _ = page
    store = site.instance().store
    for row in views.worker_counts(store, list(site.config.queues)):
        cell = driver.find_element(By.CSS_SELECTOR, f'#workers td[data-queue="{row["queue"]}"][data-ce='
                                                    f'"{row["computing_element"]}"][data-state="{row["state"]}"]')
        assert int(cell.text) == row["count"], row
    pending = views.pending_report_ages(store)
    for kind in ("job", "worker"):
        cell = driver.find_element(By.CSS_SELECTOR, f'#pending td[data-pending="{kind}"]')
        assert int(cell.text) == pending.get(kind, {"count": 0})["count"]
    runs = {r["command"]: r["last_exit"] for r in views.command_runs(store)}
    for command, code in runs.items():
        assert int(driver.find_element(By.CSS_SELECTOR, f'#runs td[data-exit="{command}"]').text) == code
    # the pilots that exited 3 are the most frequent error, counted as the database has them
    assert int(driver.find_element(By.CSS_SELECTOR, '#errors td[data-count="1060"]').text) == 2
    assert int(driver.find_element(By.CSS_SELECTOR, '#errors td[data-count="1041"]').text) == 2


@pytest.mark.browser
def test_status_page_charts_render_the_history(site, page):
    from selenium.webdriver.common.by import By

    driver, _ = page
    charts = {svg.get_attribute("data-queue"): svg for svg in driver.find_elements(By.CSS_SELECTOR, "svg[data-queue]")}
    assert set(charts) == set(site.config.queues)
    good = charts["GOOD"]
    assert good.size["width"] > 300 and good.size["height"] > 100   # laid out and drawn, not collapsed
    lines = {p.get_attribute("data-state"): p for p in good.find_elements(By.CSS_SELECTOR, "polyline.series")}
    assert {"running", "submitted", "finished"} <= set(lines)
    running = lines["running"]
    assert len(running.get_attribute("points").split()) >= 100   # a day of snapshots, bucketed
    box = driver.execute_script("const b = arguments[0].getBBox(); return [b.width, b.height];", running)
    assert box[0] > 200 and box[1] > 10


@pytest.mark.browser
def test_status_page_links_lead_to_the_worker_logs(site, serve_logs, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{serve_logs}/status")
    link = browser.find_element(By.CSS_SELECTOR, '#errors td[data-code="1060"] ~ td a')
    worker_id = link.text
    link.click()
    wait_until(lambda: "Index of" in browser.title, what="the worker's log directory")
    assert worker_id in browser.current_url and "pilot.out" in browser.page_source
    browser.find_element(By.LINK_TEXT, "pilot.out").click()
    wait_until(lambda: "pilot fails" in browser.page_source, what="the pilot's output")
