"""Shipped files and entry points beside the commands: completion scripts, the cron wrapper, the crontab."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shell,name", [("bash", "harvester-cli.bash"), ("zsh", "_harvester-cli"),
                                        ("fish", "harvester-cli.fish")])
def test_completion_scripts_match_the_cli(shell, name):
    """Regenerate with completion/generate if this fails (click versions differ in trailing blank lines)."""
    generated = subprocess.run([sys.executable, "-m", "harvester_cli"], capture_output=True, text=True,
                               env={**os.environ, "_HARVESTER_CLI_COMPLETE": f"{shell}_source"}).stdout
    shipped = (ROOT / "completion" / name).read_text()
    assert generated.strip() == shipped.strip()


def test_bash_completion_offers_the_commands():
    result = subprocess.run([sys.executable, "-m", "harvester_cli"], capture_output=True, text=True, env={
        **os.environ, "_HARVESTER_CLI_COMPLETE": "bash_complete", "COMP_WORDS": "harvester-cli su", "COMP_CWORD": "1"})
    assert "plain,submit" in result.stdout


CRON = [sys.executable, "-c", "from harvester_cli.cron import main; main()"]


@pytest.fixture
def cron_site(tmp_path):
    """A configuration with its own log_dir and state, as a crontab's environment would name it."""
    from tests.support.harness import new_state

    config = tmp_path / "config.toml"
    proxy = tmp_path / "proxy.pem"   # the work commands check the host's files first, as `config check` does
    proxy.write_text("not a real proxy: PanDA at port 9 never answers")
    proxy.chmod(0o600)
    config.write_text(f'harvester_id = "cron-test"\nstate = "{tmp_path / "state.db"}"\nlog_dir = "{tmp_path / "logs"}"\n'
                      # retries = 0: PanDA at port 9 never answers, and the retries' backoff cost 20 s a cycle
                      f'[panda]\nurl = "https://127.0.0.1:9/api/v1"\nproxy = "{proxy}"\nretries = 0\n'
                      '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n')
    new_state(tmp_path / "state.db")
    env = {**os.environ, "HARVESTER_CLI_CONFIG": str(config), "PATH": "/usr/bin:/bin"}   # cron's PATH: no venv
    return tmp_path / "logs", env


