"""The sites the benchmark measures: a configuration, a state database filled to a given size, the local
backend's work directories, the PanDA simulator's jobs and the job dicts PanDA sends. Filling, resetting and
reading what a run left go straight through the database driver: they are not what is measured, and at a
million rows they must be quick. This is set-up: it may use harvester-cli's code (its schema, the
simulator's job dicts), always outside the timed part of a row."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.floors import raw_connect
from harvester_cli import model
from harvester_cli.config import state_url_from
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state import upgrade

QUEUE = "BENCH"
HARVESTER_ID = "bench"
INSERT_CHUNK = 20_000


@dataclass
class Site:
    """One configuration and its state database. `dbapi_url` is what the raw floors connect with."""
    directory: Path
    config: Path
    state_url: str
    work: Path

    @property
    def is_sqlite(self) -> bool:
        return self.state_url.startswith("sqlite")

    def connect(self):
        """A plain driver connection (sqlite3 or psycopg), autocommit: the caller handles transactions."""
        return raw_connect(self.state_url)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "harvester_cli", "--config", str(self.config), *args]


def placeholders(conn, count: int) -> str:
    mark = "?" if type(conn).__module__.startswith("sqlite3") else "%s"
    return ", ".join([mark] * count)


def executemany(conn, sql: str, rows) -> None:
    """Chunked bulk statement in one transaction per chunk, through whichever driver `conn` is."""
    rows = list(rows)
    sqlite = type(conn).__module__.startswith("sqlite3")
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start:start + INSERT_CHUNK]
        if sqlite:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, chunk)
            conn.execute("COMMIT")
        else:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(sql, chunk)


def make_site(directory: Path, panda_url: str, pki, queue: dict, state_url: str | None = None) -> Site:
    """A configuration with one queue named QUEUE on the local backend and an empty state database.
    Without `pki` the configuration names an empty proxy file and no CA: the minimal one a command starts
    with."""
    directory.mkdir(parents=True, exist_ok=True)
    state_url = state_url or f"sqlite:///{directory / 'state.db'}"
    work = directory / "work"
    lines = [f'harvester_id = "{HARVESTER_ID}"', f'state = "{state_url}"', f'log_dir = "{directory / "logs"}"',
             f'work_dir = "{work}"', "max_new_workers_per_run = 1000000", "[panda]", f'url = "{panda_url}"']
    if pki is not None:
        lines += [f'proxy = "{pki.proxy}"', f'ca = "{pki.ca_file}"']
    else:   # a command refuses a [panda] without credentials; this one is never sent (nothing calls PanDA)
        proxy = directory / "proxy"
        proxy.touch(mode=0o600)
        lines.append(f'proxy = "{proxy}"')
    lines += [f"[queues.{QUEUE}]", 'backend = "local"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in {"pilot": "true", **queue}.items()]
    config = directory / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    upgrade.create(state_url_from(state_url)).close()
    return Site(directory, config, state_url, work)


# -- workers ------------------------------------------------------------------------------------

WORKER_COLUMNS = ("worker_id", "queue", "backend", "mode", "resource_type", "job_type", "n_core", "memory_mb",
                  "status", "native_status", "batch_id", "submission_host", "computing_element", "submit_time",
                  "start_time", "created", "modified")


def add_workers(site: Site, count: int, status: str, mode: str = "pull") -> None:
    """`count` workers of QUEUE (ids 1..count) in `status`; running ones have started."""
    at = model.now()
    host = socket.gethostname()   # the instance's host by default: the local backend is worked by its own host
    native = {model.RUNNING: "running", model.SUBMITTED: None}[status]
    started = at if status == model.RUNNING else None
    conn = site.connect()
    sql = f"INSERT INTO workers ({', '.join(WORKER_COLUMNS)}) VALUES ({placeholders(conn, len(WORKER_COLUMNS))})"
    executemany(conn, sql, ((w, QUEUE, "local", mode, "SCORE", "managed", 1, 2000, status, native, str(w),
                             host, "localhost", at, started, at, at) for w in range(1, count + 1)))
    conn.close()


def reset_workers(site: Site, status: str) -> None:
    """Every worker back to `status`, the outbox and history emptied: the next poll has the same work."""
    conn = site.connect()
    mark = placeholders(conn, 1)
    native = "running" if status == model.RUNNING else None
    for sql, args in ((f"UPDATE workers SET status = {mark}, native_status = {mark}, diag = NULL, end_time = NULL, "
                       f"kill_reason = NULL, modified = {mark}", (status, native, model.now())),
                      ("DELETE FROM pending_reports", ()), ("DELETE FROM status_history", ())):
        conn.execute(sql, args)
    conn.close()


class Sleeper:
    """One long-lived process that every bench worker's pid file names: the local backend sees them all
    running, as it would 200k live pilots, and reads /proc for each."""

    def __enter__(self):
        self.process = subprocess.Popen(["sleep", "100000"])
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        self.pid_line = f"{self.process.pid} {fields[19]}\n"
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def add_work_directories(site: Site, count: int, pid_line: str) -> None:
    """What the local backend's wrapper leaves for a running worker: its directory and pid file."""
    root = site.work / QUEUE
    root.mkdir(parents=True, exist_ok=True)
    for worker_id in range(1, count + 1):
        path = f"{root}/{worker_id}"
        os.mkdir(path)
        with open(f"{path}/.pid", "w") as f:
            f.write(pid_line)


