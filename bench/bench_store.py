"""Benchmark of the state store's two hot paths against plain sqlite3 doing the same writes.

    python bench/bench_store.py [--jobs 10000] [--workers 200000]

1. fetching.store_jobs() of realistic PanDA job dicts vs sqlite3 executemany of the same rows;
2. monitoring.poll_queue() moving every worker from submitted to running (fake backend), apply_observations()
   timed apart, vs sqlite3 executemany of UPDATE workers; at workers/4 and at workers;
3. peak RSS and tracemalloc peak of each, to see that poll memory does not grow with the number of workers.

Each measurement runs in its own spawned process, so ru_maxrss is its own peak and no run warms the next
one's caches. tracemalloc slows Python down several times, so it gets a second run of its own. Ratios
compare numbers from this one run; nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sqlite3
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select

from harvester_cli import config as config_module
from harvester_cli import model
from harvester_cli.backends.base import Observation
from harvester_cli.panda.sim.certs import TestPKI
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state.schema import reports, workers
from harvester_cli.state.store import chunks
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps.instance import Instance

QUEUE = "BENCH_PUSH"
FILES_PER_JOB = 5
JOB_CHUNK = 1000      # store_jobs commits every 1000 jobs; the raw baseline does the same
WORKER_CHUNK = 500    # poll claims and updates 500 workers per transaction; so does the raw baseline
INSERT_CHUNK = 2000   # setup inserts workers in small chunks so setup does not set the peak RSS


# -- fixtures ----------------------------------------------------------------------------------

def make_instance(directory: Path) -> Instance:
    """A one-queue push instance on the local backend with its state in `directory` (as demo_config does)."""
    data = {"harvester_id": "bench", "state": str(directory / "state.db"), "log_dir": str(directory / "logs"),
            "work_dir": str(directory / "work"), "panda": {"url": "https://127.0.0.1:1"},   # never contacted
            "queues": {QUEUE: {"mode": "push", "backend": "local"}}}
    instance = Instance(config_module.parse(data, "<bench>", directory))
    instance.store  # create the schema now, outside any timed section
    return instance


DATASET = "mc23_13p6TeV.601229.PhPy8EG.evgen.EVNT.e8514_tid36000000_00"


def per_file(value) -> str:
    """One entry per input file, comma-joined, as PanDA sends inFiles, GUID, fsize, checksum, ..."""
    return ",".join(str(value(n)) for n in range(FILES_PER_JOB))


def make_jobs(count: int, directory: Path) -> list[dict]:
    """Job dicts as acquire_jobs returns them: the simulator's fields plus FILES_PER_JOB input files."""
    simulator = PandaSimulator(TestPKI(directory / "pki"))  # never started: only make_job is used
    jobs = []
    for _ in range(count):
        job = simulator.make_job(QUEUE)
        pid = job["PandaID"]
        in_files = per_file(lambda n: f"EVNT.{pid}._{n:06d}.pool.root.1")
        job.update({
            "inFiles": in_files, "GUID": per_file(lambda n: f"{pid:08X}-{n:04X}-4A5B-9C8D-{pid * 7 + n:012X}"),
            "fsize": per_file(lambda n: 1_500_000_000 + 7919 * n),
            "checksum": per_file(lambda n: f"ad:{(pid + n) & 0xFFFFFFFF:08x}"),
            "scopeIn": per_file(lambda n: "mc23_13p6TeV"), "realDatasetsIn": per_file(lambda n: DATASET),
            "prodDBlocks": per_file(lambda n: DATASET), "dispatchDblock": per_file(lambda n: f"panda.{pid}.dis"),
            "ddmEndPointIn": per_file(lambda n: "CERN-PROD_DATADISK"), "prodDBlockToken": per_file(lambda n: "NULL"),
            "jobPars": f"--inputEVNTFile={in_files} --outputHITSFile=HITS.{pid}._000001.pool.root.1 --maxEvents=1000 "
                       "--randomSeed=1 --conditionsTag=default:OFLCOND-MC23-SDR-RUN3-05 --preInclude=Campaigns.MC23a",
        })
        jobs.append(job)
    return jobs


