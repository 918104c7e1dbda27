"""The floors: each row's work done the plainest way, through the raw driver (sqlite3, psycopg), one
requests.Session or plain os calls. A floor never runs harvester-cli's code: this module imports nothing of
harvester_cli (nor of bench.sites, which does), and each run lists the harvester_cli modules its process
loaded, which the bench requires to be none.

    python -m bench.floors NAME ARG ...

Each floor prints one JSON line: {"seconds": s, ...} when it timed a section itself (the rows that time a
library step), otherwise the bench takes the process's wall time (the rows that time a command). What the
floor reads before its clock starts (a file of job dicts) is outside the timed work and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

PAGE = 500   # poll's page (steps.poll.CHUNK); the floors read the same pages where a row's floor reads pages
ACTIVE = "('submitted', 'running', 'idle')"   # model.WORKER_ACTIVE


def raw_connect(state_url: str):
    """A plain driver connection (sqlite3 with the store's pragmas, or psycopg), autocommit: the caller
    handles transactions."""
    if state_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(state_url.split("///", 1)[1], isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn
    import psycopg

    return psycopg.connect(state_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def is_sqlite(conn) -> bool:
    return type(conn).__module__.startswith("sqlite3")


def mark(conn) -> str:
    return "?" if is_sqlite(conn) else "%s"


class _Transaction:
    """One write transaction through the driver: BEGIN IMMEDIATE ... COMMIT on SQLite, psycopg's own."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        if is_sqlite(self.conn):
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn
        self._tx = self.conn.transaction()
        self._tx.__enter__()
        self._cursor = self.conn.cursor()
        return self._cursor

    def __exit__(self, *exc):
        if is_sqlite(self.conn):
            self.conn.execute("ROLLBACK" if exc[0] else "COMMIT")
            return False
        self._cursor.close()
        return self._tx.__exit__(*exc)


def _timed(function) -> dict:
    started = time.perf_counter()
    result = function()
    return {"seconds": time.perf_counter() - started, "result": result}


# -- storing fetched jobs ---------------------------------------------------------------------------

def store_jobs_floor(state_url: str, jobs_file: str, queue: str) -> dict:
    """The received job dicts stored as rows of the jobs table: the row tuples built (json.dumps of each
    job is in the timed part: the row holds the job's JSON text) and one executemany INSERT in one
    transaction. Reading the job dicts from `jobs_file` is outside the clock (ours reads them the same way)."""
    with open(jobs_file) as f:
        received = json.load(f)
    conn = raw_connect(state_url)
    m = mark(conn)
    insert = ("INSERT INTO jobs (panda_id, queue, status, sub_status, attempt_nr, resource_type, core_count, "
              f"submit_attempts, job_json, created, modified) VALUES ({m}, {m}, 'starting', 'fetched', {m}, {m}, "
              f"{m}, 0, {m}, {m}, {m})")

    def store():
        at = time.time()
        rows = [(job["PandaID"], queue, int(job["attemptNr"]), job["resource_type"], int(job["coreCount"]),
                 json.dumps(job), at, at) for job in received]
        with _Transaction(conn) as cursor:
            cursor.executemany(insert, rows)
        return {"stored": len(rows)}

    return _timed(store)


# -- poll -------------------------------------------------------------------------------------------

def poll_read_check_floor(state_url: str, queue: str, host: str, work_root: str, lost_grace: str) -> dict:
    """poll where PanDA sees nothing change, as a plain script: the same keyset pages of the queue's active
    workers of this host read through the driver, and for each worker the os calls the local backend's
    check makes: list its work directory and, for a running one, read its pid file and /proc/PID/stat
    (same start time, not a zombie) and stat the pid file. A worker whose directory is not there yet is
    within its lost grace: nothing to write either. Writes nothing; the process's wall time is the row's."""
    conn = raw_connect(state_url)
    m = mark(conn)
    page = (f"SELECT worker_id, status, native_status, submit_time, created FROM workers WHERE queue = {m} "
            f"AND status IN {ACTIVE} AND (harvester_host IS NULL OR harvester_host = {m}) AND worker_id > {m} "
            f"ORDER BY worker_id LIMIT {PAGE}")
    grace, at = float(lost_grace), time.time()
    running = unseen = other = 0
    after = -1
    while True:
        rows = conn.execute(page, (queue, host, after)).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        for worker_id, status, native_status, submit_time, created in rows:
            work = f"{work_root}/{worker_id}"
            try:
                names = os.listdir(work)
            except FileNotFoundError:
                if at - (submit_time or created) < grace:
                    unseen += 1
                else:
                    other += 1
                continue
            if ".exitcode" in names or ".pid" not in names:
                other += 1
                continue
            with open(f"{work}/.pid") as f:
                pid, ticks = f.read().split()
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
            fields = text[text.rindex(")") + 2:].split()
            os.stat(f"{work}/.pid")
            if fields[0] != "Z" and fields[19] == ticks and status == native_status == "running":
                running += 1
            else:
                other += 1
    return {"result": {"checked": running + unseen + other, "running": running, "unseen": unseen,
                       "changed": other}}


def poll_update_floor(state_url: str, queue: str) -> dict:
    """poll where every worker changed (submitted -> running), as the least SQL that gives the same durable
    result: one read of the queue's active workers' (worker_id, status, modified), then in one transaction
    one executemany UPDATE with the compare-and-set on (status, modified) in its WHERE and one executemany
    INSERT of the workers' reports into the outbox. No compare-and-set SELECT, no pages."""
    conn = raw_connect(state_url)
    m = mark(conn)
    read = f"SELECT worker_id, status, modified FROM workers WHERE queue = {m} AND status IN {ACTIVE}"
    update = (f"UPDATE workers SET status = 'running', native_status = 'running', start_time = {m}, modified = {m} "
              f"WHERE worker_id = {m} AND status = {m} AND modified = {m}")
    insert = ("INSERT INTO pending_reports (kind, key, queue, version, payload, final, created, attempts) "
              f"VALUES ('worker', {m}, {m}, 1, NULL, false, {m}, 0)")

    def run():
        rows = conn.execute(read, (queue,)).fetchall()
        at = time.time()
        with _Transaction(conn) as cursor:
            cursor.executemany(update, [(at, at, w, s, modified) for w, s, modified in rows])
            cursor.executemany(insert, [(w, queue, at) for w, _, _ in rows])
        return {"changed": len(rows)}

    return _timed(run)


# -- submit -----------------------------------------------------------------------------------------

def submit_spawn_floor(wrapper: str, count: str) -> dict:
    """`count` starts of the local backend's wrapper script as it starts them: one Popen each, in the
    wrapper's directory, with the environment the backend gives (pilot `true`)."""
    work = os.path.dirname(wrapper)
    env = {**os.environ, "HARVESTER_ID": "bench", "HARVESTER_PILOT_COMMAND": "true",
           "HARVESTER_PILOT_STDOUT": f"{work}/pilot.out", "HARVESTER_PILOT_STDERR": f"{work}/pilot.err",
           "HARVESTER_BATCH_LOG": f"{work}/batch.log"}
    for n in range(int(count)):
        subprocess.Popen(["/bin/sh", wrapper], cwd=work, env={**env, "HARVESTER_WORKER_ID": str(n)},
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    return {}


# -- propagate --------------------------------------------------------------------------------------

def propagate_floor(state_url: str, url: str, proxy: str, ca: str, bulk_size: str, harvester_id: str) -> dict:
    """The outbox's final job updates sent as the same bulk calls on one requests.Session: read through
    the driver, `bulk_size` per call, to the simulator (a process of its own); after each call the updates
    PanDA accepted are deleted from the outbox (by key and version, one executemany in one transaction), as
    a run must forget what was sent or send it again. The process's wall time."""
    import requests

    conn = raw_connect(state_url)
    m = mark(conn)
    rows = conn.execute("SELECT key, version, payload FROM pending_reports WHERE kind = 'job' ORDER BY key").fetchall()
    forget = f"DELETE FROM pending_reports WHERE kind = 'job' AND key = {m} AND version = {m}"
    session = requests.Session()
    session.cert = proxy
    session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
    target = url.rstrip("/") + "/pilot/update_jobs_bulk"
    size, accepted = int(bulk_size), 0
    for start in range(0, len(rows), size):
        batch = rows[start:start + size]
        updates = [json.loads(payload) for _, _, payload in batch]
        response = session.post(target, data=json.dumps({"job_list": updates, "harvester_id": harvester_id}),
                                timeout=(10, 120), verify=ca)
        done = [(key, version) for (key, version, _), answer in zip(batch, response.json()["data"])
                if answer["success"]]
        with _Transaction(conn) as cursor:
            cursor.executemany(forget, done)
        accepted += len(done)
    return {"result": {"accepted": accepted}}


FLOORS = {f.__name__: f for f in (store_jobs_floor, poll_read_check_floor, poll_update_floor, submit_spawn_floor,
                                  propagate_floor)}


if __name__ == "__main__":
    out = FLOORS[sys.argv[1]](*sys.argv[2:])
    out["project_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "harvester_cli")
    print(json.dumps(out))
