"""Our side of the rows that time a library step: harvester-cli's steps called through their top-level
functions and timed from inside a process of its own. This is the one module of bench/ that calls the
library's steps (module paths inside harvester_cli move; a merge fixes the imports here). The floors are in
bench/floors.py and run none of this.

    python -m bench.probes NAME CONFIG [ARG ...]

Each probe prints one JSON line: {"seconds": s, "result": ...} for the timed step. Seams stand in for the
batch system only where a row measures harvester-cli's own cost per row (poll with every worker changed,
the growth rows); the commands' rows use the real local backend.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path


def _instance(config_path: str):
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance

    return Instance(config_module.load(Path(config_path)))


class _Seam:
    """The batch system answering at once: every worker it is asked about is running (and, for submit,
    started). Rows that time harvester-cli's own cost per row use it (poll with every worker changed, the
    growth rows)."""

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


# -- submit -----------------------------------------------------------------------------------------

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


# -- fetch-jobs -------------------------------------------------------------------------------------

def store_jobs_step(config_path: str, jobs_file: str) -> dict:
    """steps.fetch_jobs.store_jobs of the received job dicts (as acquire_jobs returns them) in `jobs_file`;
    reading the file, loading the configuration and opening the store are outside the clock."""
    from harvester_cli.steps import fetch_jobs

    instance = _instance(config_path)
    queue = next(iter(instance.config.queues.values()))
    with open(jobs_file) as f:
        received = json.load(f)
    instance.store
    out = _timed(lambda: fetch_jobs.store_jobs(instance, queue, received))
    fetched = out["result"]
    out["result"] = {"stored": fetched.stored, "invalid": fetched.invalid, "duplicate": fetched.duplicate,
                     "error": fetched.error}
    return out


PROBES = {f.__name__: f for f in (poll_step, submit_step, store_jobs_step)}


if __name__ == "__main__":
    print(json.dumps(PROBES[sys.argv[1]](*sys.argv[2:])))
