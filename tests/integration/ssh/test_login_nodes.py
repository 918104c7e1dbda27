"""The Slurm backend through login nodes over SSH (issue 28), against Debian's sshd on login nodes in network
namespaces and the real Slurm 22.05 of the project's tests behind them (tests/support/login_nodes.py): this
host reaches the login nodes and never the controller, so every Slurm command and every file went through the
SSH connection.

The pilots here are shell commands (the compute node cannot reach the PanDA simulator on this host's
loopback): a push pilot reports what it found and writes the heartbeat.json and jobReport.json that the
final job update is made of.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harvester_cli.backends import transport
from harvester_cli.state.schema import workers
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from tests.support.harness import rows, wait_until
from tests.support.login_nodes import USER, address

pytestmark = pytest.mark.ssh

PULL_PILOT = "echo hello from worker $HARVESTER_WORKER_ID on $(hostname); sleep 1"
PUSH_PILOT = ("stat -c 'job file %a %U' pandaJobData.out; "
              "printf '%s' '{{\"state\": \"finished\", \"exeErrorCode\": 0, \"transExitCode\": 0}}' > heartbeat.json; "
              "printf '%s' '{{\"exitCode\": 0, \"exitMsg\": \"OK\"}}' > jobReport.json")


def queue(login, work_dir: Path, mode: str = "pull", pilot: str = PULL_PILOT, nodes=(1,), **options) -> dict:
    return {"mode": mode, "backend": "slurm", "pilot": pilot, "empty_pilot_floor": 0,
            "backend_options": login.backend_options(work_dir, nodes, **options)}


def worker_rows(instance):
    return sorted(rows(instance, workers), key=lambda w: w.worker_id)


def errors(result: subprocess.CompletedProcess) -> list[str]:
    """What the run said on stderr (cron mails it): each line."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def ours(login, harvester_id: str) -> list[list[str]]:
    """The cluster's jobs of this harvester: (job id, state, name), as its administrator sees them."""
    out = login.slurm("squeue", "-h", "-r", "-t", "all", "-u", USER, "-o", "%i|%T|%j").stdout
    return [line.split("|") for line in out.splitlines() if f"|{harvester_id}:" in line]


def sessions(login, i: int) -> int:
    """Connections the login node accepted so far."""
    return login.sshd_log(i).count("Accepted publickey")


def test_submit_poll_kill_and_fetch_outputs_through_the_login_node(login, harness):
    work = login.work_dir("pull")
    config = harness.write_config({"SSH_PULL": queue(login, work)})
    hid = harness.harvester_id
    before = sessions(login, 1)
    submitted = harness.cli("submit", "--queue", "SSH_PULL", "--count", "2")
    assert submitted.returncode == 0, submitted.stderr
    assert sessions(login, 1) == before + 1   # one connection for the whole run, however many commands
    jobs = ours(login, hid)
    assert len(jobs) == 2 and len({j[0].split("_")[0] for j in jobs}) == 1   # one job array, through sbatch there
    listing = harness.cli_json("workers", "--queue", "SSH_PULL")
    assert {w["status"] for w in listing["workers"]} == {"submitted"}

    def finished():
        harness.cli("poll", check=True)
        return {w["status"] for w in harness.cli_json("workers", "--queue", "SSH_PULL")["workers"]} == {"finished"}

    wait_until(finished, 90, 1.0, "workers finished, seen through the login node")
    for w in harness.cli_json("workers", "--queue", "SSH_PULL")["workers"]:
        logs = harness.tmp_path / "logs"
        local = next(logs.rglob(f"workers/*/SSH_PULL/{w['worker_id']}"))
        # the pilot wrote its output on the cluster's file system; poll brought it back when the job ended
        assert f"hello from worker {w['worker_id']}" in (local / "pilot.out").read_text()
        assert (local / "pilot.log").exists() and (local / "pilot.jdl").exists()
        remote = work / "SSH_PULL" / str(w["worker_id"])
        assert (remote / "logs" / "pilot.out").exists() and remote.stat().st_uid != 0   # written there, by hclogin
    status = harness.cli_json("status")
    (node,) = status["login_nodes"]
    assert node["node"] == address(1) and node["answering"] and node["problem"] is None

    # kill: a worker that would run for long, killed through the login node
    config.write_text(config.read_text().replace(PULL_PILOT, "sleep 600"))
    assert harness.cli("submit", "--queue", "SSH_PULL", "--count", "1").returncode == 0
    (long,) = [w for w in harness.cli_json("workers", "--queue", "SSH_PULL")["workers"] if w["status"] == "submitted"]
    wait_until(lambda: any(j[1] == "RUNNING" for j in ours(login, hid)), 60, 0.5, "the long worker running")
    killed = harness.cli("kill-workers", "--worker", str(long["worker_id"]), "--now")
    assert killed.returncode == 0 and "killed now: 1" in killed.stdout, killed.stderr
    wait_until(lambda: [j[1] for j in ours(login, hid) if j[0] == long["batch_id"]] == ["CANCELLED"], 30, 0.5,
               "the job cancelled in Slurm")
    # and the workers' files on the login node go when sweep forgets them (once PanDA has their last update)
    harness.cli("propagate", check=True)
    harness.cli("sweep", "--retention", "0", check=True)
    assert harness.cli_json("workers", "--queue", "SSH_PULL")["workers"] == []
    assert not (work / "SSH_PULL" / str(long["worker_id"])).exists()
    assert not [p for p in (work / "SSH_PULL").iterdir() if p.name.isdigit()]
    assert not list((work / "SSH_PULL" / "arrays").iterdir())   # the array's links went with its last task