def remove_work(site: Site) -> None:
    shutil.rmtree(site.work, ignore_errors=True)


# -- jobs and their final updates ---------------------------------------------------------------

def add_reporting_jobs(site: Site, sim, count: int, first_id: int) -> list[int]:
    """`count` push jobs that ran and ended: running at the simulator (bench.simulator.Simulator), their
    final update in the outbox (as poll leaves them), each bound to a finished worker."""
    ids = list(range(first_id, first_id + count))
    sim.running(first_id, count)
    at = model.now()
    conn = site.connect()
    job_columns = ("panda_id", "queue", "status", "sub_status", "attempt_nr", "resource_type", "core_count",
                   "submit_attempts", "job_json", "created", "modified")
    executemany(conn, f"INSERT INTO jobs ({', '.join(job_columns)}) VALUES ({placeholders(conn, len(job_columns))})",
                ((p, QUEUE, model.JOB_FINISHED, model.SUB_REPORTING, 1, "SCORE", 1, 0,
                  json.dumps({"PandaID": p, "attemptNr": 1}), at, at) for p in ids))
    worker_columns = ("worker_id", "queue", "backend", "mode", "status", "batch_id", "stdout_url", "batch_log_url",
                      "created", "modified")
    executemany(conn, f"INSERT INTO workers ({', '.join(worker_columns)}) "
                      f"VALUES ({placeholders(conn, len(worker_columns))})",
                ((p, QUEUE, "local", "push", model.FINISHED, str(p), f"http://bench/logs/{p}/pilot.out",
                  f"http://bench/logs/{p}/batch.log", at, at) for p in ids))
    executemany(conn, f"INSERT INTO job_workers (panda_id, worker_id) VALUES ({placeholders(conn, 2)})",
                ((p, p) for p in ids))
    conn.close()
    queue_final_updates(site, ids)
    return ids


def final_update(panda_id: int) -> dict:
    """A final update the size of a real one: the pilot's job report fields harvester-cli passes on."""
    return {"job_id": panda_id, "job_status": "finished", "attempt_nr": 1, "core_count": 1,
            "start_time": "2026-12-01 10:00:00", "end_time": "2026-12-01 11:00:00", "cpu_consumption_time": 3400,
            "cpu_consumption_unit": "s", "node": "wn-123.bench.example", "exe_error_code": 0,
            "pilot_error_code": 0, "n_events": 1000, "meta_data": json.dumps({"files": {"output": []}})}


def queue_final_updates(site: Site, ids: list[int]) -> None:
    at = model.now()
    conn = site.connect()
    columns = ("kind", "key", "queue", "version", "payload", "final", "created", "attempts")
    executemany(conn, f"INSERT INTO pending_reports ({', '.join(columns)}) VALUES ({placeholders(conn, len(columns))})",
                (("job", p, QUEUE, 1, json.dumps(final_update(p)), True, at, 0) for p in ids))
    conn.close()


def reset_reporting_jobs(site: Site, sim, ids: list[int]) -> None:
    """The jobs back to running at the simulator and reporting here, their final updates queued again."""
    sim.running(ids[0], len(ids))
    conn = site.connect()
    conn.execute("DELETE FROM pending_reports")
    conn.execute(f"UPDATE jobs SET sub_status = {placeholders(conn, 1)}, pilot_log_sent = false",
                 (model.SUB_REPORTING,))
    conn.close()
    queue_final_updates(site, ids)


