"""The command line as cron and operators use it: real processes, exit codes, stderr, stdout formats."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harvester_cli import cli, config
from harvester_cli.state.schema import HEAD
from tests.support.harness import new_state

HEAVY = ("sqlalchemy", "requests", "htcondor2", "pyarcrest", "rich")
ANSI = re.compile(r"\x1b\[")
BOX = re.compile(r"[\u2500-\u257f]")
PANDA_URL = "https://127.0.0.1:9/api/v1"  # nothing listens: commands here must not need PanDA


def queue_toml(name: str, mode: str = "pull") -> str:
    return f'\n[queues.{name}]\nmode = "{mode}"\nbackend = "local"\npilot = "true"\n'


def write_config(tmp_path: Path, queues: tuple[str, ...] = ("Q",), extra: str = "", name: str = "config.toml") -> Path:
    proxy = tmp_path / "proxy.pem"   # config check wants credentials for PanDA, readable by us only
    proxy.write_text("not a real proxy: nothing here talks to PanDA")
    proxy.chmod(0o600)
    text = (f'harvester_id = "test-harvester"\n{extra}\n[panda]\nurl = "{PANDA_URL}"\nretries = 0\ntimeout = 2\n'
            f'proxy = "{proxy}"\n')
    for queue in queues:
        text += queue_toml(queue)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def env(tmp_path):
    """A process environment that cannot touch the real home or a configured instance."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_CLI_")}
    environ["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    environ["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    environ["HOME"] = str(tmp_path / "home")
    environ.pop("PYTHONSTARTUP", None)
    environ["COLUMNS"] = "200"
    return environ


@pytest.fixture
def run(env, tmp_path):
    def run(*args: str, input: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "harvester_cli", *args], capture_output=True, text=True, env={**env, **(extra_env or {})},
            cwd=tmp_path, input=input, timeout=120,
        )

    return run


