"""The state database fails over (issue 34): a PostgreSQL primary and a synchronous streaming standby made
by each test (`pg_basebackup -R`, two ports: tests/support/failover.py), the primary stopped and the
standby promoted while harvester-cli commands run; and the one MariaDB server restarted under a command.

What is checked is what a lost or doubled write would change: a job fetched twice or final twice at the
PanDA simulator, a worker started twice, a command that stops instead of reconnecting, a wait past
db_reconnect_seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
from sqlalchemy import create_engine, select

from harvester_cli import model
from harvester_cli.config import load
from harvester_cli.config.sections import TEST_PILOT
from harvester_cli.instance import Instance
from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state.schema import job_workers, reports, workers
from harvester_cli.steps import fetch_jobs, poll, propagate, submit
from tests.support import multihost
from tests.support.failover import (DATABASE, PASSWORD, USER, CommitCutter, PrivateMariaDB, StandbyPair, wait_for,
                                    wait_stopped)
from tests.support.harness import kill_local_workers, rows, to_toml
from tests.support.multihost import SERVER, Network, Site, netns

pytestmark = pytest.mark.failover

RECONNECT = 60   # [instance] db_reconnect_seconds: far above a promotion here (under a second)


def direct(server) -> str:
    """A URL to one server of the pair (what the test reads the outcome from, not what harvester-cli uses)."""
    return f"postgresql+psycopg://{USER}:{PASSWORD}@{server.address}/{DATABASE}"


def db_rows(url: str, table, *where) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(table).where(*where)).all()
    finally:
        engine.dispose()


def final_updates(sim: PandaSimulator, panda_id: int) -> int:
    return sum(u["job_status"] in ("finished", "failed") for u in sim.jobs[panda_id].updates)


def check_jobs_once(sim: PandaSimulator, ids: list[int], url: str) -> None:
    """Every job fetched once, bound to one worker, final once at PanDA, and finished."""
    for panda_id in ids:
        assert sim.jobs[panda_id].spec["nSent"] == 1, f"job {panda_id} fetched {sim.jobs[panda_id].spec['nSent']} times"
        assert final_updates(sim, panda_id) == 1, f"job {panda_id}: {final_updates(sim, panda_id)} final updates"
        assert sim.job_status(panda_id) == "finished"
    links = db_rows(url, job_workers)
    assert Counter(link.panda_id for link in links) == Counter({i: 1 for i in ids}), "a job bound to two workers"


def check_started_once(starts_file, url: str) -> list:
    """Every worker with a batch id started exactly once, and no process started without its row."""
    rows = db_rows(url, workers)
    started = Counter(w for w, _ in multihost.starts(starts_file))
    assert started == Counter({r.worker_id: 1 for r in rows if r.batch_id}), "a worker started twice, or lost"
    return rows


def stopped_command(args: list[str], env: dict, point: str) -> subprocess.Popen:
    """A harvester-cli command that stops itself at a fault point (HARVESTER_CLI_STOP_AT), for the test to
    move the database under it; SIGCONT lets it go on."""
    process = subprocess.Popen(args, env={**env, "HARVESTER_CLI_STOP_AT": point}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_stopped(process.pid)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process


def go_on(process: subprocess.Popen) -> tuple[int, str, str]:
    os.kill(process.pid, signal.SIGCONT)
    out, err = process.communicate(timeout=RECONNECT + 60)
    return process.returncode, out, err


# -- two hosts ------------------------------------------------------------------------------------


def test_cycles_on_two_hosts_go_on_through_a_promotion_and_lose_nothing(tmp_path):
    """Two hosts (network namespaces) run `cycle` on push queues; midway the primary is stopped and the
    standby promoted; the old primary then comes back refusing writes (fenced the other way), first in
    the hosts' list. One more command is held at a fault point across the promotion: it must reconnect
    and say where. Then every job is final once at the simulator and no worker started twice."""
    starts = tmp_path / "starts.log"
    pilot = multihost.pilot_template(starts, "{python} -m harvester_cli.panda.sim.pilot")
    queues = {name: {"mode": "push", "backend": "local", "pilot": pilot, "lost_grace_seconds": 5,
                     "n_queue_limit_worker": 2, "max_workers": 3, "max_new_workers_per_cycle": 2}
              for name in ("FO_A", "FO_B")}
    pki = certs.create(tmp_path / "pki", addresses=(SERVER,))
    with Network(2), StandbyPair(listen=SERVER) as pair, \
            PandaSimulator(pki, host=SERVER, finish_delay=0.0) as sim:
        site = Site(tmp_path, pair.url(),
                    panda={"url": sim.url, "proxy": str(pki.proxy), "ca": str(pki.ca_file), "retries": 2,
                           "timeout": 8, "allow_test_pilot": True},
                    queues=queues, harvester_id=f"fo-{tmp_path.name[-20:]}",
                    extra={"lease_seconds": 10, "instance": {"cycle_interval": 2, "db_timeout": 5,
                                                             "db_reconnect_seconds": RECONNECT}})
        site.add_hosts(2)
        site.upgrade_at_once()
        # 5 jobs a queue, at most 2 new workers a queue every 2 s: the last start 4 s after the first.
        ids = [i for q in queues for i in sim.add_jobs(q, 5, jobPars="sleep 1")]
        new_primary = direct(pair.standby)
        site.start("cycle")
        held = None
        try:
            held = stopped_command(["ip", "netns", "exec", netns(2), sys.executable, "-m", "harvester_cli", "--config",
                                    str(site.hosts[1].config), "cycle"], site.hosts[1].env(), "store_opened")
            # Midway: the first job final at PanDA, the last not yet started.
            wait_for(lambda: any(sim.job_status(i) == "finished" for i in ids), 90, "the first job finished")
            finished_before = sum(sim.job_status(i) == "finished" for i in ids)
            pair.fail_over()            # the primary stops (fenced), the standby is promoted
            pair.restart_read_only()    # the old primary back, refusing writes, first in every host's list
            code, _, err = go_on(held)
            assert code == 0, err
            assert err.count(f"connected to {pair.standby.address}") == 1, err
            assert PASSWORD not in err
            wait_for(lambda: all(sim.job_status(i) == "finished" for i in ids)
                     and all(r.status in model.WORKER_FINAL for r in db_rows(new_primary, workers))
                     and not db_rows(new_primary, reports), 120, "every job final and reported")
        finally:
            if held is not None and held.poll() is None:
                held.kill()
                held.communicate()
            site.stop()
            kill_local_workers(site.harvester_id)
        assert finished_before < len(ids), "every job finished before the failover: nothing was tested"
        check_jobs_once(sim, ids, new_primary)
        rows = check_started_once(starts, new_primary)
        # A worker whose submission a failover interrupted before its backend call ends missed, never started
        # (its job bound to a new worker): the only other end a worker may have.
        assert all(r.status == model.FINISHED or (r.status == model.MISSED and not r.batch_id) for r in rows), \
            Counter(r.status for r in rows)
        runs = [r for h in site.hosts for r in h.runs()]
        assert not [r["stderr"] for r in runs if "Traceback" in r["stderr"]]
        # The old primary stayed fenced (a primary that refuses writes), first in every host's list all along.
        assert pair.primary.sql("SHOW default_transaction_read_only") == "on" and not pair.standby.in_recovery()


# -- a COMMIT cut off by the failover ---------------------------------------------------------------


@pytest.mark.parametrize("kept", [True, False], ids=["commit-kept", "commit-lost"])
def test_a_commit_cut_off_by_the_failover_does_not_send_a_final_update_twice(harness, sim, tmp_path, kept):
    """PanDA has a job's final update; the COMMIT that deletes it from the outbox is cut off by the
    failover: it reached the primary (and, synchronous, the standby) with its answer lost, or it never
    reached it. Either way, after reconnecting to the promoted standby the command looks, writes what was
    not kept, and no later run sends the update again."""
    starts = tmp_path / "starts.log"
    with StandbyPair() as pair:
        cutter = CommitCutter(pair.primary.port)
        try:
            url = (f"postgresql://{USER}:{PASSWORD}@{cutter.address},{pair.standby.address}/{DATABASE}"
                   "?target_session_attrs=read-write")
            pilot = multihost.pilot_template(starts, TEST_PILOT)
            config = harness.write_config({"FO": {"mode": "push", "pilot": pilot}}, state=url,
                                          instance={"db_reconnect_seconds": RECONNECT})
            ids = sim.add_jobs("FO", 2, jobPars="true")
            # Up to the final updates waiting in the outbox, in this process (quicker than a command each).
            before = Instance(load(config))
            queues = list(before.config.queues.values())
            fetch_jobs.fetch_jobs(before, queues)
            submit.submit(before, queues)
            wait_for(lambda: poll.poll(before, queues) and all(r.status == model.FINISHED for r in rows(before, workers)),
                     60, "the workers finished")
            before.store.close()
            env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
                   "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
            held = stopped_command([sys.executable, "-m", "harvester_cli", "--config", str(tmp_path / "config.toml"),
                                    "--json", "--queue", "FO", "propagate"], env, "propagate_after_job_updates")
            assert all(final_updates(sim, i) == 1 for i in ids)   # PanDA has them; the outbox still holds them
            cutter.arm(keep=kept)
            os.kill(held.pid, signal.SIGCONT)
            assert cutter.cut.wait(60), "the outbox's COMMIT never came"
            pair.fail_over()
            cutter.release()   # the command's connection drops: its COMMIT has no answer
            out, err = held.communicate(timeout=RECONNECT + 60)
            assert held.returncode == 0, err
            assert cutter.kept is kept
            assert f"connected to {pair.standby.address}" in err, err
            database = json.loads(out)["database"]
            assert database["unknown_commits"] == 1 and database["reconnects"] == 1, database
        finally:
            cutter.close()
        new_primary = direct(pair.standby)
        assert not db_rows(new_primary, reports, reports.c.kind == "job")   # the outbox knows PanDA has them
        after = Instance(load(config))   # the next run: nothing left to send
        propagate.propagate(after, list(after.config.queues.values()))
        after.store.close()
        check_jobs_once(sim, ids, new_primary)
        check_started_once(starts, new_primary)


# -- a standby not promoted yet ---------------------------------------------------------------------


def test_a_command_waits_for_the_promotion_within_db_reconnect_seconds(harness, sim, tmp_path):
    """The primary is down and the standby not promoted yet: a command waits for a server that takes writes
    for db_reconnect_seconds, then stops with one line (exit 1); given time, it goes on as soon as the
    standby is promoted and says where it is connected. The state is written in libpq's keyword form."""
    with StandbyPair() as pair:
        state = (f"host=127.0.0.1,127.0.0.1 port={pair.primary.port},{pair.standby.port} dbname={DATABASE} "
                 f"user={USER} password={PASSWORD} target_session_attrs=read-write")
        queues = {"FO": {"mode": "push"}}
        harness.write_config(queues, state=state, instance={"db_reconnect_seconds": 2})
        ids = sim.add_jobs("FO", 2, jobPars="true")
        pair.primary.stop()
        short = harness.cli("fetch-jobs")
        assert short.returncode == 1, short.stderr
        assert len(short.stderr.strip().splitlines()) == 1, short.stderr
        assert "no server took writes within db_reconnect_seconds=2" in short.stderr and PASSWORD not in short.stderr
        assert all(sim.jobs[i].spec.get("nSent", 0) == 0 for i in ids)   # nothing fetched before the outage was seen

        # (not write_config: it would create the database, and no server takes writes now)
        (tmp_path / "config.toml").write_text(to_toml(harness.config_data(
            queues, state=state, instance={"db_reconnect_seconds": RECONNECT})))
        command_log = tmp_path / "logs" / "commands" / "fetch-jobs.log"
        before = command_log.read_text().count("no server takes writes") if command_log.exists() else 0
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
        waiting = subprocess.Popen([sys.executable, "-m", "harvester_cli", "--config", str(tmp_path / "config.toml"),
                                    "fetch-jobs"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: command_log.exists() and command_log.read_text().count("no server takes writes") > before,
                     60, "the command waiting for a server that takes writes")
            pair.promote()
            out, err = waiting.communicate(timeout=RECONNECT + 60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
        assert waiting.returncode == 0, err
        assert f"connected to {pair.standby.address}" in err and "none took writes before" in err, err
        assert all(sim.jobs[i].spec["nSent"] == 1 for i in ids)   # fetched by the command that waited


# -- MariaDB: one server, restarted ------------------------------------------------------------------


@pytest.mark.mariadb
def test_mariadb_restarted_under_a_submit_is_reconnected_to_and_nothing_is_started_twice(harness, sim, tmp_path):
    """MariaDB takes one server (no failover is claimed): a restart of it while a submit has started its
    workers and not yet recorded them is waited for within db_reconnect_seconds; the workers are recorded
    once, each started once, and their jobs end final once at PanDA."""
    starts = tmp_path / "starts.log"
    with PrivateMariaDB() as maria:
        url = maria.database("hcli_failover")
        pilot = multihost.pilot_template(starts, TEST_PILOT)
        harness.write_config({"FO": {"mode": "push", "pilot": pilot}}, state=url,
                             instance={"db_reconnect_seconds": RECONNECT})
        ids = sim.add_jobs("FO", 2, jobPars="true")
        harness.cli("fetch-jobs", check=True)
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
        held = stopped_command([sys.executable, "-m", "harvester_cli", "--config", str(tmp_path / "config.toml"),
                                "submit"], env, "after_backend_submit")
        command_log = tmp_path / "logs" / "commands" / "submit.log"
        maria.stop()
        os.kill(held.pid, signal.SIGCONT)
        try:
            wait_for(lambda: "no server takes writes" in command_log.read_text(), 60, "the submit waiting for MariaDB")
            maria.start()
            out, err = held.communicate(timeout=RECONNECT + 60)
        finally:
            if held.poll() is None:
                held.kill()
                held.communicate()
        assert held.returncode == 0, err
        assert f"connected to 127.0.0.1:{maria.port}" in err, err
        rows = db_rows(url.replace("mariadb://", "mysql+pymysql://"), workers)
        assert len(rows) == 2 and all(r.batch_id and r.status != model.PENDING for r in rows), rows
        wait_for(lambda: harness.cli("cycle", check=True) and all(final_updates(sim, i) for i in ids), 60,
                 "the jobs final at PanDA")
        check_jobs_once(sim, ids, url.replace("mariadb://", "mysql+pymysql://"))
        check_started_once(starts, url.replace("mariadb://", "mysql+pymysql://"))