def wait_for_bench_processes(timeout: float = 60) -> None:
    """Submitted local workers (pilot `true`) end in a moment; wait until none is left, so one
    measurement's pilots do not run during the next."""
    tag = f"HARVESTER_ID={HARVESTER_ID}\0".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = False
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        running = tag in f.read()
                except OSError:
                    continue
                if running:
                    break
        if not running:
            return
        time.sleep(0.2)


# -- fetched jobs -------------------------------------------------------------------------------

FILES_PER_JOB = 5
DATASET = "mc23_13p6TeV.601229.PhPy8EG.evgen.EVNT.e8514_tid36000000_00"


def received_job(simulator: PandaSimulator) -> dict:
    """One job dict as acquire_jobs returns it: the simulator's fields plus FILES_PER_JOB input files, each
    file's fields comma-joined as PanDA sends them."""
    job = simulator.make_job(QUEUE)
    pid = job["PandaID"]

    def per_file(value) -> str:
        return ",".join(str(value(n)) for n in range(FILES_PER_JOB))

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
    return job


def write_received_jobs(path: Path, pki, count: int, first_id: int) -> Path:
    """`count` received job dicts (received_job) written to `path` as JSON: both sides of a row read the
    same file before their clock starts."""
    simulator = PandaSimulator(pki, first_panda_id=first_id)   # never started: only its job dicts
    path.write_text(json.dumps([received_job(simulator) for _ in range(count)]))
    return path


def remove_jobs(site: Site) -> None:
    conn = site.connect()
    for table in ("job_workers", "jobs", "pending_reports"):
        conn.execute(f"DELETE FROM {table}")
    conn.close()


def stored_jobs(site: Site) -> dict:
    """What a store of fetched jobs left, to compare ours with the floor's: rows, their columns' sums, and
    reports queued."""
    conn = site.connect()
    rows, ids, text, starting, attempts, cores = conn.execute(
        "SELECT count(*), sum(panda_id), sum(length(job_json)), sum(CASE WHEN status = 'starting' AND sub_status = "
        "'fetched' AND submit_attempts = 0 AND diag IS NULL THEN 1 ELSE 0 END), sum(attempt_nr), sum(core_count) "
        "FROM jobs").fetchone()
    reports = conn.execute("SELECT count(*) FROM pending_reports").fetchone()[0]
    conn.close()
    return {"jobs": rows, "panda_ids": ids, "json_chars": text, "starting_fetched": starting, "attempts": attempts,
            "cores": cores, "reports": reports}


# -- what a poll wrote --------------------------------------------------------------------------

class Writes:
    """Counts what one run wrote to the workers and the outbox: `before` (a probe's prepare) notes the time
    and the outbox's size, `after` counts the workers modified since and the reports queued since."""

    def __init__(self, site: Site):
        self.site = site

    def before(self) -> None:
        conn = self.site.connect()
        self.reports = conn.execute("SELECT count(*) FROM pending_reports WHERE kind = 'worker'").fetchone()[0]
        conn.close()
        self.since = model.now()

    def after(self) -> dict:
        conn = self.site.connect()
        mark = placeholders(conn, 1)
        rows = conn.execute(f"SELECT count(*) FROM workers WHERE modified >= {mark}", (self.since,)).fetchone()[0]
        reports = conn.execute("SELECT count(*) FROM pending_reports WHERE kind = 'worker'").fetchone()[0]
        conn.close()
        return {"rows_written": rows, "reports_queued": reports - self.reports}


def polled_workers(site: Site) -> dict:
    """What a poll that saw every worker start left: workers running as the backend said, reports queued."""
    conn = site.connect()
    running = conn.execute("SELECT count(*) FROM workers WHERE status = 'running' AND native_status = 'running' "
                           "AND start_time IS NOT NULL AND modified >= start_time").fetchone()[0]
    reports = conn.execute("SELECT count(*) FROM pending_reports WHERE kind = 'worker' AND version = 1 "
                           "AND payload IS NULL").fetchone()[0]
    conn.close()
    return {"running": running, "reports": reports}
