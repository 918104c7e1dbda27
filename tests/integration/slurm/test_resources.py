"""What can start now (free_resources), against the real Slurm of the tests: one node of 16 CPUs shared by the
partitions debug and second. Its idle CPUs are found (sinfo) and pilots that start at once pass the queued
limit; a job holding every CPU leaves nothing that can start (sbatch --test-only), and no pilot beyond
queued_when_full waits; a reservation ahead leaves a backfill window the new worker's walltime is fitted to;
figures older than free_resources_max_age are not used when slurmctld does not answer.

Each test's pilots are `sleep`s; the blocker job and the reservation are removed when the test ends.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select, update

from harvester_cli import model
from harvester_cli.state.schema import free_resources, workers
from harvester_cli.steps import monitor, poll, submit
from tests.support.harness import free_port, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.resources]

Q = "FREE_Q"
RULE = "free resources"


def free_queue(slurm, **keys) -> dict:
    return slurm.queue(pilot="sleep 600", partitions=["debug"],
                       queue={"resource_types": ["MCORE"], "core_count": 4, "memory_mb_per_core": 100, "walltime": 7200, "free_resources": True,
                              "n_queue_limit_worker": 1, "max_new_workers_per_cycle": 20, **keys})


def add_jobs(sim, n: int) -> None:
    sim.add_jobs(Q, n, resource_type="MCORE", coreCount=4)


def planned(instance):
    return submit.submit(instance, list(instance.config.queues.values()), dry_run=True).queues[0].plan


def step_of(plan):
    return next(s for s in plan.trace if s.rule == RULE)


def submitted(instance) -> list[int]:
    run = submit.submit(instance, list(instance.config.queues.values())).queues[0]
    assert not run.failed and not run.error, (run.failed[:2], run.error)
    return run.submitted


@pytest.fixture
def blocker(slurm):
    """A job of the test's own holding every CPU of the node for ten minutes (cancelled at the end)."""
    cluster = slurm.cluster
    job = cluster.run("sbatch", "--parsable", "-p", "debug", "-c", "16", "-t", "10", "--job-name=blocker",
                      "-o", "/dev/null", "--wrap", "sleep 600").stdout.strip()
    wait_until(lambda: cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() == "RUNNING", 60, 0.3,
               "the blocker job running")
    yield job
    cluster.run("scancel", job, check=False)
    wait_until(lambda: cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() in ("", "COMPLETED",
                                                                                             "CANCELLED"),
               60, 0.3, "the blocker job gone")


@pytest.fixture
def reservation(slurm):
    """Every node reserved for another user from 25 minutes on: a backfill window of 25 minutes."""
    cluster = slurm.cluster
    name = f"maint{free_port()}"
    cluster.run("scontrol", "create", "reservation", f"reservationname={name}", "starttime=now+1500",
                "duration=60", "nodes=ALL", "users=daemon", "flags=maint,ignore_jobs")
    yield name
    cluster.run("scontrol", "delete", f"reservation={name}", check=False)


def test_idle_cores_are_found_and_pilots_that_start_at_once_pass_the_queued_limit(slurm, sim):
    instance = slurm.instance({Q: free_queue(slurm, queued_when_full=0)})
    add_jobs(sim, 10)
    plan = planned(instance)
    step = step_of(plan)
    # 16 idle CPUs hold 4 workers of 4 cores: the queued limit of 1 does not hold back what starts at once
    assert plan.total == 4 and step.result == 4, plan.trace
    assert re.search(r"debug: 4 now \(sinfo, sbatch --test-only, \d+ s ago\)", step.inputs), step.inputs
    shown = monitor.summary(instance, [Q], 3600)["free_resources"]
    assert [(r["computing_element"], r["workers"], r["idle_nodes"], r["idle_cores"], r["total_cores"], r["stale"])
            for r in shown] == [("debug", 4, 1, 16, 16, False)]
    samples = monitor.metric_samples(instance).values
    assert samples["harvester_cli_free_cores"] == [({"queue": Q, "computing_element": "debug"}, 16.0)]
    assert len(submitted(instance)) == 4

    def all_running():
        poll.poll(instance, [instance.config.queues[Q]])
        with instance.store.reading() as tx:
            return [r.status for r in tx.execute(select(workers.c.status))] == [model.RUNNING] * 4

    wait_until(all_running, 60, 0.5, "the 4 pilots running")
    # now the node's CPUs are taken by our own pilots: nothing more can start, and none waits
    plan = planned(instance)
    assert plan.total == 0 and "nothing can start now" in step_of(plan).inputs, plan.trace


