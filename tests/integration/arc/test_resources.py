"""What can start now (free_resources) on the real A-REX 6.17: it publishes its GLUE2 information over REST
(FreeSlots, FreeSlotsWithDuration, WaitingJobs of the ComputingShare `fork`), and the plan, status and the
metrics show the figures per CE."""

from __future__ import annotations

import pytest

from harvester_cli.steps import monitor, submit
from tests.support.arc_ce import arc_queue

pytestmark = [pytest.mark.arc, pytest.mark.resources]

Q = "ARC_FREE"


def test_free_slots_come_from_the_ce_glue2_information(harness, sim, arc_ce, pilot_zip):
    queue = {**arc_queue(arc_ce, pilot_zip, "pull"), "free_resources": True, "n_queue_limit_worker": 0}
    instance = harness.instance({Q: queue})
    backend = instance.backend(instance.config.queues[Q])
    (figures,) = backend.free_resources(1, 2000)
    # the fork LRMS's free slots are this machine's CPUs not in use: a number the CE computes, not ours
    assert figures.computing_element == arc_ce.url
    assert figures.source.startswith("A-REX GLUE2 info, share fork: FreeSlots=")
    assert figures.idle_cores is not None and figures.idle_cores >= 0 and figures.waiting is not None
    assert figures.workers == figures.idle_cores and figures.window == instance.config.queues[Q].walltime
    assert backend.free_resources(figures.idle_cores + 1, 2000)[0].workers == 0   # a worker larger than what is free

    sim.add_jobs(Q, 5)
    plan = submit.submit(instance, [instance.config.queues[Q]], dry_run=True).queues[0].plan
    (step,) = [s for s in plan.trace if s.rule == "free resources"]
    assert f"{arc_ce.url}: " in step.inputs and "(A-REX GLUE2 info, share fork" in step.inputs, step
    # a queued limit of 0 queues nothing, but pilots that start at once do not wait
    free = figures.workers
    assert step.result == (min(5, free) if free else 0), step
    (shown,) = monitor.summary(instance, [Q], 3600)["free_resources"]
    assert shown["computing_element"] == arc_ce.url and not shown["stale"]
    samples = monitor.metric_samples(instance).values
    assert [labels for labels, _ in samples["harvester_cli_free_workers"]] == [
        {"queue": Q, "computing_element": arc_ce.url}]


def test_a_ce_that_does_not_answer_leaves_the_stored_figures(harness, sim, arc_ce, pilot_zip):
    good = {**arc_queue(arc_ce, pilot_zip, "pull"), "free_resources": True}
    instance = harness.instance({Q: good})
    assert instance.backend(instance.config.queues[Q]).free_resources(1, 2000)[0].workers is not None
    plan = submit.submit(instance, [instance.config.queues[Q]], dry_run=True).queues[0].plan
    assert "(A-REX GLUE2 info" in next(s for s in plan.trace if s.rule == "free resources").inputs
    down = {**arc_queue(arc_ce, pilot_zip, "pull", url="https://localhost:1/arex", timeout=5),
            "free_resources": True}
    cut_off = harness.instance({Q: down})
    plan = submit.submit(cut_off, [cut_off.config.queues[Q]], dry_run=True).queues[0].plan
    step = next(s for s in plan.trace if s.rule == "free resources")
    assert "not asked now (no ARC CE answered" in step.inputs and f"{arc_ce.url}: " in step.inputs, step
