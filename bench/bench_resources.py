"""What can start now (free_resources, issue 29) on a real Slurm: pilots waiting in the batch queue, and the
time from a job's activation to a pilot taking it, with and without, under a load that rises and falls.

    python bench/bench_resources.py [--cpus 8] [--phase 90] [--run 30] [--spread 0] [--cycle 10] [--limit 20]
                                    [--when-full 2]

Needs root and Slurm installed (scripts/apt-packages.txt): it starts its own one-node cluster with
tests/support/peers/slurm.sh (`--cpus` CPUs, free ports, its own directory) and the PanDA simulator in this
process, and stops them at the end. Time is compressed: a phase of `--phase` seconds stands for an hour of a
site's day, a job runs `--run` seconds (a sleep; with `--spread` F, drawn evenly from run x (1 - F) to
run x (1 + F), the same draws in both runs: a site's jobs do not all end together), and harvester-cli's cycle (submit, then poll: the real
steps, the real planner, the real Slurm backend) runs every `--cycle` seconds instead of every minute.

The load, jobs activated at PanDA per phase (spread evenly over it), with `--cpus` 8 and `--run` 30 the site
runs 16 jobs a minute:
    phase 1   8 a minute    below what the site runs
    phase 2  32 a minute    twice what it runs: activated jobs pile up, every CPU busy
    phase 3   8 a minute    the pile drains
    phase 4   none          quiet
then up to 3 phases more until every job has started. Each pilot (harvester-cli's test pilot) takes one
activated job, or ends at once when there is none (an empty pilot).

The queue: pull, one core a pilot, n_queue_limit_worker `--limit`, max_new_workers_per_cycle 20, max_workers 60;
with free_resources on, queued_when_full `--when-full` (the default 2; more wait while more of the queue's workers
finished within one cycle over the last 10: the [instance] cycle_interval is `--cycle`, in both runs).
Measured per run, the runs one after the other on the same cluster: pilots waiting in Slurm (PENDING; the mean
and the peak over the load's four phases, sampled every second), pilots submitted, empty pilots, and the time
from a job's activation to a pilot taking it (median and 95th percentile, sampled every second). Nothing is
asserted; not run in CI.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_slurm import Cluster
from harvester_cli import config as config_module
from harvester_cli.instance import Instance
from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state import upgrade
from harvester_cli.steps import poll, submit

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "BENCH_FREE"
PILOT = f"PYTHONPATH={ROOT} {{python}} -m harvester_cli.panda.sim.pilot"
RATES = (8, 32, 8, 0)          # jobs activated per minute in each phase
DRAIN_PHASES = 3


def instance_for(base: Path, conf: Path, sim: PandaSimulator, pki, free: bool, limit: int,
                 when_full: int, cycle: float) -> Instance:
    queue = {"mode": "pull", "backend": "slurm", "pilot": PILOT, "walltime": 900, "n_queue_limit_worker": limit,
             "max_new_workers_per_cycle": 20, "max_workers": 60, "memory_mb_per_core": 100,
             "free_resources": free, "queued_when_full": when_full, "retire_max_per_run": 0,
             "backend_options": {"slurm_conf": str(conf), "squeue_cache_seconds": 0}}
    data = {"harvester_id": f"bench-free-{int(free)}", "state": str(base / "state.db"), "log_dir": str(base / "logs"),
            "work_dir": str(base / "work"),
            "panda": {"url": sim.url, "proxy": str(pki.proxy), "ca": str(pki.ca_file), "stats_refresh": 0,
                      "allow_test_pilot": True},
            # the planner's cycle, in both runs: its turnover counts 10 of them
            "instance": {"cycle_interval": max(1, round(cycle))},
            "queues": {QUEUE: queue}}
    instance = Instance(config_module.parse(data, "<bench>", base))
    upgrade.create(instance.state_url).close()
    return instance


def pending(cluster: Cluster, harvester_id: str) -> int:
    out = cluster.run("squeue", "-h", "-r", "-t", "PENDING", "-o", "%j").stdout   # -r: array tasks one a line
    return sum(1 for name in out.split() if name.startswith(f"{harvester_id}:"))


def one_run(cluster: Cluster, base: Path, sim: PandaSimulator, pki, free: bool, args) -> dict:
    instance = instance_for(base, cluster.base / "slurm.conf", sim, pki, free, args.limit, args.when_full,
                            args.cycle)
    queue = instance.config.queues[QUEUE]
    hid = instance.config.harvester_id
    activated: dict[int, float] = {}
    taken: dict[int, float] = {}
    waiting: list[int] = []
    draws = random.Random(2026)   # the same run times, job by job, with and without
    stop = threading.Event()
    load_over = threading.Event()

    def sampler() -> None:   # every second: pilots waiting in Slurm, jobs a pilot has taken
        while not stop.wait(1.0):
            now = time.time()
            if not load_over.is_set():
                waiting.append(pending(cluster, hid))
            with sim.lock:
                for panda_id in list(activated):
                    if panda_id not in taken and sim.jobs[panda_id].status != "activated":
                        taken[panda_id] = now

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    started = time.time()
    phases = len(RATES)
    due = 0.0
    submitted = 0
    try:
        while True:
            elapsed = time.time() - started
            phase = int(elapsed // args.phase)
            if phase >= phases:
                load_over.set()
                if len(taken) == len(activated) or phase >= phases + DRAIN_PHASES:
                    break
            else:
                due += RATES[phase] * args.cycle / 60
                n = int(due)
                due -= n
                if n:
                    for _ in range(n):
                        seconds = round(args.run * (1 + args.spread * draws.uniform(-1, 1)))
                        (panda_id,) = sim.add_jobs(QUEUE, 1, refresh=False, jobPars=f"sleep {seconds}")
                        activated[panda_id] = time.time()
            sim.refresh_job_counts()
            run = submit.submit(instance, [queue])
            submitted += sum(len(q.submitted) for q in run.queues)
            poll.poll(instance, [queue])
            time.sleep(max(0.0, args.cycle - (time.time() - started - elapsed)))
    finally:
        stop.set()
        thread.join()
        listed = cluster.run("squeue", "-h", "-o", "%i %j").stdout.splitlines()
        ours = [line.split()[0] for line in listed if len(line.split()) == 2 and line.split()[1].startswith(f"{hid}:")]
        if ours:
            cluster.run("scancel", *ours)
    waits = sorted(taken[p] - activated[p] for p in taken)
    return {"free_resources": free, "pending_mean": statistics.mean(waiting) if waiting else 0.0,
            "pending_peak": max(waiting, default=0), "submitted": submitted, "jobs": len(activated),
            "started": len(taken), "empty": max(0, submitted - len(taken)),
            "wait_median": statistics.median(waits) if waits else float("nan"),
            "wait_p95": waits[int(0.95 * (len(waits) - 1))] if waits else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", type=int, default=8, help="CPUs of the cluster's node (one pilot each)")
    parser.add_argument("--phase", type=float, default=90.0, help="seconds a phase of the load lasts")
    parser.add_argument("--run", type=int, default=30, help="seconds a job runs")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="run times drawn evenly within run x (1 -/+ spread) (default 0: all the same)")
    parser.add_argument("--cycle", type=float, default=10.0, help="seconds between harvester-cli cycles")
    parser.add_argument("--limit", type=int, default=20, help="n_queue_limit_worker")
    parser.add_argument("--when-full", type=int, default=2, help="queued_when_full (with free_resources)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_resources.py starts munged, slurmctld and slurmd: run it as root")
    base = Path(tempfile.mkdtemp(prefix="bench-resources-"))
    cluster = Cluster(base / "slurm")
    cluster.env.update({"SLURM_CPUS": str(args.cpus), "SLURM_MIN_JOB_AGE": "30"})
    cluster.script("start")
    pki = certs.create(base / "pki")
    results = []
    try:
        with PandaSimulator(pki, finish_delay=0.0, stats_refresh=3600) as sim:
            for free in (False, True):
                print(f"run {'with' if free else 'without'} free_resources ...", flush=True)
                results.append(one_run(cluster, base / f"run{int(free)}", sim, pki, free, args))
                print(results[-1], flush=True)
    finally:
        subprocess.run(["scancel", "-u", "root"], env=cluster.env, capture_output=True, timeout=60, check=False)
        cluster.script("stop")
        shutil.rmtree(base, ignore_errors=True)

    minutes = 60 / args.run * args.cpus
    print(f"\nSlurm 22.05, one node of {args.cpus} CPUs ({minutes:.0f} jobs of {args.run} s a minute"
          f"{f', run times {args.run} s -/+ {args.spread:.0%}' if args.spread else ''}); load "
          f"{'/'.join(map(str, RATES))} jobs a minute over phases of {args.phase:g} s; cycle every {args.cycle:g} s; "
          f"n_queue_limit_worker {args.limit}, queued_when_full {args.when_full}\n")
    print(f"{'free_resources':<15} {'pilots waiting mean':>19} {'peak':>5} {'submitted':>9} {'empty':>6} "
          f"{'jobs':>5} {'activated->taken median':>23} {'p95':>6}")
    for r in results:
        print(f"{'on' if r['free_resources'] else 'off':<15} {r['pending_mean']:>19.1f} {r['pending_peak']:>5} "
              f"{r['submitted']:>9} {r['empty']:>6} {r['started']:>2}/{r['jobs']:<2} {r['wait_median']:>21.1f} s "
              f"{r['wait_p95']:>5.1f} s")


if __name__ == "__main__":
    main()
