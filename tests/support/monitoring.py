"""One monitoring scenario for the tests against Prometheus and Chromium (tests/integration/monitoring): the
real CLI against the PanDA simulator, with a queue whose pilots finish, one whose pilots exit 3, one whose
submissions fail, a PanDA outage during one propagate, then sweep, and a day of history; the real
serve-logs command serving it. Started once for the directory (package-scoped fixtures)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harvester_cli import config as config_module
from harvester_cli.config.sections import TEST_PILOT
from harvester_cli.instance import Instance
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state import monitoring, views
from harvester_cli.state.schema import HISTORY_STATES, status_history
from tests.support import ROOT
from tests.support.harness import free_port, kill_local_workers, new_state, to_toml, wait_until


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
        kill_local_workers(self.harvester_id)


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


@pytest.fixture(scope="package")
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


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="package")
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
    stop(process)
    process.stderr.close()
