"""What an operator meets (issue 23, the rest): each test runs the CLI, the cron wrapper or a shipped file as
an operator, cron or systemd would, and checks the exit code and the line that says what happened. Every
one of them failed on the code before the change that made it pass."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.harness import SilentServer, new_state

ROOT = Path(__file__).resolve().parents[2]
CRON = [sys.executable, "-c", "from harvester_cli.cron import main; main()"]


def _site(tmp_path: Path, extra: str = "") -> Path:
    """A configuration whose PanDA never answers (port 9) and a state database, as after `db upgrade`."""
    proxy = tmp_path / "proxy.pem"
    proxy.write_text("not a real proxy")
    proxy.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(f'harvester_id = "ops-{tmp_path.name[-12:]}"\nstate = "{tmp_path / "state.db"}"\n'
                    f'log_dir = "{tmp_path / "logs"}"\nwork_dir = "{tmp_path / "work"}"\n'
                    f'[panda]\nurl = "https://127.0.0.1:9/api/v1"\nproxy = "{proxy}"\ntimeout = 1\nretries = 1\n'
                    '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "sleep 60"\n'
                    '[queues.OTHER]\nmode = "pull"\nbackend = "local"\npilot = "sleep 60"\n' + extra)
    new_state(tmp_path / "state.db")
    return path


def _cli(config: Path, *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def _seed_workers(state: Path, rows: list[tuple[int, str, str]]) -> None:
    """Workers (id, queue, status) as earlier submissions left them."""
    from harvester_cli.state import workers
    from harvester_cli.state.store import Store

    now = time.time()
    with Store(f"sqlite:///{state}").transaction() as tx:
        workers.record_pending(tx, [(w, queue, "local", "pull", "SCORE", "managed", 1, 2000, status, None, now, now,
                                     None, None, "host") for w, queue, status in rows])


# -- 1. failures are said, and cost exit 1 --------------------------------------------------------

def test_kill_workers_names_each_id_that_matched_nothing_and_exits_1(tmp_path):
    config = _site(tmp_path)
    _seed_workers(tmp_path / "state.db", [(5, "Q", "running"), (6, "Q", "finished"), (7, "OTHER", "running")])
    alone = _cli(config, "kill-workers", "--worker", "99999")
    assert alone.returncode == 1, alone.stderr
    assert "worker 99999: no such worker in the state database" in alone.stderr
    mixed = _cli(config, "--queue", "Q", "kill-workers", "--worker", "5", "--worker", "7", "--worker", "99999")
    assert mixed.returncode == 1, mixed.stderr
    assert "1 worker(s) marked for killing" in mixed.stdout   # the one that exists is still marked
    assert "worker 7: belongs to queue OTHER, which is not selected" in mixed.stderr
    assert "worker 99999: no such worker" in mixed.stderr and "Traceback" not in mixed.stderr
    # nothing left to kill is not a mistake: already final, or marked by the run above
    done = _cli(config, "kill-workers", "--worker", "6", "--worker", "5")
    assert done.returncode == 0, done.stderr
    assert "worker 6: already finished: nothing to kill" in done.stdout
    assert "worker 5: already marked for killing" in done.stdout


def test_submit_count_that_submits_fewer_says_which_cap_and_exits_1(harness, sim):
    harness.write_config({"Q": {"mode": "pull", "pilot": "sleep 60", "max_workers": 5},
                          "P": {"mode": "push", "pilot": "sleep 60"}})
    assert harness.cli("submit", "--queue", "Q", "--count", "2").returncode == 0
    capped = harness.cli("submit", "--queue", "Q", "--count", "10")
    assert capped.returncode == 1, capped.stderr
    assert ("queue Q: --count 10: only 3 can be submitted: max_workers=5 with 2 worker(s) active leaves room for 3 "
            "(--force lifts max_workers)") in capped.stderr
    assert "Traceback" not in capped.stderr
    statuses = [w["status"] for w in harness.cli_json("workers", "--queue", "Q")["workers"]]
    assert len(statuses) == 5   # what fitted was submitted
    sim.add_jobs("P", 2)
    assert harness.cli("fetch-jobs", "--queue", "P").returncode == 0
    push = harness.cli("submit", "--queue", "P", "--count", "4")
    assert push.returncode == 1, push.stderr
    assert "--count 4: only 2 can be submitted: push mode: one worker per fetched job, and 2 SCORE job(s) wait" \
        in push.stderr


def test_a_closed_pipe_ends_quietly_with_the_commands_own_exit_code(tmp_path):
    """`harvester-cli workers | head -1`: the reader goes away; no traceback, no "Broken pipe", exit 0 and no
    failure in the command log."""
    config = _site(tmp_path)
    _seed_workers(tmp_path / "state.db", [(i, "Q", "running") for i in range(1, 3001)])
    for args in (("workers", "--limit", "5000"), ("--json", "workers", "--limit", "5000"), ("config", "example")):
        process = subprocess.Popen([sys.executable, "-m", "harvester_cli", "--config", str(config), *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.stdout.close()   # gone before the first line: the same as `| head -1` past its line
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == 0, (args, stderr)
        assert stderr == "", (args, stderr)
    log = (tmp_path / "logs" / "commands" / "workers.log").read_text()
    assert "ERROR" not in log and "crashed" not in log and "end: exit 0" in log
    assert "stdout was closed by its reader" in log


def test_the_readme_has_a_table_of_exit_codes_per_situation():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| exit | when |"):].split("\n\n", 1)[0]
    codes = re.findall(r"^\| `(\d+)` \|", table, re.M)
    assert codes == ["0", "1", "2", "130"], codes
    for words in ("retried", "missing proxy", "log_dir", "client library", "kill-workers --worker", "--count",
                  "Ctrl-C"):
        assert words in table, words


# -- 2. install from the README -------------------------------------------------------------------

def test_the_readme_installs_into_a_venv_on_python_3_11_and_lists_every_extra():
    import tomllib

    readme = (ROOT / "README.md").read_text()
    try_it = readme[readme.index("## Try it"):readme.index("## Commands")]
    assert "Python >= 3.11" in try_it and "python3 -m venv" in try_it
    assert "externally managed" in try_it and "EL9" in try_it and "python3.11" in try_it
    first = next(line.strip() for line in try_it.splitlines() if line.startswith("    "))
    assert first.startswith("python3 -m venv") and "harvester-cli demo" in first, first
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in extras:
        if extra != "test":
            assert re.search(rf"^\| `\[{extra}\]` \| .+ \|$", try_it, re.M), extra
    assert "python3 -m venv" in try_it.split("bash scripts/test")[0].rsplit("\n\n", 1)[-1]


def test_scripts_test_refuses_an_externally_managed_python_in_one_line(tmp_path):
    """Debian 12's python3 outside a venv: pip would refuse after apt-get ran; scripts/test says how to start,
    at once. The python3 here is this one with a home whose standard library carries the EXTERNALLY-MANAGED
    marker (PEP 668), as Debian's does."""
    import sysconfig

    stdlib = Path(sysconfig.get_path("stdlib"))
    home = tmp_path / "home" / stdlib.relative_to(sys.base_prefix)
    home.mkdir(parents=True)
    for entry in stdlib.iterdir():
        (home / entry.name).symlink_to(entry)
    (home / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use apt\n")
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nPYTHONHOME={tmp_path / "home"} exec {base_python} "$@"\n')
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")   # not root: no apt-get either way
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "test"), "--co", "-q"], capture_output=True, text=True,
                            timeout=120, env={**env, "PATH": f"{bin_dir}:{env['PATH']}"})
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is externally managed" in lines[0] and "python3 -m venv" in lines[0], result.stderr


