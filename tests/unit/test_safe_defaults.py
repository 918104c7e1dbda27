"""Loud, short failures (issue 23): each test runs the CLI as an operator or cron does and checks the exit
code and the one line that says what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harvester_cli.state import outbox
from harvester_cli.state.store import Store
from tests.support.harness import SilentServer, new_state

PILOT = "sleep 60"


def _config(tmp_path: Path, panda_url: str = "https://127.0.0.1:9/api/v1", extra: str = "", queue: str = "",
            panda: str = "", proxy: Path | None = None) -> Path:
    if proxy is None:
        proxy = tmp_path / "proxy.pem"
        proxy.write_text("not a real proxy")
        proxy.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(f'harvester_id = "safe-{tmp_path.name[-12:]}"\nstate = "{tmp_path / "state.db"}"\n'
                    f'log_dir = "{tmp_path / "logs"}"\nwork_dir = "{tmp_path / "work"}"\n{extra}\n'
                    f'[panda]\nurl = "{panda_url}"\nproxy = "{proxy}"\ntimeout = 1\nretries = 2\n{panda}\n'
                    f'[queues.PULL]\nmode = "pull"\nbackend = "local"\npilot = "{PILOT}"\n'
                    f'[queues.PUSH]\nmode = "push"\nbackend = "local"\npilot = "{PILOT}"\n{queue}')
    return path


def _cli(config: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _one_error_line(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harvester-cli: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# -- a PanDA server that accepts connections and never answers --------------------------------------

@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def test_a_silent_panda_costs_one_call_and_its_retries_not_one_per_call(tmp_path, silent, pki):
    config = _config(tmp_path, f"https://127.0.0.1:{silent.port}/api/v1", proxy=pki.proxy)
    new_state(tmp_path / "state.db")
    with Store(f"sqlite:///{tmp_path / 'state.db'}").transaction() as tx:   # an update waiting for PanDA
        outbox.enqueue(tx, outbox.JOB, [(7, "PUSH", {"job_id": 7, "job_status": "finished"}, True)])
    result = _cli(config, "--json", "cycle")
    assert result.returncode == 1, result.stderr
    # the first call (the registration heartbeat) and its retry reached the server; every other call was skipped
    assert len(silent.connections) <= 2, len(silent.connections)
    steps = {s["step"]: s for s in json.loads(result.stdout)["steps"]}
    assert all(steps[name]["partial"] for name in ("fetch-jobs", "propagate")), steps
    lines = result.stderr.strip().splitlines()
    assert sum("Read timed out" in line for line in lines) == 1 and len(lines) <= 6, result.stderr   # why, once
    assert outbox.pending_counts(Store(f"sqlite:///{tmp_path / 'state.db'}")) == {"job": 1}   # nothing lost


@pytest.mark.parametrize("scheme", ["postgresql", "mariadb"])
def test_db_commands_give_up_on_a_silent_or_down_database_server_within_db_timeout(tmp_path, silent, scheme):
    """db upgrade waited 130 s on a server that never answers, whatever db_timeout said, and called one that
    is down a configuration error (exit 2, two lines): now exit 1 and one line, as every other command."""
    from tests.support.harness import free_port

    config = _config(tmp_path, extra="[instance]\ndb_timeout = 2")
    # (MariaDB's client waits db_timeout + 5 s for a silent server's greeting: db upgrade alone there)
    commands = [("db", "upgrade"), ("db", "current")] if scheme == "postgresql" else [("db", "upgrade")]
    for port, cases, words in ((silent.port, commands, "time"), (free_port(), [("db", "upgrade")], "refused")):
        url = f"{scheme}://harvester:pw-never-shown@127.0.0.1:{port}/harvester"
        for command in cases:
            line = _one_error_line(_cli(config, "--state", url, *command, timeout=60), 1, "no answer", "next run tries again")
            assert words in line.lower() and "pw-never-shown" not in line, (command, line)


# -- the host, checked before the work starts ---------------------------------------------------------

def test_work_commands_refuse_a_missing_proxy_as_config_check_does(tmp_path):
    config = _config(tmp_path)
    new_state(tmp_path / "state.db")
    (tmp_path / "proxy.pem").unlink()
    for command in (("config", "check"), ("cycle",), ("submit",), ("propagate",)):
        _one_error_line(_cli(config, *command), 2, "[panda] proxy:", "No such file")


def test_a_log_dir_below_a_file_is_refused_naming_the_key(tmp_path):
    config = _config(tmp_path)
    config.write_text(config.read_text().replace(f'log_dir = "{tmp_path / "logs"}"', 'log_dir = "/etc/hostname/logs"'))
    new_state(tmp_path / "state.db")
    for command in (("config", "check"), ("cycle",)):
        _one_error_line(_cli(config, *command), 2, "log_dir", "/etc/hostname is not a directory")


def test_a_log_url_without_a_scheme_is_refused(tmp_path):
    config = _config(tmp_path, extra='log_url = "myhost.example.org:8080/logs"')
    _one_error_line(_cli(config, "config", "check"), 2, "log_url", "http:// or https://")


def test_a_queue_defaults_mistake_is_one_line_under_queue_defaults(tmp_path):
    config = _config(tmp_path)
    config.write_text(config.read_text() + '\n[queue_defaults]\nmax_workers = -1\n')
    _one_error_line(_cli(config, "config", "check"), 2, "[queue_defaults] max_workers", "must not be negative")


BLOCK = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("htcondor2", "classad2", "pyarcrest"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Blocker())
sys.argv = ["harvester-cli", *sys.argv[1:]]
from harvester_cli.cli import main
main()
"""


