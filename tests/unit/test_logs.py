"""clean-logs on real files with real mtimes and a real state database; serve-logs over real HTTP with
traversal attempts; each command's own rotating log with memory use and no secret."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harvester_cli import config as config_module
from harvester_cli.site import logs, retention
from harvester_cli.site.logserver import LogServer
from harvester_cli.state.views import active_worker_logs
from harvester_cli.instance import Instance
from tests.support.harness import new_state, to_toml

pytestmark = pytest.mark.logs

DAY = 86400
NOW = time.time()


def write(path: Path, size: int, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = NOW - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def age_dir(path: Path, age_days: float) -> None:
    stamp = NOW - age_days * DAY
    os.utime(path, (stamp, stamp))


class Tree:
    def __init__(self, tmp_path: Path, retention: dict | None = None):
        self.tmp = tmp_path
        self.root = tmp_path / "logs"
        self.data = {"harvester_id": "logs-test", "state": str(tmp_path / "state.db"), "log_dir": str(self.root),
                     "log_url": "http://127.0.0.1:8080/logs",
                     "panda": {"url": "https://127.0.0.1:9/api/v1", "retries": 0, "timeout": 2},
                     "queues": {"Q": {"mode": "pull", "backend": "local", "pilot": "true"}}}
        if retention:
            self.data["log_retention"] = retention

    def write_config(self) -> Path:
        path = self.tmp / "config.toml"
        path.write_text(to_toml(self.data))
        return path

    def instance(self) -> Instance:
        instance = Instance(config_module.load(self.write_config()))
        new_state(instance.state_url)
        return instance

    def worker_dir(self, day: str, worker_id: int, queue: str = "Q") -> Path:
        return self.root / "workers" / day / queue / str(worker_id)

    def add_worker(self, worker_id: int, status: str, log_dir: Path, queue: str = "Q") -> None:
        from harvester_cli.state.schema import workers

        instance = self.instance()
        with instance.store.transaction() as conn:
            conn.execute(workers.insert().values(worker_id=worker_id, queue=queue, backend="local", mode="pull",
                                                 status=status, log_dir=str(log_dir), created=NOW, modified=NOW))
        instance.close()

    def cli(self, *args: str, create_state: bool = True) -> subprocess.CompletedProcess:
        self.write_config()
        if create_state:
            new_state(self.data["state"])
        env = {**os.environ, "XDG_STATE_HOME": str(self.tmp / "xdg-state"), "XDG_CONFIG_HOME": str(self.tmp / "xdg")}
        return subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(self.tmp / "config.toml"), *args],
                              capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def tree(tmp_path) -> Tree:
    return Tree(tmp_path, {"workers": {"max_age": 7 * DAY}, "submit_files": {"max_age": 3 * DAY},
                           "commands": {"max_age": 30 * DAY}})


# ---------------------------------------------------------------------------------------------
# clean-logs


def populate(tree: Tree) -> dict[str, Path]:
    old_active = tree.worker_dir("2026-01-01", 1)       # running for a long time: must stay
    old_done = tree.worker_dir("2026-01-01", 2)         # finished long ago: goes
    new_done = tree.worker_dir("2026-01-20", 3)         # finished recently: stays
    unknown = tree.worker_dir("2026-01-01", 4)          # no row any more (swept): goes by age
    files = {
        "active_out": write(old_active / "pilot.out", 1000, 20),
        "active_sub": write(old_active / "worker.sub", 100, 20),
        "done_out": write(old_done / "pilot.out", 2000, 20),
        "done_err": write(old_done / "pilot.err", 10, 20),
        "new_out": write(new_done / "pilot.out", 500, 1),
        "new_sub": write(new_done / "worker.sub", 50, 5),      # submit files: 3 days
        "unknown_log": write(unknown / "batch.log", 300, 10),
        "cmd_old": write(tree.root / "commands" / "submit.log.3", 100, 40),
        "cmd_new": write(tree.root / "commands" / "submit.log", 100, 0.1),
    }
    for directory in (old_active, old_done, unknown, old_active.parent, old_active.parent.parent):
        age_dir(directory, 20)
    tree.add_worker(1, "running", old_active)
    tree.add_worker(2, "finished", old_done)
    tree.add_worker(3, "finished", new_done)
    return files


def test_clean_logs_by_age_never_an_active_worker(tree):
    files = populate(tree)
    dry = tree.cli("--json", "clean-logs", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert {Path(d["path"]) for d in planned["deletions"]} == {
        files["done_out"], files["done_err"], files["new_sub"], files["unknown_log"], files["cmd_old"]}
    assert {d["bytes"] for d in planned["deletions"] if Path(d["path"]) == files["done_out"]} == {2000}
    assert all(p.exists() for p in files.values()), "dry run deleted something"
    plain = tree.cli("clean-logs", "--dry-run")
    assert "pilot.out" in plain.stdout and "2000" in plain.stdout and "would delete" in plain.stdout

    result = tree.cli("--json", "clean-logs")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    gone = {k for k, p in files.items() if not p.exists()}
    assert gone == {"done_out", "done_err", "new_sub", "unknown_log", "cmd_old"}
    assert files["active_out"].exists() and files["active_sub"].exists()
    assert data["classes"]["workers"]["kept_active_files"] == 1
    assert data["classes"]["submit_files"]["kept_active_files"] == 1
    # empty directories of old days go; the active worker's and today's stay
    assert not tree.worker_dir("2026-01-01", 2).exists()
    assert not tree.worker_dir("2026-01-01", 4).exists()
    assert tree.worker_dir("2026-01-01", 1).is_dir()
    assert tree.worker_dir("2026-01-20", 3).is_dir()
    assert str(tree.worker_dir("2026-01-01", 2)) in data["removed_dirs"]
    # a second run finds nothing to do
    again = json.loads(tree.cli("--json", "clean-logs").stdout)
    assert again["deletions"] == []


def test_clean_logs_by_size_oldest_first(tree):
    tree.data["log_retention"] = {"workers": {"max_age": 365 * DAY, "max_bytes": 2500}}
    active = tree.worker_dir("2026-01-01", 10)
    write(active / "pilot.out", 2000, 9)                  # oldest, but active: stays and counts
    a = write(tree.worker_dir("2026-01-02", 11) / "pilot.out", 1000, 8)
    b = write(tree.worker_dir("2026-01-03", 12) / "pilot.out", 1000, 7)
    c = write(tree.worker_dir("2026-01-04", 13) / "pilot.out", 400, 6)
    tree.add_worker(10, "idle", active)
    data = json.loads(tree.cli("--json", "clean-logs").stdout)
    # 4400 bytes, budget 2500: delete a (oldest not active) then b; 2400 left
    assert not a.exists() and not b.exists() and c.exists() and (active / "pilot.out").exists()
    assert [d["reason"] for d in data["deletions"]] == ["size", "size"]
    assert data["classes"]["workers"]["over_budget_bytes"] == 0
    # a budget the active worker alone exceeds: reported, not "fixed" by deleting its logs
    tree.data["log_retention"] = {"workers": {"max_age": 365 * DAY, "max_bytes": 1000}}
    data = json.loads(tree.cli("--json", "clean-logs").stdout)
    assert (active / "pilot.out").exists() and not c.exists()
    assert data["classes"]["workers"]["over_budget_bytes"] == 1000


def test_worker_protected_by_queue_and_id_when_log_dir_moved(tree):
    """A worker row whose log_dir string differs (log_dir moved, symlinked) is still matched by queue and id."""
    path = write(tree.worker_dir("2026-01-01", 21) / "pilot.out", 10, 30)
    tree.add_worker(21, "submitted", Path("/old/location/workers/2026-01-01/Q/21"))
    tree.cli("clean-logs")
    assert path.exists()


def test_no_state_database_keeps_worker_logs(tree):
    old = write(tree.worker_dir("2026-01-01", 5) / "pilot.out", 10, 30)
    cmd = write(tree.root / "commands" / "poll.log.5", 10, 60)
    result = tree.cli("--json", "clean-logs", create_state=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert old.exists() and not cmd.exists()
    assert "active workers unknown" in data["skipped"][0]
    assert not (tree.tmp / "state.db").exists()


def test_clean_logs_keeps_its_own_log(tree):
    tree.data["log_retention"] = {"commands": {"max_age": 0}}
    tree.cli("status")
    time.sleep(0.05)
    tree.cli("clean-logs")
    own = tree.root / "commands" / "clean-logs.log"
    assert own.exists() and "end: exit 0" in own.read_text()
    assert not (tree.root / "commands" / "status.log").exists()


def test_clean_logs_speed(tree, capsys):
    """N real files, half of them old: prints the rate (no timed assertion)."""
    n_workers, files_per_worker = 2000, 5
    root = tree.root / "workers"
    for w in range(n_workers):
        day = "2026-01-01" if w % 2 else "2026-01-25"
        d = root / day / "Q" / str(w)
        d.mkdir(parents=True)
        for i, name in enumerate(("pilot.out", "pilot.err", "batch.log", "worker.sub", "jobReport.json")):
            p = d / name
            p.write_bytes(b"y" * 64)
            stamp = NOW - (20 if w % 2 else 0.5) * DAY
            os.utime(p, (stamp, stamp))
        if w % 2:
            age_dir(d, 20)
    age_dir(root / "2026-01-01" / "Q", 20)
    tree.add_worker(1, "running", root / "2026-01-01" / "Q" / "1")
    instance = tree.instance()
    active = retention.active_workers(active_worker_logs(instance.store))
    instance.close()
    started = time.monotonic()
    run = retention.clean(tree.root, instance.config.log_retention, active, now=NOW)
    elapsed = time.monotonic() - started
    n = n_workers * files_per_worker
    assert run.scanned == n
    assert len(run.deletions) == (n_workers // 2 - 1) * files_per_worker
    assert len(run.removed_dirs) == n_workers // 2 - 1   # the old workers' directories, not the active one's
    with capsys.disabled():
        print(f"\nclean-logs: {n} files scanned, {len(run.deletions)} deleted, {len(run.removed_dirs)} dirs removed "
              f"in {elapsed:.2f} s ({n / elapsed:,.0f} files/s)")


# ---------------------------------------------------------------------------------------------
# serve-logs


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "logs"
    (root / "workers" / "2026-01-01" / "Q" / "7").mkdir(parents=True)
    (root / "workers" / "2026-01-01" / "Q" / "7" / "pilot.out").write_text("pilot says hello\n")
    (root / "workers" / "2026-01-01" / "Q" / "7" / "pilot.err").write_text("<script>alert(1)</script>\n")
    (root / "workers" / "2026-01-01" / "Q" / "7" / "odd <name>.log").write_text("escaped\n")
    (root / "commands").mkdir()
    (root / "commands" / "submit.log").write_text("internal\n")
    (root / ".state").mkdir()
    (root / ".state" / "alerts.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not serve\n")
    (root / "workers" / "escape").symlink_to(outside)
    (root / "workers" / "escape-file.txt").symlink_to(outside / "secret.txt")
    (root / "workers" / "inside.out").symlink_to(root / "workers" / "2026-01-01" / "Q" / "7" / "pilot.out")
    # the process under test: the real command, on a free port, reporting its URL as JSON
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    cfg = tmp_path / "config.toml"
    cfg.write_text(to_toml({"harvester_id": "h", "log_dir": str(root), "log_url": "http://127.0.0.1:8080/logs",
                            "panda": {"url": "https://127.0.0.1:9/api/v1"}}))
    process = subprocess.Popen([sys.executable, "-m", "harvester_cli", "--config", str(cfg), "--json", "serve-logs",
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    while not lines or lines[-1].rstrip() != "}":   # --json: one indented object, ending with "}"
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"serve-logs ended: {process.stderr.read()}")
        lines.append(line)
    info = json.loads("".join(lines))
    yield info, process
    process.send_signal(signal.SIGTERM)
    process.wait(10)
    process.stdout.close()
    process.stderr.close()


def request(info, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(info["host"], info["port"], timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)   # the path exactly as given, no normalisation
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    return response.status, headers, data


def test_serve_logs_serves_the_tree(served):
    info, _ = served
    assert info["prefix"] == "/logs/" and info["host"] == "127.0.0.1"
    status, headers, body = request(info, "GET", "/logs/workers/2026-01-01/Q/7/pilot.out")
    assert status == 200 and body == b"pilot says hello\n"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = request(info, "GET", "/logs/workers/2026-01-01/Q/7/pilot.err")
    assert headers["content-type"].startswith("text/plain")   # never rendered as HTML
    status, headers, body = request(info, "HEAD", "/logs/workers/2026-01-01/Q/7/pilot.out")
    assert status == 200 and body == b"" and headers["content-length"] == "17"
    status, _, body = request(info, "GET", "/logs/workers/2026-01-01/Q/7/odd%20%3Cname%3E.log")
    assert status == 200 and body == b"escaped\n"
    status, headers, body = request(info, "GET", "/logs/workers/2026-01-01/Q/7/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'href="pilot.out"' in body and b"odd &lt;name&gt;.log" in body and b"<name>" not in body
    status, headers, _ = request(info, "GET", "/logs/workers")
    assert status == 301 and headers["location"] == "/logs/workers/"
    status, _, body = request(info, "GET", "/logs/")
    assert b"workers/" in body and b"commands" not in body and b".state" not in body
    status, _, body = request(info, "GET", "/logs/workers/inside.out")   # a symlink inside the tree is fine
    assert status == 200 and body == b"pilot says hello\n"


def test_serve_logs_robots_txt(served):
    info, _ = served
    status, headers, body = request(info, "GET", "/robots.txt")
    assert status == 200 and body == b"User-agent: *\nDisallow: /\n"
    assert headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("path", [
    "/logs/../../../../etc/passwd",
    "/logs/workers/../../outside/secret.txt",
    "/logs/%2e%2e/outside/secret.txt",
    "/logs/%2E%2E/%2e%2e/etc/passwd",
    "/logs/workers/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    "/logs/..%2f..%2foutside/secret.txt",
    "/logs/%252e%252e/outside/secret.txt",
    "/logs/workers/..%5c..%5coutside%5csecret.txt",
    "/logs/workers/escape/secret.txt",
    "/logs/workers/escape-file.txt",
    "/logs/workers/escape/",
    "/logs/%00/etc/passwd",
    "/logs/workers/%ff%fe",
    "/logs//etc/passwd",
    "/etc/passwd",
    "/logs/commands/submit.log",
    "/logs/.state/alerts.json",
    "/logs/%2estate/alerts.json",
])
def test_serve_logs_refuses_traversal(served, path):
    info, _ = served
    status, _, body = request(info, "GET", path)
    assert status == 404, (path, status, body)
    assert b"do not serve" not in body and b"root:" not in body and b"internal" not in body


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "MKCOL", "TRACE"])
def test_serve_logs_has_no_write_methods(served, method, tmp_path):
    info, _ = served
    status, headers, _ = request(info, method, "/logs/workers/2026-01-01/Q/7/pilot.out", body=b"overwritten")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert (tmp_path / "logs" / "workers" / "2026-01-01" / "Q" / "7" / "pilot.out").read_text() == "pilot says hello\n"


def test_worker_log_urls_point_at_the_server(tmp_path):
    """log_url + a worker file's path under log_dir is what the server answers."""
    root = tmp_path / "logs"
    cfg = config_module.parse({"harvester_id": "h", "log_dir": str(root), "log_url": "http://127.0.0.1:1/pilots",
                               "panda": {"url": "https://127.0.0.1:9/api/v1"}}, "<t>", tmp_path)
    instance = Instance(cfg)
    directory = instance.worker_log_dir("Q", 42, NOW)
    write(directory / "pilot.out", 5, 0)
    url = instance.log_url(directory / "pilot.out")
    with LogServer(root, "127.0.0.1", 0, "/pilots") as server:
        path = url.split("/", 3)[3]
        status, _, body = request({"host": "127.0.0.1", "port": server.address[1]}, "GET", "/" + path)
    assert status == 200 and body == b"xxxxx"