def insert_submitted_workers(instance: Instance, count: int) -> None:
    """`count` submitted workers, bulk-inserted through the store's table in chunks (memory stays flat)."""
    at = model.now()
    for start in range(1, count + 1, INSERT_CHUNK):
        rows = [{"worker_id": w, "queue": QUEUE, "backend": "local", "mode": "push", "resource_type": "SCORE",
                 "job_type": "managed", "n_core": 1, "memory_mb": 2000, "status": model.SUBMITTED,
                 "batch_id": f"local.{w}", "submission_host": "bench", "submit_time": at,
                 "created": at, "modified": at}
                for w in range(start, min(start + INSERT_CHUNK, count + 1))]
        with instance.store.write() as conn:
            conn.execute(workers.insert(), rows)


class AlwaysRunningBackend:
    """Stands in for the batch system: every worker it is asked about is running."""

    def check(self, refs):
        return [Observation(ref.worker_id, model.RUNNING, native_status="R", start_time=model.now()) for ref in refs]

    def fetch_outputs(self, ref, names):
        return {}


def raw_connection(path: Path) -> sqlite3.Connection:
    """Plain sqlite3 with the store's pragmas (WAL, synchronous NORMAL), transactions handled by hand."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


# -- measurements (each runs in a fresh process) -------------------------------------------------

@contextmanager
def measured(result: dict, trace: bool):
    """Wall time (or, when tracing, the tracemalloc peak) of the block, and the process's peak RSS."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    result["rss_start_mb"] = resident_pages * resource.getpagesize() / 2**20
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    yield
    result["seconds"] = time.perf_counter() - started
    if trace:
        result["trace_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    result["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def store_jobs_library(count: int, trace: bool) -> dict:
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        jobs = make_jobs(count, Path(tmp))
        instance = make_instance(Path(tmp))
        with measured(result, trace):
            stored = fetching.store_jobs(instance, instance.config.queues[QUEUE], jobs)
        instance.close()
    assert stored.stored == count, stored
    return result


def store_jobs_raw(count: int, trace: bool) -> dict:
    """The same rows and JSON text into the same (store-created) jobs table, by plain executemany."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        jobs = make_jobs(count, Path(tmp))
        make_instance(Path(tmp)).close()
        conn = raw_connection(Path(tmp) / "state.db")
        sql = ("INSERT INTO jobs (panda_id, queue, status, sub_status, attempt_nr, resource_type, core_count,"
               " submit_attempts, job_json, diag, created, modified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
        with measured(result, trace):
            at = model.now()
            for chunk in chunks(jobs, JOB_CHUNK):
                # json.dumps is inside the timing: the library pays it too, it is not store overhead.
                rows = [(j["PandaID"], QUEUE, model.JOB_STARTING, model.SUB_FETCHED, int(j["attemptNr"]),
                         j["resource_type"], int(j["coreCount"]), 0, json.dumps(j), None, at, at) for j in chunk]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
        conn.close()
    return result


def poll_library(count: int, trace: bool) -> dict:
    result = {"apply_seconds": 0.0}
    real_apply = monitoring.apply_observations

    def timed_apply(*args, **kwargs):   # poll_queue looks the function up in its module at each call
        started = time.perf_counter()
        real_apply(*args, **kwargs)
        result["apply_seconds"] += time.perf_counter() - started

    monitoring.apply_observations = timed_apply
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        instance = make_instance(Path(tmp))
        insert_submitted_workers(instance, count)
        queue = instance.config.queues[QUEUE]
        instance._backends[queue.name] = AlwaysRunningBackend()
        with measured(result, trace):
            polled = monitoring.poll_queue(instance, queue)
        with instance.store.read() as conn:
            running = conn.scalar(select(func.count()).where(workers.c.status == model.RUNNING))
            outbox = conn.scalar(select(func.count()).select_from(reports))
        instance.close()
    assert polled.checked == running == outbox == count, (polled, running, outbox)
    return result


def poll_raw(count: int, trace: bool) -> dict:
    """The same status change on the same (store-created, store-filled) table, by plain executemany."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        instance = make_instance(Path(tmp))
        insert_submitted_workers(instance, count)
        instance.close()
        conn = raw_connection(Path(tmp) / "state.db")
        with measured(result, trace):
            for start in range(1, count + 1, WORKER_CHUNK):
                at = model.now()
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("UPDATE workers SET status=?, modified=? WHERE worker_id=?",
                                 ((model.RUNNING, at, w) for w in range(start, min(start + WORKER_CHUNK, count + 1))))
                conn.execute("COMMIT")
        conn.close()
    return result


LABELS = {store_jobs_library: "store_jobs (library)", store_jobs_raw: "jobs INSERT (raw sqlite3)",
          poll_library: "poll_queue (library)", poll_raw: "workers UPDATE (raw sqlite3)"}


def in_fresh_process(function, count: int, trace: bool) -> dict:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, count, trace).result()


