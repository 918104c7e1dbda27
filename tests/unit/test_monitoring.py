"""Monitoring without the peers: the status summary's numbers on a state database with known workers,
the history poll records and sweep trims, each command's run record, the metrics file (one command does
not wipe another's, counters outlive the process), the service metrics propagate sends to PanDA, and the
import cost of a command without [metrics]."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from harvester_cli.state import outbox
from harvester_cli import model
from harvester_cli.panda.sim.server import MSG_DATABASE
from harvester_cli.site import hostmetrics, metrics, statuspage
from harvester_cli.state import monitoring, views
from harvester_cli.state.schema import reports, status_history, workers
from harvester_cli.steps import monitor, propagate
from tests.support.harness import new_state, to_toml

ROOT = Path(__file__).resolve().parents[2]
NOW = time.time()


def add_worker(store, worker_id: int, queue: str, status: str, *, ce="ce1", rt="SCORE", submitted=None, started=None,
               ended=None, diag=None, exit_code=None, log_dir=None) -> None:
    with store.transaction() as conn:
        conn.execute(workers.insert().values(
            worker_id=worker_id, queue=queue, backend="local", mode="pull", resource_type=rt, status=status,
            computing_element=ce, submit_time=submitted, start_time=started, end_time=ended, diag=diag,
            native_exit_code=exit_code, log_dir=log_dir, created=submitted or NOW, modified=NOW))


@pytest.fixture
def site(harness):
    queues = {"Q": {"mode": "pull"}, "R": {"mode": "pull"}}
    return harness, harness.instance(queues)


def test_summary_counts_rates_medians_and_errors(site):
    harness, instance = site
    store = instance.store
    logs = instance.config.logs
    h = 3600
    add_worker(store, 1, "Q", "running", submitted=NOW - 2 * h, started=NOW - 1.5 * h)                # outside: start
    add_worker(store, 2, "Q", "running", submitted=NOW - 50 * 60, started=NOW - 40 * 60)              # queued 600 s
    add_worker(store, 3, "Q", "finished", submitted=NOW - 55 * 60, started=NOW - 35 * 60, ended=NOW - 5 * 60)
    add_worker(store, 4, "Q", "failed", submitted=NOW - 30 * 60, started=NOW - 20 * 60, ended=NOW - 10 * 60,
               diag="pilot exited with code 3", exit_code=3, log_dir=str(logs / "workers/d/Q/4"))
    add_worker(store, 5, "Q", "failed", submitted=NOW - 30 * 60, ended=NOW - 60,
               diag="lost: the backend has no trace of this worker")
    add_worker(store, 6, "Q", "missed", ce="ce2", submitted=NOW - 100, ended=NOW - 100,
               diag="cannot start local worker: disk full")
    add_worker(store, 7, "Q", "failed", submitted=NOW - 30 * 60, started=NOW - 25 * 60, ended=NOW - 2 * 60,
               diag="pilot exited with code 66", exit_code=66)
    add_worker(store, 8, "R", "finished", rt="MCORE", submitted=NOW - 3 * h, started=NOW - 3 * h,
               ended=NOW - 2 * h)                                                                     # outside
    with store.transaction() as conn:
        outbox.enqueue(conn, "worker", [(3, "Q", None, False)])
        conn.execute(reports.update().values(created=NOW - 900))

    data = monitor.summary(instance, ["Q", "R"], 3600, now=NOW)

    by_series = {(w["queue"], w["computing_element"], w["resource_type"]): w["states"] for w in data["workers"]}
    assert by_series == {("Q", "ce1", "SCORE"): {"running": 2, "finished": 1, "failed": 3},
                         ("Q", "ce2", "SCORE"): {"missed": 1}, ("R", "ce1", "MCORE"): {"finished": 1}}
    window = {(w["queue"], w["computing_element"]): w for w in data["window_stats"]}
    q = window[("Q", "ce1")]
    assert (q["submitted"], q["started"], q["finished"], q["failed"]) == (5, 4, 1, 3)
    assert q["per_hour"] == {"submitted": 5.0, "started": 4.0, "finished": 1.0, "failed": 3.0}
    assert q["median_queued_seconds"] == 600.0   # 600 (w2), 1200 (w3), 600 (w4), 300 (w7)
    assert q["median_running_seconds"] == 1380.0   # 1800 (w3), 600 (w4), 1380 (w7)
    assert ("R", "ce1") not in window
    errors = {e["code"]: e for e in data["errors"]}
    assert errors[1060]["count"] == 2 and errors[1060]["example"]["worker_id"] == 7
    assert errors[1060]["meaning"] == "pilot exited with an error"
    assert errors[1030]["count"] == 1 and errors[1041]["count"] == 1
    assert data["errors"][0]["code"] == 1060   # the most frequent first
    assert errors[1060]["queues"] == {"Q": 2}
    assert data["lost"]["count"] == 1 and data["lost"]["latest"][0]["worker_id"] == 5
    assert data["missed"]["count"] == 1 and data["missed"]["latest"][0]["computing_element"] == "ce2"
    assert data["pending_updates"]["worker"] == {"count": 1, "oldest_age_seconds": 900.0}
    assert data["pending_updates"]["job"] == {"count": 0, "oldest_age_seconds": None}
    (proxy,) = data["credentials"]
    assert proxy["kind"] == "proxy" and proxy["profile"] == "panda" and proxy["seconds_left"] > 3600

    wide = monitor.summary(instance, ["Q", "R"], 4 * 3600, now=NOW)
    assert {(w["queue"], w["computing_element"]) for w in wide["window_stats"]} >= {("R", "ce1")}


def test_status_command_shows_the_summary_and_json(site):
    harness, instance = site
    now = time.time()   # not NOW: the window is the real clock's, and a session may be older than 30 minutes
    add_worker(instance.store, 1, "Q", "failed", submitted=now - 60, ended=now - 30, diag="pilot exited with code 3")
    harness.write_config({"Q": {"mode": "pull"}, "R": {"mode": "pull"}})
    new_state(instance.state_url)
    result = harness.cli("status", "--since", "2h")
    assert result.returncode == 0, result.stderr
    for heading in ("workers", "last 2h: per hour, and median times", "last 2h: most frequent errors",
                    "command runs", "credentials", "updates waiting for PanDA: jobs=0, workers=0"):
        assert heading in result.stdout, result.stdout
    assert re.search(r"^1060 +pilot exited with an error +1 +1 +Q +pilot exited with code 3$", result.stdout,
                     re.M), result.stdout
    data = harness.cli_json("status", "--since", "30m")
    assert data["window"]["seconds"] == 1800 and data["errors"][0]["code"] == 1060
    assert data["queues"]["Q"]["workers"] == {"failed": 1}   # the shape scripts already read


@pytest.mark.parametrize("value", ["yesterday", "0h", "-1h", "1y", ""])
def test_status_since_bad_input_is_one_line(harness, value):
    harness.write_config({"Q": {"mode": "pull"}})
    result = harness.cli("status", "--since", value)
    assert result.returncode == 2
    assert "--since" in result.stderr and "30m, 1h, 6h or 2d" in result.stderr
    assert "Traceback" not in result.stderr


def test_poll_records_snapshots_and_sweep_trims_them(harness):
    harness.write_config({"Q": {"mode": "pull"}, "E": {"mode": "pull"}},
                         sweep={"history_retention": 7200})
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance

    instance = Instance(config_module.load(harness.tmp_path / "config.toml"))
    now = time.time()   # not the module's NOW: in a long suite that can be past lost_grace_seconds by now
    add_worker(instance.store, 1, "Q", "running", submitted=now - 60, started=now - 30)
    add_worker(instance.store, 2, "Q", "submitted", ce="ce2", submitted=now - 60)
    old = now - 3 * 3600
    monitoring.record_snapshot(instance.store, ["Q"], at=old)
    assert harness.cli("poll").returncode in (0, 1)
    history = views.history(instance.store, ["Q", "E"], now - 86400)
    assert [t for t, _ in history["Q"]][0] == int(old)
    latest = history["Q"][-1][1]
    assert latest["running"] == 1 and latest["submitted"] == 1
    assert history["E"] and sum(history["E"][-1][1].values()) == 0   # an empty queue is recorded at zero
    result = harness.cli_json("sweep")
    assert result["history_trimmed"] == 2   # the snapshot three hours old (two series); the retention is two
    assert [t for t, _ in views.history(instance.store, ["Q"], 0)["Q"]] == [history["Q"][-1][0]]


def test_two_polls_in_one_second_keep_one_snapshot(site):
    _, instance = site
    add_worker(instance.store, 1, "Q", "running")
    monitoring.record_snapshot(instance.store, ["Q"], at=NOW)
    add_worker(instance.store, 2, "Q", "running")
    monitoring.record_snapshot(instance.store, ["Q"], at=NOW)
    assert views.history(instance.store, ["Q"], NOW - 10)["Q"] == [(int(NOW), {
        **{s: 0 for s in statuspage.STATES}, "running": 2})]


def test_each_command_keeps_its_metrics_and_counters_outlive_the_process(harness, sim):
    """submit, poll and sweep each rewrite the whole file from the state database: nothing of another
    command goes; the submission failure counter adds up over two processes; a PanDA outage counts."""
    textfile = harness.tmp_path / "prom" / "harvester-cli.prom"
    broken = harness.tmp_path / "broken-work"   # the queue's work directory is a file: every worker is missed
    broken.mkdir()
    (broken / "BROKEN").write_text("")
    harness.write_config({"BROKEN": {"mode": "pull", "backend_options": {"work_dir": str(broken)}}},
                         metrics={"textfile": str(textfile)})
    for _ in range(2):
        assert harness.cli("submit", "--queue", "BROKEN", "--count", "1").returncode == 1
    text = textfile.read_text()
    assert re.search(r'^harvester_cli_submission_failures_total\{computing_element="",harvester_id="[^"]+",'
                     r'host="[^"]+",queue="BROKEN"\} 2\.0$', text, re.M), text
    assert harness.cli("poll").returncode == 0
    sim.fail_next = [503, 503]
    assert harness.cli("propagate").returncode == 1
    assert harness.cli("sweep").returncode == 0
    text = textfile.read_text()
    commands = set(re.findall(r'^harvester_cli_command_last_run_timestamp_seconds\{command="([a-z-]+)"', text, re.M))
    assert commands == {"submit", "poll", "propagate", "sweep"}
    assert re.search(r'^harvester_cli_command_runs_total\{command="submit",.*\} 2\.0$', text, re.M)
    assert re.search(r'^harvester_cli_command_last_exit_code\{command="propagate",.*\} 1\.0$', text, re.M)
    assert re.search(r'^harvester_cli_panda_call_errors_total\{endpoint="harvester/heartbeat",.*kind="http"\} 1\.0$',
                     text, re.M), text
    assert re.search(r'^harvester_cli_workers\{computing_element="",.*queue="BROKEN",.*state="missed"\} 2\.0$',
                     text, re.M)
    assert not list(textfile.parent.glob("*.prom.*"))   # written through a temporary file, renamed


def test_dry_runs_and_failed_configurations_leave_no_run_record(harness):
    harness.write_config({"Q": {"mode": "pull"}})
    assert harness.cli("submit", "--dry-run").returncode == 0
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance

    instance = Instance(config_module.load(harness.tmp_path / "config.toml"))
    assert views.command_runs(instance.store) == []
    assert harness.cli("clean-logs").returncode == 0
    assert [r["command"] for r in views.command_runs(instance.store)] == ["clean-logs"]


def test_a_command_without_metrics_does_not_import_prometheus_client(harness):
    harness.write_config({"Q": {"mode": "pull"}})
    code = ("import sys; from harvester_cli.cli import main\n"
            f"sys.argv = ['harvester-cli', '--config', {str(harness.tmp_path / 'config.toml')!r}, 'sweep']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('prometheus_client' in sys.modules, 'harvester_cli.steps.monitor' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                 "XDG_STATE_HOME": str(harness.tmp_path / "xdg")})
    assert result.stdout.strip().splitlines()[-1] == "False True", result.stderr   # recorded, not rendered


def test_propagate_sends_service_metrics_at_most_every_interval(harness, sim):
    harness.write_config({"Q": {"mode": "pull"}})
    for _ in range(2):
        assert harness.cli("propagate").returncode == 0
    (row,) = [r for r in sim.service_metrics if r["harvester_id"] == harness.harvester_id]
    data = json.loads(row["metrics"])
    assert set(data) == {"rss_mib", "memory_pc", "cpu_pc", "volume_logs_pc", "volume_state_pc", "cert_lifetime"}
    # the test proxy lives 96 hours from the session's start (whole hours, rounded: 95 after half an hour)
    assert data["cert_lifetime"] in ({str(harness.pki.proxy): 96}, {str(harness.pki.proxy): 95})
    assert 0 < data["rss_mib"] < 4096 and 0 <= data["volume_logs_pc"] <= 100
    assert abs(row["creation_time"].timestamp() - time.time()) < 3600 * 24   # parsed as the server parses it
    (call,) = [c for c in sim.calls_to("harvester/update_service_metrics") if c["args"]["harvester_id"] ==
               harness.harvester_id]
    (entry,) = call["args"]["metrics"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", entry[0]) and isinstance(entry[2], str)
    assert call["answer"] == {"success": True, "message": "", "data": [True]}


def test_service_metrics_off_with_interval_zero(harness, sim):
    harness.write_config({"Q": {"mode": "pull"}}, metrics={"panda_interval": 0})
    data = harness.cli_json("propagate")
    assert data["service_metrics"] == "off"
    assert not [c for c in sim.calls_to("harvester/update_service_metrics")
                if c["args"]["harvester_id"] == harness.harvester_id]


def test_service_metrics_fit_pandas_column():
    lifetimes = {f"/very/long/path/to/a/proxy/number/{i:04d}/" + "x" * 100: 90 for i in range(60)}
    metrics_dict = hostmetrics.collect({"logs": Path("/")}, lifetimes)
    created, host, text = hostmetrics.entry(metrics_dict, "h" * 300)
    assert len(text.encode()) <= 4000 and len(host) == 100
    kept = json.loads(text)["cert_lifetime"]
    assert 0 < len(kept) < 60 and all(v == 90 for v in kept.values())


def test_grafana_dashboard_uses_only_declared_metrics():
    dashboard = json.loads((ROOT / "contrib" / "grafana" / "harvester-cli.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {n for e in exprs for n in re.findall(r"harvester_cli_[a-z_]+", e)}
    assert used and used <= set(metrics.FAMILIES), used - set(metrics.FAMILIES)


def test_metric_names_follow_prometheus_conventions():
    for name, (kind, help_text, labels) in metrics.FAMILIES.items():
        assert re.fullmatch(r"harvester_cli_[a-z_]+", name)
        assert name.endswith("_total") == (kind == "counter"), name
        assert help_text.endswith(".")
        if "seconds" in name or "timestamp" in name:
            assert name.endswith(("_seconds", "_seconds_total")), name
        assert "harvester_id" not in labels


def test_status_page_escapes_what_it_shows(site):
    _, instance = site
    now = time.time()   # the page's hour is the real clock's
    add_worker(instance.store, 1, "Q", "failed", ce="<b>ce</b>", submitted=now - 60, ended=now - 1,
               diag="<script>alert(1)</script> exited with code 1")
    page = statuspage.render(monitor.summary(instance, ["Q"], 3600), monitor.charts(instance, ["Q"]), "/logs/").decode()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;ce&lt;/b&gt;" in page


def test_history_is_small_and_a_snapshot_is_a_few_integers(site):
    """One series per (queue, CE, resource type); a snapshot row holds the series id, the time and eight
    counts (the figures for a week of 100 queues: bench/bench_history.py)."""
    _, instance = site
    add_worker(instance.store, 1, "Q", "running")
    monitoring.record_snapshot(instance.store, ["Q", "R"], at=NOW)
    with instance.store.reading() as conn:
        assert conn.scalar(select(func.count()).select_from(status_history)) == 2
    assert [c.name for c in status_history.columns] == ["taken", "series_id", *statuspage.STATES]
    assert model.WORKER_STATES and set(model.WORKER_STATES) == set(statuspage.STATES)


def test_update_service_metrics_refusals_of_the_simulator(sim):
    """The handler's own checks (the wire-level contract is in test_panda_contract.py)."""
    ok = sim.update_service_metrics(None, "h", [["2026-01-01 00:00:00.000001", "host", "{}"]])
    assert ok == (True, "", [True])
    for bad in ([["2026-01-01 00:00:00", "host", "{}"]], [["2026-01-01 00:00:00.1", "host", {"a": 1}]],
                [["2026-01-01 00:00:00.1", "host"]], [["2026-01-01 00:00:00.1", "host", "x" * 4001]]):
        assert sim.update_service_metrics(None, "h", bad) == (False, MSG_DATABASE, None)


