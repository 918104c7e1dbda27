"""The same store and cycle code on real PostgreSQL and MariaDB servers (started here, loopback only): each
test runs once on each server (`server_url`, marked `postgres` or `mariadb`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import text

from harvester_cli.state import claims, meta, monitoring, views
from harvester_cli.state.schema import jobs, workers
from harvester_cli.state.store import Store
from tests.support.databases import assert_state_errors
from tests.support.harness import cycle_until, new_state, rows, wait_until
from tests.support.outbox import assert_acknowledged_exactly, assert_final_update_stays


def test_claims_are_exclusive_and_times_keep_their_precision(server_url):
    new_state(server_url)
    first, second = Store(server_url), Store(server_url)
    with first.transaction() as conn:
        conn.execute(workers.insert(), [{"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull",
                                         "status": "submitted", "created": 1795560012.25, "modified": 0.0}
                                        for i in range(1, 11)])
    with first.transaction() as conn, second.transaction() as other:   # two open transactions at once
        a = {r.worker_id for r in claims.claim(conn, workers, workers.c.queue == "Q", 6)}
        b = {r.worker_id for r in claims.claim(other, workers, workers.c.queue == "Q", 6)}
    assert len(a) == 6 and len(b) == 4 and not a & b   # SKIP LOCKED: the second skips the first's rows
    with first.reading() as conn:   # a single-precision FLOAT would be off by minutes
        assert {r.created for r in conn.execute(workers.select())} == {1795560012.25}


def test_pull_and_push_cycle_with_a_large_job(harness, sim, server_url):
    ids = sim.add_jobs("PULL_Q", 2) + sim.add_jobs("PUSH_Q", 2)
    (large,) = sim.add_jobs("PUSH_Q", 1, jobPars="echo " + "x" * 100_000)   # over MariaDB TEXT's 64 kB
    instance = harness.instance({"PULL_Q": {"mode": "pull", "empty_pilot_floor": 0}, "PUSH_Q": {"mode": "push"}},
                                state=server_url)
    cycle_until(instance, lambda: all(sim.job_status(i) == "finished" for i in [*ids, large])
                and all(w.status == "finished" for w in rows(instance, workers)), what="jobs finished on the server")
    made = rows(instance, workers)
    # one worker per push job, never two; pull pilots past the two jobs can only be empty ones (a pilot that
    # starts slowly on a busy machine has not taken its job when the next cycle reads PanDA's count: seen once
    # in a full run beside a mutation run, 7 workers)
    assert len([w for w in made if w.queue == "PUSH_Q"]) == 3
    assert len([w for w in made if w.queue == "PULL_Q"]) >= 2
    (job,) = rows(instance, jobs, jobs.c.panda_id == large)
    assert job.sub_status == "done" and len(job.job_json) > 100_000


SCHEMES = [pytest.param("pg_url", scheme, marks=pytest.mark.postgres, id=scheme)
           for scheme in ("postgresql", "postgres", "postgresql+psycopg")] + \
          [pytest.param("maria_url", scheme, marks=pytest.mark.mariadb, id=scheme)
           for scheme in ("mariadb", "mysql", "mysql+pymysql", "mariadb+pymysql")]


@pytest.mark.parametrize("server, scheme", SCHEMES)
def test_the_url_forms_an_operator_writes_work_as_written(request, tmp_path, server, scheme):
    url = scheme + "://" + request.getfixturevalue(server).split("://", 1)[1]
    config = tmp_path / "config.toml"
    config.write_text('harvester_id = "url-test"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
                      '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n')
    for args in (("db", "upgrade"), ("--json", "status")):
        result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), "--state", url, *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (url, args, result.stderr)
    assert "Q" in json.loads(result.stdout)["queues"]
    assert "harvester_cli_test" not in result.stderr   # the password never shows


def outage_cases(url: str) -> dict[str, tuple[int, str]]:
    """URL -> (exit code, words on stderr): a server that does not answer, a wrong password, and on
    PostgreSQL a database that does not exist."""
    credentials, rest = url.split("://", 1)[1].split("@", 1)
    user = credentials.split(":", 1)[0]
    if url.startswith("postgresql"):
        return {"postgresql://" + credentials + "@127.0.0.1:1/x": (1, "no answer"),
                f"postgresql://{user}:wrong-password@{rest}": (2, "password authentication failed"),
                "postgresql://" + credentials + "@127.0.0.1/no_such_database": (2, "does not exist")}
    return {"mariadb://" + credentials + "@127.0.0.1:1/x": (1, "no answer"),
            f"mariadb://{user}:wrong-password@{rest}": (2, "Access denied")}


def test_a_server_that_does_not_answer_is_an_outage_and_a_refusal_is_configuration(server_url, tmp_path):
    """Exit 1 (the next run tries again) for a server that is down; exit 2 (fix the configuration) for a
    wrong password or database; one line each, no password."""
    assert_state_errors(outage_cases(server_url), tmp_path)


def test_runs_and_failures_are_recorded_and_the_running_ones_listed(server_url):
    """What `status` shows of the commands: each run's end and first failure line, the ones running now."""
    url = server_url
    new_state(url)
    store = Store(url)
    monitoring.record_run(store, "cycle", "h1", 100.0, 130.0, 0, 3)
    first = monitoring.start_run(store, "cycle", "h1", os.getpid(), 160.0)
    second = monitoring.start_run(store, "poll", "h2", 4242, 170.0)
    assert first != second
    running = {r["command"]: r for r in views.running_commands(store)}
    assert running["cycle"]["previous_start"] == 100.0 and running["poll"]["previous_start"] is None
    monitoring.record_run(store, "cycle", "h1", 160.0, 200.0, 1, 0, failure="why\nmore", run_id=first)
    assert [r["command"] for r in views.running_commands(store)] == ["poll"]
    (cycle,) = views.command_runs(store)
    assert (cycle["last_failure"], cycle["last_failure_exit"], cycle["last_failure_at"]) == ("why", 1, 200.0)
    store.close()


