"""A poll of N workers through a login node over SSH, against the same poll run on the login node itself.

    python bench/bench_slurm_ssh.py [--workers 500] [--rounds 7]

Needs root, Slurm and OpenSSH's server (scripts/apt-packages.txt): it builds the site of the ssh tests
(tests/support/login_nodes.py: a Slurm cluster in a network namespace, a login node with Debian's sshd, the
account hclogin with an empty profile) and tears it down at the end. N workers are submitted held through the
login node (one job array), so nothing runs; then, per round, interleaved:

  local                backend.check() of the N workers on the login node itself (this checkout, run there as
                       hclogin with the system's python3): one squeue, parsed and mapped
  ssh, connection open backend.check() through the run's SSH connection, already open (a poll's later pages,
                       or the second queue of a run)
  ssh, whole run       a new transport: connect to the login node, the same check, close the connection (what
                       one `poll` run pays for its backend)
  `harvester-cli poll` the command, through the login node, with a state database of the N workers (nothing
                       changes, so it writes nothing): a process of its own, start-up and database included

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


def make_instance(directory: Path, options: dict, state: str | None = None):
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance

    proxy = directory / "proxy.pem"   # never used: poll does not call PanDA, but a configuration names a credential
    if not proxy.exists():
        proxy.write_text("not a proxy")
        proxy.chmod(0o600)
    data = {"harvester_id": "bench", "state": state or str(directory / "state.db"), "log_dir": str(directory / "logs"),
            "work_dir": str(directory / "work"),
            "panda": {"url": "https://127.0.0.1:1", "proxy": str(proxy)},   # never contacted
            "queues": {"BENCH": {"mode": "pull", "backend": "slurm", "pilot": "true",
                                 "backend_options": {"squeue_cache_seconds": 0, **options}}}}
    return Instance(config_module.parse(data, "<bench>", directory)), data


def refs(batch: list[tuple[int, str]]):
    from harvester_cli.backends.base import WorkerRef

    return [WorkerRef(w, "BENCH", b, "bench", None, "submitted", None, submit_time=time.time()) for w, b in batch]


def inner_local(argv: list[str]) -> None:
    """On the login node, as hclogin: time backend.check() of the workers, print the seconds as JSON."""
    batch, rounds = json.loads(Path(argv[0]).read_text()), int(argv[1])
    directory = Path(tempfile.mkdtemp(prefix="bench-local-"))
    instance, _ = make_instance(directory, {})
    backend = instance.backend(instance.config.queues["BENCH"])
    workers = refs(batch)
    times = []
    for _ in range(rounds):
        backend.forget_listing()
        started = time.perf_counter()
        seen = backend.check(workers)
        times.append(time.perf_counter() - started)
        assert all(o.status == "submitted" for o in seen), {o.status for o in seen}
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from harvester_cli.backends import transport
    from harvester_cli.backends.base import WorkerSpec
    from tests.support.login_nodes import USER, LoginSite, login_ns

    with LoginSite(nodes=1) as site:
        directory = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
        work = site.work_dir("bench")
        options = site.backend_options(work, (1,), sbatch_options=["--hold"], command_timeout=120)
        instance, data = make_instance(directory, options)
        backend = instance.backend(instance.config.queues["BENCH"])
        specs = [WorkerSpec(i, "BENCH", "SCORE", 1, 1000, 3600, directory / "logs" / str(i), "true")
                 for i in range(1, args.workers + 1)]
        started = time.perf_counter()
        results = backend.submit(specs)
        submit_seconds = time.perf_counter() - started
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        batch = [(r.worker_id, r.batch_id) for r in results]
        transport.close_all()

        listing = Path(tempfile.mkdtemp(prefix="bench-batch-", dir="/var/tmp")) / "batch.json"
        listing.parent.chmod(0o755)
        listing.write_text(json.dumps(batch))
        listing.chmod(0o644)

        # a state database of the same workers, for the command
        from sqlalchemy import insert

        from harvester_cli.state.schema import workers as workers_table
        from harvester_cli.state.upgrade import create

        create(instance.state_url).close()
        with instance.store.transaction() as tx:
            now = time.time()
            tx.execute(insert(workers_table), [
                {"worker_id": w, "queue": "BENCH", "backend": "slurm", "mode": "pull", "status": "submitted",
                 "batch_id": b, "submission_host": "bench", "created": now, "modified": now, "submit_time": now}
                for w, b in batch])
        from tests.support.harness import to_toml

        config = directory / "config.toml"
        config.write_text(to_toml(data))

        ssh_backend = backend
        workers = refs(batch)
        open_times, whole_times, command_times, local_times = [], [], [], []
        for round_ in range(args.rounds):
            order = ["local", "open", "whole", "command"]
            if round_ % 2:
                order.reverse()
            for path in order:
                if path == "local":
                    out = subprocess.run(
                        ["ip", "netns", "exec", login_ns(1), "runuser", "-u", USER, "--", "env",
                         f"SLURM_CONF={site.login_conf}", f"PYTHONPATH={ROOT}", "HOME=/tmp", "/usr/bin/python3",
                         str(Path(__file__).resolve()), "--inner-local", str(listing), "1"],
                        capture_output=True, text=True, timeout=300, cwd="/tmp")
                    if out.returncode != 0:
                        raise SystemExit(f"the local poll on the login node failed: {out.stderr}")
                    local_times += json.loads(out.stdout)
                elif path == "open":
                    ssh_backend.check(workers[:1])   # the connection is open before the clock starts
                    ssh_backend.forget_listing()
                    started = time.perf_counter()
                    seen = ssh_backend.check(workers)
                    open_times.append(time.perf_counter() - started)
                    assert all(o.status == "submitted" for o in seen)
                elif path == "whole":
                    transport.close_all()
                    fresh, _ = make_instance(directory, options)
                    b = fresh.backend(fresh.config.queues["BENCH"])
                    started = time.perf_counter()
                    b.check(workers)
                    b.close()
                    whole_times.append(time.perf_counter() - started)
                    transport.close_all()
                    ssh_backend = instance.backend(instance.config.queues["BENCH"])
                else:
                    started = time.perf_counter()
                    result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), "poll"],
                                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                                            env={**os.environ, "PYTHONPATH": str(ROOT)})
                    command_times.append(time.perf_counter() - started)
                    if result.returncode != 0:
                        raise SystemExit(f"harvester-cli poll failed: {result.stderr}")
        transport.close_all()
        site.cancel_all()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:8.0f} ms"

    print(f"\n{args.workers} workers, held, one job array (submitted through the login node in "
          f"{submit_seconds:.2f} s); medians of {args.rounds} rounds\n")
    print(f"| poll of {args.workers} workers | time |")
    print("|---|---|")
    print(f"| local: backend.check() on the login node itself | {ms(local_times)} |")
    print(f"| ssh, connection open: backend.check() through the login node | {ms(open_times)} |")
    print(f"| ssh, whole run: connect, backend.check(), close | {ms(whole_times)} |")
    print(f"| `harvester-cli poll` through the login node (process, state database) | {ms(command_times)} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--inner-local"]:
        inner_local(sys.argv[2:])
    else:
        main()
