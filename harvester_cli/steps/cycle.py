"""One working cycle: fetch-jobs, submit, poll, propagate, sweep, in that order (what cron chains); and
`follow`, which polls and propagates until given workers end (`submit --wait`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.errors import EXIT_USAGE, HarvesterError, StateUnreachable
from harvester_cli.instance import Instance
from harvester_cli.state import workers
from harvester_cli.state.store import DatabaseFailure
from harvester_cli.steps import fetch_jobs, poll, propagate, submit, sweep

STEPS = ("fetch-jobs", "submit", "poll", "propagate", "sweep")


@dataclass
class StepResult:
    step: str
    summary: str
    partial: bool
    problems: list[str] = field(default_factory=list)   # why the step was partial, one line each
    items: int = 0
    started: float = 0.0
    ended: float = 0.0
    exit_code: int = 0   # 1 partial, 2 a configuration problem found on the way (a login node's host key)


def run_cycle(instance: Instance, queues: list[QueueConfig], *, sweep_retention: int | None = None) -> list[StepResult]:
    # Each step: (summary, why it was partial, items handled); the items go to the step's run record and metrics.
    def fetch_step():
        r = fetch_jobs.fetch_jobs(instance, queues)
        stored = sum(q.stored for q in r.queues)
        return f"stored {stored} jobs", r.problems(), stored, None

    def submit_step():
        r = submit.submit(instance, queues)
        if r.interrupted:   # what the backend did not take is withdrawn: the cycle stops here
            raise KeyboardInterrupt(str(r.interrupted))
        submitted = sum(len(q.submitted) for q in r.queues)
        return (f"submitted {submitted}, failed {sum(len(q.failed) for q in r.queues)}", r.problems(), submitted,
                r.exit_code)

    def poll_step():
        r = poll.poll(instance, queues)
        changes = sum(sum(q.changes.values()) for q in r.queues)
        checked = sum(q.checked for q in r.queues)
        return f"checked {checked}, {changes} changed", r.problems(), checked, r.exit_code

    def propagate_step():
        r = propagate.propagate(instance, queues)
        return (f"jobs sent {r.jobs_sent}, workers sent {r.workers_sent}", r.problems(), r.jobs_sent + r.workers_sent,
                None)

    def sweep_step():
        r = sweep.sweep(instance, queues, retention=sweep_retention)
        killed, cleaned = sum(q.killed for q in r.queues), sum(q.cleaned for q in r.queues)
        retired = sum(q.retired for q in r.queues)
        return (f"killed {killed}, retired {retired}, cleaned {cleaned}", r.problems(), killed + retired + cleaned,
                r.exit_code)

    instance.store   # a state database this code cannot use stops the cycle here, with exit 2, not per step
    results = []
    for name, action in zip(STEPS, (fetch_step, submit_step, poll_step, propagate_step, sweep_step)):
        started = time.time()
        try:
            summary, problems, items, code = action()
        except (HarvesterError, DatabaseFailure, OSError) as exc:   # one failing step must not stop the others
            # ... but a database that is unusable, or gone for longer than db_reconnect_seconds, stops them all:
            # one line (exit 2 or 1), not the same error once per step
            if isinstance(exc, StateUnreachable) or (isinstance(exc, HarvesterError) and exc.exit_code == EXIT_USAGE):
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            summary, problems, items, code = f"error: {reason}", [reason], 0, None
        code = (1 if problems else 0) if code is None else code
        results.append(StepResult(name, summary, bool(problems), problems, items, started, time.time(), code))
    return results


def follow(instance: Instance, queues: list[QueueConfig], worker_ids: list[int], *, timeout: float,
           interval: float = 5.0, on_round: Callable[[dict[int, str]], None] | None = None
           ) -> dict[int, tuple[str, str | None]]:
    """`submit --wait`: poll and propagate these queues until these workers are final (or the timeout);
    returns their last (status, diag)."""
    deadline = time.monotonic() + timeout
    while True:
        poll.poll(instance, queues)
        propagate.propagate(instance, queues)
        with instance.store.reading() as tx:
            seen = workers.statuses(tx, worker_ids)
        if on_round:
            on_round({w: s for w, (s, _) in seen.items()})
        if all(s in model.WORKER_FINAL for s, _ in seen.values()) or time.monotonic() >= deadline:
            return seen
        time.sleep(interval)