def _waiting_on_a_lock(store: Store) -> int:
    """Transactions of this server waiting for a row lock now. Ask at most every 0.2 s: InnoDB refreshes
    INNODB_TRX only when it was not read for 0.1 s, so a faster poll keeps reading its first answer."""
    with store.reading() as tx:
        if tx.dialect == "postgresql":
            return tx.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND wait_event_type = 'Lock'"))
        return tx.scalar(text("SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"))


def test_two_first_submits_at_once_number_their_workers_one_after_the_other(server_url, monkeypatch):
    """The first worker ids of a new database: FOR UPDATE locked no row, both submits inserted last_worker_id
    and one failed with a raw duplicate key on meta. Here the first holds its transaction open until the
    second waits on the server; the second then numbers after it."""
    new_state(server_url)
    first, second, probe = Store(server_url), Store(server_url), Store(server_url)
    inside, go = threading.Event(), threading.Event()
    put = meta.put

    def held_put(tx, key, value):   # the first submit, its last_worker_id written and not yet committed
        put(tx, key, value)
        inside.set()
        go.wait(60)

    monkeypatch.setattr(meta, "put", held_put)
    results: dict[str, object] = {}

    def allocate(name: str, store: Store) -> None:
        try:
            results[name] = meta.allocate_worker_ids(store, 3)
        except Exception as exc:   # the test's answer, not a crash of its thread
            results[name] = exc

    threads = {"first": threading.Thread(target=allocate, args=("first", first))}
    threads["first"].start()
    try:
        assert inside.wait(30), results
        threads["second"] = threading.Thread(target=allocate, args=("second", second))
        threads["second"].start()
        wait_until(lambda: _waiting_on_a_lock(probe) or "second" in results, 30, 0.2, "the second submit waiting")
    finally:
        go.set()
        for thread in threads.values():
            thread.join(60)
    assert results == {"first": [1, 2, 3], "second": [4, 5, 6]}, results
    assert meta.get(probe, meta.LAST_WORKER_ID) == 6
    for store in (first, second, probe):
        store.close()


def test_a_final_update_is_never_replaced_by_one_that_is_not_final(server_url):
    """The outbox's upsert on each server (MariaDB assigns its columns in order: the final flag last)."""
    new_state(server_url)
    store = Store(server_url)
    assert_final_update_stays(store)
    store.close()
def blocked(store: Store) -> bool:
    """Whether another session of this database waits for a lock."""
    from sqlalchemy import text

    query = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
             if store.url.startswith("postgresql") else
             "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'")
    with store.engine.connect() as conn:
        return bool(conn.execute(text(query)).scalar())


def test_acknowledging_more_updates_than_one_statement_holds_forgets_exactly_those_sent(server_url):
    """The outbox's statements by key (IN lists on MariaDB, one array on PostgreSQL) on each server."""
    new_state(server_url)
    assert_acknowledged_exactly(server_url)


