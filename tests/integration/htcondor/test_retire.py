"""Retiring queued pilots nobody needs any more, against the real pool's schedd (issue 30): the scenarios are
tests/support/retire.py's; here the pool keeps pilots idle until a test lets one start (a job attribute in
its requirements, edited at the schedd)."""

from __future__ import annotations

import pytest

from tests.support import retire as scenario
from tests.support.condor_pool import COLLECTOR, SCHEDD
from tests.support.harness import wait_until

pytestmark = [pytest.mark.htcondor, pytest.mark.retire]

STATES = {1: "queued", 2: "running", 3: "removed"}


class Pool:
    """The pool as the scenarios see it: pilots wait until `start` sets their GoAhead."""

    def __init__(self, htc):
        self.htc = htc
        self.overrides = htc.overrides

    def queue(self, **queue_keys) -> dict:
        return self.htc.queue(pilot="sleep 600", extra_attributes={"+GoAhead": "False",
                                                                   "requirements": "(MY.GoAhead =?= True)"},
                              queue={"n_queue_limit_worker": 20, "max_workers": 40, **queue_keys})

    def instance(self, queues: dict, **overrides):
        return self.htc.instance(queues, **overrides)

    def _ad(self, row):
        cluster, proc = (int(x) for x in row.batch_id.split("."))
        schedd = self.htc.pool.schedd()
        constraint = f"ClusterId == {cluster} && ProcId == {proc}"
        found = list(schedd.query(constraint, ["JobStatus", "RemoveReason"]))
        return found[0] if found else next(iter(schedd.history(constraint, ["JobStatus", "RemoveReason"], match=1)),
                                           None)

    def state(self, row) -> str:
        ad = self._ad(row)
        return "removed" if ad is None else STATES.get(ad["JobStatus"], "other")

    def start(self, row) -> None:
        self.htc.pool.schedd().edit(row.batch_id, "GoAhead", "True")
        wait_until(lambda: self.state(row) == "running", 60, 0.3, f"job {row.batch_id} running in the pool")


@pytest.fixture
def pool(htc):
    assert SCHEDD and COLLECTOR   # the queue names the pool's schedd: any host works its workers
    return Pool(htc)


def test_excess_idle_pilots_are_retired_youngest_first(pool, sim):
    scenario.excess_idle_pilots_are_retired_youngest_first(pool, sim)


def test_a_running_pilot_is_never_touched(pool, sim):
    scenario.a_running_pilot_is_never_touched(pool, sim)


def test_the_floor_is_kept(pool, sim):
    scenario.the_floor_is_kept(pool, sim)


def test_a_pilot_that_starts_during_the_removal_is_not_lost(pool, sim):
    scenario.a_pilot_that_starts_during_the_removal_is_not_lost(pool, sim)


def test_two_hosts_retiring_together_remove_each_pilot_once(pool, sim, harness):
    scenario.two_hosts_retiring_together_remove_each_pilot_once(pool, sim, harness)


def test_the_schedd_removes_only_idle_jobs_and_says_why(pool, sim):
    """The removal's reason at the schedd, and a job removed while idle is the only one the answer counts."""
    instance = pool.instance({scenario.QUEUE: pool.queue(empty_pilot_floor=0)})
    pilots = scenario.idle_pilots(instance, 2)
    pool.start(pilots[0])
    from harvester_cli.instance import worker_ref

    backend = instance.backend(scenario.queues_of(instance)[0])
    results = backend.retire([worker_ref(p) for p in pilots], "retired: queued pilot no longer needed")
    assert [(r.outcome, r.detail) for r in results] == [("started", "RUNNING"), ("retired", "IDLE")]
    ad = pool._ad(pilots[1])
    assert ad["JobStatus"] == 3 and ad["RemoveReason"].startswith("harvester-cli: retired: queued pilot no longer "
                                                                 "needed")
    assert pool.state(pilots[0]) == "running"
    again = backend.retire([worker_ref(p) for p in pilots], "retired: queued pilot no longer needed")
    assert [r.outcome for r in again] == ["started", "retired"]   # an earlier removal of ours is recognised
