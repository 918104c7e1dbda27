"""Realtime resource information: what the batch system says can start now, for queues with free_resources.

`gather` asks the queue's backend (Backend.free_resources: Slurm's sinfo and sbatch --test-only per
partition, an ARC CE's GLUE2 free slots) right before the queue is planned, stores the figures per CE
(state.resources: plan, status and the metrics read them), and hands the planner what it may use: the figures
of this run, or when the backend could not be asked, the last stored ones with their age (the planner does
not use those older than free_resources_max_age). A backend that cannot say (HTCondor: behind a CE the site's
collector is not reachable; local processes) leaves the plan as it was.

`still_waiting` asks the backend which of the queue's queued workers still wait: the state database learns
that a pilot started only at the next poll, which a cycle runs after submit, so it still counts as queued the
pilots that started since, and the free-resources rule would hold back the ones that should wait instead.
A worker the backend no longer lists does not wait (Slurm and A-REX list a job as soon as they took it).
"""

from __future__ import annotations

import logging

from harvester_cli import model
from harvester_cli.backends.base import WorkerRef
from harvester_cli.config import QueueConfig
from harvester_cli.instance import Instance
from harvester_cli.state import resources, workers
from harvester_cli.steps.planner import FreeCE, FreeResources

log = logging.getLogger(__name__)


def gather(instance: Instance, queue: QueueConfig, sizes: dict[str, tuple[int, int]]) -> FreeResources | None:
    """None for a queue without free_resources. Workers are weighed at the size of the queue's first resource
    type (the one empty pilots get); the planner counts a larger type's workers in its cores."""
    if not queue.free_resources:
        return None
    cores, memory = sizes.get(queue.resource_types[0]) or (queue.core_count, queue.core_count * queue.memory_mb_per_core)
    problem = None
    try:
        figures = instance.backend(queue).free_resources(cores, memory)
    except Exception as exc:   # the batch system did not answer: the stored figures, if still fresh, stand
        log.info("queue %s: cannot ask what can start now: %s", queue.name, exc,
                 exc_info=log.isEnabledFor(logging.DEBUG))
        figures, problem = None, str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    else:
        if figures is None:
            return FreeResources(unsupported=True)
        rows = [{"computing_element": f.computing_element, "measured": f.at, "source": f.source[:500],
                 "workers": f.workers, "window": f.window, "idle_nodes": f.idle_nodes, "idle_cores": f.idle_cores,
                 "total_cores": f.total_cores, "waiting": f.waiting, "pool": f.pool} for f in figures]
        with instance.store.transaction() as tx:
            resources.replace(tx, queue.name, rows)
    with instance.store.reading() as tx:
        stored = resources.of_queues(tx, [queue.name])
    at = model.now()
    return FreeResources(tuple(FreeCE(r["computing_element"], r["workers"], r["window"], max(0, int(at - r["measured"])),
                                      r["source"], r["pool"], r["idle_nodes"]) for r in stored), problem=problem)


# More queued workers than this are not asked about before a plan: the state database's count stands.
STILL_WAITING_MAX = 2000


def still_waiting(instance: Instance, queue: QueueConfig, queued: int) -> tuple[int | None, str | None]:
    """How many of the queue's `queued` workers (the state database's count) still wait, by the backend's
    check of those this host handed to it (submitted, idle; at most STILL_WAITING_MAX): those that started
    or ended since the last poll do not. Nothing is recorded (poll does that after the submit); the backend
    may bring back the files of workers that ended, as poll would. The others (pending, another host's on a
    host-bound backend) count as waiting. (None, why) when it could not be asked."""
    with instance.store.reading() as tx:
        page = workers.queued_page(tx, queue.name, STILL_WAITING_MAX + 1, instance.host_filter(queue))
    if len(page) > STILL_WAITING_MAX:
        return None, f"more than {STILL_WAITING_MAX} queued: not asked one by one"
    refs = [WorkerRef(row[0], queue.name, *row[1:]) for row in page]
    backend = instance.backend(queue)
    left = 0
    try:
        for start in range(0, len(refs), backend.check_page):
            seen = backend.check(refs[start:start + backend.check_page])
            left += sum(1 for o in seen if o.status not in model.WORKER_QUEUED)
    except Exception as exc:   # as in poll: a backend that cannot be asked leaves the state database's count
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("queue %s: cannot ask which queued workers still wait: %s", queue.name, why,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        return None, f"the batch system could not be asked: {why}"
    return max(0, queued - left), None