def test_two_hosts_first_worker_ids_ever_are_reserved_once(server_url):
    """Two hosts' first submits on a new database both find no last worker id to lock: the second's insert
    waits for the first's COMMIT, then takes the next ids instead of failing on the key."""
    import threading

    from harvester_cli.state import meta
    from harvester_cli.state.schema import meta as meta_table

    new_state(server_url)
    first, second = Store(server_url), Store(server_url)
    got: list = []
    with first.transaction() as tx:   # the first host's reservation, not committed yet
        tx.execute(meta_table.insert().values(key=meta.LAST_WORKER_ID, ivalue=5))
        waiting = threading.Thread(target=lambda: got.append(meta.allocate_worker_ids(second, 3)))
        waiting.start()
        wait_until(lambda: blocked(first) or not waiting.is_alive(), 60, what="the second host waiting on the key")
    waiting.join(60)
    assert got == [[6, 7, 8]]
    assert meta.allocate_worker_ids(first, 1) == [9]
    first.close()
    second.close()


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
CLAIM_ON_ANOTHER_HOST = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from harvester_cli.state import claims
from harvester_cli.state.schema import workers
from harvester_cli.state.store import Store
with Store(sys.argv[1], host="h-skewed").transaction() as tx:
    print(json.dumps(sorted(r.worker_id for r in claims.claim(tx, workers, workers.c.queue == "Q", 100))))
"""


def _claim_with_clock(url: str, offset: str) -> tuple[list[int], str]:
    """Claim every worker of queue Q in a process of another host whose wall clock is `offset` off (libfaketime,
    as a host whose NTP failed)."""
    env = dict(os.environ, LD_PRELOAD=FAKETIME, FAKETIME=offset, FAKETIME_DONT_FAKE_MONOTONIC="1")
    done = subprocess.run([sys.executable, "-c", CLAIM_ON_ANOTHER_HOST, url], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_a_host_whose_clock_is_a_day_off_neither_loses_nor_steals_claims(server_url):
    """Leases are timed by the server's clock: a claim made on a host a day behind does not look expired to
    the others, and a host a day ahead does not find theirs expired (it took them over before, and two hosts
    then submitted, polled or reported the same rows)."""
    new_state(server_url)
    store = Store(server_url, lease_seconds=600)
    with store.transaction() as tx:
        tx.execute(workers.insert(), [{"worker_id": i, "queue": "Q", "backend": "local", "mode": "pull",
                                       "status": "submitted", "created": 0.0, "modified": 0.0} for i in range(1, 5)])
    taken, said = _claim_with_clock(server_url, "-1d")
    assert taken == [1, 2, 3, 4]
    with store.transaction() as tx:   # the day-behind host's claims hold here
        assert claims.claim(tx, workers, workers.c.queue == "Q", 100) == []
        tx.execute(workers.update().values(lock_owner=None, lock_expires=None))
    assert "clock is 1d00h00m behind the database server's" in said   # and that host was told
    with store.transaction() as tx:
        assert len(claims.claim(tx, workers, workers.c.queue == "Q", 100)) == 4
    taken, said = _claim_with_clock(server_url, "+1d")   # this host's fresh claims hold there too
    assert taken == [] and "clock is 1d00h00m ahead of the database server's" in said
    store.close()


def test_a_sweep_a_day_ahead_forgets_nothing_before_its_retention(harness, server_url):
    """Retention is measured by the server's clock too: a worker that finished a day and a half ago (retention
    two days) stays when the sweep's host is a day ahead. Its clock made it forget such workers a day early,
    and a chaos run found workers that had run, gone from the database."""
    harness.write_config({"Q": {"mode": "pull"}}, state=server_url)
    store = Store(server_url)
    ended = time.time() - 1.5 * 86400
    with store.transaction() as tx:
        tx.execute(workers.insert(), [{"worker_id": 1, "queue": "Q", "backend": "local", "mode": "pull",
                                       "status": "finished", "created": ended, "modified": ended, "end_time": ended,
                                       "harvester_host": socket.gethostname()}])
    env = {"LD_PRELOAD": FAKETIME, "FAKETIME": "+1d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    swept = harness.cli("--json", "sweep", env=env)
    assert swept.returncode == 0, swept.stderr
    assert "clock is 1d00h00m ahead of the database server's" in swept.stderr
    with store.reading() as tx:
        assert [r.worker_id for r in tx.execute(workers.select())] == [1]
    store.close()
