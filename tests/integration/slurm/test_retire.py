"""Retiring queued pilots nobody needs any more, against real Slurm (issue 30): the scenarios are
tests/support/retire.py's; here pilots wait pending until a test lets one start (--begin far ahead, then
`scontrol update StartTime=now`)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from harvester_cli.instance import worker_ref
from tests.support import retire as scenario
from tests.support.harness import wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.retire]


class Cluster:
    """The cluster as the scenarios see it: pilots pending until `start` moves their begin time to now."""

    overrides: ClassVar[dict] = {}   # nothing beyond the harness's own configuration

    def __init__(self, slurm):
        self.slurm = slurm

    def queue(self, **queue_keys) -> dict:
        return self.slurm.queue(pilot="sleep 600", sbatch_options=["--begin=now+7200"],
                                queue={"n_queue_limit_worker": 20, "max_workers": 40, **queue_keys})

    def instance(self, queues: dict, **overrides):
        return self.slurm.instance(queues, **overrides)

    def state(self, row) -> str:
        job = next((j for j in self.slurm.jobs() if j["JobArrayID"] == row.batch_id), None)
        if job is None:
            return "other"
        return {"PENDING": "queued", "RUNNING": "running", "CANCELLED": "removed"}.get(job["State"], "other")

    def start(self, row) -> None:
        self.slurm.cluster.run("scontrol", "update", f"JobId={row.batch_id}", "StartTime=now")
        wait_until(lambda: self.state(row) == "running", 60, 0.3, f"job {row.batch_id} running in Slurm")


@pytest.fixture
def cluster_view(slurm):
    return Cluster(slurm)


def test_excess_idle_pilots_are_retired_youngest_first(cluster_view, sim):
    scenario.excess_idle_pilots_are_retired_youngest_first(cluster_view, sim)


def test_a_running_pilot_is_never_touched(cluster_view, sim):
    scenario.a_running_pilot_is_never_touched(cluster_view, sim)


def test_the_floor_is_kept(cluster_view, sim):
    scenario.the_floor_is_kept(cluster_view, sim)


def test_a_pilot_that_starts_during_the_removal_is_not_lost(cluster_view, sim):
    scenario.a_pilot_that_starts_during_the_removal_is_not_lost(cluster_view, sim)


def test_two_hosts_retiring_together_remove_each_pilot_once(cluster_view, sim, harness):
    scenario.two_hosts_retiring_together_remove_each_pilot_once(cluster_view, sim, harness)


def test_a_job_that_starts_while_held_is_impossible_and_a_started_one_is_released(cluster_view, sim):
    """The hold is what makes the cancel conditional: after retire, nothing this call left alive is held."""
    instance = cluster_view.instance({scenario.QUEUE: cluster_view.queue(empty_pilot_floor=0)})
    pilots = scenario.idle_pilots(instance, 2)
    cluster_view.start(pilots[0])
    backend = instance.backend(scenario.queues_of(instance)[0])
    results = backend.retire([worker_ref(p) for p in pilots], "retired: queued pilot no longer needed")
    assert [(r.outcome, r.detail) for r in results] == [("started", "RUNNING"), ("retired", "PENDING")]
    assert [cluster_view.state(p) for p in pilots] == ["running", "removed"]
    shown = cluster_view.slurm.cluster.run("scontrol", "-o", "show", "job", pilots[0].batch_id).stdout
    assert "Priority=0" not in shown and "JobHeld" not in shown, shown   # released again
