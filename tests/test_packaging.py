"""Shipped files that sit beside the package: completion scripts, cron wrapper, CI entry point."""

from __future__ import annotations

import os
import shutil
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
    assert "ExecStart=/usr/local/bin/harvester-cli -q %i" in service and "SuccessExitStatus=1" in service


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """The units as shipped, with ExecStart pointing at a program that exists here."""
    for unit in SYSTEMD.iterdir():
        text = unit.read_text().replace("/usr/local/bin/harvester-cli", sys.executable)
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