def test_push_job_file_arrives_0600_and_the_pilot_outputs_come_back(login, harness, sim):
    (panda_id,) = sim.add_jobs("SSH_PUSH", 1, jobPars="echo payload")
    work = login.work_dir("push")
    instance = harness.instance({"SSH_PUSH": queue(login, work, "push", PUSH_PILOT)})
    fetching.fetch_jobs(instance, list(instance.config.queues.values()))
    run = submission.submit(instance, list(instance.config.queues.values()))
    assert not run.partial, run.problems()
    (w,) = worker_rows(instance)
    remote = work / "SSH_PUSH" / str(w.worker_id)
    job_file = remote / "pandaJobData.out"
    info = job_file.stat()
    assert info.st_uid == pwd.getpwnam(USER).pw_uid and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(remote.stat().st_mode) == 0o700
    assert str(panda_id) in job_file.read_text()
    # the jobs' proxy: staged, 0600, never on a command line
    proxy = work / "SSH_PUSH" / "credentials" / "x509_user_proxy"
    assert stat.S_IMODE(proxy.stat().st_mode) == 0o600 and proxy.read_bytes() == harness.pki.proxy.read_bytes()
    assert f"X509_USER_PROXY={proxy}" in (remote / "harvester-worker.sh").read_text()
    queues = list(instance.config.queues.values())

    def final():
        monitoring.poll(instance, queues)
        propagation.propagate(instance, queues)
        return sim.job_status(panda_id) == "finished"

    wait_until(final, 90, 1.0, "the push job final in PanDA")
    (w,) = worker_rows(instance)
    local = Path(w.log_dir)
    assert "job file 600 hclogin" in (local / "pilot.out").read_text()   # what the pilot found on the compute node
    assert (local / "heartbeat.json").exists() and (local / "jobReport.json").exists()
    assert sim.jobs[panda_id].updates[-1]["exe_error_code"] == 0
    instance.close()


def test_connection_cut_mid_submit_loses_nothing_and_submits_nothing_twice(login, harness, monkeypatch):
    """Three workers, one sbatch each, one at a time. When the first sbatch is sent, slurmctld is stopped, so
    that sbatch waits on the login node; the harvester's cable is cut, slurmctld goes on and takes the job, whose
    id never comes back. The run is this process's (the one seam: the moment of the fault), the repair a CLI's."""
    work = login.work_dir("cut")
    queues = {"SSH_CUT": queue(login, work, pilot="sleep 600", max_array_size=1, max_concurrent_sbatch=1)}
    harness.write_config(queues)
    instance = harness.instance(queues)
    hid = harness.harvester_id
    controller = login.controller_pid()
    sent = threading.Event()
    cutter_done = threading.Event()

    def cut_when_sbatch_waits():
        try:   # it waits for slurmctld: seen for sure, already running on the login node whatever the cable does
            wait_until(lambda: sbatch_running(hid), 30, 0.05, "the first sbatch running on the login node")
            login.cut(1)
        finally:
            os.kill(controller, signal.SIGCONT)
            cutter_done.set()

    original = transport.SSHTransport.run

    def run(self, args, **kwargs):
        if args[0] == "sbatch" and not sent.is_set():
            sent.set()
            os.kill(controller, signal.SIGSTOP)
            threading.Thread(target=cut_when_sbatch_waits, daemon=True).start()
        return original(self, args, **kwargs)

    monkeypatch.setattr(transport.SSHTransport, "run", run)
    try:
        result = submission.submit(instance, list(instance.config.queues.values()), count=3)
    finally:
        if sent.is_set():
            cutter_done.wait(60)
        os.kill(controller, signal.SIGCONT)
        instance.close()
    assert sent.is_set() and result.exit_code == 1, result.problems()
    (problem,) = result.problems()
    assert "the next submit" in problem and "lost during sbatch" in problem and address(1) in problem, problem
    wait_until(lambda: len(ours(login, hid)) == 1, 30, 0.2, "the job slurmctld took")
    (job,) = ours(login, hid)
    listing = harness.cli_json("workers", "--queue", "SSH_CUT")["workers"]
    assert [w["status"] for w in listing] == ["pending"] * 3   # not known to be submitted: left for the repair

    login.mend(1)
    repaired = harness.cli("submit", "--queue", "SSH_CUT")   # no new worker (no activated jobs): the repair only
    assert repaired.returncode == 0, repaired.stderr
    assert len(ours(login, hid)) == 1   # nothing submitted twice
    after = {w["worker_id"]: w for w in harness.cli_json("workers", "--queue", "SSH_CUT")["workers"]}
    (first,) = [w for w in after.values() if w["worker_id"] == int(job[2].split(":")[1])]
    assert first["status"] in ("submitted", "running") and first["batch_id"] == job[0]   # adopted by its tag
    assert sorted(w["status"] for w in after.values() if w is not first) == ["missed", "missed"]   # never sent


