"""The pieces that let several hosts share one state database, one by one (the `multihost` tests run them
together on real servers): host identity, host-bound workers, the global per-cycle cap, queue leases,
conflict retries, and the refusal of SQLite on a network file system."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from harvester_cli import config as config_module
from harvester_cli.config import QueueConfig
from harvester_cli.state import locks as state_locks
from harvester_cli.state.schema import locks, workers
from harvester_cli.state.store import Store, is_conflict, server_timeouts
from harvester_cli.steps import planner, poll
from tests.support.harness import new_state


def test_the_host_is_the_configured_one_or_the_host_name(harness):
    import socket

    instance = harness.instance({"Q": {"mode": "pull"}}, instance={"host": "node-7"})
    assert instance.host == "node-7" and instance.store.owner.startswith("node-7:")
    assert instance.backend(instance.config.queues["Q"]).context.host == "node-7"
    assert harness.instance({"Q": {"mode": "pull"}}).host == socket.gethostname()


def test_a_host_name_with_a_colon_is_refused(harness):
    with pytest.raises(config_module.ConfigError, match="without ':'"):
        config_module.parse(harness.config_data({"Q": {"mode": "pull"}}, instance={"host": "a:b"}))


def test_poll_of_a_host_bound_queue_looks_only_at_this_hosts_workers(harness):
    instance = harness.instance({"Q": {"mode": "pull", "lost_grace_seconds": 0}}, instance={"host": "here"})
    with instance.store.transaction() as conn:
        conn.execute(workers.insert(), [
            {"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull", "status": "submitted",
             "batch_id": "999999", "created": 0.0, "modified": 0.0, "submit_time": 0.0, "harvester_host": host}
            for i, host in ((1, "here"), (2, "there"), (3, None))])
    result = poll.poll(instance, list(instance.config.queues.values())).queues[0]
    assert result.checked == 2   # its own and the one from before hosts were recorded, never "there"'s
    with instance.store.reading() as conn:
        status = dict(conn.execute(select(workers.c.worker_id, workers.c.status)).all())
    assert status == {1: "failed", 2: "submitted", 3: "failed"}


def test_the_per_cycle_cap_counts_every_hosts_workers_of_the_interval():
    queue = QueueConfig(name="Q", mode="push", backend="local", pilot="true", max_new_workers_per_cycle=5)
    alone = planner.plan(queue, planner.QueueState(waiting_jobs={"SCORE": 10}), 100)
    assert alone.total == 5
    shared = planner.plan(queue, planner.QueueState(waiting_jobs={"SCORE": 10}, made_recently=4, cycle_interval=60),
                          100)
    assert shared.total == 1 and any("made by all hosts in the last 60 s=4" in str(s) for s in shared.trace)


def test_a_lease_that_ran_out_is_not_held_any_more(tmp_path):
    store = Store(new_state(tmp_path / "s.db"), lease_seconds=30)
    with state_locks.lease(store, "submit:Q") as got:
        assert got
        with store.transaction() as tx:
            assert state_locks.holds(tx, "submit:Q")
            tx.execute(update(locks).values(lock_expires=0.0))   # stalled past the lease
            assert not state_locks.holds(tx, "submit:Q")


class _Orig(Exception):
    pass


def _pymysql_error(code: int) -> OperationalError:
    import pymysql

    return OperationalError("UPDATE ...", {}, pymysql.err.OperationalError(code, "Deadlock found"))


def test_deadlocks_and_serialization_failures_are_conflicts():
    assert is_conflict(_pymysql_error(1213)) and is_conflict(_pymysql_error(1205))
    assert not is_conflict(_pymysql_error(1146))
    serialization = _Orig("could not serialize access")
    serialization.sqlstate = "40001"
    assert is_conflict(OperationalError("UPDATE ...", {}, serialization))
    assert not is_conflict(ValueError("no"))


def test_a_conflict_runs_the_transaction_again_and_is_counted(tmp_path):
    store = Store(new_state(tmp_path / "s.db"))
    attempts = []

    def work(conn):
        conn.execute(workers.insert().values(worker_id=len(attempts) + 1, queue="Q", backend="local", mode="pull",
                                             status="pending", created=0.0, modified=0.0))
        attempts.append(1)
        if len(attempts) < 3:
            raise _pymysql_error(1213)
        return "done"

    assert store.retrying(work) == "done"
    assert store.conflicts == 2 and store.stats()["conflicts_retried"] == 2
    with store.reading() as conn:   # the failed attempts were rolled back
        assert list(conn.scalars(select(workers.c.worker_id))) == [3]


def test_server_connections_get_timeouts():
    pg = server_timeouts("postgresql+psycopg://u@h/db", 30)
    assert "statement_timeout=30000" in pg["options"] and "idle_in_transaction_session_timeout" in pg["options"]
    assert pg["tcp_user_timeout"] == 30000
    maria = server_timeouts("mysql+pymysql://u@h/db", 30)
    assert "innodb_lock_wait_timeout=30" in maria["init_command"] and maria["read_timeout"] == 35


def test_sqlite_on_a_network_file_system_is_refused(tmp_path, harness):
    mounts = tmp_path / "mounts"
    shared = tmp_path / "shared"
    shared.mkdir()
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {shared} nfs4 rw 0 0\n")
    config = config_module.parse(harness.config_data({"Q": {"mode": "pull"}}, state=str(shared / "state.db")))
    problems = config_module.environment._sqlite_on_network(config, "config.toml", str(mounts))
    assert len(problems) == 1 and "nfs4" in problems[0] and "PostgreSQL or MariaDB" in problems[0]
    local = config_module.parse(harness.config_data({"Q": {"mode": "pull"}}, state=str(tmp_path / "state.db")))
    assert config_module.environment._sqlite_on_network(local, "config.toml", str(mounts)) == []
    assert config_module.environment.mount_of(shared / "state.db", str(mounts)) == (str(shared), "nfs4")


def test_which_backends_are_host_bound(harness):
    instance = harness.instance({
        "LOCAL": {"mode": "pull"},
        "SLURM": {"mode": "pull", "backend": "slurm", "pilot": "true"},
        "SLURM_HERE": {"mode": "pull", "backend": "slurm", "backend_options": {"host_bound": True}},
        "CONDOR_HERE": {"mode": "pull", "backend": "htcondor", "pilot": "true"},
        "CONDOR_REMOTE": {"mode": "pull", "backend": "htcondor", "backend_options": {"schedd": "s@pool"}},
    })
    bound = {name: instance.host_bound(queue) for name, queue in instance.config.queues.items()}
    assert bound == {"LOCAL": True, "SLURM": False, "SLURM_HERE": True, "CONDOR_HERE": True, "CONDOR_REMOTE": False}


def test_a_worker_stamped_by_a_clock_a_day_ahead_does_not_hold_the_queue_for_a_day(harness):
    """Found by the chaos run (a clock step seen by one command): one `submit` whose clock was a day ahead
    recorded workers created, and marked missed, a day in the future; every host then counted them as made
    (or missed) in the last interval for a whole day, so no host submitted for the queue again, and its
    fetched jobs waited. A stamp further ahead than the window itself is another host's wrong clock."""
    from harvester_cli import model
    from harvester_cli.steps import submit

    instance = harness.instance({"Q": {"mode": "push", "throttle_window": 600}}, instance={"cycle_interval": 60})
    now = model.now()
    with instance.store.transaction() as tx:
        tx.execute(workers.insert(), [
            {"worker_id": i, "queue": "Q", "backend": "local", "mode": "push", "status": status,
             "created": created, "modified": created, "harvester_host": "h1"}
            for i, status, created in ((1, "missed", now - 10), (2, "missed", now + 86400),
                                       (3, "missed", now - 5000), (4, "finished", now + 86400 + 5))])
    state = submit.queue_state(instance, instance.config.queues["Q"], None, {})
    assert state.made_recently == 1 and state.missed_recent == 1, state
    instance.close()