def test_pilots_that_started_since_the_last_poll_do_not_count_as_waiting(slurm, sim):
    """A cycle polls after it submits: the state database still says "submitted" for pilots Slurm started
    since. The plan asks Slurm which still wait, so queued_when_full pilots wait for the next free CPUs."""
    keys = free_queue(slurm, n_queue_limit_worker=10, queued_when_full=2)
    keys["backend_options"]["squeue_cache_seconds"] = 0   # each plan below asks squeue afresh
    instance = slurm.instance({Q: keys})
    add_jobs(sim, 10)
    assert len(submitted(instance)) == 6   # 4 start at once on the 16 CPUs, 2 wait
    cluster = slurm.cluster

    def states(state: str = "PENDING,RUNNING") -> list[str]:
        return cluster.run("squeue", "-h", "-r", "-t", state, "-o", "%i %T").stdout.split("\n")[:-1]

    wait_until(lambda: sorted(line.split()[1] for line in states()) == ["PENDING"] * 2 + ["RUNNING"] * 4, 60,
               0.3, "4 pilots running, 2 pending")
    plan = planned(instance)   # no poll since the submit: 6 submitted in the state database
    step = step_of(plan)
    assert "nothing can start now" in step.inputs and "queued=2 (asked now; 6 in the state database)" in \
        step.inputs, step.inputs
    assert plan.total == 0, plan.trace
    # a running pilot ends: a waiting one takes its CPUs, and one more may wait
    cluster.run("scancel", states("RUNNING")[0].split()[0])
    wait_until(lambda: len(states("PENDING")) == 1, 60, 0.3, "one pilot pending")
    plan = planned(instance)
    assert plan.total == 1 and "queued=1 (asked now; 6 in the state database)" in step_of(plan).inputs, \
        [(s.rule, s.inputs, s.result) for s in plan.trace]
    with instance.store.reading() as tx:   # nothing recorded: poll does that
        assert [s for (s,) in tx.execute(select(workers.c.status))] == [model.SUBMITTED] * 6


def test_nothing_is_queued_where_nothing_can_start_and_enough_already_wait(slurm, sim, blocker):
    instance = slurm.instance({Q: free_queue(slurm, n_queue_limit_worker=5, queued_when_full=1)})
    add_jobs(sim, 10)
    plan = planned(instance)
    assert "nothing can start now (debug: 0 now" in step_of(plan).inputs, plan.trace
    assert plan.total == 1   # one pilot waits for the next free CPUs
    assert len(submitted(instance)) == 1
    assert [j["State"] for j in slurm.jobs()] == ["PENDING"]
    plan = planned(instance)
    assert plan.total == 0 and step_of(plan).result == 0, plan.trace
    # status shows every user's jobs waiting in the partition: our pilot
    shown = monitor.summary(instance, [Q], 3600)["free_resources"]
    assert [(r["computing_element"], r["waiting"]) for r in shown] == [("debug", 1)], shown
    # the same queue without free_resources would queue up to its limit of 5
    without = slurm.instance({Q: free_queue(slurm, n_queue_limit_worker=5, free_resources=False)})
    assert planned(without).total == 4


def test_a_backfill_window_is_used(slurm, sim, reservation):
    instance = slurm.instance({Q: free_queue(slurm, min_walltime=600)})
    add_jobs(sim, 1)
    plan = planned(instance)
    assert plan.total == 1 and 1200 <= plan.walltime < 1500, plan.trace   # whole minutes before the reservation
    assert f"walltime {plan.walltime} s (a backfill window)" in step_of(plan).inputs
    run = submit.submit(instance, list(instance.config.queues.values())).queues[0]
    assert len(run.submitted) == 1 and not run.failed, (run.failed[:2], run.error)
    # the submission plans again (a minute may have passed since): its own window is what sbatch got
    assert plan.walltime - 120 < run.plan.walltime <= plan.walltime, run.plan.trace
    (job,) = slurm.jobs()
    shown = slurm.cluster.run("scontrol", "-o", "show", "job", job["JobArrayID"]).stdout
    assert f"TimeLimit=00:{run.plan.walltime // 60:02d}:00" in shown, shown
    wait_until(lambda: [j["State"] for j in slurm.jobs()] == ["RUNNING"], 60, 0.3, "the worker running")
    # a queue that takes no shorter walltime: nothing of its shape can start before the reservation
    strict = slurm.instance({Q: free_queue(slurm, queued_when_full=0)})
    plan = planned(strict)
    assert plan.total == 0 and plan.walltime is None
    assert "debug: 0 now (not for its walltime)" in step_of(plan).inputs, plan.trace


def test_stale_figures_are_ignored(slurm, sim, blocker, tmp_path):
    instance = slurm.instance({Q: free_queue(slurm, n_queue_limit_worker=5, queued_when_full=0)})
    add_jobs(sim, 10)
    assert planned(instance).total == 0   # nothing can start: figures stored
    # the same queue and state, but slurmctld does not answer (a port nobody listens on)
    dead = tmp_path / "dead.conf"
    dead.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", f"SlurmctldPort={free_port()}",
                           slurm.cluster.conf.read_text()))
    keys = free_queue(slurm, n_queue_limit_worker=5, queued_when_full=0)
    cut_off = slurm.instance({Q: {**keys, "backend_options": {**keys["backend_options"], "slurm_conf": str(dead),
                                                              "command_timeout": 2}}})
    plan = planned(cut_off)
    step = step_of(plan)
    # the fresh figures still stand
    assert plan.total == 0 and "(not asked now (sinfo did not answer within 2 s" in step.inputs, step
    with cut_off.store.transaction() as tx:
        tx.execute(update(free_resources).values(measured=model.now() - 1000))
    plan = planned(cut_off)
    step = step_of(plan)
    assert "older than free_resources_max_age=300 s" in step.inputs and "not used" in step.inputs, step
    assert plan.total == 5   # the queued limit alone, as without free_resources
    shown = monitor.summary(cut_off, [Q], 3600)["free_resources"]
    assert [r["stale"] for r in shown] == [True]