# ---------------------------------------------------------------------------------------------
# Each command's own log


def test_each_command_logs_to_its_rotating_file(tree):
    tree.data["command_log"] = {"max_bytes": 200, "backups": 2}
    for _ in range(6):
        assert tree.cli("status").returncode == 0
    directory = tree.root / "commands"
    current = (directory / "status.log").read_text()
    assert re.search(r"^\S+ \S+ \d+ INFO harvester_cli: start: harvester-cli --config \S+ status", current, re.M)
    assert "end: exit 0 after" in current
    names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    assert names == ["status.log", "status.log.1", "status.log.2"]   # rotated, at most 2 backups
    assert all((directory / n).stat().st_size < 1000 for n in names)


def test_memory_on_every_line(tree):
    tree.data["command_log"] = {"memory": True}
    tree.cli("status")
    lines = (tree.root / "commands" / "status.log").read_text().splitlines()
    assert lines and all(re.search(r" rss=\d+\.\dMiB$", line) for line in lines), lines
    tree.data["command_log"] = {}
    tree.cli("--log-memory", "config", "check")
    assert re.search(r"rss=\d", (tree.root / "commands" / "config.log").read_text())


def test_command_log_has_errors_but_stderr_stays_one_line(tree):
    tree.data["queues"]["Q"]["mode"] = "pull"
    result = tree.cli("--queue", "NOPE", "status")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    text = (tree.root / "commands" / "status.log").read_text()
    assert "error: unknown queue 'NOPE'" in text and "end: exit 2" in text


