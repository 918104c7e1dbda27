"""Shipped files that sit beside the package: completion scripts, cron wrapper, CI entry point."""

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


def test_cron_wrapper_runs_a_command_and_logs_it(tmp_path):
    logs = tmp_path / "logs"
    env = {**os.environ, "HARVESTER_CLI_LOGS": str(logs), "HARVESTER_CLI": f"{sys.executable} -m harvester_cli"}
    result = subprocess.run([str(ROOT / "cron" / "harvester-cli-cron"), "--version"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "harvester-cli, version" in (logs / "--version.log").read_text()


def test_crontab_uses_the_wrapper_for_known_commands():
    from harvester_cli.cli import COMMANDS

    lines = [l.lstrip("# ").split() for l in (ROOT / "cron" / "harvester-cli.crontab").read_text().splitlines()
             if "harvester-cli-cron" in l and not l.startswith("# harvester")]
    used = {l[l.index("harvester-cli-cron") + 1] for l in lines if "harvester-cli-cron" in l}
    assert used and used <= set(COMMANDS)
