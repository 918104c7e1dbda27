"""What an operator installs, checked as the README says to use it: the quick start in a fresh venv (pip
installs this checkout; the build backend comes from the package index), and the shipped systemd units
through systemd-analyze (Debian's systemd package)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD = ROOT / "contrib" / "systemd"
VENV_BIN = "/opt/harvester-cli/venv/bin"


def test_the_units_as_shipped_pass_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` on a root (--root) laid out as the README installs: the units copied to
    /etc/systemd/system unchanged, harvester-cli in the venv, the distribution's own units beside them. It
    loads each unit and what it pulls in (each timer's harvester-cli@<command>.service from the template),
    checks every directive and that ExecStart is an executable file. Needs no systemd running (PID 1 may
    be anything), and no man pages."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is not installed (Debian: systemd): run scripts/test as root")
    root = tmp_path / "root"
    system = root / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    for unit in SYSTEMD.iterdir():
        shutil.copy(unit, system / unit.name)
    shipped = next(Path(p) for p in ("/usr/lib/systemd/system", "/lib/systemd/system") if Path(p).is_dir())
    shutil.copytree(shipped, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    venv = root / VENV_BIN.lstrip("/")
    venv.mkdir(parents=True)
    (venv / "harvester-cli").write_text("#!/bin/sh\n")
    (venv / "harvester-cli").chmod(0o755)
    units = [u.name for u in sorted(SYSTEMD.iterdir()) if u.name != "harvester-cli@.service"] + \
        ["harvester-cli@cycle.service"]

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
                              capture_output=True, text=True, cwd=system, timeout=120)

    result = verify()
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (result.stdout, result.stderr)
    (venv / "harvester-cli").unlink()   # and it would say so if the installation were elsewhere
    missing = verify()
    assert missing.returncode != 0 and f"{VENV_BIN}/harvester-cli is not executable" in missing.stderr


# -- 6. the README's quick start, in a fresh venv ------------------------------------------------

def test_the_quick_start_script_follows_the_readme_in_a_fresh_venv(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HARVESTER_CLI_CONFIG")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart"), str(tmp_path / "qs")], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    for step in ("install", "demo", "config example", "config check", "db upgrade", "cycle"):
        assert f"quickstart: {step}: ok" in result.stdout, (step, result.stdout[-3000:])
    assert (ROOT / "scripts" / "quickstart").read_text().count("python3 -m venv") == 1
    assert "scripts/quickstart" in (ROOT / "README.md").read_text()
