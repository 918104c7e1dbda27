"""Retiring queued pilots nobody needs any more: a simulated day on a pull queue, the same load with and
without retirement (steps/retire.py), in compressed time.

The real planner (steps/planner.py) and the real retirement rule (steps/retire.py, `decide`) run every
simulated minute, as `cycle` would from cron; sweep carries the marks out in the same cycle, and a pilot is
removed only while it still waits (what Backend.retire guarantees). Everything else is a model:

- PanDA: jobs are activated as a Poisson stream whose rate follows the demand curve below; the activated
  count the planner sees is refreshed every full minute ([panda] stats_refresh), pilots started since then
  taken off (as submit does). At the drop every job still activated is aborted: the count falls to zero.
- The site: our share is `--slots` batch slots, filled oldest pilot first (FIFO) once a pilot has waited its
  own scheduling delay (2-10 min, the negotiator and the CE); a pilot takes the oldest activated job and
  runs it (1-5 h), or finds none and ends after 3 min (an empty pilot).

The demand curve (activated jobs per minute; --rate is the plateau):
    00:00-04:00  ramps up from 0 to the plateau
    04:00-10:00  plateau
    10:00        sudden drop to zero (the task is aborted: activated jobs vanish, none come)
    10:00-16:00  nothing
    16:00-24:00  rises again at once to the plateau

Measured per day: pilots submitted, empty pilots (started, found no job), pilots retired, wasted queued
pilot-hours (hours spent queued by pilots that were retired or ran no job) and the part of them queued after
the drop, queued pilot-hours beyond the demand (queued pilots above what the rule's own target needed,
minute by minute), and the time from a job's activation to the start of the pilot that runs it (median, 95th
percentile; and the median of the jobs activated after the rise again). The jobs (times, run times) and each
pilot's scheduling delay are drawn from the seed, the same with and without retirement.

    python bench/bench_retire.py [--rate 2] [--slots 150,300,1000] [--seeds 5] [--min-age 600] [--max-per-run 20,200]

Prints a table; no assertions; not run in CI. Three sites by default, by our share of their slots: 150 and
300 (the plateau's demand outgrows them: activated jobs pile up at PanDA, pilots wait for slots) and 1000
(pilots start once their delay has passed).
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harvester_cli.config import QueueConfig  # noqa: E402
from harvester_cli.steps.planner import QueueState, plan  # noqa: E402
from harvester_cli.steps.retire import Pilot, decide  # noqa: E402
from harvester_cli.steps.submit import stats_made  # noqa: E402

DAY = 24 * 3600
TICK = 10                  # seconds between looks at the batch system
REFRESH = 60               # PanDA's view of activated jobs
CYCLE_AT = 37              # harvester-cli's cycle at second 37 of every minute
EMPTY_RUN = 180            # an empty pilot's run
RAMP, DROP, RISE = 4 * 3600, 10 * 3600, 16 * 3600


def demand_rate(t: float, plateau: float) -> float:
    """Activated jobs per minute at time t (the curve in the module's docstring)."""
    if t < RAMP:
        return plateau * t / RAMP
    if t < DROP:
        return plateau
    if t < RISE:
        return 0.0
    return plateau


@dataclass
class QueuedPilot:
    worker_id: int
    submitted: float
    ready: float                       # earliest start: its scheduling delay has passed


@dataclass
class Day:
    submitted: int = 0
    empty: int = 0
    retired: int = 0
    wasted_seconds: float = 0.0        # queued time of pilots retired or that ran no job
    wasted_after_drop: float = 0.0     # the part of it queued after the drop (10:00)
    beyond_seconds: float = 0.0        # queued pilots above the rule's target, integrated over time
    waits: list[float] = field(default_factory=list)          # activation -> running, every job run
    waits_after_rise: list[float] = field(default_factory=list)


def _wasted(day: Day, submitted: float, until: float) -> None:
    day.wasted_seconds += until - submitted
    day.wasted_after_drop += max(0.0, until - max(submitted, DROP))


def _activations(plateau: float, seed: int) -> deque[tuple[float, float]]:
    """The day's jobs: (activation time, run time), a Poisson stream following the curve (thinned at the
    plateau's rate). The same for both runs of a seed."""
    rng = random.Random(seed)
    jobs: deque[tuple[float, float]] = deque()
    at = rng.expovariate(plateau / 60)
    while at < DAY:
        run = rng.uniform(3600, 5 * 3600)
        if rng.random() < demand_rate(at, plateau) / plateau:
            jobs.append((at, run))
        at += rng.expovariate(plateau / 60)
    return jobs


def simulate(retire: bool, *, plateau: float, slots: int, seed: int, min_age: int, max_per_run: int) -> Day:
    queue = QueueConfig(name="PQ", mode="pull", backend="htcondor", pilot="pilot", n_queue_limit_worker=200,
                        max_workers=100_000, max_new_workers_per_cycle=50, empty_pilot_floor=1,
                        retire_min_age=min_age, retire_max_per_run=max_per_run if retire else 0)
    day = Day()
    stream = _activations(plateau, seed)
    activated: deque[tuple[float, float]] = deque()  # jobs waiting for a pilot
    view = 0                                       # PanDA's count at its last refresh
    queued: dict[int, QueuedPilot] = {}            # FIFO: insertion order is submission order
    running: list[float] = []                      # heap of end times of running pilots
    starts: deque[float] = deque()                 # start times of the last few minutes
    next_id = 1
    t = 0
    while t < DAY:
        # PanDA: new activated jobs; at the drop, every activated job is aborted
        while stream and stream[0][0] <= t:
            activated.append(stream.popleft())
        if DROP <= t < DROP + TICK:
            activated.clear()
        if t % REFRESH == 0:
            view = len(activated)
        # the site: free slots go to the oldest pilots whose delay has passed
        while running and running[0] <= t:
            heapq.heappop(running)
        free = slots - len(running)
        if free > 0:
            for pilot in [p for p in queued.values() if p.ready <= t][:free]:
                del queued[pilot.worker_id]
                starts.append(t)
                if activated:
                    arrived, run = activated.popleft()
                    day.waits.append(t - arrived)
                    if arrived >= RISE:
                        day.waits_after_rise.append(t - arrived)
                    heapq.heappush(running, t + run)
                else:
                    day.empty += 1
                    _wasted(day, pilot.submitted, t)
                    heapq.heappush(running, t + EMPTY_RUN)
        # harvester-cli: one cycle a minute (submit: plan and retirement marks; sweep: the removals)
        if t % 60 == CYCLE_AT - CYCLE_AT % TICK:
            made = stats_made(REFRESH, t)
            age = int(t - made)
            while starts and starts[0] < made:
                starts.popleft()
            state = QueueState(queued={"SCORE": len(queued)}, running={"SCORE": len(running)}, activated=view,
                               started_recently={"SCORE": len(starts)}, stats_age=age)
            decision = decide(queue, state, [Pilot(p.worker_id, "SCORE", queued_since=p.submitted)
                                             for p in queued.values()], t)
            need = max(int(max(0, view - len(starts)) * queue.activated_factor), queue.empty_pilot_floor)
            for worker_id in decision.retire:   # carried out by the same cycle's sweep, while still queued
                day.retired += 1
                _wasted(day, queued.pop(worker_id).submitted, t)
            n = plan(queue, state, 1000).total
            for _ in range(n):   # each pilot's scheduling delay is its own: the same in both runs
                delay = random.Random(seed * 1_000_003 + next_id).uniform(120, 600)
                queued[next_id] = QueuedPilot(next_id, t, t + delay)
                next_id += 1
            day.submitted += n
            day.beyond_seconds += max(0, len(queued) - need) * 60
        t += TICK
    return day   # pilots still queued at the end of the day are not counted as wasted yet


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else 0.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2.0, help="activated jobs per minute on the plateau")
    parser.add_argument("--slots", default="150,300,1000", help="our share of the site's slots, one site per value")
    parser.add_argument("--seeds", type=int, default=5, help="days simulated per row (the table shows means)")
    parser.add_argument("--min-age", type=int, default=600, help="retire_min_age (s)")
    parser.add_argument("--max-per-run", default="20,200", help="retire_max_per_run, one row per value")
    options = parser.parse_args()
    caps = [int(c) for c in options.max_per_run.split(",")]
    print(f"pull queue, one simulated day: ramp 0 -> {options.rate:g} jobs/min over 4 h, plateau until 10:00, drop "
          f"to zero (activated jobs aborted), nothing until 16:00, {options.rate:g} jobs/min again until 24:00;")
    print(f"n_queue_limit_worker=200, max_new_workers_per_cycle=50, empty_pilot_floor=1, retire_min_age="
          f"{options.min_age} s; jobs run 1-5 h, empty pilots 3 min, pilots wait 2-10 min before the site may "
          f"start them; means of {options.seeds} days")
    header = (f"{'site':<10} {'retire_max_per_run':>18} {'pilots':>6} {'empty':>6} {'retired':>7} "
              f"{'wasted queued h':>15} {'after 10:00':>11} {'beyond demand h':>15} {'act->run med':>12} "
              f"{'p95':>7} {'after rise med':>14}")
    print(header)
    print("-" * len(header))

    def mean(values) -> float:
        values = list(values)
        return sum(values) / len(values)

    for slots in (int(s) for s in options.slots.split(",")):
        rows = {}
        for cap in [0, *caps]:
            days = [simulate(cap > 0, plateau=options.rate, slots=slots, seed=seed, min_age=options.min_age,
                             max_per_run=cap) for seed in range(1, options.seeds + 1)]
            row = rows[cap] = {
                "pilots": mean(d.submitted for d in days), "empty": mean(d.empty for d in days),
                "retired": mean(d.retired for d in days), "wasted": mean(d.wasted_seconds for d in days) / 3600,
                "after": mean(d.wasted_after_drop for d in days) / 3600,
                "beyond": mean(d.beyond_seconds for d in days) / 3600,
                "median": mean(statistics.median(d.waits) for d in days),
                "p95": mean(_p95(d.waits) for d in days),
                "rise": mean(statistics.median(d.waits_after_rise) for d in days)}
            print(f"{f'{slots} slots':<10} {cap if cap else 'no retirement':>18} {row['pilots']:>6.0f} "
                  f"{row['empty']:>6.0f} {row['retired']:>7.0f} {row['wasted']:>15.1f} {row['after']:>11.1f} "
                  f"{row['beyond']:>15.1f} {_minutes(row['median']):>12} {_minutes(row['p95']):>7} "
                  f"{_minutes(row['rise']):>14}")
        base = rows[0]
        for cap in caps:
            row = rows[cap]
            cut = 1 - row["wasted"] / base["wasted"] if base["wasted"] else 0.0
            after = 1 - row["after"] / base["after"] if base["after"] else 0.0
            rise = (row["median"] - base["median"]) / 60
            print(f"{'':<10} retire_max_per_run={cap}: wasted queued pilot-hours {-cut:+.0%} (goal -80%; the hours "
                  f"queued after 10:00 {-after:+.0%}), activation -> running median {rise:+.1f} min (goal: no rise)")


if __name__ == "__main__":
    main()
