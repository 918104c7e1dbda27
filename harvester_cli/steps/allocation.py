"""Many jobs in one worker (a queue's many_to_one, HPC): which jobs a queue refuses, how many allocations the
jobs waiting make, and which jobs go into each (pure, no I/O).

An allocation holds at most nodes_max x jobs_per_node jobs (with free_resources, when fewer nodes stand idle
than nodes_max but at least nodes_min, the allocations of that cycle are sized to them: one that starts now
beats a larger one that waits). Jobs go oldest first; full allocations go at once.
What is left goes too when it fills nodes_min nodes, or when its oldest job has waited fill_timeout seconds
(a half-filled allocation does not wait for more jobs for ever); otherwise it waits. An allocation asks for
the nodes its jobs fill (never fewer than nodes_min), the largest cores and memory of its jobs per step, and
the longest maxWalltime of its jobs plus walltime_margin, within the queue's walltime. A job that could never
fit (a maxWalltime beyond the queue's walltime, more cores than cores_per_job) is refused when it is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass

from harvester_cli.backends.base import Allocation
from harvester_cli.config import QueueConfig
from harvester_cli.panda.jobs import MAX_INT32, PandaJob


def refusal(queue: QueueConfig, job: PandaJob) -> str | None:
    """Why no allocation of this queue can hold the job, or None."""
    shape = queue.many_to_one
    limit = job.walltime_limit
    if limit is not None and limit + shape.walltime_margin > queue.walltime:
        return (f"its maxWalltime of {limit} s plus walltime_margin {shape.walltime_margin} s is more than the "
                f"queue's walltime of {queue.walltime} s: no allocation of queue {queue.name} can hold it")
    cores = job.core_count or 1
    if shape.cores_per_job is not None and cores > shape.cores_per_job:
        return (f"it asks for {cores} cores, more than cores_per_job={shape.cores_per_job} of queue "
                f"{queue.name}: no job step there can hold it")
    return None


def largest(queue: QueueConfig, nodes_max: int | None) -> int:
    """The nodes of the largest allocation: the queue's nodes_max, or fewer when the plan sizes allocations to
    the idle nodes (`nodes_max`, never below nodes_min)."""
    shape = queue.many_to_one
    if nodes_max is None:
        return shape.nodes_max
    return max(shape.nodes_min, min(shape.nodes_max, nodes_max))


def allocations_for(ages: list[float], queue: QueueConfig, *, fill_now: bool = False,
                    nodes_max: int | None = None) -> tuple[int, str]:
    """How many allocations these waiting jobs make (their ages in seconds, oldest first), and why, in the
    plan's words. `fill_now` (submit --count): what is left goes whatever its size and age. `nodes_max`: the
    largest allocation's nodes when the idle nodes make it smaller than the queue's."""
    shape = queue.many_to_one
    nodes = largest(queue, nodes_max)
    jobs_max = nodes * shape.jobs_per_node
    full, rest = divmod(len(ages), jobs_max)
    sized = f", sized to the idle nodes (nodes_max={shape.nodes_max})" if nodes < shape.nodes_max else ""
    words = (f"{len(ages)} job(s) wait, an allocation holds {shape.jobs_min}..{jobs_max} "
             f"({shape.nodes_min}..{nodes} node(s) x {shape.jobs_per_node}{sized})")
    if not rest:
        return full, f"{words}: {full} full"
    oldest = ages[full * jobs_max]   # the oldest of those left after the full ones
    if rest >= shape.jobs_min:
        return full + 1, f"{words}: {full} full + 1 of {rest} job(s)"
    if fill_now:
        return full + 1, f"{words}: {full} full + 1 of {rest} job(s) (--count: not waiting to fill)"
    if oldest >= shape.fill_timeout:
        return full + 1, (f"{words}: {full} full + 1 of {rest} job(s), the oldest waiting {oldest:.0f} s >= "
                          f"fill_timeout={shape.fill_timeout}")
    return full, (f"{words}: {full} full; {rest} job(s) wait for {shape.jobs_min - rest} more or for "
                  f"fill_timeout={shape.fill_timeout} ({shape.fill_timeout - oldest:.0f} s left)")


@dataclass
class Packed:
    """One allocation to submit: its jobs (oldest first), its shape, its walltime in seconds."""

    jobs: list[PandaJob]
    allocation: Allocation
    walltime: int

    @property
    def cores(self) -> int:
        """The cores the allocation asks for (what the worker counts)."""
        return self.allocation.nodes * self.allocation.jobs_per_node * self.allocation.cores_per_job

    @property
    def memory_mb(self) -> int:
        return min(MAX_INT32, self.allocation.nodes * self.allocation.jobs_per_node * self.allocation.memory_per_job)


def walltime(queue: QueueConfig, jobs: list[PandaJob]) -> int:
    """The longest maxWalltime of the jobs plus the margin, within the queue's walltime (a job that says
    nothing may need all of it)."""
    limits = [job.walltime_limit for job in jobs]
    if not limits or any(limit is None for limit in limits):
        return queue.walltime
    return min(queue.walltime, max(limits) + queue.many_to_one.walltime_margin)


def shape_of(queue: QueueConfig, jobs: list[PandaJob]) -> Allocation:
    shape = queue.many_to_one
    nodes = max(shape.nodes_min, -(-len(jobs) // shape.jobs_per_node))
    cores = shape.cores_per_job or max(job.core_count or 1 for job in jobs)
    memory = max(job.min_ram_count or (job.core_count or 1) * queue.memory_mb_per_core for job in jobs)
    return Allocation(nodes=nodes, jobs_per_node=shape.jobs_per_node, cores_per_job=cores, memory_per_job=memory)


def pack(queue: QueueConfig, waiting: list[tuple[PandaJob, float]], now: float, *,
         fill_now: bool = False, nodes_max: int | None = None) -> tuple[list[Packed], list[PandaJob]]:
    """The allocations these claimed jobs (with when each was fetched) make, by the rule allocations_for
    follows, and the jobs left to wait."""
    waiting = sorted(waiting, key=lambda item: item[1])
    n, _ = allocations_for([now - created for _, created in waiting], queue, fill_now=fill_now, nodes_max=nodes_max)
    size = largest(queue, nodes_max) * queue.many_to_one.jobs_per_node
    packed = []
    for start in range(0, n * size, size):
        jobs = [job for job, _ in waiting[start:start + size]]
        packed.append(Packed(jobs, shape_of(queue, jobs), walltime(queue, jobs)))
    return packed, [job for job, _ in waiting[n * size:]]
