"""One working cycle: fetch-jobs, submit, poll, propagate, sweep, in that order (what cron chains)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from harvester_cli.config import QueueConfig
from harvester_cli.errors import HarvesterError
from harvester_cli.instance import Instance

STEPS = ("fetch-jobs", "submit", "poll", "propagate", "sweep")


@dataclass
class StepResult:
    step: str
    summary: str
    partial: bool


def run_cycle(instance: Instance, queues: list[QueueConfig], *, sweep_retention: int | None = None) -> list[StepResult]:
    from harvester_cli import fetching, monitoring, propagation, submission, sweeping

    results = []

    def step(name: str, action) -> None:
        try:
            summary, partial = action()
        except (HarvesterError, SQLAlchemyError, OSError) as exc:   # one failing step must not stop the others
            summary, partial = f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", True
        results.append(StepResult(name, summary, partial))

    def fetch():
        r = fetching.fetch_jobs(instance, queues)
        return f"stored {sum(q.stored for q in r.queues)} jobs", r.failed

    def submit():
        r = submission.submit(instance, queues)
        return (f"submitted {sum(len(q.submitted) for q in r.queues)}, failed {sum(len(q.failed) for q in r.queues)}",
                r.partial)

    def poll():
        r = monitoring.poll(instance, queues)
        changes = sum(sum(q.changes.values()) for q in r.queues)
        return f"checked {sum(q.checked for q in r.queues)}, {changes} changed", r.partial

    def propagate():
        r = propagation.propagate(instance, queues)
        return f"jobs sent {r.jobs_sent}, workers sent {r.workers_sent}", r.partial

    def sweep():
        r = sweeping.sweep(instance, queues, retention=sweep_retention)
        return f"killed {sum(q.killed for q in r.queues)}, cleaned {sum(q.cleaned for q in r.queues)}", r.partial

    for name, action in zip(STEPS, (fetch, submit, poll, propagate, sweep)):
        step(name, action)
    return results
