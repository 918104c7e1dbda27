"""Benchmark of the Slurm backend's bulk paths against raw Slurm commands doing the same, in one run.

    python bench/bench_slurm.py [--workers 500] [--rounds 5]

Needs root and Slurm installed (scripts/apt-packages.txt): it starts its own one-node cluster with
tests/support/peers/slurm.sh (free ports, its own directory, MinJobAge 5 s so cancelled jobs leave the tables
between rounds) and stops it at the end. Every job is submitted held (--hold), so nothing runs and the
machine's load does not depend on the path.

Per round, each path is timed next to its floor, the order alternating between rounds (interleaved);
the table shows medians over the rounds:

  submit, job array         backend.submit() of N identical workers (files + sinfo + one sbatch --array)
                            vs one raw `sbatch --array=0-(N-1)` of a one-line script
  submit, one sbatch each   backend.submit() with max_array_size=1 (files + sinfo + N sbatch, 8 at a time)
                            vs N raw `sbatch` of a one-line script, 8 at a time
  poll                      backend.check() of the N workers (one squeue, parsed and mapped; no cache)
                            vs one raw `squeue -u <user> -t all -r` with the same format
  kill                      backend.kill() of the N workers (one scancel) vs one raw `scancel` of N ids

Below the table, two references: N raw sbatch one after the other, and N raw `squeue -j <id>` (a poll
that asks per job). Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harvester_cli import config as config_module
from harvester_cli.backends import _slurm_status as slurm_status
from harvester_cli.backends.base import WorkerRef, WorkerSpec
from harvester_cli.instance import Instance

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "support" / "peers" / "slurm.sh"
CONCURRENCY = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, base: Path):
        self.base = base
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))},
                    "SLURM_BASE": str(base), "SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port()),
                    "SLURM_CONF": str(base / "slurm.conf"), "SLURM_MIN_JOB_AGE": "5"}

    def script(self, action: str) -> None:
        subprocess.run(["bash", str(SCRIPT), action], env=self.env, check=True, capture_output=True, timeout=120)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=300)

    def cancel_everything(self) -> None:
        self.run("scancel", "-u", "root")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = self.run("squeue", "-h", "-t", "PENDING,RUNNING", "-o", "%i").stdout.split()
            if not states:
                return
            time.sleep(0.2)


def make_backend(directory: Path, conf: Path, **options):
    data = {"harvester_id": "bench", "state": str(directory / "state.db"), "log_dir": str(directory / "logs"),
            "work_dir": str(directory / "work"), "panda": {"url": "https://127.0.0.1:1"},   # never contacted
            "queues": {"BENCH": {"mode": "pull", "backend": "slurm", "pilot": "true", "backend_options": {
                "slurm_conf": str(conf), "sbatch_options": ["--hold"], "squeue_cache_seconds": 0, **options}}}}
    instance = Instance(config_module.parse(data, "<bench>", directory))
    return instance.backend(instance.config.queues["BENCH"])


def specs(directory: Path, first: int, n: int) -> list[WorkerSpec]:
    return [WorkerSpec(first + i, "BENCH", "SCORE", 1, 1000, 3600, directory / "logs" / str(first + i), "true",
                       {"HARVESTER_WORKER_ID": str(first + i)}) for i in range(n)]


def timed(function):
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_slurm.py starts munged, slurmctld and slurmd: run it as root")
    n = args.workers
    base = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    cluster = Cluster(base / "slurm")
    cluster.script("start")
    conf = base / "slurm" / "slurm.conf"
    raw_script = base / "raw.sh"
    raw_script.write_text("#!/bin/sh\ntrue\n")
    squeue_args = ["squeue", "-h", "-a", "-r", "-t", "all", "-u", "root", "-O", slurm_status.SQUEUE_FORMAT]
    times: dict[str, list[tuple[float, float]]] = {}
    references: dict[str, list[float]] = {"sequential": [], "per-job squeue": []}

    def raw_sbatch(i: int) -> str:
        out = cluster.run("sbatch", "--parsable", "--hold", f"--job-name=raw:{i}", "--output=/dev/null",
                          str(raw_script))
        return out.stdout.strip()

    try:
        next_id = 1000
        for round_ in range(args.rounds):
            ours_first = round_ % 2 == 0
            work = base / f"round{round_}"
            array_backend = make_backend(work / "array", conf)
            single_backend = make_backend(work / "single", conf, max_array_size=1,
                                          max_concurrent_sbatch=CONCURRENCY)

            # -- submit as one job array, and the raw array
            batch = specs(work / "array", next_id, n)
            next_id += 10 * n

            def ours_array():
                return array_backend.submit(batch)

            def floor_array():
                return cluster.run("sbatch", "--parsable", "--hold", f"--array=0-{n - 1}", "--output=/dev/null",
                                   str(raw_script)).stdout.strip()

            pair = [ours_array, floor_array] if ours_first else [floor_array, ours_array]
            measured = {f: timed(f) for f in pair}
            results = measured[ours_array][1]
            assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
            raw_array = measured[floor_array][1]
            times.setdefault("submit, job array", []).append((measured[ours_array][0], measured[floor_array][0]))

            # -- poll the N array tasks
            refs = [WorkerRef(r.worker_id, "BENCH", r.batch_id, r.submission_host, r.computing_element, "submitted",
                              None) for r in results]

            def ours_poll():
                return array_backend.check(refs)

            def floor_poll():
                return cluster.run(*squeue_args).stdout

            pair = [ours_poll, floor_poll] if ours_first else [floor_poll, ours_poll]
            measured = {f: timed(f) for f in pair}
            assert all(o.status == "held" for o in measured[ours_poll][1])
            times.setdefault("poll", []).append((measured[ours_poll][0], measured[floor_poll][0]))

            # -- kill them, and the raw array's tasks
            raw_ids = [f"{raw_array}_{i}" for i in range(n)]

            def ours_kill():
                return array_backend.kill(refs, "bench")

            def floor_kill():
                return cluster.run("scancel", *raw_ids)

            pair = [ours_kill, floor_kill] if ours_first else [floor_kill, ours_kill]
            measured = {f: timed(f) for f in pair}
            assert all(k.ok for k in measured[ours_kill][1])
            times.setdefault("kill", []).append((measured[ours_kill][0], measured[floor_kill][0]))
            cluster.cancel_everything()

            # -- submit as one sbatch each, and the raw loop with the same concurrency
            batch = specs(work / "single", next_id, n)
            next_id += 10 * n

            def ours_single():
                return single_backend.submit(batch)

            def floor_single():
                with ThreadPoolExecutor(CONCURRENCY) as pool:
                    return list(pool.map(raw_sbatch, range(n)))

            pair = [ours_single, floor_single] if ours_first else [floor_single, ours_single]
            measured = {f: timed(f) for f in pair}
            assert all(r.ok for r in measured[ours_single][1])
            times.setdefault(f"submit, one sbatch each ({CONCURRENCY} at once)", []).append(
                (measured[ours_single][0], measured[floor_single][0]))
            single_ids = [r.batch_id for r in measured[ours_single][1]]

            # -- references: a sequential raw loop; a poll that asks squeue per job (first rounds only)
            if round_ < 3:
                references["per-job squeue"].append(timed(lambda: [cluster.run("squeue", "-h", "-j", i)
                                                                   for i in single_ids])[0])
                cluster.cancel_everything()
                references["sequential"].append(timed(lambda: [raw_sbatch(i) for i in range(n)])[0])
            cluster.cancel_everything()
            shutil.rmtree(work, ignore_errors=True)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    finally:
        cluster.cancel_everything()
        cluster.script("stop")
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n{n} workers, Slurm 22.05, one node on loopback; medians of {args.rounds} interleaved rounds\n")
    print(f"{'path':<40} {'ours s':>8} {'floor s':>8} {'ratio':>6} {'ours workers/s':>15}")
    medians = {}
    for path, pairs in times.items():
        ours = statistics.median(p[0] for p in pairs)
        floor = statistics.median(p[1] for p in pairs)
        medians[path] = ours
        print(f"{path:<40} {ours:>8.3f} {floor:>8.3f} {ours / floor:>6.1f} {n / ours:>15,.0f}")
    array = medians["submit, job array"]
    single = medians[f"submit, one sbatch each ({CONCURRENCY} at once)"]
    print(f"\nsubmit as a job array is {single / array:.1f}x faster than one sbatch per worker ({CONCURRENCY} at once)")
    print(f"reference: {n} raw sbatch one after the other {statistics.median(references['sequential']):.3f} s; "
          f"{n} raw `squeue -j <id>` one per job {statistics.median(references['per-job squeue']):.3f} s")


if __name__ == "__main__":
    main()