@pytest.fixture
def instance(tmp_path, run):
    """(config path, state file, run with --config/--state prepended)."""
    cfg = write_config(tmp_path)
    state = tmp_path / "state.db"
    new_state(state)

    def run_instance(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return run("--config", str(cfg), "--state", str(state), *args, **kwargs)

    return cfg, state, run_instance


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, one `harvester-cli: error:` line on stderr naming every fragment, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("harvester-cli: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def assert_click_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def set_schema_version(state: Path, version: int) -> None:
    with sqlite3.connect(state) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(255), ivalue BIGINT)")
        conn.execute("INSERT OR REPLACE INTO meta (key, ivalue) VALUES ('schema_version', ?)", (version,))
    conn.close()


# ---------------------------------------------------------------------------------------------
# Help


def test_root_help_lists_every_command(run):
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for name, (_, summary) in cli.COMMANDS.items():
        assert re.search(rf"^\s+{re.escape(name)}\s", result.stdout, re.M), name
    assert "Example" in result.stdout


def test_console_script_help(env):
    script = Path(sys.executable).parent / "harvester-cli"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in cli.COMMANDS:
        assert name in result.stdout


HEAVY_PROBE = """
import json, sys
ARGS, WATCH = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["harvester-cli", *ARGS]
from harvester_cli import cli
code = None
try:
    cli.main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & WATCH)
sys.stderr.write("PROBE " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


def probe_imports(env, tmp_path, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", HEAVY_PROBE, json.dumps(list(args)), json.dumps(list(HEAVY))],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    line = [l for l in result.stderr.splitlines() if l.startswith("PROBE ")]
    assert line, result.stderr
    return json.loads(line[-1].removeprefix("PROBE "))


def test_root_help_imports_nothing_heavy(env, tmp_path):
    outcome = probe_imports(env, tmp_path, "--help")
    assert outcome["code"] == 0
    assert outcome["heavy"] == []


def test_root_help_imports_nothing_heavy_importtime(env, tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "harvester_cli", "--help"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert imported, result.stderr[:500]
    assert imported & set(HEAVY) == set()


@pytest.mark.parametrize("args", [("status",), ("workers",), ("poll",)], ids=" ".join)
def test_a_command_in_a_pipe_imports_no_rich(instance, env, tmp_path, args):
    """Piped or under cron (stdout and stderr not a terminal) output is plain text: rich, which paints a
    terminal's output and draws its progress, is not imported."""
    cfg, state, _ = instance
    outcome = probe_imports(env, tmp_path, "--config", str(cfg), "--state", str(state), *args)
    assert outcome["code"] == 0 and "rich" not in outcome["heavy"], outcome


@pytest.mark.parametrize("name", [n for n in cli.COMMANDS])
def test_command_help_imports_nothing_heavy(env, tmp_path, name):
    outcome = probe_imports(env, tmp_path, name, "--help")
    assert outcome["code"] == 0
    assert outcome["heavy"] == []


def _help_targets() -> list[tuple[str, ...]]:
    targets = [(name,) for name in cli.COMMANDS]
    targets += [("config", "check"), ("config", "example"), ("config", "keys"), ("db", "upgrade"), ("db", "current"), ("db", "history")]
    targets += [("downtime", "add"), ("downtime", "list"), ("downtime", "remove")]
    return targets


def test_help_targets_cover_every_subcommand():
    """The list above stays complete when a subcommand is added to a group."""
    import importlib

    for group in ("config", "db", "downtime"):
        module = importlib.import_module(cli.COMMANDS[group][0])
        for sub in module.command.commands:
            assert (group, sub) in _help_targets()


@pytest.mark.parametrize("args", _help_targets(), ids=" ".join)
def test_every_command_help_shows_an_example(run, args):
    result = run(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"harvester-cli {' '.join(args)}" in result.stdout  # the usage line names the command
    assert "Example" in result.stdout, result.stdout


def test_version(run):
    from harvester_cli import __version__

    result = run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


# ---------------------------------------------------------------------------------------------
# Errors: exit 2, one line, no traceback


def test_bad_config_exit_2_one_line(tmp_path, run):
    cfg = write_config(tmp_path, extra="max_new_workers_per_rum = 3")
    result = run("--config", str(cfg), "--state", str(tmp_path / "s.db"), "status")
    assert_usage_error(result, str(cfg), "max_new_workers_per_rum", "did you mean")
    assert not (tmp_path / "s.db").exists()  # nothing touched before the configuration was valid


def test_bad_config_in_queue_names_table(tmp_path, run):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'harvester_id = "h"\n[panda]\nurl = "{PANDA_URL}"\n[queues.Q]\nmode = "pull"\nbackend = "nope"\npilot = "true"\n')
    result = run("--config", str(cfg), "config", "check")
    assert_usage_error(result, str(cfg), "[queues.Q]", "backend: expected one of", "got 'nope'")


def test_invalid_toml_exit_2(tmp_path, run):
    cfg = tmp_path / "c.toml"
    cfg.write_text('harvester_id = "h\n')
    result = run("--config", str(cfg), "status")
    assert_usage_error(result, str(cfg), "TOML")


def test_missing_explicit_config_exit_2(tmp_path, run):
    result = run("--config", str(tmp_path / "missing.toml"), "status")
    assert_usage_error(result, str(tmp_path / "missing.toml"), "no such configuration file")


def test_missing_default_config_points_to_config_example(tmp_path, run):
    result = run("status")
    line = assert_usage_error(result, "config example")
    assert str(tmp_path / "xdg-config" / "harvester-cli" / "config.toml") in line


def test_config_from_environment_variable(tmp_path, run):
    cfg = write_config(tmp_path)
    new_state(tmp_path / "s.db")
    result = run("--state", str(tmp_path / "s.db"), "--json", "status", extra_env={"HARVESTER_CLI_CONFIG": str(cfg)})
    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)["queues"]) == ["Q"]


@pytest.mark.parametrize("where", ["global", "command"])
def test_unknown_queue_exit_2(instance, where):
    cfg, state, run = instance
    args = ("--queue", "NOPE", "status") if where == "global" else ("status", "--queue", "NOPE")
    result = run(*args)
    assert_usage_error(result, "'NOPE'", "Q")


@pytest.mark.parametrize("args", [("--bogus", "status"), ("status", "--bogus"), ("workers", "--limit", "0"),
                                  ("workers", "--status", "nosuchstate"), ("no-such-command",)])
def test_bad_usage_exit_2(instance, args):
    cfg, state, run = instance
    result = run(*args)
    assert_click_usage_error(result)
    assert result.stderr.strip(), "no message"
    assert result.stdout == ""


def test_unknown_option_message(instance):
    cfg, state, run = instance
    result = run("status", "--bogus")
    assert_click_usage_error(result, "--bogus")