# -- 3. systemd and cron -------------------------------------------------------------------------

SYSTEMD = ROOT / "contrib" / "systemd"
VENV_BIN = "/opt/harvester-cli/venv/bin"


def test_the_units_and_the_crontab_name_one_installation():
    crontab = (ROOT / "cron" / "harvester-cli.crontab").read_text()
    path = re.search(r"^PATH=(\S+)$", crontab, re.M).group(1)
    assert path.split(":")[0] == VENV_BIN
    for unit in SYSTEMD.glob("*.service"):
        starts = re.findall(r"^ExecStart=(\S+)", unit.read_text(), re.M)
        assert starts == [f"{VENV_BIN}/harvester-cli"], (unit.name, starts)
    readme = (ROOT / "README.md").read_text()
    assert f"python3 -m venv {VENV_BIN.removesuffix('/bin')}" in readme
    assert "edit `User=`, `HARVESTER_CLI_CONFIG` and" in readme and "ExecStart" in readme


def _cron_site(tmp_path: Path, extra: str = "") -> tuple[Path, dict]:
    config = _site(tmp_path, extra)
    return tmp_path / "logs", {**os.environ, "HARVESTER_CLI_CONFIG": str(config), "PATH": "/usr/bin:/bin"}


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_cron_wrapper_passes_sigterm_and_sigint_on_and_waits_for_its_command(tmp_path, signum):
    logs, env = _cron_site(tmp_path)
    wrapper = subprocess.Popen([*CRON, "serve-logs", "--port", "0"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while "serving" not in ((logs / "cron" / "serve-logs.log").read_text()
                            if (logs / "cron" / "serve-logs.log").exists() else ""):
        assert time.monotonic() < deadline and wrapper.poll() is None, wrapper.stderr.read()
        time.sleep(0.1)
    (command,) = _children(wrapper.pid)
    try:
        wrapper.send_signal(signum)
        assert wrapper.wait(timeout=30) == 0, wrapper.stderr.read()   # the command's own exit code
        assert not Path(f"/proc/{command}").exists()   # ended before the wrapper, not left running
        assert re.search(r"--- exit 0 after [\d.]+ s\n$", (logs / "cron" / "serve-logs.log").read_text())
    finally:   # a wrapper that does not pass the signal on leaves its serve-logs behind
        if Path(f"/proc/{command}").exists():
            os.kill(command, signal.SIGKILL)


def test_a_cron_wrapper_killed_alone_leaves_the_lock_to_its_command(tmp_path):
    """kill -9 of the wrapper alone freed the lock while its command ran on, so the next minute's run started a
    second one beside it: the command holds the lock too, and the next run skips, naming the command."""
    import fcntl

    from tests.support.harness import wait_until

    logs, env = _cron_site(tmp_path)
    wrapper = subprocess.Popen([*CRON, "serve-logs", "--port", "0"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    log = logs / "cron" / "serve-logs.log"
    wait_until(lambda: "serving" in (log.read_text() if log.exists() else "") or wrapper.poll() is not None, 30,
               0.1, "serve-logs serving")
    (command,) = _children(wrapper.pid)
    strays = [command]
    try:
        wrapper.kill()
        wrapper.wait(timeout=30)
        assert Path(f"/proc/{command}").exists()   # the command runs on, as the wrapper's kill -9 left it
        second = subprocess.Popen([*CRON, "serve-logs", "--port", "0"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert second.wait(timeout=60) == 0, second.stderr.read()
        except subprocess.TimeoutExpired:   # it started a second serve-logs
            strays += _children(second.pid) + [second.pid]
            raise
        assert re.search(rf"skipped: the previous `serve-logs` \(pid {command}\) has been running", log.read_text())
        os.kill(command, signal.SIGTERM)

        def lock_free() -> bool:
            fd = os.open(logs / ".state" / "cron-serve-logs.lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            finally:
                os.close(fd)

        wait_until(lock_free, 30, 0.1, "the lock freed by the command's end")
    finally:
        for pid in strays:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


def test_the_cron_wrapper_says_once_when_the_same_failure_lasts_past_alert_after(tmp_path, pki):
    """A streak counts from the end of its first failing run: each run here takes over 2 s (two PanDA calls
    that time out after 1 s), past alert_after = 1, yet the first is not news (it alerted when the streak
    counted from its start); the second is, once."""
    silent = SilentServer()
    try:
        logs, env = _cron_site(tmp_path, "[cron]\nalert_after = 1\n")
        config = Path(env["HARVESTER_CLI_CONFIG"])
        config.write_text(config.read_text().replace("https://127.0.0.1:9/", f"https://127.0.0.1:{silent.port}/")
                          .replace(str(tmp_path / "proxy.pem"), str(pki.proxy)))   # a proxy TLS can use: it waits
        runs = [subprocess.run([*CRON, "submit"], env=env, capture_output=True, text=True, timeout=120)
                for _ in range(3)]
    finally:
        silent.close()
    assert [r.returncode for r in runs] == [1, 1, 1]
    log = (logs / "cron" / "submit.log").read_text()
    assert log.count("Read timed out") >= 3, log   # each run waited for PanDA
    assert runs[0].stderr == ""   # one failing run is not news, however long: status and the log show it
    line = runs[1].stderr.strip()
    assert line.startswith("harvester-cli-cron: `submit` has exited 1 (partial") and "[cron] alert_after = 1 s" in line
    assert str(logs / "cron" / "submit.log") in line and len(runs[1].stderr.splitlines()) == 1
    assert runs[2].stderr == ""   # said once
    config = Path(env["HARVESTER_CLI_CONFIG"])
    keys = _cli(config, "config", "keys", "cron.alert_after")
    assert re.search(r"^cron.alert_after +int, default 3600\n.*\n +in \[cron\]$", keys.stdout, re.M), keys.stdout
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert "| `alert_after` | int | `3600` |" in reference.split("## [cron]", 1)[1].split("## ", 1)[0]


# -- 4. modes whatever the umask -------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o002])
def test_no_umask_makes_the_worker_wrapper_or_the_trees_writable_by_others(harness, sim, umask):
    from harvester_cli.backends.local import WRAPPER, WRAPPER_NAME

    config = harness.write_config({"Q": {"mode": "pull", "pilot": "echo hello"}})
    work, logs = harness.tmp_path / "work", harness.tmp_path / "logs"
    work.mkdir()
    loose = work / WRAPPER_NAME   # an earlier version's wrapper, written under umask 000
    loose.write_text(WRAPPER)
    loose.chmod(0o666)
    result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(config), "submit", "--count", "2",
                             "--queue", "Q", "--wait", "--interval", "0.5", "--timeout", "60"],
                            capture_output=True, text=True, timeout=120, umask=umask)
    assert result.returncode == 0, result.stderr
    loose_ones = []
    for top in (work, logs):
        for directory, names, files in os.walk(top):
            for path in [Path(directory)] + [Path(directory) / f for f in files]:
                if path.stat().st_mode & 0o022 and path != work:   # `work` is the test's own
                    loose_ones.append(f"{path} {stat.filemode(path.stat().st_mode)}")
    assert not loose_ones, loose_ones
    assert stat.S_IMODE((work / WRAPPER_NAME).stat().st_mode) == 0o700
    assert any(logs.glob("workers/*/Q/*/pilot.out"))   # the pilots ran, their outputs are in the tree


# -- 5. demo --keep ---------------------------------------------------------------------------

def test_demo_keep_refuses_a_directory_that_is_not_empty_at_once(tmp_path):
    kept = tmp_path / "site"
    kept.mkdir()
    (kept / "config.toml").write_text("# an operator's own file\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "harvester_cli", "demo", "--keep", str(kept)],
                            capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"harvester-cli: error: demo --keep {kept}: the directory is not empty; name a new or empty directory "
        "(nothing was written)"]
    assert [p.name for p in kept.iterdir()] == ["config.toml"]
    assert (kept / "config.toml").read_text() == "# an operator's own file\n"