def test_counters_add_up_per_host(site):
    _, instance = site
    key = monitoring.counter_key({"endpoint": "pilot/update_jobs_bulk", "kind": "network"})
    for _ in range(3):
        monitoring.add_counters(instance.store, "host-a", {("harvester_cli_panda_call_errors_total", key): 2})
    monitoring.add_counters(instance.store, "host-b", {("harvester_cli_panda_call_errors_total", key): 1})
    got = {(c["host"], c["labels"]["endpoint"]): c["value"] for c in views.counters(instance.store)}
    assert got == {("host-a", "pilot/update_jobs_bulk"): 6, ("host-b", "pilot/update_jobs_bulk"): 1}


def test_metrics_config_is_checked(tmp_path):
    from harvester_cli import config as config_module
    from harvester_cli.errors import ConfigError

    data = {"harvester_id": "h", "panda": {"url": "https://p/api/v1"},
            "metrics": {"textfile": "/var/lib/node_exporter/harvester.txt", "panda_interval": 60}}
    with pytest.raises(ConfigError) as error:
        config_module.parse(data, "cfg.toml", tmp_path)
    lines = str(error.value).splitlines()
    assert lines == [
        "cfg.toml: [metrics] textfile: /var/lib/node_exporter/harvester.txt: node_exporter reads only files ending "
        "in .prom; name it e.g. harvester.prom",
        "cfg.toml: [metrics] panda_interval: PanDA takes service metrics at most every 300 s, got 60"]


