"""The CLI and the library against the PanDA simulator: configurations (TOML), a state database made as
`db upgrade` makes it, the CLI run in a subprocess, and waiting for a goal instead of sleeping."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from harvester_cli import config as config_module
from harvester_cli.config.sections import TEST_PILOT
from harvester_cli.instance import Instance
from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.steps.cycle import run_cycle


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):   # an inline table (in a list: [[table]] entries)
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)   # "+GoAhead" needs quotes


def to_toml(data: dict, prefix: str = "") -> str:
    """Enough TOML for test configurations (scalars, lists, nested tables)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((f"{prefix}{_toml_key(key)}", value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    for name, table in tables:
        text += f"\n[{name}]\n" + to_toml(table, f"{name}.")
    return text


def new_state(url_or_path) -> str:
    """Create a state database as `harvester-cli db upgrade` does (no other command creates one)."""
    from harvester_cli.state import upgrade

    url = config_module.state_url_from(str(url_or_path))
    upgrade.create(url).close()
    return url


class Harness:
    """Builds configurations for the simulator and runs the CLI against them."""

    def __init__(self, tmp_path: Path, sim: PandaSimulator, pki: certs.TestPKI, harvester_id: str):
        self.tmp_path = tmp_path
        self.sim = sim
        self.pki = pki
        self.harvester_id = harvester_id

    def config_data(self, queues: dict, **overrides) -> dict:
        data = {
            "harvester_id": self.harvester_id, "state": str(self.tmp_path / "state.db"),
            "log_dir": str(self.tmp_path / "logs"), "work_dir": str(self.tmp_path / "work"),
            "log_url": "http://127.0.0.1:8080/logs",
            "panda": {"url": self.sim.url, "proxy": str(self.pki.proxy), "ca": str(self.pki.ca_file),
                      "retries": 2, "timeout": 20, "allow_test_pilot": True},
            "queues": {name: {"backend": "local", "pilot": TEST_PILOT, **q} for name, q in queues.items()},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return data

    def instance(self, queues: dict, **overrides) -> Instance:
        instance = Instance(config_module.parse(self.config_data(queues, **overrides), "<test>", self.tmp_path))
        new_state(instance.state_url)
        return instance

    def write_config(self, queues: dict, **overrides) -> Path:
        """The configuration file, and its state database created (as an operator's `db upgrade` would)."""
        data = self.config_data(queues, **overrides)
        path = self.tmp_path / "config.toml"
        path.write_text(to_toml(data))
        new_state(data["state"])
        return path

    def cli(self, *args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "XDG_CONFIG_HOME": str(self.tmp_path / "xdg-config"),
                    "XDG_STATE_HOME": str(self.tmp_path / "xdg-state"), **(env or {})}
        result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(self.tmp_path / "config.toml"),
                                 *args], capture_output=True, text=True, env=full_env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"harvester-cli {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def cli_json(self, *args: str, **kwargs) -> dict:
        result = self.cli("--json", *args, **kwargs)
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    def kill_workers(self) -> None:
        """Stop every local worker process this test's harvester started."""
        kill_local_workers(self.harvester_id)


def kill_local_workers(harvester_id: str) -> None:
    """Every pilot process of this harvester id still alive (their HARVESTER_ID in the environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"HARVESTER_ID={harvester_id}\0".encode() in environ:
            try:
                os.killpg(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def hold_panda_counts(sim, monkeypatch) -> None:
    """PanDA's activated-job counts stay as they were made when the jobs came, and the client is told so.
    With the minute's refresh, a test that expects exactly one pilot per job fails when a refresh falls
    between a pilot's start and its taking the job (it started before the refresh, so the client does not
    take it off the counts, which still show its job: an empty pilot more, as on a real site). Call it
    right after add_jobs."""
    from harvester_cli.steps import submit

    sim._stop_refresher.set()
    monkeypatch.setattr(submit, "stats_made", lambda refresh, now: sim._stats_snapshot[0])


def cycle_until(instance, predicate, timeout=40.0, what="cycle goal", context=None):
    """Run `cycle` on every queue of the instance until the predicate holds; on timeout the message also
    carries `context()` (the peer's view: its jobs, its logs) when given."""
    queues = list(instance.config.queues.values())

    def step():
        run_cycle(instance, queues)
        return predicate()

    try:
        return wait_until(step, timeout, 0.3, what)
    except AssertionError as exc:
        if context is None:
            raise
        raise AssertionError(f"{exc}\n{context()}") from None


def rows(instance, table, *where):
    """The table's rows (matching `where`) in the state database, in the order of its first column."""
    with instance.store.reading() as conn:
        return conn.execute(select(table).where(*where).order_by(table.c[list(table.c.keys())[0]])).all()


def free_port() -> int:
    """A loopback TCP port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentServer:
    """Accepts TCP connections on loopback and never says a word: what a hung PanDA or database server looks
    like."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.connections:
            conn.close()
