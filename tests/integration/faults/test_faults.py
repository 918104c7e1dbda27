"""The fault suite (issue 12), its recovery runs: kills at every side-effect boundary, overlapping runs,
every way PanDA can fail a call, hostile job dicts from PanDA, a full or read-only disk (a tmpfs of our
own: root), clock jumps, and secrets. Whatever happens, the next runs recover: every job reaches its final
state once, no worker is submitted twice, no job is bound twice, no update is lost or sent with a
conflicting state. Each test runs cycles until everything is final (up to minutes).

The quick part of the suite (hostile job dicts, configurations and command lines one at a time, a damaged
state file, TLS, file modes) is tests/unit/test_hostile_input.py; `pytest -m faults` runs both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from harvester_cli import config as config_module
from harvester_cli.instance import Instance
from harvester_cli.panda.sim.server import FAULT_MODES, PandaSimulator
from harvester_cli.state.schema import job_workers, reports, workers
from harvester_cli.state.store import Store
from harvester_cli.steps.cycle import run_cycle
from tests.support.harness import Harness, wait_until

pytestmark = pytest.mark.faults

QUEUES = {"PULL": {"mode": "pull", "empty_pilot_floor": 0}, "PUSH": {"mode": "push"}}


def state_rows(harness: Harness, table, *where):
    configured = (harness.tmp_path / "config.toml").read_text().split('state = "', 1)[1].split('"', 1)[0]
    store = Store(configured if "://" in configured else f"sqlite:///{configured}")
    try:
        with store.reading() as conn:
            return conn.execute(select(table).where(*where)).all()
    finally:
        store.close()


def final_updates(sim: PandaSimulator, panda_id: int) -> list[str]:
    return [u["job_status"] for u in sim.jobs[panda_id].updates if u["job_status"] in ("finished", "failed")]


def assert_recovered(harness: Harness, sim: PandaSimulator, ids: list[int], expect: str = "finished") -> None:
    """What the suite promises after any fault, once the next runs are through."""
    for panda_id in ids:
        assert sim.job_status(panda_id) == expect, (panda_id, sim.jobs[panda_id].updates)
        assert set(final_updates(sim, panda_id)) <= {expect}, f"conflicting final states for {panda_id}"
    local = state_rows(harness, workers)
    assert all(w.status in ("finished", "failed", "cancelled", "missed") for w in local), [w.status for w in local]
    assert not state_rows(harness, reports), "updates still waiting for PanDA"
    reported = sim.workers(harness.harvester_id)
    for w in local:   # every worker's last state reached PanDA
        assert reported[w.worker_id]["status"] == w.status, (w.worker_id, reported.get(w.worker_id), w.status)
    for w in local:   # no worker started twice
        log = Path(w.log_dir) / "pilot.log"
        if log.exists():
            assert log.read_text().count("start ") <= 1, f"worker {w.worker_id} ran twice"
    bindings = state_rows(harness, job_workers)
    assert len({b.panda_id for b in bindings}) == len(bindings), "a job bound to two workers"


def cycles_until_done(harness: Harness, sim: PandaSimulator, ids: list[int], timeout: float = 90) -> None:
    def done() -> bool:
        harness.cli("-q", "cycle")
        local = state_rows(harness, workers)
        return (all(sim.job_status(i) in ("finished", "failed") for i in ids)
                and all(w.status in ("finished", "failed", "cancelled", "missed") for w in local)
                and not state_rows(harness, reports))
    try:
        wait_until(done, timeout, 0.5, "recovery after the fault")
    except AssertionError as exc:   # say what was left
        left = {"jobs": {i: sim.job_status(i) for i in ids if sim.job_status(i) not in ("finished", "failed")},
                "workers": [(w.worker_id, w.status, w.diag) for w in state_rows(harness, workers)
                            if w.status not in ("finished", "failed", "cancelled", "missed")],
                "reports": len(state_rows(harness, reports)), "last cycle": harness.cli("-q", "cycle").stderr[-500:]}
        raise AssertionError(f"{exc}: left {left}") from None


# -- crash points ----------------------------------------------------------------------------------

# (crash point, the commands that run before the crashing one, the crashing command)
CRASH_POINTS = [
    ("fetch_after_store", [], "fetch-jobs"),
    ("before_backend_submit", ["fetch-jobs"], "submit"),
    ("after_backend_submit", ["fetch-jobs"], "submit"),
    ("submit_mid_transaction", ["fetch-jobs"], "submit"),
    ("poll_after_check", ["fetch-jobs", "submit", "wait"], "poll"),
    ("poll_mid_transaction", ["fetch-jobs", "submit", "wait"], "poll"),
    ("propagate_before_job_updates", ["fetch-jobs", "submit", "wait", "poll"], "propagate"),
    ("propagate_after_job_updates", ["fetch-jobs", "submit", "wait", "poll"], "propagate"),
    ("propagate_after_worker_updates", ["fetch-jobs", "submit", "wait", "poll"], "propagate"),
    ("propagate_before_ack", ["fetch-jobs", "submit"], "propagate"),
]


@pytest.mark.parametrize("point,before,command", CRASH_POINTS, ids=[p[0] for p in CRASH_POINTS])
def test_a_kill_at_any_boundary_is_repaired_by_the_next_runs(harness, sim, point, before, command):
    ids = sim.add_jobs("PULL", 2, jobPars="echo pull") + sim.add_jobs("PUSH", 2, jobPars="echo push")
    command_id = sim.add_command("KILL_WORKERS", {"computingSite": ["ELSEWHERE"]}, ack_requested=True)
    harness.write_config(QUEUES)
    for step in before:
        if step == "wait":
            time.sleep(2.5)   # the local pilots end
        else:
            assert harness.cli(step).returncode in (0, 1)
    crashed = harness.cli(command, env={"HARVESTER_CLI_CRASH_AT": point})
    assert crashed.returncode == 99, f"{point} was not reached: {crashed.stderr[-500:]}"
    cycles_until_done(harness, sim, ids)
    assert_recovered(harness, sim, ids)
    assert sim.commands[command_id]["status"] == "acknowledged"


def test_a_kill_after_the_backend_killed_a_worker_is_repaired(harness, sim):
    (job,) = sim.add_jobs("SLOW", 1)
    harness.write_config({"SLOW": {"mode": "pull", "pilot": "sleep 120", "empty_pilot_floor": 0}})
    assert harness.cli("submit").returncode == 0
    (worker,) = state_rows(harness, workers)
    assert harness.cli("kill-workers", "--worker", str(worker.worker_id)).returncode == 0
    crashed = harness.cli("sweep", env={"HARVESTER_CLI_CRASH_AT": "sweep_after_backend_kill"})
    assert crashed.returncode == 99
    wait_until(lambda: harness.cli("-q", "cycle") and state_rows(harness, workers)[0].status == "cancelled"
               and not state_rows(harness, reports), 30, 0.5, "the kill recorded")
    assert sim.workers(harness.harvester_id)[worker.worker_id]["status"] == "cancelled"


# -- PanDA faults -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", FAULT_MODES)
def test_every_panda_fault_mode_loses_nothing_and_conflicts_nothing(harness, sim, mode):
    sim.faults = {mode: 0.8 if mode == "partial_bulk" else 0.3}   # few bulk calls: most of them partial
    sim.fault_random.seed(12)
    sim.hang_seconds = 3.0
    ids = sim.add_jobs("PULL", 3, jobPars="echo pull") + sim.add_jobs("PUSH", 3, jobPars="echo push")
    harness.write_config(QUEUES, panda={"timeout": 1.0, "retries": 2})   # a hung call costs 1 s an attempt
    cycles_until_done(harness, sim, ids, timeout=150)
    assert sim.faults_seen.get(mode), f"{mode} was never injected"
    sim.faults = {}
    # Until everything is final again: a cycle here may start one more (empty) pull pilot, when PanDA's job
    # counts, refreshed once a minute, still show a job that a pilot started before the refresh took since.
    cycles_until_done(harness, sim, ids)
    assert_recovered(harness, sim, ids)


# -- hostile job dicts from PanDA (one at a time through the library: tests/unit/test_hostile_input.py) ---

def test_poison_jobs_from_panda_fail_alone_and_the_good_ones_run(harness, sim):
    good = sim.add_jobs("PUSH", 2, jobPars="echo good")
    bad = (sim.add_jobs("PUSH", 1, coreCount=2**70) + sim.add_jobs("PUSH", 1, attemptNr=10**30)
           + sim.add_jobs("PUSH", 1, minRamCount=-5) + sim.add_jobs("PUSH", 1, jobPars=["not", "a", "string"]))
    harness.write_config({"PUSH": {"mode": "push"}})
    fetched = harness.cli("--json", "fetch-jobs")
    assert fetched.returncode == 0 and "Traceback" not in fetched.stderr, fetched.stderr
    cycles_until_done(harness, sim, good + bad)
    assert all(sim.job_status(i) == "finished" for i in good)
    for panda_id in bad:
        assert sim.job_status(panda_id) == "failed"
        assert "invalid job from PanDA" in sim.jobs[panda_id].updates[-1]["pilot_error_diag"]


# -- environment -------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs of our own (root): to fill up, and to remount read-only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_loses_no_job_and_the_next_run_recovers(harness, sim, small_disk):
    ids = sim.add_jobs("PUSH", 30, jobPars="echo " + "x" * 20000)
    harness.write_config({"PUSH": {"mode": "push", "n_queue_limit_job": 100}}, state=str(small_disk / "state.db"))
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 64 * 1024))
    refused = harness.cli("fetch-jobs")   # too little room: PanDA is not asked for jobs it would count as sent
    assert refused.returncode == 1 and "not asking PanDA for jobs" in refused.stderr, refused.stderr
    assert all(sim.job_status(i) == "activated" for i in ids)
    from harvester_cli.steps import fetch_jobs as step

    # The estimate passes, and the disk fills while the jobs are stored: PanDA hears at once that they failed.
    filler.unlink()
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 400 * 1024))
    old = step.MIN_FREE_BYTES, step.BYTES_PER_JOB
    step.MIN_FREE_BYTES, step.BYTES_PER_JOB = 0, 0
    try:
        instance = Instance(config_module.load(harness.tmp_path / "config.toml"))
        result = step.fetch_jobs(instance, list(instance.config.queues.values()))
        instance.close()
    finally:
        step.MIN_FREE_BYTES, step.BYTES_PER_JOB = old
    (queue,) = result.queues
    assert queue.error and "could not store them" in queue.error and "reported failed to PanDA" in queue.error
    given_back = [i for i in ids if sim.jobs[i].updates]
    assert given_back and all("not started" in sim.jobs[i].updates[-1]["pilot_error_diag"] for i in given_back)
    filler.unlink()
    cycles_until_done(harness, sim, ids, timeout=120)
    for panda_id in ids:   # every job final at PanDA: run here, or given back to be retried elsewhere
        assert sim.job_status(panda_id) == ("failed" if panda_id in given_back else "finished")
        assert len(final_updates(sim, panda_id)) == 1


def test_a_read_only_state_directory_is_one_line_and_changes_nothing(harness, sim, small_disk):
    sim.add_jobs("PUSH", 2)
    harness.write_config({"PUSH": {"mode": "push"}}, state=str(small_disk / "state.db"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        result = harness.cli("cycle")   # refused before it starts: one line naming the database, exit 2
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "state:" in line and str(small_disk) in line and "read-only" in line, line
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert harness.cli("cycle").returncode in (0, 1)


def test_clock_jumps_lose_nothing(harness, sim, monkeypatch):
    ids = sim.add_jobs("PUSH", 2) + sim.add_jobs("PULL", 2)
    instance = harness.instance(QUEUES)
    queues = list(instance.config.queues.values())
    import harvester_cli.model as model

    real = time.time
    for jump in (86400.0, -86400.0, 0.0):   # a day ahead, a day back, then right again (every module asks model.now)
        monkeypatch.setattr(model, "now", lambda: real() + jump)
        for _ in range(3):
            run_cycle(instance, queues)
            time.sleep(0.5)
    wait_until(lambda: run_cycle(instance, queues) and all(sim.job_status(i) == "finished" for i in ids), 60, 0.5,
               "jobs finished after the clock jumps")
    with instance.store.reading() as conn:
        assert conn.scalar(select(func.count()).select_from(reports)) == 0
    for panda_id in ids:
        assert set(final_updates(sim, panda_id)) == {"finished"}
    instance.close()


# -- security ----------------------------------------------------------------------------------------

SECRET = "s3cr3t-PANDA-job-secret-9f8e7d"


def test_secrets_never_reach_output_or_logs_and_their_files_are_private(harness, sim):
    ids = sim.add_jobs("PUSH", 2, secrets=json.dumps({"token": SECRET}), pilotSecrets=SECRET)
    harness.write_config({"PUSH": {"mode": "push"}})
    outputs = []
    for command in (("-vv", "cycle"), ("--json", "jobs"), ("--json", "workers"), ("--json", "status"), ("-vv", "cycle")):
        result = harness.cli(*command)
        outputs += [result.stdout, result.stderr]
    cycles_until_done(harness, sim, ids)
    for text in outputs:
        assert SECRET not in text
    for path in (harness.tmp_path / "logs").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    state = harness.tmp_path / "state.db"
    for path in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
        if path.exists():
            assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    for job_file in (harness.tmp_path / "work").rglob("pandaJobData.out"):
        assert job_file.stat().st_mode & 0o077 == 0
        assert job_file.parent.stat().st_mode & 0o077 == 0


# Each runner goes round these, starting at a different one, so every command overlaps itself and the others.
OVERLAPPING = ("cycle", "fetch-jobs", "submit", "poll", "propagate", "sweep")
# What a lost race looks like when it surfaces instead of being retried or skipped.
RACE_ERRORS = ("database is locked", "deadlock detected", "could not serialize", "IntegrityError", "Traceback")


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_concurrency_overlapping_runs_of_every_command_do_nothing_twice(harness, sim, request, database):
    ids = sim.add_jobs("PULL", 6, jobPars="echo c") + sim.add_jobs("PUSH", 6, jobPars="echo c")
    state = {"state": request.getfixturevalue("pg_url")} if database == "postgresql" else {}
    harness.write_config(QUEUES, **state)
    seconds = float(os.environ.get("HARVESTER_CLI_SOAK_SECONDS", "20"))
    env = {**os.environ, "XDG_STATE_HOME": str(harness.tmp_path / "xdg")}
    code = ("import sys, time, subprocess\nend = time.time() + float(sys.argv[2])\n"
            "commands = sys.argv[3:]\nn = 0\n"
            "while time.time() < end:\n"
            "    command = commands[n % len(commands)]\n    n += 1\n"
            "    r = subprocess.run([sys.executable, '-m', 'harvester_cli', '--config', sys.argv[1], '-q', command],"
            " capture_output=True, text=True)\n"
            "    print(command, r.returncode, r.stderr.replace('\\n', ' | '), flush=True)\n")
    runners = [subprocess.Popen([sys.executable, "-c", code, str(harness.tmp_path / "config.toml"), str(seconds),
                                 *OVERLAPPING[i:], *OVERLAPPING[:i]], stdout=subprocess.PIPE, text=True, env=env)
               for i in range(4)]
    outputs = [r.communicate(timeout=seconds + 180)[0] for r in runners]
    runs = [line for out in outputs for line in out.splitlines()]
    print(f"\n{database}: {len(runs)} runs by 4 overlapping runners in {seconds:.0f} s:",
          dict(Counter(line.split()[0] for line in runs)))
    assert {line.split()[0] for line in runs} >= set(OVERLAPPING[:4]), runs
    assert not [line for line in runs if any(e in line for e in RACE_ERRORS)]
    assert all(line.split()[1] in ("0", "1") for line in runs), runs
    cycles_until_done(harness, sim, ids)
    assert_recovered(harness, sim, ids)
    pulls = [w for w in state_rows(harness, workers) if w.queue == "PULL"]
    assert len(pulls) <= 6 + 2, f"{len(pulls)} pilots for 6 pull jobs: overlapping runs over-submitted"
