"""A poll of N workers through a login node over SSH, against the same poll run where Slurm's commands work.

    python bench/bench_slurm_ssh.py [--workers 500] [--rounds 7]

Needs root, Slurm and OpenSSH's server (scripts/apt-packages.txt): it builds the site of the ssh tests
(tests/support/login_nodes.py: a Slurm cluster in a network namespace, a login node with Debian's sshd, the
account hclogin with an empty profile) and tears it down at the end. N workers are submitted held (one job
array, so nothing runs) twice: through the login node, and by the same backend without login_nodes inside
the cluster's namespace, where the Slurm commands reach slurmctld directly ("local": a harvester on a host
that can submit). Each has a state database of its workers, made held by an untimed first poll, so the timed
polls change nothing and write nothing. Then, per round, interleaved:

  local                backend.check() of the N workers, in the cluster's namespace: one squeue, parsed, mapped
  ssh, connection open backend.check() through the run's SSH connection, already open (a poll's later pages,
                       or the second queue of a run)
  ssh, whole run       a new transport: connect to the login node, the same check, close the connection (what
                       one `poll` run pays for its backend)
  `harvester-cli poll` the command (a process of its own, start-up and state database included), local and
                       through the login node

The table shows medians over the rounds. Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_instance(directory: Path, options: dict):
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance

    proxy = directory / "proxy.pem"   # never used: poll does not call PanDA, but a configuration names a credential
    if not proxy.exists():
        proxy.write_text("not a proxy")
        proxy.chmod(0o600)
    data = {"harvester_id": "bench", "state": str(directory / "state.db"), "log_dir": str(directory / "logs"),
            "work_dir": str(directory / "work"),
            "panda": {"url": "https://127.0.0.1:1", "proxy": str(proxy)},   # never contacted
            "queues": {"BENCH": {"mode": "pull", "backend": "slurm", "pilot": "true",
                                 "backend_options": {"squeue_cache_seconds": 0, **options}}}}
    return Instance(config_module.parse(data, "<bench>", directory)), data


def refs(batch: list[tuple[int, str]]):
    from harvester_cli.backends.base import WorkerRef

    return [WorkerRef(w, "BENCH", b, "bench", None, "held", None, submit_time=time.time()) for w, b in batch]


def poll_command(directory: Path, prefix: tuple[str, ...] = ()) -> float:
    """`harvester-cli poll` of the instance in `directory` (prefixed by nsenter for the local one): seconds."""
    started = time.perf_counter()
    result = subprocess.run([*prefix, sys.executable, "-m", "harvester_cli", "--config", str(directory / "config.toml"),
                             "poll"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"harvester-cli poll failed: {result.stderr}")
    return seconds


def prepare(directory: Path, options: dict, workers: int) -> tuple[list[tuple[int, str]], float]:
    """Submit the workers held, write their state database and the configuration, poll once (they become
    held there). Returns (worker id, batch id) per worker and the submit's seconds."""
    from sqlalchemy import insert

    from harvester_cli.backends import transport
    from harvester_cli.backends.base import WorkerSpec
    from harvester_cli.state.schema import workers as workers_table
    from harvester_cli.state.upgrade import create
    from tests.support.harness import to_toml

    instance, data = make_instance(directory, options)
    backend = instance.backend(instance.config.queues["BENCH"])
    specs = [WorkerSpec(i, "BENCH", "SCORE", 1, 1000, 3600, directory / "logs" / str(i), "true")
             for i in range(1, workers + 1)]
    started = time.perf_counter()
    results = backend.submit(specs)
    submit_seconds = time.perf_counter() - started
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    batch = [(r.worker_id, r.batch_id) for r in results]
    transport.close_all()
    create(instance.state_url).close()
    with instance.store.transaction() as tx:
        now = time.time()
        tx.execute(insert(workers_table), [
            {"worker_id": w, "queue": "BENCH", "backend": "slurm", "mode": "pull", "status": "submitted",
             "batch_id": b, "submission_host": "bench", "created": now, "modified": now, "submit_time": now}
            for w, b in batch])
    instance.close()
    (directory / "config.toml").write_text(to_toml(data))
    (directory / "bench.json").write_text(json.dumps({"options": options, "batch": batch}))
    return batch, submit_seconds


