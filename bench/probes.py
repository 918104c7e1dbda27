"""What the benchmark runs in a process of its own: harvester-cli's library steps timed from inside (where
a row measures a step, not a command) and the floors (the same work in a plain script).

    python -m bench.probes NAME CONFIG [ARG ...]

Each probe prints one JSON line; {"seconds": s} when it timed a section itself, otherwise the benchmark
takes the process's wall time. Seams stand in for the batch system only where a row measures harvester-
cli's own cost per row (the growth rows); every other row uses the real local backend.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PAGE = 500   # what poll and propagate take per round (steps.poll.CHUNK, [panda] bulk_size)


def _instance(config_path: str):
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance

    return Instance(config_module.load(Path(config_path)))


def _raw(instance):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.sites import raw_connect

    return raw_connect(instance.state_url)


def _mark(conn) -> str:
    return "?" if type(conn).__module__.startswith("sqlite3") else "%s"


class _Seam:
    """The batch system answering at once: every worker it is asked about is running (and, for submit,
    started). Only the growth rows use it, to measure harvester-cli's own cost per row."""

    host_bound = False   # any host may work it, as a remote batch system

    def __init__(self, queue):
        self.queue = queue

    def check(self, refs):
        from harvester_cli import model
        from harvester_cli.backends.base import Observation

        at = model.now()
        return [Observation(ref.worker_id, model.RUNNING, "running", start_time=at) for ref in refs]

    def submit(self, specs):
        from harvester_cli.backends.base import SubmitResult

        return [SubmitResult(spec.worker_id, batch_id=f"seam.{spec.worker_id}", submission_host=socket.gethostname(),
                             computing_element="localhost") for spec in specs]

    def fetch_outputs(self, ref, names):
        return {}


def _timed(function) -> dict:
    started = time.perf_counter()
    result = function()
    return {"seconds": time.perf_counter() - started, "result": result}


# -- poll -------------------------------------------------------------------------------------------

def poll_step(config_path: str) -> dict:
    """steps.poll.poll_queue with the batch system at the seam: every worker is (still) running."""
    from harvester_cli.steps import poll

    instance = _instance(config_path)
    queue = next(iter(instance.config.queues.values()))
    instance._backends[queue.name] = _Seam(queue)
    instance.store   # connect and check the schema before the clock starts
    out = _timed(lambda: poll.poll_queue(instance, queue))
    out["result"] = {"checked": out["result"].checked, "changes": dict(out["result"].changes)}
    return out


def poll_read_check_floor(config_path: str) -> dict:
    """poll with nothing to change, as a plain script: the same pages of the same columns read through
    the driver, and the same local backend's check of each worker."""
    from harvester_cli.backends.base import WorkerRef

    instance = _instance(config_path)
    queue = next(iter(instance.config.queues.values()))
    backend = instance.backend(queue)
    conn = _raw(instance)
    mark = _mark(conn)
    sql = ("SELECT worker_id, queue, batch_id, submission_host, computing_element, status, log_dir, submit_time, "
           "kill_reason, diag, native_status, native_exit_code, start_time, created, modified FROM workers "
           f"WHERE queue = {mark} AND status IN ('submitted', 'running', 'idle') AND worker_id > {mark} "
           f"ORDER BY worker_id LIMIT {PAGE}")
    checked, after = 0, -1
    while True:
        rows = conn.execute(sql, (queue.name, after)).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        seen = backend.check([WorkerRef(*r[:7], r[7], r[8]) for r in rows])
        checked += sum(1 for row, s in zip(rows, seen) if s.status == row[5])
    return {"result": {"checked": checked}}


def poll_update_floor(config_path: str) -> dict:
    """poll with every worker changed, as the same statements straight through the driver: read a page,
    then in one transaction per page the compare-and-set read, the workers' UPDATE and the outbox's
    upsert, each prepared once and run with executemany."""
    from harvester_cli import model

    instance = _instance(config_path)
    queue = next(iter(instance.config.queues.values()))
    conn = _raw(instance)
    sqlite = type(conn).__module__.startswith("sqlite3")
    m = _mark(conn)
    page = ("SELECT worker_id, status, modified FROM workers WHERE queue = {m} AND status IN ('submitted', "
            "'running', 'idle') AND worker_id > {m} ORDER BY worker_id LIMIT {n}").format(m=m, n=PAGE)
    update = (f"UPDATE workers SET status = {m}, native_status = {m}, start_time = {m}, modified = {m} "
              f"WHERE worker_id = {m}")
    upsert = (f"INSERT INTO pending_reports (kind, key, queue, version, payload, final, created, attempts) VALUES "
              f"('worker', {m}, {m}, 1, NULL, false, {m}, 0) ON CONFLICT (kind, key) DO UPDATE SET "
              "version = pending_reports.version + 1, payload = excluded.payload, final = excluded.final")

    def run():
        after = -1
        while True:
            rows = conn.execute(page, (queue.name, after)).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            at = model.now()
            ids = [r[0] for r in rows]
            current = f"SELECT worker_id, status, modified FROM workers WHERE worker_id IN ({', '.join([m] * len(ids))})"
            if sqlite:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(current, ids).fetchall()
                conn.executemany(update, [(model.RUNNING, "running", at, at, w) for w in ids])
                conn.executemany(upsert, [(w, queue.name, at) for w in ids])
                conn.execute("COMMIT")
            else:
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.execute(current + " FOR UPDATE", ids).fetchall()
                    cursor.executemany(update, [(model.RUNNING, "running", at, at, w) for w in ids])
                    cursor.executemany(upsert, [(w, queue.name, at) for w in ids])

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


def submit_step(config_path: str, count: str) -> dict:
    """steps.submit.submit of `count` workers (one-off, as `submit --count`), the batch system at the seam."""
    from harvester_cli.steps import submit

    instance = _instance(config_path)
    queue = next(iter(instance.config.queues.values()))
    instance._backends[queue.name] = _Seam(queue)
    instance.store
    out = _timed(lambda: submit.submit(instance, [queue], count=int(count), force=True))
    out["result"] = {"submitted": sum(len(q.submitted) for q in out["result"].queues),
                     "errors": [q.error for q in out["result"].queues if q.error]}
    return out


# -- propagate --------------------------------------------------------------------------------------

def propagate_floor(config_path: str) -> dict:
    """The final job updates of the outbox, sent as the same bulk calls with one requests.Session: read
    through the driver, `bulk_size` per call."""
    import requests

    instance = _instance(config_path)
    panda = instance.config.panda
    conn = _raw(instance)
    rows = conn.execute("SELECT key, payload FROM pending_reports WHERE kind = 'job' ORDER BY key").fetchall()
    session = requests.Session()
    session.cert = str(panda.proxy)
    session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
    url = panda.url.rstrip("/") + "/pilot/update_jobs_bulk"
    accepted = 0
    for start in range(0, len(rows), panda.bulk_size):
        updates = [json.loads(payload) for _, payload in rows[start:start + panda.bulk_size]]
        response = session.post(url, data=json.dumps({"job_list": updates, "harvester_id": instance.config.harvester_id}),
                                timeout=(10, 120), verify=str(panda.ca))
        accepted += sum(1 for a in response.json()["data"] if a["success"])
    return {"result": {"accepted": accepted}}


PROBES = {f.__name__: f for f in (poll_step, poll_read_check_floor, poll_update_floor, submit_spawn_floor,
                                  submit_step, propagate_floor)}


if __name__ == "__main__":
    print(json.dumps(PROBES[sys.argv[1]](*sys.argv[2:])))
