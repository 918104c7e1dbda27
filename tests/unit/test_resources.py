"""What can start now (free_resources): Slurm's sinfo and sbatch --test-only answers, A-REX's GLUE2 free
slots, the backfill window search, and the planner's rule (nothing queued where nothing can start, the
queued limit lifted where slots are free, stale figures not used, one pool counted once)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from harvester_cli import model
from harvester_cli.backends import _arc_resources as glue2
from harvester_cli.backends import _slurm_resources as slurm
from harvester_cli.backends._slurm_status import SEP
from harvester_cli.config import QueueConfig
from harvester_cli.state import resources
from harvester_cli.steps import monitor
from harvester_cli.steps.planner import FreeCE, FreeResources, QueueState, plan
from tests.support.harness import wait_until

pytestmark = pytest.mark.resources


def queue(**kw):
    base = {"name": "Q", "mode": "pull", "backend": "slurm", "pilot": "true", "n_queue_limit_worker": 3,
            "max_workers": 100, "max_new_workers_per_cycle": 50, "free_resources": True, "walltime": 7200}
    return QueueConfig(**{**base, **kw})


def ce(name="debug", workers=8, window=7200, age=10, pool=None):
    return FreeCE(name, workers, window, age, "sinfo, sbatch --test-only", pool)


def rule(result):
    (step,) = [s for s in result.trace if s.rule == "free resources"]
    return step


# -- Slurm -------------------------------------------------------------------------------------------------

def test_sinfo_lines_of_one_partition_add_up_and_the_default_is_found():
    text = "\n".join(SEP.join(f) for f in [
        ("debug*", "up", "2/3", "70/90/0/160", "n[1-5]"),
        ("debug*", "up", "0/1", "0/32/0/32", "n6"),
        ("long", "down", "0/4", "0/128/0/128", "m[1-4]"),
    ]) + "\n"
    loads, default = slurm.parse_sinfo(text)
    assert default == "debug"
    assert (loads["debug"].idle_nodes, loads["debug"].allocated_nodes) == (4, 2)
    assert (loads["debug"].idle_cores, loads["debug"].total_cores) == (122, 192)
    assert loads["debug"].nodes == "n[1-5],n6"
    assert loads["long"].available == "down" and loads["long"].idle_nodes == 4


def test_sinfo_of_another_cluster_names_its_partitions_with_the_cluster():
    text = "CLUSTER: far\n" + SEP.join(("grid", "up", "1/1", "4/4/0/8", "f1,f2")) + "\n"
    loads, _ = slurm.parse_sinfo(text)
    assert list(loads) == ["grid@far"] and loads["grid@far"].idle_cores == 4


def test_jobs_waiting_are_counted_per_partition_and_cluster():
    text = "debug\ndebug\nlong,debug\n\nCLUSTER: c2\nbatch\n"
    assert slurm.parse_pending(text) == {"debug": 3, "long": 1, "batch@c2": 1}
    assert slurm.parse_pending("") == {}


def test_test_only_answer_is_read_in_utc_and_a_refusal_is_none():
    text = "sbatch: Job 7 to start at 2026-12-07T11:28:12 using 8 processors on nodes vm in partition debug\n"
    assert slurm.parse_test_only(text) == datetime(2026, 12, 7, 11, 28, 12, tzinfo=UTC).timestamp()
    assert slurm.parse_test_only("sbatch: error: Batch job submission failed: Invalid account\n") is None


@pytest.mark.parametrize("fits_up_to,min_walltime,expected", [
    (10_000, None, 7200),    # the whole walltime starts now
    (25, None, 0),           # only a window, and the queue takes no shorter walltime
    (25, 300, 1440),         # a 25-minute backfill window, less the minute it closes by meanwhile
    (5, 300, 300),           # a window of min_walltime exactly
    (4, 300, 0),             # the window is shorter than min_walltime
    (119, 60, 7080),         # one minute short of the walltime
])
def test_the_window_is_the_longest_walltime_that_starts_now(fits_up_to, min_walltime, expected):
    asked = []

    def fits(minutes):
        asked.append(minutes)
        return minutes <= fits_up_to

    assert slurm.window(fits, 7200, min_walltime) == expected
    assert len(asked) <= slurm.WINDOW_PROBES + 2
    assert expected == 0 or expected == 7200 or fits(expected // 60 + (expected > 300))


# -- ARC ---------------------------------------------------------------------------------------------------

def _info(*shares):
    return {"Domains": {"AdminDomain": {"Services": {"ComputingService": {
        "ComputingShare": shares[0] if len(shares) == 1 else list(shares)}}}}}


def test_glue2_shares_one_or_many_and_the_queue_picked():
    one = {"Name": "fork", "MappingQueue": "fork", "FreeSlots": "2", "FreeSlotsWithDuration": "2"}
    assert glue2.shares(_info(one)) == [one]
    grid = {"Name": "grid", "MappingQueue": "batch", "FreeSlots": "10"}
    found = glue2.shares(_info(one, grid))
    assert glue2.pick(found, "batch") == [grid] and glue2.pick(found, None) == found
    assert glue2.shares({}) == [] and glue2.shares(_info("junk")) == []


def test_glue2_free_slots_with_duration_give_a_window():
    assert glue2.durations("4:3600 2 x:5") == [(4, 3600), (2, None)]
    assert glue2.window([(2, None)], 1, 7200, None) == 7200
    assert glue2.window([(8, 1800)], 4, 7200, 600) == 1800
    assert glue2.window([(8, 1800)], 4, 7200, None) == 0
    assert glue2.window([(2, None)], 4, 7200, 600) == 0     # no group holds a 4-core worker


# -- the planner's rule ------------------------------------------------------------------------------------

def test_nothing_queued_where_nothing_can_start_and_enough_already_wait():
    state = QueueState(queued={"SCORE": 2}, activated=50, free=FreeResources((ce(workers=0, window=0),)))
    result = plan(queue(), state, 100)
    assert result.total == 0
    assert "nothing can start now" in rule(result).inputs and "queued_when_full=2" in rule(result).inputs
    # fewer wait than queued_when_full: one more may wait for the next free slot
    state = QueueState(queued={"SCORE": 1}, activated=50, free=FreeResources((ce(workers=0, window=0),)))
    assert plan(queue(), state, 100).total == 1
    # without the figures, the queued limit alone decides
    assert plan(queue(), QueueState(queued={"SCORE": 2}, activated=50), 100).total == 1


def test_free_slots_lift_the_queued_limit_within_every_other_cap():
    state = QueueState(queued={"SCORE": 2}, activated=50, free=FreeResources((ce(workers=8),)))
    result = plan(queue(), state, 100)
    assert result.total == 8 and result.walltime is None      # 8 can start; 2 wait for the next free slots
    assert "8 can start now" in rule(result).inputs and "queued_when_full=2, queued=2" in rule(result).inputs
    assert plan(queue(max_workers=5), state, 100).total == 3
    assert plan(queue(max_new_workers_per_cycle=4), state, 100).total == 4
    assert plan(queue(), state, 2).total == 2
    assert plan(queue(), QueueState(queued={"SCORE": 2}, activated=4, free=state.free), 100).total == 2  # demand
    # one free slot: one pilot for it and queued_when_full for the next ones, however much the limit leaves
    small = QueueState(activated=50, free=FreeResources((ce(workers=1),)))
    assert plan(queue(), small, 100).total == 3
    assert plan(queue(n_queue_limit_worker=20), small, 100).total == 3
    assert plan(queue(n_queue_limit_worker=20, free_resources=False), small, 100).total == 20
    # the waiting ones stay within the queued limit
    assert plan(queue(n_queue_limit_worker=1), small, 100).total == 2


def test_a_full_site_keeps_waiting_as_many_as_freed_up_within_one_cycle_lately():
    """Slots free up in bursts (jobs started together end together): a fixed queued_when_full left the rest
    idle until the next cycle. With at most 4 ended within one cycle lately, 4 wait, within the queued limit."""
    full = FreeResources((ce(workers=0, window=0),))
    state = QueueState(queued={"SCORE": 1}, activated=50, free=full, ended_recently=20, ended_peak=4,
                       turnover_cycle=60)
    result = plan(queue(n_queue_limit_worker=10), state, 100)
    assert result.total == 3
    assert "20 ended in the last 600 s, at most 4 within 60 s" in rule(result).inputs
    assert plan(queue(n_queue_limit_worker=3), state, 100).total == 2          # the queued limit holds
    assert plan(queue(n_queue_limit_worker=10, queued_when_full=6), state, 100).total == 5   # the larger
    # a quiet queue keeps queued_when_full
    slow = QueueState(activated=50, free=full, ended_recently=1, ended_peak=1)
    assert plan(queue(queued_when_full=0), slow, 100).total == 1
    assert plan(queue(queued_when_full=2), slow, 100).total == 2
    # with free slots, the waiting ones come on top of what starts at once
    free = QueueState(activated=50, free=FreeResources((ce(workers=3),)), ended_recently=20, ended_peak=4)
    assert plan(queue(n_queue_limit_worker=10), free, 100).total == 7
    # nothing ended (or not counted): queued_when_full alone
    assert plan(queue(), QueueState(activated=50, free=full, ended_recently=0, ended_peak=0), 100).total == 2


def test_a_unified_queue_counts_free_slots_in_cores_so_larger_pilots_do_not_overfill_them():
    """The figures are workers of the first resource type (1 core): ten of them are ten cores, which start one
    8-core pilot, not ten. The workers that may wait come on top, of any size: a waiting pilot holds no core."""
    unified = queue(resource_types=["SCORE", "MCORE"], n_queue_limit_worker=20)
    sizes = {"SCORE": (1, 2000), "MCORE": (8, 16000)}
    mcore_only = QueueState(activated=50, activated_by_type={"MCORE": 50}, sizes=sizes,
                            free=FreeResources((ce(workers=10),)))
    result = plan(unified, mcore_only, 100)
    assert result.per_resource_type == {"SCORE": 0, "MCORE": 3}     # 1 starts in the 10 cores, 2 wait
    (step,) = [s for s in result.trace if s.rule == "free cores"]
    assert "10 cores can start now (workers of 1 core), 2 more may wait; SCORE 1 core, MCORE 8 cores" in step.inputs
    # both types in demand: the cores go in proportion, what is left of them to the type that still fits
    both = QueueState(activated=60, activated_by_type={"SCORE": 30, "MCORE": 30}, sizes=sizes,
                      free=FreeResources((ce(workers=10),)))
    assert plan(queue(resource_types=["SCORE", "MCORE"], n_queue_limit_worker=20, queued_when_full=0), both,
                100).per_resource_type == {"SCORE": 2, "MCORE": 1}
    # nothing can start: only the ones that may wait, whatever their size
    full = QueueState(activated=50, activated_by_type={"MCORE": 50}, sizes=sizes,
                      free=FreeResources((ce(workers=0, window=0),)))
    assert plan(unified, full, 100).per_resource_type == {"SCORE": 0, "MCORE": 2}
    # pilots already waiting beyond the allowance take the first free cores
    queued = QueueState(queued={"MCORE": 3}, queued_cores=24, activated=50, activated_by_type={"MCORE": 50}, sizes=sizes,
                        free=FreeResources((ce(workers=10),)))
    assert plan(unified, queued, 100).per_resource_type == {"SCORE": 0, "MCORE": 0}
    # one size for every type: the workers are the slots, no rule in cores
    same = QueueState(activated=50, activated_by_type={"MCORE": 50}, sizes={"SCORE": (8, 2000), "MCORE": (8, 16000)},
                      free=FreeResources((ce(workers=10),)))
    result = plan(unified, same, 100)
    assert result.total == 12 and not [s for s in result.trace if s.rule == "free cores"]


@pytest.mark.parametrize("times, span, expected", [
    ([], 60, 0), ([5.0], 60, 1), ([0, 59.9, 60, 119.9], 60, 2), ([0, 1, 2, 100, 101, 102, 103], 10, 4),
    ([103, 0, 101, 2, 100, 1, 102], 10, 4), ([0, 10, 20], 10, 1)])
def test_the_most_ends_within_one_cycle_count_any_window_not_fixed_buckets(times, span, expected):
    from harvester_cli.steps.planner import most_within
    assert most_within(times, span) == expected


def test_what_still_waits_is_the_batch_systems_word_and_the_queued_limit_holds_on_it():
    """The state database still counts as queued the pilots that started since the last poll: the rule plans
    by what the batch system says still waits, and the queued limit holds on that too."""
    full = FreeResources((ce(workers=0, window=0),))
    state = QueueState(queued={"SCORE": 7}, activated=50, free=full, queued_seen=1)
    result = plan(queue(n_queue_limit_worker=20), state, 100)
    assert result.total == 1
    assert "queued=1 (asked now; 7 in the state database)" in rule(result).inputs
    # the database's count over the limit (its startable pilots passed it): still refilled up to the limit
    state = QueueState(queued={"SCORE": 3}, activated=50, free=full, queued_seen=1)
    assert plan(queue(n_queue_limit_worker=3), state, 100).total == 1
    # never more waiting than the limit: 12 in the database, 2 really waiting, 4 can start, 10 ended at once
    state = QueueState(queued={"SCORE": 12}, activated=50, free=FreeResources((ce(workers=4),)), queued_seen=2,
                       ended_recently=30, ended_peak=10)
    assert plan(queue(n_queue_limit_worker=5), state, 100).total == 4 + 5 - 2
    # not asked: the database's count, and why
    unasked = QueueState(queued={"SCORE": 1}, activated=50, free=full, queued_unasked="the batch system could not "
                         "be asked: no answer")
    result = plan(queue(n_queue_limit_worker=20), unasked, 100)
    assert result.total == 1 and "queued=1 (the batch system could not be asked: no answer)" in rule(result).inputs


def test_stale_figures_are_not_used():
    state = QueueState(queued={"SCORE": 2}, activated=50,
                       free=FreeResources((ce(workers=0, window=0, age=400),), problem="sinfo did not answer"))
    result = plan(queue(free_resources_max_age=300), state, 100)
    assert result.total == 1   # the queued limit decides, as without free_resources
    assert "older than free_resources_max_age=300" in rule(result).inputs
    assert "sinfo did not answer" in rule(result).inputs
    assert plan(queue(free_resources_max_age=500), state, 100).total == 0


def test_a_backfill_window_gives_the_new_workers_its_walltime():
    state = QueueState(activated=50, free=FreeResources((ce(workers=4, window=1500),)))
    result = plan(queue(min_walltime=600), state, 100)
    assert result.total == 6 and result.walltime == 1500
    assert "walltime 1500 s (a backfill window)" in rule(result).inputs
    # a partition where the whole walltime fits wins over a window elsewhere
    state = QueueState(activated=50, free=FreeResources((ce(workers=4, window=1500), ce("long", workers=5))))
    result = plan(queue(min_walltime=600), state, 100)
    assert result.total == 7 and result.walltime is None


def test_partitions_over_the_same_nodes_are_counted_once():
    both = FreeResources((ce("debug", workers=8, pool="vm"), ce("second", workers=8, pool="vm")))
    assert plan(queue(queued_when_full=0), QueueState(activated=50, free=both), 100).total == 8
    apart = FreeResources((ce("debug", workers=8, pool="a"), ce("second", workers=8, pool="b")))
    assert plan(queue(queued_when_full=0), QueueState(activated=50, free=apart), 100).total == 16


def test_a_ce_that_cannot_tell_is_left_out_and_a_backend_that_cannot_say_changes_nothing():
    unknown = FreeResources((ce(workers=None, window=None),))
    assert plan(queue(), QueueState(queued={"SCORE": 2}, activated=50, free=unknown), 100).total == 1
    result = plan(queue(backend="htcondor"), QueueState(activated=50, free=FreeResources(unsupported=True)), 100)
    assert result.total == 3 and "cannot say" in rule(result).inputs


def test_a_queue_without_free_resources_plans_as_before():
    state = QueueState(queued={"SCORE": 2}, activated=50, free=FreeResources((ce(workers=0, window=0),)))
    result = plan(queue(free_resources=False), state, 100)
    assert result.total == 1 and not [s for s in result.trace if s.rule == "free resources"]


# -- what status, plan and the metrics show ----------------------------------------------------------------

def test_status_plan_and_the_metrics_show_the_stored_figures_and_their_age(harness):
    queues = {"Q": {"mode": "pull", "free_resources": True, "free_resources_max_age": 300}}
    harness.write_config(queues)
    instance = harness.instance(queues)
    at = model.now()
    rows = [{"computing_element": "debug", "measured": at - 30, "source": "sinfo, sbatch --test-only", "workers": 3,
             "window": 600, "idle_nodes": 1, "idle_cores": 12, "total_cores": 16, "waiting": 5, "pool": "n1"},
            {"computing_element": "long", "measured": at - 1000, "source": "sinfo, sbatch --test-only", "workers": 0,
             "window": 0, "idle_nodes": 0, "idle_cores": 0, "total_cores": 64, "pool": "m[1-4]"}]
    with instance.store.transaction() as tx:
        resources.replace(tx, "Q", rows)
    status = harness.cli("status")
    assert status.returncode == 0, status.stderr
    assert "free resources (what can start now)" in status.stdout and "(stale)" in status.stdout, status.stdout
    shown = harness.cli_json("status")["free_resources"]
    assert [(r["computing_element"], r["workers"], r["window_seconds"], r["stale"]) for r in shown] == [
        ("debug", 3, 600, False), ("long", 0, 0, True)]
    samples = monitor.metric_samples(instance).values
    assert sorted((labels["computing_element"], v) for labels, v in samples["harvester_cli_free_workers"]) == [
        ("debug", 3.0), ("long", 0.0)]
    # every user's jobs waiting, where the batch system said (not the ARC CE that did not publish them)
    assert [(labels["computing_element"], v) for labels, v in samples["harvester_cli_batch_jobs_waiting"]] == [
        ("debug", 5.0)]
    # the local backend cannot say: the plan says so, plans as without, and leaves the stored figures alone
    plan = harness.cli("plan")
    assert "free resources: the local backend cannot say what can start now: not used" in plan.stdout, plan.stdout
    with instance.store.reading() as tx:
        assert len(resources.of_queues(tx, ["Q"])) == 2


def test_the_turnover_counts_the_queues_workers_that_ran_and_ended_in_the_last_ten_cycles(harness):
    from harvester_cli.state.schema import workers
    from harvester_cli.steps import submit

    instance = harness.instance({"Q": {"mode": "pull", "free_resources": True}, "R": {"mode": "pull"}},
                                instance={"cycle_interval": 30})
    now = model.now()
    rows = [(1, "Q", now - 400, now - 100),     # ran and ended 100 s ago: counted
            (2, "Q", now - 900, now - 290),     # within 10 cycles of 30 s
            (3, "Q", now - 900, now - 310),     # before them
            (4, "Q", None, now - 50),           # never started (cancelled while queued): freed no slot
            (7, "Q", now - 60, now - 40),       # failed: a broken node calls for no more waiting pilots
            (5, "Q", now - 50, None),           # still running
            (6, "R", now - 400, now - 100)]     # another queue
    with instance.store.transaction() as tx:
        tx.execute(workers.insert(), [
            {"worker_id": i, "queue": q, "backend": "local", "mode": "pull", "start_time": start, "end_time": end,
             "status": "running" if end is None else "cancelled" if start is None else "failed" if i == 7
             else "finished",
             "created": now - 1000, "modified": now}
            for i, q, start, end in rows])
    state = submit.queue_state(instance, instance.config.queues["Q"], None, {})
    assert (state.ended_recently, state.ended_peak, state.turnover_cycle) == (2, 1, 30)
    # a queue without free_resources is not counted
    assert submit.queue_state(instance, instance.config.queues["R"], None, {}).ended_recently is None
    instance.close()


def test_what_still_waits_is_asked_of_the_backend_and_nothing_is_recorded(harness, sim):
    """A cycle polls after it submits: the next plan would count as waiting the pilots that started since.
    still_waiting asks the backend about the submitted and idle workers, and writes nothing."""
    from sqlalchemy import select

    from harvester_cli.state.schema import workers
    from harvester_cli.steps import resources as free_resources
    from harvester_cli.steps import submit

    instance = harness.instance({"Q": {"mode": "pull", "pilot": "sleep 30"}})
    queue = instance.config.queues["Q"]
    assert len(submit.submit(instance, [queue], count=2).queues[0].submitted) == 2
    # 2 submitted here and 1 pending (another run's, not handed to the backend yet): that one waits
    wait_until(lambda: free_resources.still_waiting(instance, queue, 3) == (1, None), 30, 0.2,
               "both pilots seen running")
    with instance.store.reading() as tx:
        assert [s for (s,) in tx.execute(select(workers.c.status))] == [model.SUBMITTED] * 2   # poll records it

    # a backend that cannot be asked: the state database's count stands, and the plan says why
    instance.backend(queue).check = lambda refs: (_ for _ in ()).throw(OSError("no answer"))
    assert free_resources.still_waiting(instance, queue, 2) == (None, "the batch system could not be asked: "
                                                                      "no answer")
    instance.close()

