"""A site operator's first hour (issue 13), through the CLI as an operator runs it: errors that say why
under -q and cron, options where an operator puts them, kill-workers, filters, and output that can be
read and clicked."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from harvester_cli.state.schema import workers
from tests.support.harness import new_state


def worker_rows(harness):
    from harvester_cli.state.store import Store

    with Store(f"sqlite:///{harness.tmp_path / 'state.db'}").reading() as conn:
        return conn.execute(select(workers)).all()


def test_quiet_cycle_prints_why_it_failed_and_the_command_log_keeps_it(harness, sim):
    harness.write_config({"Q": {"mode": "push"}}, panda={"url": "https://127.0.0.1:9/api/v1", "retries": 1})
    result = harness.cli("-q", "cycle")
    assert result.returncode == 1 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert errors and all("Traceback" not in line for line in result.stderr.splitlines())
    assert any("fetch-jobs: queue Q: not registered at PanDA: heartbeat failed" in line for line in errors), errors
    log = (harness.tmp_path / "logs" / "commands" / "cycle.log").read_text()
    assert "fetch-jobs: queue Q: not registered at PanDA" in log and "end: exit 1" in log
    data = harness.cli_json("cycle")
    step = next(s for s in data["steps"] if s["step"] == "propagate")
    assert step["partial"] and step["problems"] and data["errors"]


def test_plan_says_when_panda_cannot_be_asked_and_exits_1(harness, sim):
    harness.write_config({"Q": {"mode": "pull"}}, panda={"url": "https://127.0.0.1:9/api/v1", "retries": 1})
    result = harness.cli("--json", "plan")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert any("cannot get activated jobs from PanDA" in e for e in data["errors"])
    assert data["queues"][0]["plan"] == {"SCORE": 1}   # the empty-pilot floor only


def test_a_backend_outage_is_one_line_and_a_traceback_only_with_vv(harness, sim):
    harness.write_config({"HTC": {"mode": "pull", "backend": "htcondor",
                                  "backend_options": {"schedd": "nowhere", "collector": "127.0.0.1:9"}}})
    from harvester_cli.state.store import Store

    with Store(f"sqlite:///{harness.tmp_path / 'state.db'}").transaction() as conn:
        conn.execute(workers.insert().values(worker_id=1, queue="HTC", backend="htcondor", mode="pull",
                                             status="submitted", batch_id="1.0", created=0.0, modified=0.0))
    env = {"CONDOR_CONFIG": "/dev/null"}
    quiet = harness.cli("poll", env=env)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr, quiet.stderr
    assert any("backend check failed" in line for line in quiet.stderr.splitlines())
    loud = harness.cli("-vv", "poll", env=env)
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_global_options_work_after_the_command(harness, sim, tmp_path):
    config = harness.write_config({"Q": {"mode": "pull"}})
    other = tmp_path / "other.db"
    new_state(other)
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "harvester_cli", "status", "--config", str(config), "--state",
                             str(other), "--json"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Q" in json.loads(result.stdout)["queues"]
    help_text = harness.cli("submit", "--help").stdout
    assert "HARVESTER_CLI_CONFIG" in help_text and "HARVESTER_CLI_STATE" in help_text


def test_help_follows_the_terminal_width(harness, sim):
    harness.write_config({"Q": {"mode": "pull"}})
    wide = harness.cli("submit", "--help", env={"COLUMNS": "200"}).stdout
    assert "  harvester-cli submit --queue Q --count 1 --wait --json   # and follow it to the end (scripts)" in wide


def test_kill_workers_marks_by_selection_with_a_cap_and_sweep_kills(harness, sim):
    sim.add_jobs("Q", 3, jobPars="sleep 60")
    harness.write_config({"Q": {"mode": "pull", "pilot": "sleep 60"}}, sweep={"max_kills_per_run": 2})
    assert harness.cli("submit").returncode == 0
    assert len(worker_rows(harness)) == 3
    dry = harness.cli_json("kill-workers", "--queue", "Q", "--dry-run")
    assert len(dry["matched"]) == 3 and dry["marked"] == 0
    capped = harness.cli("--json", "kill-workers", "--queue", "Q")
    assert capped.returncode == 1 and "more than sweep.max_kills_per_run=2" in capped.stderr
    assert all(w.kill_reason is None for w in worker_rows(harness))
    one = harness.cli_json("kill-workers", "--worker", "2", "--reason", "bad node", "--now")
    assert one["marked"] == 1 and one["killed"] == 1
    rows = {w.worker_id: w for w in worker_rows(harness)}
    assert rows[2].status == "cancelled" and "operator: bad node" in rows[2].diag
    assert rows[1].status != "cancelled" and rows[1].kill_reason is None
    nothing = harness.cli("kill-workers")
    assert nothing.returncode == 2 and "name the workers" in nothing.stderr
    harness.kill_workers()


def test_listing_filters_and_unknown_status_is_an_error(harness, sim):
    sim.add_jobs("Q", 2)
    harness.write_config({"Q": {"mode": "pull", "pilot": "sleep 30"}})
    harness.cli("submit", check=True)
    assert len(harness.cli_json("workers", "--ce", "localhost", "--since", "1h")["workers"]) == 2
    assert harness.cli_json("workers", "--ce", "elsewhere")["workers"] == []
    assert harness.cli_json("workers", "--since", "0s")["workers"] == []
    for args in (("workers", "--status", "runing"), ("jobs", "--status", "finishd"), ("workers", "--since", "soon")):
        bad = harness.cli(*args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, (args, bad.stderr)
    huge = harness.cli("submit", "--queue", "Q", "--count", "99999999999999999999")
    assert huge.returncode == 2 and "99999999999999999999" in huge.stderr
    harness.kill_workers()


def test_config_example_json_is_json_and_demo_keep_keeps_its_configuration(harness, sim, tmp_path):
    harness.write_config({"Q": {"mode": "pull"}})
    example = json.loads(harness.cli("--json", "config", "example").stdout)
    assert example["harvester_id"] == "my-site-harvester" and example["log_url"].startswith("http://")
    kept = tmp_path / "kept"
    demo = harness.cli("demo", "--keep", str(kept))
    assert demo.returncode == 0, demo.stderr
    assert f"its configuration in {kept}/config.toml" in demo.stdout
    again = harness.cli("--config", str(kept / "config.toml"), "--json", "status")
    assert set(json.loads(again.stdout)["queues"]) == {"DEMO_PULL", "DEMO_PUSH"}


def test_log_urls_stay_whole_in_a_terminal_table(monkeypatch, capsys):
    """The long form (--wide) prints a log URL whole, as text a terminal makes clickable (an OSC 8 link
    behind a short text is dropped by tmux and many ssh terminals); the narrow form cuts it to the width."""
    from harvester_cli.output import Output

    url = "http://my-host.example.org:8080/logs/workers/2026-12-02/A_QUEUE_WITH_A_LONG_NAME/123456/pilot.out"
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setattr(Output, "terminal", property(lambda self: True))
    for fit in (False, True):
        out = Output()
        out.table("workers", ["id", "queue", "status", "diag", "stdout"],
                  [(123456, "A_QUEUE_WITH_A_LONG_NAME", "running", "held: a diag " * 5, url)], fit=fit)
        out.emit({})
        text = capsys.readouterr().out
        assert "\x1b]8;" not in text
        assert (url in text) is not fit and not re.search(r"…/123456/pilot\.\s*\n", text)
        assert fit is False or all(len(line) <= 160 for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines())


def test_a_library_logging_a_handled_exception_is_one_line_on_the_terminal_and_whole_with_vv():
    """SQLAlchemy's pool logs the driver's traceback when a server drops a connection it was resetting: on the
    terminal that is the record's line plus the exception's last line; -vv shows the traceback."""
    import io
    import logging

    from harvester_cli import cli as cli_module

    root = logging.getLogger()
    before = list(root.handlers), root.level
    # A handler an earlier in-process CLI run left behind writes to a stream pytest has closed since: a new one.
    root.handlers[:] = [h for h in root.handlers if h.name != cli_module._STDERR_HANDLER]
    cli_module._setup_stderr_logging(logging.WARNING)
    (handler,) = [h for h in root.handlers if h.name == cli_module._STDERR_HANDLER]
    handler.setStream(io.StringIO())
    pool = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
    try:
        try:
            raise ConnectionError("(2013, 'Lost connection to MySQL server during query')")
        except ConnectionError:
            pool.error("Exception during reset or similar", exc_info=True)
        short = handler.stream.getvalue()
        assert "Traceback" not in short and len(short.strip().splitlines()) == 1, short
        assert "Exception during reset or similar" in short and "Lost connection to MySQL server" in short
        cli_module._set_stderr_level(logging.DEBUG)
        handler.setStream(io.StringIO())
        try:
            raise ConnectionError("gone")
        except ConnectionError:
            pool.error("Exception during reset or similar", exc_info=True)
        assert "Traceback (most recent call last)" in handler.stream.getvalue()
    finally:
        root.removeHandler(handler)
        root.handlers[:] = before[0]
        root.setLevel(before[1])
