"""Realtime resource information: what the batch system says can start now, for queues with free_resources.

`gather` asks the queue's backend (Backend.free_resources: Slurm's sinfo and sbatch --test-only per
partition, an ARC CE's GLUE2 free slots) right before the queue is planned, stores the figures per CE
(state.resources: plan, status and the metrics read them), and hands the planner what it may use: the figures
of this run, or when the backend could not be asked, the last stored ones with their age (the planner does
not use those older than free_resources_max_age). A backend that cannot say (HTCondor: behind a CE the site's
collector is not reachable; local processes) leaves the plan as it was.
"""

from __future__ import annotations

import logging

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.instance import Instance
from harvester_cli.state import resources
from harvester_cli.steps.planner import FreeCE, FreeResources

log = logging.getLogger(__name__)


def gather(instance: Instance, queue: QueueConfig, sizes: dict[str, tuple[int, int]]) -> FreeResources | None:
    """None for a queue without free_resources. Workers are weighed at the size of the queue's first resource
    type (the one empty pilots get)."""
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
                                      r["source"], r["pool"]) for r in stored), problem=problem)
