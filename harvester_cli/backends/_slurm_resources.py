"""What can start now on a Slurm cluster, per partition (SlurmBackend.free_resources): parsing only.

Two sources, both answered by slurmctld at once and neither submitting anything:

- `sinfo -h -o '%P<SEP>%a<SEP>%A<SEP>%C<SEP>%N'`: per partition its availability, nodes allocated/idle (a
  node running anything is not idle), CPUs allocated/idle/other/total and the nodes it draws on (partitions
  over the same nodes share their idle CPUs: the planner counts them once);
- `sbatch --test-only` of a worker of the queue's shape (its rendered #SBATCH lines, the queue's partition,
  account, qos, ...): when slurmctld would start it ("sbatch: Job 12 to start at 2026-12-07T11:28:12 using 8
  processors on nodes n1 in partition debug"). That start takes running jobs' ends, reservations and the
  partition's limits into account, which the idle counts do not. Run with TZ=UTC, so the time reads the same
  wherever sbatch runs (a login node).

A backfill window: when the queue's walltime would not start now but a shorter one would (idle nodes until a
reservation or a job's planned start), the longest such walltime, found by probing down to the queue's
min_walltime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from harvester_cli.backends._slurm_status import SEP, _cluster_header

SINFO_FORMAT = SEP.join(("%P", "%a", "%A", "%C", "%N"))
_START = re.compile(r"Job \d+ to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
# A test-only job whose start is this close to the time of asking starts now (the scheduler's own pass).
STARTS_NOW_SLACK = 30
# sbatch --test-only calls at most per partition to find a backfill window (a binary search over minutes).
WINDOW_PROBES = 7


@dataclass
class PartitionLoad:
    name: str
    available: str
    idle_nodes: int
    allocated_nodes: int
    idle_cores: int
    total_cores: int
    nodes: str        # sinfo's node list (compressed): the pool the partition draws on


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def parse_sinfo(text: str) -> tuple[dict[str, PartitionLoad], str | None]:
    """`sinfo -h -o SINFO_FORMAT` -> ({partition[@cluster]: load}, the default partition). sinfo may print a
    partition on several lines (its nodes grouped by state): their counts add up."""
    loads: dict[str, PartitionLoad] = {}
    default, cluster = None, None
    for line in text.splitlines():
        header = _cluster_header(line)
        if header is not None:
            cluster = header
            continue
        fields = line.split(SEP)
        if len(fields) != 5 or not fields[0].strip():
            continue
        name, available, nodes_ai, cpus, nodelist = (f.strip() for f in fields)
        if name.endswith("*"):
            name = name[:-1]
            default = default or name
        key = f"{name}@{cluster}" if cluster else name
        allocated, _, idle = nodes_ai.partition("/")
        cpu = cpus.split("/")
        cpu += ["0"] * (4 - len(cpu))
        load = loads.get(key)
        if load is None:
            loads[key] = PartitionLoad(key, available, _int(idle), _int(allocated), _int(cpu[1]), _int(cpu[3]),
                                       nodelist)
        else:
            load.idle_nodes += _int(idle)
            load.allocated_nodes += _int(allocated)
            load.idle_cores += _int(cpu[1])
            load.total_cores += _int(cpu[3])
            load.nodes = f"{load.nodes},{nodelist}"
    return loads, default


def parse_pending(text: str) -> dict[str, int]:
    """`squeue -h -a -t PENDING -o %P` -> jobs waiting per partition[@cluster], every user's, held ones too (an
    array's waiting tasks count once; a job that may run in several partitions counts in each)."""
    waiting: dict[str, int] = {}
    cluster = None
    for line in text.splitlines():
        header = _cluster_header(line)
        if header is not None:
            cluster = header
            continue
        for name in filter(None, (p.strip() for p in line.split(","))):
            key = f"{name}@{cluster}" if cluster else name
            waiting[key] = waiting.get(key, 0) + 1
    return waiting


def parse_test_only(text: str) -> float | None:
    """sbatch --test-only's answer (stderr, run with TZ=UTC) -> when the job would start (epoch); None if it
    does not say (a refusal: its message is the caller's)."""
    match = _START.search(text)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()


def window(fits, walltime: int, min_walltime: int | None) -> int:
    """The longest walltime (seconds, whole minutes) that `fits(minutes)` says starts now: the queue's walltime
    if it does, else the longest between min_walltime and it less a minute (a backfill window), else 0. Asks
    `fits` at most WINDOW_PROBES + 2 times; the answer is never longer than one `fits` said yes to."""
    top = max(1, -(-walltime // 60))
    if fits(top):
        return walltime
    if not min_walltime:
        return 0
    floor = low = max(1, -(-min_walltime // 60))
    if low >= top or not fits(low):
        return 0
    high = top   # low fits, high does not
    for _ in range(WINDOW_PROBES):
        if high - low <= 1:
            break
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    # The window closes as time passes: a walltime that fits to the minute now no longer fits when the worker
    # reaches sbatch a moment later (it would wait for the reservation's end). One minute less, if that still
    # reaches min_walltime.
    return max(floor, low - 1) * 60
