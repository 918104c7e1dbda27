"""Empty pilots from stale activated-job counts: a simulated hour of one-minute cycles on a pull queue.

PanDA's activated-job counts come from a view refreshed on every full minute, so a job a pilot took a few
seconds ago still counts as activated in the next cycle. This drives the real planner (steps/planner.py)
through an hour of simulated time, second by second, with a steady trickle of activated jobs, and counts
empty pilots (a pilot that starts and finds no job) and how long jobs wait for a pilot, before (the
counts taken as they are) and after (pilots started since the last refresh taken off them). "late" counts
jobs not taken by a pilot of the first cycle after PanDA counted them (plus the pilot's 40 s start).

    python bench/bench_empty_pilots.py [--rate 2] [--hours 1] [--seed 7]

Prints a table; no assertions. Model: jobs arrive as a Poisson stream (`--rate` per minute); the view is
refreshed at every full minute; harvester-cli runs a cycle at second 37 of every minute; a submitted pilot
starts 10-40 s later (its time in the batch queue) and takes the oldest activated job, if any.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harvester_cli.config import QueueConfig  # noqa: E402
from harvester_cli.steps.planner import QueueState, plan  # noqa: E402
from harvester_cli.steps.submit import stats_made  # noqa: E402

REFRESH = 60
CYCLE_AT = 37


def simulate(compensate: bool, floor: int, rate_per_minute: float, seconds: int, seed: int) -> dict:
    rng = random.Random(seed)
    queue = QueueConfig(name="PQ", mode="pull", backend="local", empty_pilot_floor=floor, n_queue_limit_worker=20,
                        max_workers=1000, max_new_workers_per_cycle=50)
    activated: deque[float] = deque()      # activation times of jobs waiting for a pilot
    view = 0                               # PanDA's count as of the last refresh
    pilots: list[float] = []               # start times of submitted pilots not yet started
    started: list[float] = []              # start times of pilots that started
    empty, late, waits, waiting_per_minute, submitted = 0, 0, [], [], 0
    next_arrival = rng.expovariate(rate_per_minute / 60)
    for t in range(seconds):
        while next_arrival <= t:
            activated.append(next_arrival)
            next_arrival += rng.expovariate(rate_per_minute / 60)
        if t % REFRESH == 0:
            view = len(activated)
            waiting_per_minute.append(len(activated))
        for start in [p for p in pilots if p <= t]:
            pilots.remove(start)
            started.append(t)
            if activated:
                arrived = activated.popleft()
                waits.append(t - arrived)
                shown = -(-arrived // REFRESH) * REFRESH   # the first refresh that counted it
                late += t > shown + 60 + 40               # not taken by a pilot of the next cycle
            else:
                empty += 1
        if t % 60 == CYCLE_AT:
            made = stats_made(REFRESH, t) if compensate else None
            age = None if made is None else int(t - made)
            since = made if made is not None else t
            state = QueueState(queued={"SCORE": len(pilots)}, activated=view,
                               started_recently={"SCORE": sum(1 for s in started if s >= since)}, stats_age=age)
            n = plan(queue, state, 1000).total
            submitted += n
            pilots += [t + rng.uniform(10, 40) for _ in range(n)]
    return {"pilots": submitted, "empty": empty, "jobs": len(waits), "late": late,
            "wait_median": statistics.median(waits) if waits else 0, "wait_p95": _p95(waits),
            "wait_max": max(waits, default=0), "waiting": statistics.mean(waiting_per_minute)}


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2.0, help="activated jobs per minute")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    seconds = int(options.hours * 3600)
    print(f"pull queue, {options.rate:g} jobs/min activated, view refreshed every {REFRESH} s, cycle every 60 s, "
          f"pilots start 10-40 s after submission, {options.hours:g} h simulated")
    print(f"{'counts':<28} {'floor':>5} {'pilots':>7} {'empty/h':>8} {'jobs':>5} {'wait med':>9} {'wait p95':>9} "
          f"{'wait max':>9} {'waiting/min':>12} {'late':>5}")
    for floor in (0, 1):
        for compensate, label in ((False, "as PanDA gives them"), (True, "minus pilots started since")):
            r = simulate(compensate, floor, options.rate, seconds, options.seed)
            print(f"{label:<28} {floor:>5} {r['pilots']:>7} {r['empty'] / options.hours:>8.1f} {r['jobs']:>5} "
                  f"{r['wait_median']:>8.0f}s {r['wait_p95']:>8.0f}s {r['wait_max']:>8.0f}s {r['waiting']:>12.2f} "
                  f"{r['late']:>5}")


if __name__ == "__main__":
    main()
