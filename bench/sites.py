"""The sites the benchmark measures: a configuration, a state database filled to a given size, the local
backend's work directories, and the PanDA simulator's jobs. Filling and resetting go straight through the
database driver: they are not what is measured, and at a million rows they must be quick."""

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

from harvester_cli import model
from harvester_cli.config import state_url_from
from harvester_cli.panda.sim.server import PandaSimulator, SimJob
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


def raw_connect(state_url: str):
    if state_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(state_url.split("///", 1)[1], isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn
    import psycopg

    return psycopg.connect(state_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


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
    Without `pki` the configuration names no proxy and no CA: the minimal one a command starts with."""
    directory.mkdir(parents=True, exist_ok=True)
    state_url = state_url or f"sqlite:///{directory / 'state.db'}"
    work = directory / "work"
    lines = [f'harvester_id = "{HARVESTER_ID}"', f'state = "{state_url}"', f'log_dir = "{directory / "logs"}"',
             f'work_dir = "{work}"', "max_new_workers_per_run = 1000000", "[panda]", f'url = "{panda_url}"']
    if pki is not None:
        lines += [f'proxy = "{pki.proxy}"', f'ca = "{pki.ca_file}"']
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

def add_reporting_jobs(site: Site, sim: PandaSimulator, count: int, first_id: int) -> list[int]:
    """`count` push jobs that ran and ended: running at the simulator, their final update in the outbox
    (as poll leaves them), each bound to a finished worker."""
    ids = list(range(first_id, first_id + count))
    with sim.lock:
        for panda_id in ids:
            sim.jobs[panda_id] = SimJob(panda_id, QUEUE, {"PandaID": panda_id}, status="running")
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


def reset_reporting_jobs(site: Site, sim: PandaSimulator, ids: list[int]) -> None:
    """The jobs back to running at the simulator and reporting here, their final updates queued again."""
    with sim.lock:
        for panda_id in ids:
            job = sim.jobs[panda_id]
            job.status, job.final_status, job.holding_since = "running", None, None
            job.updates.clear()
            job.pilot_logs.clear()
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
