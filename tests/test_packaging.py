"""Shipped files and entry points beside the commands: completion scripts, the cron wrapper, the crontab."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
    from tests.conftest import new_state

    config = tmp_path / "config.toml"
    config.write_text(f'harvester_id = "cron-test"\nstate = "{tmp_path / "state.db"}"\nlog_dir = "{tmp_path / "logs"}"\n'
                      '[panda]\nurl = "https://127.0.0.1:9/api/v1"\n[queues.Q]\nmode = "pull"\nbackend = "local"\n')
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
    assert "skipped: the previous `cycle` (pid 4242) has been running for 90 s" in (logs / "cron" / "cycle.log").read_text()
    stuck = subprocess.run([*CRON, "cycle"], env={**env, "HARVESTER_CLI_CRON_STUCK_AFTER": "60"},
                           capture_output=True, text=True, timeout=60)
    assert stuck.returncode == 1 and "STUCK" in stuck.stderr and "pid 4242" in stuck.stderr
    os.close(lock)
    ran = subprocess.run([*CRON, "cycle"], env=env, capture_output=True, text=True, timeout=120)
    assert "--- exit" in (logs / "cron" / "cycle.log").read_text(), ran.stderr


def test_cron_wrapper_without_a_command_is_a_usage_error():
    result = subprocess.run([*CRON, "--queue", "Q"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: harvester-cli-cron" in result.stderr


def test_crontab_uses_the_wrapper_for_known_commands():
    import re

    from harvester_cli.cli import COMMANDS

    entries = re.findall(r"^#?\s*(?:[\d*/,-]+\s+){5}harvester-cli-cron (\S+)",
                         (ROOT / "cron" / "harvester-cli.crontab").read_text(), re.M)
    assert len(entries) >= 7 and set(entries) <= set(COMMANDS)