def test_propagate_records_an_unreachable_metrics_call_as_an_error(site, sim):
    harness, instance = site
    with instance.store.transaction() as conn:   # registered already, so only the metrics call is left to fail
        from harvester_cli.state.schema import panda_registrations

        conn.execute(panda_registrations.insert().values(panda_url=instance.config.panda.url,
                                                         harvester_id=instance.config.harvester_id, registered=NOW))
    run = propagate.PropagateRun()
    sim.fail_next = [503, 503]
    propagate.send_service_metrics(instance, run)
    assert run.service_metrics == "failed" and "update_service_metrics" in run.errors[0]
    assert instance.panda.errors == {("harvester/update_service_metrics", "http"): 1}
    run = propagate.PropagateRun()
    propagate.send_service_metrics(instance, run)   # not recorded as sent: the next run tries again
    assert run.service_metrics == "sent"


def test_config_keys_documented(tmp_path):
    toml = to_toml({"harvester_id": "h", "panda": {"url": "https://p/api/v1"},
                    "metrics": {"textfile": str(tmp_path / "x.prom")},
                    "log_server": {"max_connections": 100, "threads": 4, "header_timeout": 5.0, "idle_timeout": 20.0},
                    "sweep": {"history_retention": 86400}})
    (tmp_path / "c.toml").write_text(toml)
    from harvester_cli import config as config_module

    config = config_module.load(tmp_path / "c.toml")
    assert config.metrics.textfile == tmp_path / "x.prom" and config.log_server.threads == 4
    assert config.sweep.history_retention == 86400
