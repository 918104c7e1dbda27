"""CE fanout: which computing element each new worker of a queue goes to (pure, no I/O).

Harvester's way, with APF's and DIRAC's lessons:
- a queue's CEs come from its configuration or from a CRIC pandaqueue description (`queues[]` entries
  with `ce_endpoint`, `ce_flavour`, `ce_state`, `ce_queue_name`); only ACTIVE ones are used;
- each CE is weighed by recent throughput (workers that reached running / workers that reached running
  or still queue, over a window of hours) mixed with a fair share (`fair_share` of the weight is split
  evenly, the rest follows throughput);
- a CE that already queues the queue limit gets nothing; a CE whose submissions keep failing, or whose
  jobs cannot reach it, is benched for a back-off period;
- the workers of one call are spread by systematic weighted sampling: each CE gets floor or ceiling
  of its expected share, in random order (a weighted random choice without the variance of
  independent draws, so a small batch does not land on one CE by chance).
"""

from __future__ import annotations

import random
from collections import Counter

from harvester_cli.config.ces import CEEntry, from_cric  # noqa: F401  (shared with the credential side)


def weights(ces: list[str], stats: dict[str, dict[str, int]], fair_share: float) -> dict[str, float]:
    """Weight per CE (summing to 1): fair_share split evenly, the rest by recent throughput.

    Throughput = started / (started + queued). A CE without recent workers is given the mean throughput
    of the others (a new or idle CE gets a fair chance, no more); when nothing started anywhere the
    weights are even.
    """
    if not ces:
        return {}
    throughput: dict[str, float | None] = {}
    for ce in ces:
        s = stats.get(ce, {})
        started, queued = int(s.get("started", 0)), int(s.get("queued", 0))
        throughput[ce] = started / (started + queued) if started + queued else None
    known = [t for t in throughput.values() if t is not None]
    default = sum(known) / len(known) if known else 1.0
    filled = {ce: (t if t is not None else default) for ce, t in throughput.items()}
    total = sum(filled.values())
    even = 1.0 / len(ces)
    return {ce: fair_share * even + (1.0 - fair_share) * (filled[ce] / total if total else even) for ce in ces}


def systematic(weights_: dict[str, float], n: int, rng: random.Random) -> Counter:
    """n picks by systematic sampling: one random offset, n equally spaced points on the cumulative
    weights. Each CE gets floor or ceiling of n x its weight."""
    counts: Counter = Counter()
    total = sum(w for w in weights_.values() if w > 0)
    if n <= 0 or total <= 0:
        return counts
    names = [ce for ce, w in weights_.items() if w > 0]
    bounds, running = [], 0.0
    for ce in names:
        running += weights_[ce] / total
        bounds.append(running)
    bounds[-1] = 1.0
    offset = rng.random() / n
    i = 0
    for k in range(n):
        point = offset + k / n
        while i < len(bounds) - 1 and point >= bounds[i]:
            i += 1
        counts[names[i]] += 1
    return counts


def choose(weights_: dict[str, float], n: int, capacity: dict[str, int | None],
           rng: random.Random | None = None) -> list[str]:
    """A CE for each of up to n workers, in random order. `capacity` caps new workers per CE (None: no
    cap); picks above a cap are spread again over the CEs with room. Fewer than n when all are full."""
    rng = rng or random.Random()
    taken: Counter = Counter()
    remaining = n
    open_ = {ce: w for ce, w in weights_.items() if w > 0 and (capacity.get(ce) is None or capacity[ce] > 0)}
    while remaining > 0 and open_:
        progress = 0
        for ce, k in systematic(open_, remaining, rng).items():
            room = capacity.get(ce)
            take = k if room is None else min(k, room - taken[ce])
            taken[ce] += take
            progress += take
            if room is not None and taken[ce] >= room:
                open_.pop(ce, None)
        remaining -= progress
        if progress == 0:
            break
    picks = [ce for ce, k in taken.items() for _ in range(k)]
    rng.shuffle(picks)
    return picks


# -- health: CEs that cannot be reached, remembered between runs -----------------------------

def mark_unreachable(health: dict, ce: str, since: float, at: float) -> bool:
    """Remember that jobs cannot reach `ce` (since `since`, seen `at`); True if the record changed."""
    old = health.get(ce)
    new = {"unreachable_since": min(since, old["unreachable_since"]) if old else since, "seen": at}
    if old == new:
        return False
    health[ce] = new
    return True


def mark_reachable(health: dict, ce: str) -> bool:
    return health.pop(ce, None) is not None


def bench_reasons(ces: list[str], *, health: dict, recent: dict[str, dict[str, int]], at: float,
                  backoff_seconds: float, max_failures: int) -> dict[str, str]:
    """CEs to skip now, with why: unreachable within the back-off period, or at least `max_failures`
    missed submissions (and none started) in the back-off window (`recent` = statistics of that window)."""
    out = {}
    for ce in ces:
        mark = health.get(ce)
        if mark and at - mark["seen"] < backoff_seconds:
            out[ce] = (f"unreachable since {int(at - mark['unreachable_since'])} s; "
                       f"benched for {int(backoff_seconds - (at - mark['seen']))} s more")
            continue
        s = recent.get(ce, {})
        if max_failures and s.get("missed", 0) >= max_failures and not s.get("started", 0):
            out[ce] = f"{s['missed']} failed submissions in the last {int(backoff_seconds)} s"
    return out