def test_help_writes_no_log(tree):
    tree.cli("status", "--help")
    assert not (tree.root / "commands").exists()


def test_a_long_running_command_rotates_while_it_runs(tmp_path):
    """serve-logs runs for days: its log is rotated once it passes max_bytes, not only at start."""
    import logging

    handler = logs.open_command_log(tmp_path, "serve-logs", max_bytes=2000, backups=3)
    logger = logging.getLogger("test-rotation")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for i in range(200):
            logger.info("GET /logs/workers/2026-01-01/Q/%d/pilot.out 200 with token Bearer abcdefghijkl", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    directory = tmp_path / "commands"
    names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    assert names == ["serve-logs.log", "serve-logs.log.1", "serve-logs.log.2", "serve-logs.log.3"]
    assert all((directory / n).stat().st_size < 2200 for n in names)
    text = "".join((directory / n).read_text() for n in names)
    assert "pilot.out 200" in text and "abcdefghijkl" not in text and "Bearer [redacted]" in text
    assert "Q/199/" in (directory / "serve-logs.log").read_text()


@pytest.mark.parametrize("url", ["postgresql://harvester:pg-Secret-99@db.example.org/harvester",
                                 "postgresql+psycopg://harvester:pg-Secret-99@db.example.org:5432/harvester",
                                 "mariadb+pymysql://harvester:pg-Secret-99@127.0.0.1/harvester"])
def test_database_url_passwords_and_exception_text_never_reach_a_command_log(tmp_path, url):
    """A password in a database URL, and a secret inside an exception's text (its message and its traceback),
    are redacted in the lines a command log gets: in the message, in its arguments, in exc_info."""
    import logging

    logs.register_secret("tok-ABCDEFGH-123456")
    handler = logs.open_command_log(tmp_path, "cycle", max_bytes=0, backups=0)
    logger = logging.getLogger("test-redaction")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info(f"state database {url} opened")
        logger.warning("could not connect to %s", url)
        try:
            raise RuntimeError(f"connection to {url} failed with token tok-ABCDEFGH-123456")
        except RuntimeError as exc:
            logger.warning("step failed: %s", exc, exc_info=True)
            logger.exception("step failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "commands" / "cycle.log").read_text()
    assert "pg-Secret-99" not in text and "tok-ABCDEFGH-123456" not in text, text
    assert "Traceback" in text and "RuntimeError: connection to" in text   # the traceback stays, redacted
    assert "state database " + url.split(":pg-")[0] + ":***@" in text and "with token [redacted]" in text, text


def test_redact_hides_the_password_of_any_url_and_keeps_the_rest():
    assert logs.redact("postgresql://u:p4ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert logs.redact("mysql+pymysql://user:s3cr3t@127.0.0.1/x?charset=utf8") == \
        "mysql+pymysql://user:***@127.0.0.1/x?charset=utf8"
    assert logs.redact("https://host:9619/path and sqlite:////var/lib/state.db") == \
        "https://host:9619/path and sqlite:////var/lib/state.db"   # no password: nothing to hide


# -- the logging machinery in-process (what the CLI tests above see only through a subprocess) ---------

@pytest.fixture
def umask0():
    """No umask: a mode that shows is the one the code asked for."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_registered_secrets_are_redacted_longest_first_and_short_values_are_not_secrets():
    logs.register_secret(b"tok\xffen-4f1c2b")                  # bytes that are not UTF-8: kept, the bad byte replaced
    logs.register_secret("  k7d3  ")                           # 4 characters once stripped: a secret
    logs.register_secret("ab3")                                # 3: too short to redact every "ab3" of every line
    # One secret inside another, the shorter one first in alphabetical order: redacted first, it would leave
    # the rest of the longer one in the line.
    logs.register_secret("zz-9a1c")
    logs.register_secret("a-zz-9a1c-and-more")
    logs.register_secret(None)
    logs.register_secret("")
    assert logs.redact("a tok\ufffden-4f1c2b b") == "a [redacted] b"
    assert logs.redact("x a-zz-9a1c-and-more y zz-9a1c z ab3 k7d3") == "x [redacted] y [redacted] z ab3 [redacted]"


def _record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.getLogger("harvester_cli").makeRecord("harvester_cli", logging.ERROR, __file__, 1, message, args,
                                                         exc_info)


def test_the_redacting_filter_redacts_the_message_and_the_exception_and_keeps_a_broken_record():
    logs.register_secret("pw-5e9a1")
    try:
        raise ValueError("connect failed: password=pw-5e9a1")
    except ValueError:
        record = _record("login as %s failed", "pw-5e9a1", exc_info=sys.exc_info())
    assert logs.RedactingFilter().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert text.startswith("login as [redacted] failed\nTraceback (most recent call last):\n"), text
    assert text.endswith("ValueError: connect failed: password=[redacted]") and "pw-5e9a1" not in text
    assert record.exc_info is None and record.exc_text is None   # what the handler's formatter would add: nothing
    # an exception without its traceback object is redacted as well
    record = _record("failed", exc_info=(ValueError, ValueError("password=pw-5e9a1"), None))
    assert logs.RedactingFilter().filter(record)
    assert "pw-5e9a1" not in logging.Formatter("%(message)s").format(record)
    broken = _record("%d items", "not a number")   # logging reports a bad format string itself
    assert logs.RedactingFilter().filter(broken)


def test_memory_is_this_processes_resident_set_and_the_filter_appends_it(monkeypatch):
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024
    assert abs(logs.memory_mb() - rss) < max(5.0, rss / 10), (logs.memory_mb(), rss)
    record = _record("x")
    assert logs.MemoryFilter().filter(record)
    assert re.fullmatch(r" rss=\d+\.\dMiB", record.rss), record.rss
    import builtins
    import resource

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)   # no /proc: the peak RSS instead
    assert logs.memory_mb() == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_make_dirs_gives_the_leaf_its_mode_and_the_parents_theirs_whatever_the_umask(tmp_path, umask0, monkeypatch):
    leaf = tmp_path / "a" / "b" / "leaf"
    logs.make_dirs(f"{leaf}/", 0o700)   # a trailing slash too
    assert [oct(p.stat().st_mode & 0o777) for p in (tmp_path / "a", tmp_path / "a" / "b", leaf)] == \
        [oct(logs.DIRECTORY_MODE)] * 2 + ["0o700"]
    logs.make_dirs(leaf, 0o700)   # there already: fine
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        logs.make_dirs(tmp_path / "file")
    real_mkdir = os.mkdir
    raced = tmp_path / "c" / "raced"

    def another_run_first(path, mode=0o777):   # another run makes the leaf just before this one does
        real_mkdir(path, mode)
        if os.fspath(path) == os.fspath(raced):
            raise FileExistsError(path)

    monkeypatch.setattr(os, "mkdir", another_run_first)
    logs.make_dirs(raced)
    assert raced.is_dir()


def test_rotation_keeps_the_backups_asked_for_and_rotates_at_max_bytes(tmp_path, umask0):
    path = tmp_path / "cycle.log"
    path.write_text("x" * 10)
    logs.rotate_if_full(path, 0, 3)   # 0: never rotated
    logs.rotate_if_full(path, 11, 3)  # below the size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle.log"]
    logs.rotate_if_full(path, 10, 1)  # at the size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle.log.1"]
    path.write_text("y" * 10)
    logs.rotate_if_full(path, 10, 0)  # no backups: dropped, the backup there stays what it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle.log.1"]
    assert (tmp_path / "cycle.log.1").read_text() == "x" * 10
    logs.rotate_if_full(tmp_path / "missing.log", 10, 3)   # nothing to rotate: fine


def test_a_command_log_appends_private_lines_rotates_when_full_and_escapes_bytes_that_are_not_text(tmp_path, umask0):
    commands = tmp_path / "commands"
    commands.mkdir()
    (commands / "cycle.log").write_text("an earlier run\n" + "x" * 200 + "\n")
    handler = logs.open_command_log(tmp_path, "cycle", max_bytes=100, backups=2, memory=True, level=logging.INFO)
    try:   # the file was full: rotated when the run started, under the command's lock file
        assert handler.name == "harvester-cli-command-log" and handler.level == logging.INFO
        assert (commands / "cycle.log.1").read_text().startswith("an earlier run\n")
        assert oct((commands / "cycle.log").stat().st_mode & 0o777) == "0o640"
        assert oct((commands / ".cycle.lock").stat().st_mode & 0o777) == "0o600"
        handler.handle(_record("start: harvester-cli --queue Q\udcff"))
        handler.flush()
        line = (commands / "cycle.log").read_text()
        assert re.fullmatch(r"\S+ \S+ \d+ ERROR harvester_cli: start: harvester-cli --queue Q\\udcff rss=[\d.]+MiB\n",
                            line), line
        handler.handle(_record("y" * 150))   # the file passes max_bytes while the command runs
        handler.handle(_record("after"))
        handler.flush()
        assert "after" in (commands / "cycle.log").read_text() and "y" * 150 in (commands / "cycle.log.1").read_text()
    finally:
        handler.close()
    plain = logs.open_command_log(tmp_path, "poll", max_bytes=0, backups=2)
    try:
        plain.handle(_record("z" * 300))
        plain.handle(_record("z"))
        plain.flush()
        assert not (commands / "poll.log.1").exists() and "rss=" not in (commands / "poll.log").read_text()
    finally:
        plain.close()


def test_a_command_line_shows_bytes_that_are_not_utf8_escaped():
    shown = logs.command_line(["--queue", os.fsdecode(b"Q\xff\xfe"), "cycle", "caf\u00e9"])
    assert shown == "--queue Q\\xff\\xfe cycle caf\u00e9"
    assert logs.command_line([]) == ""


def test_a_full_log_volume_is_one_line_on_stderr_not_a_logging_traceback(tmp_path, capsys):
    """A log volume with no room left: the command goes on, and says so once, in one line (found by the
    chaos run: every command printed Python's "--- Logging error ---" traceback for each line it logged)."""
    handler = logs.open_command_log(tmp_path, "cycle", max_bytes=0, backups=0)
    handler.stream.close()
    handler.stream = open("/dev/full", "w", encoding="utf-8")   # every flush: ENOSPC
    try:   # to the handler alone: other tests' handlers on the logging tree stay out of it
        for n in range(3):
            handler.handle(logging.makeLogRecord({"name": "harvester_cli", "levelno": logging.WARNING,
                                                  "levelname": "WARNING", "msg": "line %d", "args": (n,)}))
    finally:
        handler.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err
    (line,) = err.strip().splitlines()
    assert "cycle.log" in line and "No space left on device" in line, line