def test_submit_count_needs_exactly_one_queue(tmp_path, run):
    cfg = write_config(tmp_path, queues=("A", "B"))
    state = tmp_path / "s.db"
    new_state(state)
    result = run("--config", str(cfg), "--state", str(state), "submit", "--count", "2")
    assert_click_usage_error(result, "--count", "--queue")
    assert "Traceback" not in result.stderr
    result = run("--config", str(cfg), "--state", str(state), "--queue", "A", "submit", "--queue", "B", "--count", "2")
    assert_click_usage_error(result, "--count", "--queue")


def test_submit_count_with_no_queue_configured(tmp_path, run):
    cfg = write_config(tmp_path, queues=())
    result = run("--config", str(cfg), "--state", str(tmp_path / "s.db"), "submit", "--count", "2")
    assert_usage_error(result, "no queues: add one")   # what is missing from the configuration comes first


def test_submit_count_must_be_positive(instance):
    cfg, state, run = instance
    result = run("--queue", "Q", "submit", "--count", "0")
    assert_click_usage_error(result, "--count")


def test_state_file_that_is_not_a_database_exit_2(tmp_path, run):
    cfg = write_config(tmp_path)
    state = tmp_path / "garbage.db"
    state.write_bytes(b"this is not an SQLite database, just some text " * 20)
    result = run("--config", str(cfg), "--state", str(state), "status")
    assert_usage_error(result, str(state))


# ---------------------------------------------------------------------------------------------
# config check / config example


def test_config_check_json(tmp_path, run):
    state = tmp_path / "state" / "instance.db"
    cfg = write_config(tmp_path, extra=f'state = "{state}"\nlog_dir = "logs"')
    result = run("--config", str(cfg), "--json", "config", "check")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == f"sqlite:///{state}"
    assert data["log_dir"] == str(tmp_path / "logs")
    assert list(data["queues"]) == ["Q"]
    assert data["queues"]["Q"]["mode"] == "pull"
    assert data["queues"]["Q"]["backend"] == "local"
    assert data["queues"]["Q"]["max_workers"] == 100
    assert data["panda"]["url"] == PANDA_URL
    assert data["harvester_id"] == "test-harvester"
    assert not state.exists()  # checking does not create the database


def test_config_check_default_state_under_xdg_state_home(tmp_path, run):
    cfg = write_config(tmp_path)
    result = run("--config", str(cfg), "--json", "config", "check")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == f"sqlite:///{tmp_path / 'xdg-state' / 'harvester-cli' / 'state.db'}"


def test_config_check_shows_state_override(tmp_path, run):
    """--state (or HARVESTER_CLI_STATE) overrides the configuration for every command; check shows what is used."""
    cfg = write_config(tmp_path, extra=f'state = "{tmp_path / "from-file.db"}"')
    override = tmp_path / "override.db"
    result = run("--config", str(cfg), "--state", str(override), "--json", "config", "check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == f"sqlite:///{override}"


def test_config_check_plain(tmp_path, run):
    cfg = write_config(tmp_path)
    result = run("--config", str(cfg), "config", "check")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "queue Q" in result.stdout
    assert "panda.url" in result.stdout
    assert not ANSI.search(result.stdout) and not BOX.search(result.stdout)


def test_config_example_parses(run, tmp_path):
    result = run("config", "example")
    assert result.returncode == 0, result.stderr
    assert result.stdout == config.EXAMPLE
    cfg = config.parse(tomllib.loads(result.stdout), "<example>", tmp_path)
    assert cfg.queues


def test_config_example_is_checkable(run, tmp_path):
    """The example is valid; on a host without its proxy and CA directory, check names exactly those."""
    example = run("config", "example").stdout
    path = tmp_path / "example.toml"
    path.write_text(example)
    result = run("--config", str(path), "--json", "config", "check")
    lines = result.stderr.strip().splitlines()
    if result.returncode == 2:
        assert lines and all("No such file or directory; create it or fix the path" in line for line in lines), lines
        assert {line.split("] ")[1].split(":")[0] for line in lines} <= {"proxy", "ca"}
        example = example.replace("/var/lib/harvester-cli/proxy.pem", str(tmp_path / "proxy.pem"))
        example = example.replace("/etc/grid-security/certificates", str(tmp_path))
        (tmp_path / "proxy.pem").write_text("x")
        (tmp_path / "proxy.pem").chmod(0o600)
        path.write_text(example)
        result = run("--config", str(path), "--json", "config", "check")
    assert result.returncode == 0, result.stderr
    assert "MY_SITE_PULL" in json.loads(result.stdout)["queues"]


def test_config_example_runs_the_pilot_wrapper_not_the_test_pilot(run, tmp_path):
    """Copied as it is, the example never runs the simulator's test pilot against a real PanDA server."""
    example = config.parse(tomllib.loads(run("config", "example").stdout), "<example>", tmp_path)
    assert not example.panda.allow_test_pilot
    for queue in example.queues.values():
        assert not config.is_test_pilot(queue.pilot), queue.name
        assert "runpilot2-wrapper.sh" in queue.pilot


def test_the_test_pilot_is_refused_without_the_simulator_opt_in(run, tmp_path):
    """A queue naming the test pilot against a PanDA server not declared the simulator: every command refuses
    it (exit 2, one line naming the queue and the fix), and nothing reaches PanDA."""
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace('pilot = "true"', 'pilot = "{python} -m harvester_cli.panda.sim.pilot"'))
    for command in (("config", "check"), ("cycle",), ("submit", "--count", "1")):
        assert_usage_error(run("--config", str(cfg), *command), "[queues.Q] pilot:", "allow_test_pilot = true")
    cfg.write_text(cfg.read_text().replace("[panda]\n", "[panda]\nallow_test_pilot = true\n"))
    assert run("--config", str(cfg), "config", "check").returncode == 0