# -- report ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="job dicts stored (default 10000)")
    parser.add_argument("--workers", type=int, default=200_000, help="workers polled (default 200000)")
    args = parser.parse_args()
    small, big = max(args.workers // 4, 1), args.workers

    plan = [(store_jobs_library, args.jobs), (store_jobs_raw, args.jobs),
            (poll_library, small), (poll_library, big), (poll_raw, small), (poll_raw, big)]
    results = {}   # (function, rows) -> measurement
    for function, rows in plan:
        print(f"running {LABELS[function]} x {rows} ...", flush=True)
        results[function, rows] = in_fresh_process(function, rows, trace=False)
        results[function, rows]["trace_peak_mb"] = in_fresh_process(function, rows, trace=True)["trace_peak_mb"]

    def rate(function, rows, key="seconds"):
        return rows / results[function, rows][key]

    print(f"\n{'measurement':<30} {'rows':>7} {'seconds':>8} {'rows/s':>9} {'RSS start':>10} {'RSS peak':>9} "
          f"{'tracemalloc peak':>17}")
    for (function, rows), r in results.items():
        print(f"{LABELS[function]:<30} {rows:>7} {r['seconds']:>8.2f} {rate(function, rows):>9,.0f} "
              f"{r['rss_start_mb']:>8.1f}MB {r['rss_peak_mb']:>7.1f}MB {r['trace_peak_mb']:>15.1f}MB")
        if "apply_seconds" in r:   # the rest of poll_queue is the claim query and the (fake) backend check
            for part, seconds in (("apply_observations", r["apply_seconds"]),
                                  ("claim + check", r["seconds"] - r["apply_seconds"])):
                print(f"{'  of which ' + part:<30} {rows:>7} {seconds:>8.2f} {rows / seconds:>9,.0f}")

    library, raw = rate(store_jobs_library, args.jobs), rate(store_jobs_raw, args.jobs)
    print(f"\nstore_jobs {library:,.0f} jobs/s, raw INSERT {raw:,.0f} jobs/s: library {raw / library:.1f}x slower")
    for rows in (small, big):
        library, raw = rate(poll_library, rows), rate(poll_raw, rows)
        print(f"poll of {rows}: poll_queue {library:,.0f} workers/s, raw UPDATE {raw:,.0f}/s: poll_queue "
              f"{raw / library:.1f}x slower, apply_observations alone "
              f"{raw / rate(poll_library, rows, 'apply_seconds'):.1f}x slower")
    at_small, at_big = results[poll_library, small], results[poll_library, big]
    print(f"poll memory, {small} -> {big} workers: tracemalloc peak {at_small['trace_peak_mb']:.1f} -> "
          f"{at_big['trace_peak_mb']:.1f} MB, RSS peak {at_small['rss_peak_mb']:.1f} -> {at_big['rss_peak_mb']:.1f} MB")


if __name__ == "__main__":
    main()