@pytest.mark.parametrize("backend, extra, options", [
    ("htcondor", "htcondor", 'ces = [{endpoint = "ce.example.org:9619"}]'),
    ("arc", "arc", 'endpoints = ["https://arc.example.org/arex"]'),
])
def test_a_missing_client_library_is_refused_at_start_naming_the_extra(tmp_path, backend, extra, options):
    config = _config(tmp_path, queue=f'[queues.GRID]\nmode = "pull"\nbackend = "{backend}"\npilot = "true"\n'
                                      f'[queues.GRID.backend_options]\n{options}\n')
    new_state(tmp_path / "state.db")
    for command in (("config", "check"), ("submit",)):
        result = subprocess.run([sys.executable, "-c", BLOCK, "--config", str(config), *command],
                                capture_output=True, text=True, timeout=60)
        _one_error_line(result, 2, "[queues.GRID]", f"pip install 'harvester-cli[{extra}]'")


# -- a backend that cannot be asked, and Ctrl-C ------------------------------------------------------

HTCONDOR_NOWHERE = {"mode": "pull", "backend": "htcondor", "pilot": "true", "empty_pilot_floor": 1,
                    "backend_options": {"schedd": "nowhere", "collector": "127.0.0.1:9"}}


def test_a_backend_outage_is_partial_every_run_and_its_pending_workers_end_after_the_grace(harness, sim):
    harness.write_config({"HTC": {**HTCONDOR_NOWHERE, "lost_grace_seconds": 3600}})
    first = harness.cli("submit")
    assert first.returncode == 1 and "the next submit repairs these workers" in first.stderr, first.stderr
    second = harness.cli("submit")   # the repair cannot ask the schedd either: not a quiet exit 0
    assert second.returncode == 1 and "could not be asked" in second.stderr, second.stderr
    workers = harness.cli_json("workers")["workers"]
    assert [w["status"] for w in workers] == ["pending"]   # within the grace: it may still exist
    harness.write_config({"HTC": {**HTCONDOR_NOWHERE, "lost_grace_seconds": 0}})
    third = harness.cli("submit")
    assert third.returncode == 1 and "ended missed" in third.stderr, third.stderr
    (worker,) = [w for w in harness.cli_json("workers")["workers"] if w["worker_id"] == workers[0]["worker_id"]]
    assert worker["status"] == "missed" and "could not be asked" in worker["diag"], worker


@pytest.mark.parametrize("point, adopted", [("before_backend_submit", 0), ("after_backend_submit", 100)])
def test_ctrl_c_in_submit_withdraws_what_the_backend_does_not_have(harness, sim, point, adopted):
    """Interrupted with 250 workers recorded: those the backend has are adopted, the others end cancelled
    (not missed: nothing failed), and the operator is told how many of each."""
    harness.write_config({"Q": {"mode": "pull", "pilot": PILOT, "max_workers": 1000}})
    result = harness.cli("submit", "--count", "250", env={"HARVESTER_CLI_INTERRUPT_AT": point})
    assert result.returncode == 130, result.stderr
    assert (f"interrupted: 250 worker(s) recorded but not submitted: {adopted} adopted (the backend had them), "
            f"{250 - adopted} cancelled") in result.stderr, result.stderr
    statuses = [w["status"] for w in harness.cli_json("workers", "--limit", "1000")["workers"]]
    assert statuses.count("cancelled") == 250 - adopted and statuses.count("submitted") == adopted
    assert "missed" not in statuses and "pending" not in statuses