def sbatch_running(harvester_id: str) -> bool:
    """Whether an sbatch of this harvester runs on the login node."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"sbatch") and any(a.startswith(f"--job-name={harvester_id}:".encode())
                                                        for a in args):
            return True
    return False


def test_login_node_down_is_one_line_exit_1_and_the_next_run_tries_again(login, harness):
    work = login.work_dir("down")
    harness.write_config({"SSH_DOWN": queue(login, work, pilot="sleep 600")})
    assert harness.cli("submit", "--queue", "SSH_DOWN", "--count", "1").returncode == 0
    login.stop_sshd(1)
    down = harness.cli("poll")
    assert down.returncode == 1, down.stderr
    (line,) = errors(down)
    assert "no login node answered" in line and address(1) in line and "Connection refused" in line
    assert "the next run tries again" in line
    status = harness.cli_json("status")["login_nodes"]
    assert [(n["node"], n["answering"], "Connection refused" in (n["problem"] or "")) for n in status] == \
        [(address(1), False, True)]
    login.start_sshd(1)
    again = harness.cli("poll")
    assert again.returncode == 0 and not errors(again), again.stderr
    (node,) = harness.cli_json("status")["login_nodes"]
    assert node["answering"] and node["problem"] is None


def test_changed_host_key_refused_or_expired_key_is_one_line_exit_2(login, harness, tmp_path):
    work = login.work_dir("keys")
    config = harness.write_config({"SSH_KEYS": queue(login, work, pilot="sleep 600")})
    assert harness.cli("submit", "--queue", "SSH_KEYS", "--count", "1").returncode == 0
    original = login.replace_host_key(1)
    try:
        changed = harness.cli("poll")
        assert changed.returncode == 2, changed.stderr
        (line,) = errors(changed)
        assert "host key does not match" in line and str(login.known_hosts) in line
        cycle = harness.cli("cycle")   # the other steps still run; the run says exit 2
        assert cycle.returncode == 2, cycle.stderr
    finally:
        login.replace_host_key(1, original)
    assert harness.cli("poll").returncode == 0

    other = tmp_path / "other_key"   # a key the login node does not know
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    config.write_text(config.read_text().replace(str(login.key), str(other)))
    refused = harness.cli("poll")
    assert refused.returncode == 2, refused.stderr
    (line,) = errors(refused)
    assert f"refused the key {other}" in line and "Permission denied" in line and "expired" not in line

    valid = login.certified_key(tmp_path, "-5m:+1h")   # a certificate of the site's CA, beside its key
    config.write_text(config.read_text().replace(str(other), str(valid)))
    assert harness.cli("poll").returncode == 0
    expired = login.certified_key(tmp_path, "20200101:20200102")
    config.write_text(config.read_text().replace(str(valid), str(expired)))
    late = harness.cli("poll")
    assert late.returncode == 2, late.stderr
    (line,) = errors(late)
    assert f"refused the key {expired}" in line and "Permission denied" in line
    assert f"its certificate {expired}-cert.pub expired at 2020-01-02 00:00:00 UTC" in line
    checked = harness.cli("config", "check")   # and config check says it before a run finds out
    assert checked.returncode == 2 and f"its certificate {expired}-cert.pub expired" in checked.stdout + checked.stderr


def test_the_second_login_node_answers_when_the_first_is_down(login, harness):
    work = login.work_dir("second")
    harness.write_config({"SSH_TWO": queue(login, work, nodes=(1, 2))})
    login.cut(1)   # no answer at all: the first node costs connect_timeout, then the second serves the run
    before = sessions(login, 2)
    started = time.monotonic()
    result = harness.cli("submit", "--queue", "SSH_TWO", "--count", "1")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert sessions(login, 2) == before + 1
    (worker,) = harness.cli_json("workers", "--queue", "SSH_TWO")["workers"]
    assert worker["status"] == "submitted" and len(ours(login, harness.harvester_id)) == 1
    nodes = {n["node"]: n for n in harness.cli_json("status")["login_nodes"]}
    assert nodes[address(2)]["answering"] and not nodes[address(1)]["answering"]
    assert "timed out" in nodes[address(1)]["problem"] or "No route" in nodes[address(1)]["problem"]
    shown = harness.cli("status")
    assert "login nodes" in shown.stdout and address(2) in shown.stdout