def inner_setup(argv: list[str]) -> None:
    """In the cluster's namespace: prepare the local instance; print the submit's seconds."""
    directory, workers = Path(argv[0]), int(argv[1])
    _, seconds = prepare(directory, json.loads(argv[2]), workers)
    poll_command(directory)
    print(json.dumps(seconds))


def inner_local(argv: list[str]) -> None:
    """In the cluster's namespace: time backend.check() of the local workers, print the seconds as JSON."""
    directory, rounds = Path(argv[0]), int(argv[1])
    saved = json.loads((directory / "bench.json").read_text())
    instance, _ = make_instance(directory, saved["options"])
    backend = instance.backend(instance.config.queues["BENCH"])
    workers = refs([tuple(b) for b in saved["batch"]])
    times = []
    for _ in range(rounds):
        backend.forget_listing()
        started = time.perf_counter()
        seen = backend.check(workers)
        times.append(time.perf_counter() - started)
        assert all(o.status == "held" for o in seen), {o.status for o in seen}
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from harvester_cli.backends import transport
    from tests.support.login_nodes import IN_CLUSTER, LoginSite

    with LoginSite(nodes=1) as site:
        here = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
        options = site.backend_options(site.work_dir("bench"), (1,), sbatch_options=["--hold"], command_timeout=120)
        batch, ssh_submit = prepare(here, options, args.workers)
        poll_command(here)

        local = Path(tempfile.mkdtemp(prefix="bench-local-"))
        local_options = {"slurm_conf": site.slurm_env["SLURM_CONF"], "sbatch_options": ["--hold"],
                         "command_timeout": 120}
        out = subprocess.run([*IN_CLUSTER, sys.executable, str(Path(__file__).resolve()), "--inner-setup", str(local),
                              str(args.workers), json.dumps(local_options)],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(f"the local set-up in the cluster's namespace failed: {out.stderr}")
        local_submit = json.loads(out.stdout)

        instance, _ = make_instance(here, options)
        ssh_backend = instance.backend(instance.config.queues["BENCH"])
        workers = refs(batch)
        times: dict[str, list[float]] = {k: [] for k in ("local", "open", "whole", "command", "local command")}
        for round_ in range(args.rounds):
            order = list(times)
            if round_ % 2:
                order.reverse()
            for path in order:
                if path == "local":
                    out = subprocess.run([*IN_CLUSTER, sys.executable, str(Path(__file__).resolve()), "--inner-local",
                                          str(local), "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
                    if out.returncode != 0:
                        raise SystemExit(f"the local check failed: {out.stderr}")
                    times[path] += json.loads(out.stdout)
                elif path == "open":
                    ssh_backend.check(workers[:1])   # the connection is open before the clock starts
                    ssh_backend.forget_listing()
                    started = time.perf_counter()
                    seen = ssh_backend.check(workers)
                    times[path].append(time.perf_counter() - started)
                    assert all(o.status == "held" for o in seen), {o.status for o in seen}
                elif path == "whole":
                    transport.close_all()
                    fresh, _ = make_instance(here, options)
                    b = fresh.backend(fresh.config.queues["BENCH"])
                    started = time.perf_counter()
                    b.check(workers)
                    b.close()
                    times[path].append(time.perf_counter() - started)
                    transport.close_all()
                    ssh_backend = instance.backend(instance.config.queues["BENCH"])
                elif path == "command":
                    times[path].append(poll_command(here))
                else:
                    times[path].append(poll_command(local, IN_CLUSTER))
        transport.close_all()
        site.cancel_all()
        site.slurm("scancel", "-u", "root", check=False)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:8.0f} ms"

    print(f"\n{args.workers} workers, held, one job array (submitted in {local_submit:.2f} s locally, "
          f"{ssh_submit:.2f} s through the login node); medians of {args.rounds} rounds\n")
    print(f"| poll of {args.workers} workers | local | through the login node |")
    print("|---|---|---|")
    print(f"| backend.check() (one squeue, parsed and mapped) | {ms(times['local'])} | {ms(times['open'])} "
          "(connection open) |")
    print(f"| backend.check() with the run's connection made and closed | {ms(times['local'])} | "
          f"{ms(times['whole'])} |")
    print(f"| `harvester-cli poll` (process, state database, nothing changes) | {ms(times['local command'])} | "
          f"{ms(times['command'])} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--inner-local"]:
        inner_local(sys.argv[2:])
    elif sys.argv[1:2] == ["--inner-setup"]:
        inner_setup(sys.argv[2:])
    else:
        main()