def test_a_queue_without_a_pilot_is_refused(run, tmp_path):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace('pilot = "true"\n', ""))
    assert_usage_error(run("--config", str(cfg), "config", "check"), "[queues.Q]", "missing required key 'pilot'")


def test_the_test_pilot_will_not_run_a_job_without_the_opt_in(env, tmp_path):
    """Started by hand or by a wrapper, outside a configuration that allows it: it takes no job, runs nothing."""
    (tmp_path / "pandaJobData.out").write_text(json.dumps({"PandaID": 1, "jobPars": f"touch {tmp_path}/ran"}))
    done = subprocess.run([sys.executable, "-m", "harvester_cli.panda.sim.pilot"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 64 and "allow_test_pilot" in done.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / "heartbeat.json").exists()


def test_config_example_needs_no_config(run):
    """Printing the example works before any configuration exists (the first thing an operator runs)."""
    result = run("--config", "/nonexistent/harvester-cli.toml", "config", "example")
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# State database and schema versions


def test_db_upgrade_fresh_sqlite(instance):
    cfg, state, run = instance
    state.unlink()
    result = run("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert re.search(r"schema revision \(new database\) -> \d{4}_", result.stdout), result.stdout
    assert state.exists()
    with sqlite3.connect(state) as conn:
        (version,) = conn.execute("SELECT ivalue FROM meta WHERE key = 'schema_version'").fetchone()
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    conn.close()
    assert version == 3 and revision == HEAD
    again = run("db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout


def test_db_upgrade_json(instance):
    cfg, state, run = instance
    state.unlink()
    result = run("--json", "db", "upgrade")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["from"] is None and data["to"] == HEAD
    assert str(state) in data["url"]


def test_db_upgrade_uses_config_state(tmp_path, run):
    state = tmp_path / "cfgstate.db"
    cfg = write_config(tmp_path, extra=f'state = "{state}"')
    result = run("--config", str(cfg), "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert state.exists()


@pytest.mark.parametrize("name", ["missing.db", "no/such/dir/state.db", "config.toml/state.db"])
def test_only_db_upgrade_creates_a_state_database(tmp_path, run, name):
    """A typo in the state path is an error with the fix, never a new empty instance."""
    cfg = write_config(tmp_path)
    state = tmp_path / name
    for args in (("status",), ("cycle",), ("submit", "--dry-run"), ("workers",)):
        result = run("--config", str(cfg), "--state", str(state), *args)
        line = assert_usage_error(result, str(state))
        assert "db upgrade" in line or "not a directory" in line, line
    assert not state.exists() and not (tmp_path / "no").exists()


@pytest.mark.parametrize("args", [("status",), ("workers",), ("jobs",), ("sweep",), ("poll",), ("db", "upgrade")])
def test_newer_schema_refused(instance, args):
    cfg, state, run = instance
    with sqlite3.connect(state) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.close()
    result = run(*args)
    assert_usage_error(result, "9999_future", "newer", "upgrade harvester-cli")


def test_older_schema_needs_db_upgrade(instance):
    cfg, state, run = instance
    state.unlink()
    set_schema_version(state, 0)
    result = run("status")
    assert_usage_error(result, "harvester-cli db upgrade")
    upgrade = run("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "revision base -> " in upgrade.stdout
    status = run("--json", "status")
    assert status.returncode == 0, status.stderr
    assert "Q" in json.loads(status.stdout)["queues"]


def test_meta_without_version_row_needs_db_upgrade(instance):
    cfg, state, run = instance
    state.unlink()
    with sqlite3.connect(state) as conn:
        conn.execute("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(255), ivalue BIGINT)")
    conn.close()
    result = run("workers")
    assert_usage_error(result, "db upgrade")


# ---------------------------------------------------------------------------------------------
# Output modes


def test_status_piped_is_plain_text(instance):
    cfg, state, run = instance
    result = run("status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Q" in result.stdout
    assert not ANSI.search(result.stdout), repr(result.stdout)
    assert not BOX.search(result.stdout), result.stdout
    assert "updates waiting for PanDA" in result.stdout


def test_status_piped_with_forced_color_is_still_plain(instance):
    """Plain text is decided by stdout not being a terminal, whatever the environment says about colour."""
    cfg, state, run = instance
    result = run("status", extra_env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stdout) and not BOX.search(result.stdout)


@pytest.mark.parametrize("args", [("status",), ("workers",), ("jobs",), ("db", "upgrade"), ("config", "check"),
                                  ("sweep",), ("poll",)])
def test_json_is_exactly_one_object(instance, args):
    cfg, state, run = instance
    result = run("--json", *args)
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    text = result.stdout.strip()
    data, end = decoder.raw_decode(text)
    assert isinstance(data, dict)
    assert end == len(text), f"more than one JSON value on stdout: {text[end:]!r}"
    assert not ANSI.search(result.stdout)


def test_status_json_shape(instance):
    cfg, state, run = instance
    data = json.loads(run("--json", "status").stdout)
    assert data["queues"] == {"Q": {"jobs": {}, "workers": {}}}
    assert data["pending_reports"] == {}


def test_workers_json_empty_list(instance):
    cfg, state, run = instance
    result = run("--json", "workers")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"workers": []}


def test_quiet_prints_nothing(instance):
    cfg, state, run = instance
    result = run("-q", "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_status_queue_selection(tmp_path, run):
    cfg = write_config(tmp_path, queues=("A", "B"))
    state = tmp_path / "s.db"
    new_state(state)
    both = json.loads(run("--config", str(cfg), "--state", str(state), "--json", "status").stdout)
    assert set(both["queues"]) == {"A", "B"}
    one = run("--config", str(cfg), "--state", str(state), "--json", "status", "--queue", "B")
    assert one.returncode == 0, one.stderr
    assert set(json.loads(one.stdout)["queues"]) == {"B"}


# ---------------------------------------------------------------------------------------------
# In-process: main() semantics with click's test runner


def test_main_turns_harvester_error_into_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nowhere"))
    monkeypatch.delenv("HARVESTER_CLI_CONFIG", raising=False)
    monkeypatch.setattr(sys, "argv", ["harvester-cli", "status"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("harvester-cli: error: ")
    assert len(err.strip().splitlines()) == 1


def test_cli_runner_config_example():
    from click.testing import CliRunner

    result = CliRunner().invoke(cli.cli, ["config", "example"])
    assert result.exit_code == 0
    assert result.output == config.EXAMPLE


@pytest.mark.parametrize("args", [("status", "--json"), ("config", "check", "--json"), ("workers", "--json")])
def test_json_is_accepted_after_the_command_name(instance, args):
    _, _, run_instance = instance
    result = run_instance(*args)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_quiet_after_the_command_name_prints_nothing(instance):
    _, _, run_instance = instance
    result = run_instance("status", "-q")
    assert result.returncode == 0 and result.stdout == ""


def test_a_missing_database_driver_is_one_line_naming_the_driver_and_the_fix(tmp_path, run):
    cfg = write_config(tmp_path)
    result = run("--config", str(cfg), "--state", "postgresql+psycopg2://site:pw@127.0.0.1/harvester", "status")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "(psycopg2)" in result.stderr and "write postgresql://" in result.stderr and "[postgres]" in result.stderr
    assert "[mariadb]" not in result.stderr and ":pw@" not in result.stderr


GOOD_QUEUE = '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n'


@pytest.mark.parametrize("top,queues", [
    ("queues = 3", ""),
    ("queue_defaults = 3", GOOD_QUEUE),
    ("", "[queues]\nQ = 3\n"),
    ('state = "nosuch://x/y"', GOOD_QUEUE),
    ('state = "oracle+pymysql://u:pw@h/x"', GOOD_QUEUE),
    ('state = ""', GOOD_QUEUE),
], ids=["queues-not-a-table", "queue-defaults-not-a-table", "queue-not-a-table", "unknown-scheme",
        "unknown-scheme-with-password", "empty-state"])
def test_every_work_command_refuses_what_config_check_refuses(tmp_path, run, top, queues):
    """The same lines and exit 2 from `config check` and from every command cron runs, in a configuration
    that is right but for one thing: none of them starts with what `config check` calls wrong (one read
    `queues = 3` as no queues and exited 0; `state = "nosuch://x/y"` passed `config check`)."""
    proxy = tmp_path / "proxy.pem"
    proxy.write_text("not a real proxy")
    proxy.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(f'harvester_id = "h"\nlog_dir = "{tmp_path / "logs"}"\nwork_dir = "{tmp_path / "work"}"\n{top}\n'
                    f'[panda]\nurl = "{PANDA_URL}"\nproxy = "{proxy}"\n{queues}')
    checked = run("--config", str(path), "config", "check")
    assert checked.returncode == 2 and checked.stderr.startswith("harvester-cli: error: "), checked
    assert len(checked.stderr.splitlines()) == 1 and "pw" not in checked.stderr, checked.stderr
    for command in cli.HOST_CHECKED + ("db upgrade", "status", "workers"):
        result = run("--config", str(path), *command.split(), *(["--worker", "1"] if command == "kill-workers" else []))
        assert (result.returncode, result.stderr) == (2, checked.stderr), (command, result.stderr)


def test_an_id_beyond_64_bits_is_a_usage_error_not_a_traceback(tmp_path, run):
    """kill-workers --worker 2**63 was an OverflowError traceback from the database driver."""
    path = write_config(tmp_path, extra=f'state = "{tmp_path / "state.db"}"')
    new_state(tmp_path / "state.db")
    beyond = str(2**63)
    for args in (("kill-workers", "--worker", beyond), ("workers", beyond), ("jobs", beyond), ("jobs", "--panda-id", beyond)):
        result = run("--config", str(path), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert f"{beyond} is not in the range 1<=x<={2**63 - 1}" in result.stderr and "Traceback" not in result.stderr


def test_an_argument_that_is_not_utf8_is_refused_in_one_line_after_the_start_line(tmp_path, run, env):
    """An argument with bytes that are not UTF-8 printed a logging traceback, lost the command log's start
    line, and (--ce, --batch-id, --state, serve-logs --host) ended in a UnicodeEncodeError traceback."""
    path = write_config(tmp_path, extra=f'log_dir = "{tmp_path / "logs"}"')
    bad = os.fsdecode(b"Q\xff")   # what Python makes of a shell's $'Q\xff'
    cases = [("kill-workers", "--ce", bad), ("kill-workers", "--queue", "Q", "--reason", bad), ("workers", "--queue", bad),
             ("workers", "--batch-id", bad), ("--state", bad, "status"), ("serve-logs", "--host", bad)]
    for args in cases:
        result = run("--config", str(path), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.splitlines() == [
            ("harvester-cli: error: argument 'Q\\xff' is not UTF-8 text: harvester-cli takes its arguments (names, "
             "paths, reasons) as UTF-8; nothing was done")], (args, result.stderr)
        command = next(a for a in args if a in ("kill-workers", "workers", "status", "serve-logs"))
        log = (tmp_path / "logs" / "commands" / f"{command}.log").read_text()
        shown = " ".join("Q\\xff" if a == bad else a for a in args)
        assert f"start: harvester-cli --config {path} {shown} (pid " in log, log
    cron = subprocess.run([sys.executable, "-c", "from harvester_cli.cron import main; main()", "--config", str(path),
                           "workers", "--ce", bad], capture_output=True, text=True, env=env, timeout=120)
    assert cron.returncode == 2 and "Traceback" not in cron.stderr, cron.stderr
    assert f"harvester-cli --config {path} workers --ce Q\\xff\n" in (tmp_path / "logs" / "cron" / "workers.log").read_text()


def test_a_state_given_on_the_command_line_is_checked_as_the_key_is(tmp_path, run):
    path = write_config(tmp_path)
    for command in ("config check", "cycle", "db upgrade", "workers"):
        result = run("--config", str(path), "--state", "nosuch://u:secret@x/y", *command.split())
        assert result.returncode == 2 and "--state: unknown database scheme nosuch://" in result.stderr, \
            (command, result.stderr)
        assert "secret" not in result.stderr and len(result.stderr.splitlines()) == 1