def test_cron_wrapper_runs_the_command_of_its_own_installation_and_logs_it(cron_site):
    logs, env = cron_site
    result = subprocess.run([*CRON, "--queue", "Q", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = (logs / "cron" / "status.log").read_text()   # named after the command, not the first option
    assert "harvester-cli --queue Q status" in text and "--- exit 0 after" in text and "Q" in text
    assert sorted(p.name for p in (logs / "cron").iterdir()) == ["status.log"]


def test_cron_wrapper_skips_while_the_last_run_goes_on_and_says_when_it_is_stuck(cron_site):
    import fcntl
    import json
    import time

    logs, env = cron_site
    (logs / ".state").mkdir(parents=True)
    lock = os.open(logs / ".state" / "cron-cycle.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)   # a cycle that still runs
    os.pwrite(lock, json.dumps({"pid": 4242, "started": time.time() - 90}).encode(), 0)
    (logs / "cron").mkdir()
    skipped = subprocess.run([*CRON, "cycle"], env=env, capture_output=True, text=True, timeout=60)
    assert skipped.returncode == 0 and skipped.stderr == ""
    # 90 s when the lock was taken, a second or two more on a busy machine
    assert re.search(r"skipped: the previous `cycle` \(pid 4242\) has been running for 9[0-3] s",
                     (logs / "cron" / "cycle.log").read_text())
    stuck = subprocess.run([*CRON, "cycle"], env={**env, "HARVESTER_CLI_CRON_STUCK_AFTER": "60"},
                           capture_output=True, text=True, timeout=60)
    assert stuck.returncode == 1 and "STUCK" in stuck.stderr and "pid 4242" in stuck.stderr
    os.close(lock)
    ran = subprocess.run([*CRON, "cycle"], env=env, capture_output=True, text=True, timeout=120)
    assert "--- exit" in (logs / "cron" / "cycle.log").read_text(), ran.stderr


def test_cron_wrapper_prints_a_configuration_error_for_cron_to_mail_and_hides_passwords(cron_site):
    logs, env = cron_site
    config = Path(env["HARVESTER_CLI_CONFIG"])
    config.write_text(config.read_text().replace('mode = "pull"', 'mode = "pull"\nstatus = "ofline"'))
    env = {**env, "XDG_STATE_HOME": str(logs.parent / "xdg")}   # where the wrapper logs when the file is broken
    result = subprocess.run([*CRON, "--state", "postgresql://site:s3cret-pw@127.0.0.1:1/db", "cycle"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "[queues.Q] status" in result.stderr and "did you mean 'offline'" in result.stderr   # cron mails this
    assert "exited 2 (configuration or usage)" in result.stderr
    fallback = Path(result.stderr.rsplit("the whole output is in ", 1)[1].strip())
    assert fallback.is_relative_to(logs.parent / "xdg")
    assert "s3cret-pw" not in fallback.read_text() and "site:***@" in fallback.read_text()
    assert "s3cret-pw" not in result.stderr


def test_a_database_password_on_the_command_line_never_reaches_the_command_log(cron_site):
    logs, env = cron_site
    result = subprocess.run([sys.executable, "-m", "harvester_cli", "--state",
                             "postgresql://site:s3cret-pw@127.0.0.1:1/db", "status"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "s3cret-pw" not in result.stderr
    log = (logs / "commands" / "status.log").read_text()
    assert "start: harvester-cli --state postgresql://site:***@127.0.0.1:1/db status" in log
    assert "s3cret-pw" not in log


def test_a_partial_cron_run_stays_in_its_log(cron_site):
    logs, env = cron_site   # PanDA at port 9 does not answer: cycle is partial (exit 1), retried next minute
    result = subprocess.run([*CRON, "cycle"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr == ""
    assert "--- exit 1 after" in (logs / "cron" / "cycle.log").read_text()


def test_cron_wrapper_without_a_command_is_a_usage_error():
    result = subprocess.run([*CRON, "--queue", "Q"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: harvester-cli-cron" in result.stderr


def test_crontab_uses_the_wrapper_for_known_commands():
    import re

    from harvester_cli.cli import COMMANDS

    entries = re.findall(r"^#?\s*(?:[\d*/,-]+\s+){5}harvester-cli-cron (\S+)",
                         (ROOT / "cron" / "harvester-cli.crontab").read_text(), re.M)
    assert len(entries) >= 7 and set(entries) <= set(COMMANDS)


SYSTEMD = ROOT / "contrib" / "systemd"


def test_systemd_timers_start_known_commands_like_the_crontab():
    from harvester_cli.cli import COMMANDS

    timers = sorted(SYSTEMD.glob("harvester-cli-*.timer"))
    started = {}
    for timer in timers:
        unit = next(l.split("=", 1)[1] for l in timer.read_text().splitlines() if l.startswith("Unit="))
        assert unit.startswith("harvester-cli@") and unit.endswith(".service"), unit
        started[timer.name] = unit.removeprefix("harvester-cli@").removesuffix(".service")
    assert set(started.values()) == {"cycle", "sweep", "renew-proxy", "clean-logs"}
    assert set(started.values()) <= set(COMMANDS)
    service = (SYSTEMD / "harvester-cli@.service").read_text()
    assert "ExecStart=/opt/harvester-cli/venv/bin/harvester-cli -q %i" in service and "SuccessExitStatus=1" in service


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """The units as shipped, with ExecStart pointing at a program that exists here."""
    for unit in SYSTEMD.iterdir():
        text = unit.read_text().replace("/opt/harvester-cli/venv/bin/harvester-cli", sys.executable)
        (tmp_path / unit.name).write_text(text)
    (tmp_path / "harvester-cli@cycle.service").write_text((tmp_path / "harvester-cli@.service").read_text())
    for unit in sorted(tmp_path.iterdir()):
        if unit.name == "harvester-cli@.service":
            continue
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True,
                                text=True, cwd=tmp_path)
        problems = [l for l in (result.stdout + result.stderr).splitlines()
                    if l.strip() and "harvester-cli@" not in l.split(":")[0]]
        assert result.returncode == 0 and not problems, (unit.name, result.stdout, result.stderr)
