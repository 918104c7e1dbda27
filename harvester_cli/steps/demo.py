"""`demo`: the PanDA simulator on loopback, a pull and a push queue on the local backend, a temporary
SQLite state, and working cycles until every job is final in the simulator and every worker is final."""

from __future__ import annotations

import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harvester_cli import config as config_module
from harvester_cli.config.sections import TEST_PILOT
from harvester_cli.errors import UsageError
from harvester_cli.model import WORKER_FINAL
from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state import upgrade
from harvester_cli.state.views import list_workers
from harvester_cli.steps.cycle import run_cycle
from harvester_cli.instance import Instance

PULL, PUSH = "DEMO_PULL", "DEMO_PUSH"


@dataclass
class DemoResult:
    ok: bool
    seconds: float
    cycles: int
    jobs: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    directory: str = ""


def demo_config_text(directory: Path, panda_url: str, pki: certs.TestPKI) -> str:
    """The demo's configuration file: with --keep it stays beside the state, a starting point for a site."""
    return f"""\
# harvester-cli demo configuration (harvester-cli demo --keep). The PanDA simulator it names is gone
# now: point [panda] at your PanDA server and proxy, and the queues at your backends (see
# `harvester-cli config example`), then `harvester-cli --config THIS_FILE config check`.
harvester_id = "harvester-cli-demo"
state = "{directory / 'state.db'}"
log_dir = "{directory / 'logs'}"
work_dir = "{directory / 'work'}"
lease_seconds = 60

[panda]
url = "{panda_url}"
proxy = "{pki.proxy}"
ca = "{pki.ca_file}"
retries = 2
allow_test_pilot = true        # the simulator's test pilot below; never against a real PanDA server

[queue_defaults]
backend = "local"
pilot = "{TEST_PILOT}"
n_queue_limit_worker = 10
max_workers = 20
empty_pilot_floor = 0          # a quiet end: no empty pilot kept waiting once the jobs are gone

[queues.{PULL}]
mode = "pull"

[queues.{PUSH}]
mode = "push"
"""


def check_keep(keep: Path) -> None:
    """`demo --keep DIR` writes a state, logs, certificates and config.toml into DIR: only a new or empty
    directory, so an operator's files (or an earlier demo's state) are never mixed in or overwritten."""
    if keep.is_dir():
        if any(keep.iterdir()):
            raise UsageError(f"demo --keep {keep}: the directory is not empty; name a new or empty directory "
                             f"(nothing was written)")
    elif keep.exists() or keep.is_symlink():
        raise UsageError(f"demo --keep {keep}: exists and is not a directory; name a new or empty directory")


def run_demo(jobs_per_queue: int = 3, timeout: float = 90.0, keep: Path | None = None,
             on_cycle: Callable[[int, list], None] | None = None) -> DemoResult:
    started = time.monotonic()
    if keep is not None:
        check_keep(keep)
    with tempfile.TemporaryDirectory(prefix="harvester-cli-demo-") as tmp:
        directory = keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        pki = certs.create(directory / "pki")
        with PandaSimulator(pki, finish_delay=1.0) as sim:
            ids = sim.add_jobs(PULL, jobs_per_queue, jobPars="echo pull payload; sleep 1")
            ids += sim.add_jobs(PUSH, jobs_per_queue, jobPars="echo push payload; sleep 1")
            text = demo_config_text(directory, sim.url, pki)
            config_file = directory / "config.toml"
            if keep:
                config_file.write_text(text)
            instance = Instance(config_module.parse(tomllib.loads(text), str(config_file), directory))
            upgrade.create(instance.state_url).close()   # what an operator's `db upgrade` does first
            queues = list(instance.config.queues.values())
            cycles, done = 0, False
            try:
                while not done and time.monotonic() - started < timeout:
                    cycles += 1
                    steps = run_cycle(instance, queues)
                    if on_cycle:
                        on_cycle(cycles, steps)
                    workers = list_workers(instance.store, [PULL, PUSH], limit=10_000)
                    statuses = {i: sim.job_status(i) for i in ids}
                    done = (all(s in ("finished", "failed") for s in statuses.values())
                            and all(w["status"] in WORKER_FINAL for w in workers) and bool(workers))
                    if not done:
                        time.sleep(1.0)
                jobs = [{"panda_id": i, "queue": sim.jobs[i].site, "status": sim.job_status(i)} for i in ids]
                workers = [{"worker_id": w["worker_id"], "queue": w["queue"], "status": w["status"],
                            "backend": w["backend"], "panda_ids": w["panda_ids"]}
                           for w in list_workers(instance.store, [PULL, PUSH], limit=10_000)]
            finally:
                instance.close()
        ok = done and all(j["status"] == "finished" for j in jobs) and all(w["status"] == "finished" for w in workers)
        return DemoResult(ok, time.monotonic() - started, cycles, jobs, sorted(workers, key=lambda w: w["worker_id"]),
                          str(directory) if keep else "")
