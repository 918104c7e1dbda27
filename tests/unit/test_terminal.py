"""An operator's terminal (issue 24): every table command read at 80 columns with about a thousand workers,
through a real pseudo-terminal, fits the width, keeps each row's id, queue and state on one line, and is plain
text with NO_COLOR or in a pipe; one worker or job at a time (`workers ID`, `jobs PANDAID`); what runs now
and why the last run failed (`status`, the state database's new revision); and the smaller points: submit
times taken before the backend call, serve-logs' `/`, `renew-proxy --check` of a plain [panda] proxy,
`db upgrade --sql`'s last line, a push queue's plan, the simulator's command line, help at 80 columns."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import random
import re
import select
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select as sql_select

from harvester_cli import model
from harvester_cli.state import monitoring, views
from harvester_cli.state.schema import command_runs, job_workers, jobs, workers
from harvester_cli.state.store import Store
from tests.support.harness import new_state, to_toml

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\]")
BOX = re.compile(r"[\u2500-\u257f\u2580-\u259f]")   # box drawing and block elements
WIDTH = 80

QUEUES = {   # queue: (backend, CEs, resource types)
    "CERN-PROD_UCORE": ("htcondor", ["ce503.cern.ch:9619", "ce504.cern.ch:9619", "ce505.cern.ch:9619"],
                        ["SCORE", "MCORE"]),
    "BNL_PROD_MCORE": ("htcondor", ["gridgk01.racf.bnl.gov:9619", "gridgk02.racf.bnl.gov:9619"], ["MCORE"]),
    "NDGF-T1_PUSH": ("arc", ["https://arc01.ndgf.org:443/arex", "https://arc02.ndgf.org:443/arex"], ["SCORE"]),
}
DIAGS = [
    "held: Error from slot1_4@wn-0412.cern.ch: Job has gone over memory limit of 16000 megabytes. Peak usage: "
    "17210 megabytes.",
    "pilot exited 64: no job to run (empty pilot) after 600 s of getJob attempts",
    "batch job vanished from the schedd: lost after 600 s (CE ce504.cern.ch unreachable)",
    "ARC job failed: LRMS error: (271) job killed: wall time exceeded 172800 s\nsecond line\tand a tab",
]
LOG_URL = "https://aipanda024.cern.ch:8443/logs"


# -- a site with a thousand workers -------------------------------------------------------------------

def site_config(tmp_path: Path, panda_url: str = "https://pandaserver.cern.ch:25443/api/v1", **extra) -> Path:
    """A configuration with three grid queues (two HTCondor-CE, one ARC) and its state database."""
    proxy = tmp_path / "proxy.pem"
    if not proxy.exists():
        proxy.write_text("not a real proxy: nothing here talks to PanDA")
        proxy.chmod(0o600)
    queues = {name: {"mode": "push" if "PUSH" in name else "pull", "backend": backend, "pilot": "true",
                     "resource_types": rts} for name, (backend, ces, rts) in QUEUES.items()}
    data = {"harvester_id": "cern-harvester-01", "state": str(tmp_path / "state.db"), "log_dir": str(tmp_path / "logs"),
            "log_url": LOG_URL, "panda": {"url": panda_url, "proxy": str(proxy)}, "queues": queues, **extra}
    text = to_toml(data)
    for name, (backend, ces, _) in QUEUES.items():   # CE lists as TOML inline tables
        listed = ", ".join(f'{{endpoint = "{ce}", flavour = "htcondor-ce"}}' if backend == "htcondor" else f'"{ce}"'
                           for ce in ces)
        text += f"\n[queues.{name}.backend_options]\n{'ces' if backend == 'htcondor' else 'endpoints'} = [{listed}]\n"
    path = tmp_path / "config.toml"
    path.write_text(text)
    new_state(tmp_path / "state.db")
    return path


def fill(url: str, n: int = 1000, now: float | None = None, seed: int = 24) -> list[dict]:
    """`n` workers over the three queues and seven CEs in every state, some failed with diags, all with log
    URLs; a push job for each worker of the push queue; the commands' last runs. Returns the workers."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    rows, job_rows, links = [], [], []
    names = list(QUEUES)
    for worker_id in range(100_001, 100_001 + n):
        queue = names[worker_id % 3]
        backend, ces, rts = QUEUES[queue]
        status = rng.choices(model.WORKER_STATES, [1, 20, 35, 2, 30, 8, 2, 2])[0]
        created = now - rng.uniform(60, 36 * 3600)
        submitted = created + 2 if status != "pending" else None
        ran = status in ("running", "finished", "failed")
        started = min(now - 5, submitted + rng.uniform(30, 3000)) if ran else None
        ended = min(now, (started or created) + rng.uniform(60, 30000)) if status in model.WORKER_FINAL else None
        day = time.strftime("%Y-%m-%d", time.gmtime(created))
        base = f"{LOG_URL}/workers/{day}/{queue}/{worker_id}"
        rows.append({
            "worker_id": worker_id, "queue": queue, "backend": backend, "mode": "push" if "PUSH" in queue else "pull",
            "resource_type": rng.choice(rts), "job_type": "managed", "n_core": 8 if "MCORE" in queue else 1,
            "memory_mb": 16000, "status": status,
            "batch_id": None if status == "pending" else (f"{8_800_000 + worker_id // 4}.{worker_id % 4}"
                                                           if backend == "htcondor" else f"{worker_id:x}" * 5),
            "submission_host": "aipanda024.cern.ch", "computing_element": rng.choice(ces),
            "native_status": "held" if status == "failed" else None,
            "native_exit_code": 1 if status == "failed" else None,
            "diag": rng.choice(DIAGS) if status in ("failed", "missed", "cancelled") else None,
            "log_dir": f"/var/log/harvester/workers/{day}/{queue}/{worker_id}", "stdout_url": f"{base}/pilot.out",
            "stderr_url": f"{base}/pilot.err", "batch_log_url": f"{base}/grid.log", "submit_time": submitted,
            "start_time": started, "end_time": ended, "created": created, "modified": now,
            "harvester_host": "aipanda024.cern.ch"})
        if "PUSH" in queue:
            panda_id = 6_400_000_000 + worker_id
            job_rows.append({"panda_id": panda_id, "queue": queue,
                             "status": status if status in ("running", "finished", "failed") else "starting",
                             "sub_status": {"running": "running", "finished": "done", "failed": "reporting",
                                            "pending": "fetched"}.get(status, "submitted"),
                             "attempt_nr": 1, "resource_type": "SCORE", "core_count": 1, "submit_attempts": 1,
                             "job_json": json.dumps({"PandaID": panda_id, "jobName": f"mc23.simul.{panda_id}",
                                                     "jediTaskID": 37000123, "attemptNr": 1, "jobPars": "x",
                                                     "pilotSecrets": "a secret"}),
                             "diag": rows[-1]["diag"], "created": created, "modified": now})
            links.append({"panda_id": panda_id, "worker_id": worker_id})
    with Store(url).transaction() as tx:
        tx.execute(workers.insert(), rows)
        tx.execute(jobs.insert(), job_rows)
        tx.execute(job_workers.insert(), links)
        for command, code, ago, took in (("cycle", 0, 20, 41.2), ("fetch-jobs", 0, 60, 1.2), ("submit", 1, 50, 12.5),
                                         ("poll", 0, 35, 20.1), ("renew-proxy", 0, 400, 2.1)):
            failure = {"last_failure_at": now - ago if code else None, "last_failure_exit": code or None,
                       "last_failure": "queue CERN-PROD_UCORE: backend htcondor failed: schedd aipanda024 not "
                                       "answering" if code else None} if "last_failure" in command_runs.c else {}
            tx.execute(command_runs.insert().values(
                command=command, host="aipanda024.cern.ch", last_start=now - ago - took, last_end=now - ago,
                last_exit=code, last_items=12, last_success=now - (3000 if code else ago), runs=1000, failed_runs=3,
                items=12000, **failure))
    return rows


def run_in_terminal(args: list[str], env: dict | None = None, columns: int = WIDTH, timeout: float = 120,
                    cwd: Path | None = None) -> tuple[int, str]:
    """harvester-cli in a real pseudo-terminal `columns` wide (stdout and stderr): exit code and what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")
               and not k.startswith("HARVESTER_CLI_")}
    environ.update({"TERM": "xterm-256color", **(env or {})})
    process = subprocess.Popen([sys.executable, "-m", "harvester_cli", *args], stdin=subprocess.DEVNULL, stdout=slave,
                               stderr=slave, env=environ, cwd=cwd)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:   # EIO: the terminal's other side closed
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(master)
    code = process.wait(timeout=10)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def run_piped(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_CLI_")}
    return subprocess.run([sys.executable, "-m", "harvester_cli", *args], capture_output=True, text=True,
                          env={**environ, **(env or {})}, timeout=120)


SCREEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\]|(\r)|(\n)|([^\x1b\r\n]+)")


def screen_lines(text: str) -> list[str]:
    """What the terminal shows, line by line: colours gone, each carriage return's overwrite applied (the
    text after it overwrites the line from its first column), and a live display's cursor up (CSI A) and
    erase line (CSI K) applied as a terminal applies them."""
    lines, row, column = [""], 0, 0
    for match in SCREEN.finditer(text):
        argument, command, carriage_return, newline, printed = match.groups()
        if printed:
            line = lines[row].ljust(column)
            lines[row] = line[:column] + printed + line[column + len(printed):]
            column += len(printed)
        elif carriage_return:
            column = 0
        elif newline:   # the pty's \r\n, read as \n
            row, column = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif command == "A":
            row = max(0, row - int(argument or 1))
        elif command == "K":
            lines[row] = "" if argument == "2" else lines[row][:column]
    return [line.rstrip() for line in lines]


def assert_fits(text: str, width: int = WIDTH) -> list[str]:
    lines = screen_lines(text)
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, f"{len(too_long)} lines longer than {width}:\n" + "\n".join(too_long[:5])
    return lines


def assert_rows(lines: list[str], keys: list[tuple]) -> None:
    """Each row's key fields (id, queue, state) whole and in order on one line."""
    missing = [key for key in keys if not any(re.search(r"(^|\s)" + r"\s+".join(re.escape(str(k)) for k in key)
                                                        + r"(\s|$)", line) for line in lines)]
    assert not missing, f"{len(missing)} rows not whole on a line, e.g. {missing[:3]}"


@pytest.fixture
def site(tmp_path):
    config = site_config(tmp_path)
    rows = fill(f"sqlite:///{tmp_path / 'state.db'}")
    return config, rows


# -- tables at 80 columns ------------------------------------------------------------------------------

def test_workers_and_jobs_read_at_80_columns_with_a_thousand_workers(site):
    config, rows = site
    code, text = run_in_terminal(["--config", str(config), "workers", "--limit", "1000"])
    assert code == 0, text
    lines = assert_fits(text)
    assert_rows(lines, [(w["worker_id"], w["queue"], w["status"]) for w in rows])
    assert "\x1b[31mfailed\x1b[0m" in text and "\x1b[32mrunning\x1b[0m" in text   # coloured as systemctl does
    assert not BOX.search(text)
    assert "ce503 " in text and "ce503.cern.ch" not in text   # a CE as short as it can be and still distinct
    assert re.search(r"\(.*: not shown at 80 columns; --wide shows them\)", text)
    code, text = run_in_terminal(["--config", str(config), "jobs", "--limit", "1000"])
    assert code == 0, text
    assert_rows(assert_fits(text), [(6_400_000_000 + w["worker_id"], w["queue"]) for w in rows
                                    if w["queue"] == "NDGF-T1_PUSH"])


def test_status_reads_at_80_columns(site):
    from harvester_cli.output import short_names

    config, _ = site
    code, text = run_in_terminal(["--config", str(config), "status", "--since", "2d"])
    assert code == 0, text
    lines = assert_fits(text)
    for queue, (_, ces, _) in QUEUES.items():
        for ce in short_names(ces).values():
            assert any(re.match(rf"{re.escape(queue)}\s+{re.escape(ce)}\s", line) for line in lines), (queue, ce)
    assert "last 2d: per hour, and median times" in text and "command runs" in text
    # the last failure's first line, under its command's run, whole (wrapped at words)
    failures = " ".join(lines[lines.index("last failure of each command:") + 1:]).split()
    # the age is counted from the fixture's clock: a loaded machine may take a second or two to get here
    assert re.match(r"submit on aipanda024, 5\ds ago, exit 1: queue CERN-PROD_UCORE: backend htcondor failed: "
                    r"schedd aipanda024 not answering", " ".join(failures)), text


def test_config_keys_read_at_80_columns_one_block_each(tmp_path):
    code, text = run_in_terminal(["config", "keys"], cwd=tmp_path)
    assert code == 0, text
    lines = assert_fits(text)
    assert "queues.max_workers  int, default 100" in lines
    assert len(lines) < 1000   # 1,297 lines of a table before
    code, text = run_in_terminal(["config", "keys", "queues.max_workers", "panda"], cwd=tmp_path)
    assert code == 0
    titles = [line for line in screen_lines(text) if line and not line.startswith(" ")]
    assert titles[0].startswith("queues.max_workers ") and all(t.startswith(("queues.max_workers", "panda."))
                                                                for t in titles)
    assert any(t.startswith("panda.url  str, default required") for t in titles)
    wrong = run_piped(["config", "keys", "pandaa"])
    assert wrong.returncode == 2 and "did you mean panda" in wrong.stderr and "Traceback" not in wrong.stderr
    data = json.loads(run_piped(["--json", "config", "keys", "max_workers"]).stdout)
    assert [k["path"] for k in data["keys"]] == ["queues.max_workers"]


def test_plan_reads_at_80_columns_and_a_push_queue_mentions_the_jobs_at_panda(tmp_path, sim, pki):
    queues = {"LOCAL_PULL_WITH_A_LONGER_NAME": {"mode": "pull"}, "LOCAL_PUSH": {"mode": "push"}}
    config = tmp_path / "config.toml"
    config.write_text(to_toml({
        "harvester_id": "plan-test", "state": str(tmp_path / "state.db"), "log_dir": str(tmp_path / "logs"),
        "work_dir": str(tmp_path / "work"),
        "panda": {"url": sim.url, "proxy": str(pki.proxy), "ca": str(pki.ca_file), "allow_test_pilot": True,
                  "stats_refresh": 0},
        "queues": {name: {"backend": "local", "pilot": "true", **q} for name, q in queues.items()}}))
    new_state(tmp_path / "state.db")
    fill(f"sqlite:///{tmp_path / 'state.db'}")
    sim.add_jobs("LOCAL_PUSH", 7)
    sim.refresh_job_counts()
    code, text = run_in_terminal(["--config", str(config), "plan"])
    assert code == 0, text
    lines = assert_fits(text)
    trace = " ".join(line.strip() for line in lines if line.startswith("  "))   # wrapped at words
    assert "waiting jobs: fetched jobs without a worker: SCORE=0; at PanDA: activated=7" in trace, text
    assert_rows(lines, [("LOCAL_PULL_WITH_A_LONGER_NAME", "SCORE", 1), ("LOCAL_PUSH", "SCORE", 0)])


def test_submit_wait_of_a_thousand_workers_at_80_columns(tmp_path, sim, pki):
    config = tmp_path / "config.toml"
    config.write_text(to_toml({
        "harvester_id": f"wait-{os.getpid()}", "state": str(tmp_path / "state.db"), "log_dir": str(tmp_path / "logs"),
        "work_dir": str(tmp_path / "work"), "log_url": "http://127.0.0.1:8080/logs",
        "panda": {"url": sim.url, "proxy": str(pki.proxy), "ca": str(pki.ca_file), "allow_test_pilot": True},
        "queues": {"LOCAL_TEST": {"mode": "pull", "backend": "local", "pilot": "true", "max_workers": 1000}}}))
    new_state(tmp_path / "state.db")
    code, text = run_in_terminal(["--config", str(config), "submit", "--queue", "LOCAL_TEST", "--count", "1000",
                                  "--wait", "--interval", "1"], timeout=300)
    assert code == 0, text[-3000:]
    lines = assert_fits(text)
    # the progress moves per worker (the local backend starts them one by one), not per batch of 100
    shown = [int(m) for m in re.findall(r"submitting +\S+ +(\d+)/1000", ANSI.sub("", text))]
    assert shown and any(n % 100 for n in shown), shown
    # one line rewritten in place: carriage returns, no new line per round, the last counts kept on screen
    assert re.search(r"\r1000 workers: (\d+ queued, )?\d+ running, \d+ finished, 0 failed", ANSI.sub("", text))
    assert "1000 workers: 0 running, 1000 finished, 0 failed\n" in "\n".join(lines)
    assert len([line for line in lines if "1000 workers:" in line]) == 1
    with Store(f"sqlite:///{tmp_path / 'state.db'}").reading() as tx:
        ids = [r.worker_id for r in tx.execute(sql_select(workers.c.worker_id))]
    assert len(ids) == 1000
    assert_rows(lines, [(w, "LOCAL_TEST", "finished") for w in ids])


def test_no_color_and_pipes_are_plain_text(site):
    config, rows = site
    for args in (["workers", "--limit", "1000"], ["jobs"], ["status"], ["config", "keys", "panda"]):
        code, text = run_in_terminal(["--config", str(config), *args], env={"NO_COLOR": "1"})
        assert code == 0, text
        assert not ANSI.search(text) and not BOX.search(text), args
        assert_fits(text)   # still as wide as the terminal
        piped = run_piped(["--config", str(config), *args], env={"FORCE_COLOR": "1", "COLUMNS": "80"})
        assert piped.returncode == 0, piped.stderr
        assert not ANSI.search(piped.stdout) and not BOX.search(piped.stdout) and "…" not in piped.stdout, args
    piped = run_piped(["--config", str(config), "workers", "--limit", "1000"])
    failed = next(w for w in rows if w["status"] == "failed")
    diag = failed["diag"].replace("\n", " ").replace("\t", " ")   # one line, whole: nothing is cut in a pipe
    assert any(line.split()[:1] == [str(failed["worker_id"])]
               and re.search(rf"{re.escape(diag)} +{re.escape(failed['stdout_url'])}$", line)
               for line in piped.stdout.splitlines())


def test_wide_prints_every_column_whole(site):
    config, rows = site
    code, text = run_in_terminal(["--config", str(config), "workers", "--wide", "--limit", "5"])
    assert code == 0
    for w in sorted(rows, key=lambda w: -w["worker_id"])[:5]:
        assert w["stdout_url"] in text and w["computing_element"] in text   # full URLs as text, not OSC 8 links
    assert "\x1b]8;" not in text
    code, text = run_in_terminal(["--config", str(config), "status", "-w"])
    assert code == 0 and "ce503.cern.ch:9619" in text and "submitted/h" in text


def test_a_diag_cannot_reach_the_terminal_as_control_characters(tmp_path):
    config = site_config(tmp_path)
    fill(f"sqlite:///{tmp_path / 'state.db'}", n=3)
    with Store(f"sqlite:///{tmp_path / 'state.db'}").transaction() as tx:
        tx.execute(workers.update().values(status="failed", diag="evil\x1b]0;pwned\x07\x1b[2J\nsecond line"))
    for args in (["workers"], ["workers", "100001"], ["status"]):
        code, text = run_in_terminal(["--config", str(config), *args], env={"NO_COLOR": "1"})
        assert code == 0 and "\x1b" not in text and "\x07" not in text, args
        assert "evil ]0;pwned" in text


# -- one worker or job at a time -----------------------------------------------------------------------

def test_one_worker_at_a_time_every_field_and_urls_in_full(site):
    config, rows = site
    failed = next(w for w in rows if w["status"] == "failed")
    running = next(w for w in rows if w["status"] == "running")
    code, text = run_in_terminal(["--config", str(config), "workers", str(failed["worker_id"]),
                                  str(running["worker_id"])])
    assert code == 0, text
    lines = screen_lines(text)
    titles = [line for line in lines if line.startswith("worker ")]
    assert titles == [f"worker {failed['worker_id']}  {failed['queue']}  failed",
                      f"worker {running['worker_id']}  {running['queue']}  running"]   # in the order asked
    for label, value in (("batch id", failed["batch_id"]), ("CE", failed["computing_element"]),
                         ("native status", "held (exit code 1)"), ("stdout", failed["stdout_url"]),
                         ("stderr", failed["stderr_url"]), ("batch log", failed["batch_log_url"]),
                         ("log dir", failed["log_dir"]), ("submission host", "aipanda024.cern.ch")):
        assert any(re.fullmatch(rf"  {re.escape(label)} +{re.escape(value)}", line) for line in lines), (label, text)
    assert re.search(r"  submitted +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d", text)
    diag = " ".join(line.strip() for line in lines if line.startswith(("  diag", " " * 19)))
    assert failed["diag"].replace("\n", " ").replace("\t", " ").split()[:6] == diag.split()[1:7]
    missing = run_piped(["--config", str(config), "workers", str(failed["worker_id"]), "42"])
    assert missing.returncode == 1 and "worker 42: not in the state database" in missing.stderr


def test_workers_by_batch_id_and_jobs_by_panda_id(site):
    config, rows = site
    condor = next(w for w in rows if w["backend"] == "htcondor" and w["batch_id"])
    cluster = condor["batch_id"].split(".")[0]
    found = json.loads(run_piped(["--config", str(config), "--json", "workers", "--batch-id", cluster]).stdout)
    assert {w["worker_id"] for w in found["workers"]} == {w["worker_id"] for w in rows
                                                         if (w["batch_id"] or "").startswith(cluster + ".")}
    exact = json.loads(run_piped(["--config", str(config), "--json", "workers", "--batch-id",
                                  condor["batch_id"]]).stdout)
    assert [w["worker_id"] for w in exact["workers"]] == [condor["worker_id"]]
    push = [w for w in rows if w["queue"] == "NDGF-T1_PUSH"][:2]
    ids = [str(6_400_000_000 + w["worker_id"]) for w in push]
    listed = json.loads(run_piped(["--config", str(config), "--json", "jobs", "--panda-id", ids[0], "--panda-id",
                                   ids[1]]).stdout)
    assert sorted(str(j["panda_id"]) for j in listed["jobs"]) == sorted(ids)
    code, text = run_in_terminal(["--config", str(config), "jobs", ids[0]])
    assert code == 0, text
    lines = screen_lines(text)
    assert lines[0].startswith(f"job {ids[0]}  NDGF-T1_PUSH  ")
    assert f"  job name         mc23.simul.{ids[0]}" in lines and "  task             37000123" in lines
    assert any(line.startswith(f"  workers          {push[0]['worker_id']} ") for line in lines)
    assert push[0]["stdout_url"] in text and "a secret" not in text
    data = json.loads(run_piped(["--config", str(config), "--json", "jobs", ids[0]]).stdout)
    assert "job_json" not in data["jobs"][0] and "a secret" not in json.dumps(data)   # pilotSecrets stay put


# -- what runs now, and why the last run failed ------------------------------------------------------------

def test_status_shows_what_runs_now_and_one_longer_than_its_interval_stands_out(tmp_path):
    config = site_config(tmp_path)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store(url)
    now = time.time()
    monitoring.record_run(store, "cycle", "other-host.cern.ch", now - 360, now - 330, 0, 3)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        monitoring.start_run(store, "cycle", "other-host.cern.ch", 4242, now - 300)   # every 60 s, running 300 s
        monitoring.start_run(store, "sweep", os.uname().nodename, sleeper.pid, time.time())   # as the run itself does
        data = json.loads(run_piped(["--config", str(config), "--json", "status"]).stdout)
        running = {r["command"]: r for r in data["running"]}
        assert running["cycle"]["host"] == "other-host.cern.ch" and running["cycle"]["pid"] == 4242
        assert running["cycle"]["overdue"] and running["cycle"]["interval_seconds"] == 60
        assert running["sweep"]["pid"] == sleeper.pid and not running["sweep"]["overdue"]
        assert running["sweep"]["gone"] is False and running["cycle"]["gone"] is None   # another host's: unknown
        code, text = run_in_terminal(["--config", str(config), "status"])
        assert code == 0, text
        lines = assert_fits(text)
        cycle = next(line for line in lines if line.startswith("cycle ") and "4242" in line)
        assert re.search(r"cycle +other-host +4242 +\d\d:\d\d:\d\d +0?5:0\d +60s +overdue$", cycle), cycle
        assert "\x1b[31moverdue\x1b[0m" in text   # it stands out
        sleeper.kill()
        sleeper.wait()
        data = json.loads(run_piped(["--config", str(config), "--json", "status"]).stdout)
        assert next(r for r in data["running"] if r["command"] == "sweep")["gone"] is True
    finally:
        sleeper.kill()


def test_a_recorded_run_is_running_while_it_runs_and_keeps_its_failure(tmp_path, monkeypatch):
    """Through the command wrapper: a run shows in running_commands while it runs; its end removes it (and a
    row of this host whose process is gone), and a failed run keeps the first line of why."""
    from harvester_cli.instance import Instance
    from harvester_cli.steps import monitor

    config = site_config(tmp_path)
    from harvester_cli import config as config_module

    instance = Instance(config_module.load(config))
    host = instance.host
    dead = subprocess.Popen(["true"])
    dead.wait()
    monitoring.start_run(instance.store, "poll", host, dead.pid, time.time() - 100)   # killed outright earlier
    run_id = monitor.command_started(instance, "cycle", time.time())
    seen = views.running_commands(instance.store)
    assert {(r["command"], r["pid"]) for r in seen} == {("poll", dead.pid), ("cycle", os.getpid())}
    monitor.after_command(instance, [monitor.Run("cycle", time.time() - 1, time.time(), 1, 0,
                                                 "fetch-jobs: queue Q: not registered at PanDA: heartbeat failed\n"
                                                 "Traceback (most recent call last): ..."),
                                     monitor.Run("fetch-jobs", time.time() - 1, time.time(), 1, 0,
                                                 "queue Q: not registered at PanDA")], run_id)
    assert views.running_commands(instance.store) == []
    runs = {r["command"]: r for r in views.command_runs(instance.store)}
    assert runs["cycle"]["last_failure"] == "fetch-jobs: queue Q: not registered at PanDA: heartbeat failed"
    assert runs["cycle"]["last_failure_exit"] == 1 and runs["fetch-jobs"]["last_failure"].startswith("queue Q")
    monitor.after_command(instance, [monitor.Run("cycle", time.time() - 1, time.time(), 0, 0)])
    runs = {r["command"]: r for r in views.command_runs(instance.store)}
    assert runs["cycle"]["last_exit"] == 0 and runs["cycle"]["last_failure"].startswith("fetch-jobs")   # kept


def test_a_failing_cron_command_leaves_its_first_error_line_for_status(tmp_path):
    config = site_config(tmp_path)
    result = run_piped(["--config", str(config), "-q", "sweep"])   # the htcondor backend cannot be reached
    data = json.loads(run_piped(["--config", str(config), "--json", "status"]).stdout)
    sweep = next(r for r in data["commands"] if r["command"] == "sweep")
    assert sweep["last_exit"] == result.returncode
    if result.returncode:
        assert sweep["last_failure"] and sweep["last_failure"] in result.stderr
    assert data["running"] == []   # its run ended


def test_status_never_shows_a_negative_median_queue_time(tmp_path):
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance
    from harvester_cli.steps.monitor import summary

    config = site_config(tmp_path)
    instance = Instance(config_module.load(config))
    now = time.time()
    with instance.store.transaction() as tx:   # recorded before this fix: the submit time after the batch ended
        tx.execute(workers.insert(), [{
            "worker_id": i, "queue": "BNL_PROD_MCORE", "backend": "htcondor", "mode": "pull", "status": "running",
            "created": now - 100, "modified": now, "submit_time": now - 10, "start_time": now - 40} for i in (1, 2, 3)])
    stats = summary(instance, ["BNL_PROD_MCORE"], 3600)["window_stats"][0]
    assert stats["median_queued_seconds"] == 0


def test_submit_time_is_taken_before_the_backend_call(harness, monkeypatch):
    """A batch of workers may start before the backend call returns (a slow schedd, 100 at a time): their
    submit time is when they went to the backend, never after they started."""
    from harvester_cli import config as config_module
    from harvester_cli.backends.local import LocalBackend
    from harvester_cli.instance import Instance
    from harvester_cli.steps.submit import submit

    harness.write_config({"Q": {"mode": "pull", "pilot": "sleep 5"}})
    instance = Instance(config_module.load(harness.tmp_path / "config.toml"))
    called = []
    original = LocalBackend.submit

    def slow(self, specs):
        called.append(time.time())
        results = original(self, specs)
        time.sleep(0.5)   # the batch's workers run already
        return results

    monkeypatch.setattr(LocalBackend, "submit", slow)
    run = submit(instance, [instance.config.queues["Q"]], count=3)
    assert len(run.queues[0].submitted) == 3
    with instance.store.reading() as tx:
        times = [r.submit_time for r in tx.execute(sql_select(workers.c.submit_time))]
    assert all(t <= called[0] for t in times), (times, called)
    instance.close()


def test_submission_progress_moves_per_worker(harness):
    from harvester_cli import config as config_module
    from harvester_cli.instance import Instance
    from harvester_cli.steps.submit import submit

    harness.write_config({"Q": {"mode": "pull", "pilot": "true"}})
    instance = Instance(config_module.load(harness.tmp_path / "config.toml"))
    steps = []
    run = submit(instance, [instance.config.queues["Q"]], count=5, progress=lambda n, expected=0: steps.append(
        (n, expected)))
    assert len(run.queues[0].submitted) == 5
    assert steps[0] == (0, 5) and [n for n, _ in steps[1:] if n] == [1] * 5, steps
    instance.close()


# -- the smaller points --------------------------------------------------------------------------------------

def test_serve_logs_answers_the_root_with_the_status_page(tmp_path):
    from harvester_cli.site.logserver import LogServer

    (tmp_path / "workers").mkdir()
    pages = {"/status": ("text/html; charset=utf-8", lambda: b"<html>status</html>"),
             "/metrics": ("text/plain", lambda: b"m 1\n")}

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    server = LogServer(tmp_path, port=0, prefix="/logs/", pages=pages).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            opener.open(f"http://127.0.0.1:{server.address[1]}/", timeout=10)
        assert answer.value.code == 302 and answer.value.headers["Location"] == "/status"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}/", timeout=10) as followed:
            assert followed.read() == b"<html>status</html>"
    finally:
        server.stop()
    server = LogServer(tmp_path, port=0, prefix="/", pages=pages).start()   # the tree at the root: its listing
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}/", timeout=10) as listing:
            body = listing.read().decode()
        assert 'href="workers/"' in body and 'href="/status"' in body and 'href="/metrics"' in body
    finally:
        server.stop()


def test_renew_proxy_check_reports_a_plain_panda_proxy(tmp_path, pki):
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"harvester_id": "h", "state": str(tmp_path / "state.db"),
                               "panda": {"url": "https://127.0.0.1:9/api/v1", "proxy": str(pki.proxy)},
                               "queues": {"Q": {"mode": "pull", "backend": "local", "pilot": "true"}}}))
    result = run_piped(["--config", str(config), "--json", "renew-proxy", "--check"])
    data = json.loads(result.stdout)
    (panda,) = data["profiles"]
    assert panda["profile"] == "panda" and panda["file"] == str(pki.proxy) and panda["kind"] == "proxy"
    assert panda["time_left"] > 0 and panda["identity"]
    assert result.returncode == (0 if panda["action"] == "ok" else 1)
    missing = tmp_path / "gone.pem"
    config.write_text(config.read_text().replace(str(pki.proxy), str(missing)))
    missing.write_text("x")
    missing.chmod(0o600)
    result = run_piped(["--config", str(config), "--json", "renew-proxy", "--check", "--profile", "panda"])
    (panda,) = json.loads(result.stdout)["profiles"]
    assert result.returncode == 1 and panda["action"] == "failed" and panda["reason"]
    plain = run_piped(["--config", str(config), "renew-proxy"])
    assert plain.returncode == 0 and "--check reports the [panda] proxy too" in plain.stdout


def test_db_upgrade_sql_ends_with_a_newline(tmp_path):
    for state in (tmp_path / "new.db", Path(new_state(tmp_path / "current.db").removeprefix("sqlite:///"))):
        result = run_piped(["--state", str(state), "db", "upgrade", "--sql"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith("\n") and not result.stdout.endswith("\n\n\n")


def test_the_simulator_command_line(tmp_path):
    def sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harvester_cli.panda.sim", *args], capture_output=True,
                              text=True, timeout=timeout)

    help_text = " ".join(sim("--help").stdout.split())
    assert "default: 25443" in help_text and "0: a free one" in help_text
    process = subprocess.Popen([sys.executable, "-m", "harvester_cli.panda.sim", "--dir", str(tmp_path / "pki"),
                                "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        port = int(re.search(r"https://127\.0\.0\.1:(\d+)/api/v1", first).group(1))
        assert port != 25443
        taken = sim("--dir", str(tmp_path / "pki"), "--port", str(port))
        assert taken.returncode == 2 and "Traceback" not in taken.stderr
        assert taken.stderr.strip().count("\n") == 0 and "in use" in taken.stderr and "--port 0" in taken.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_help_at_80_columns_splits_no_word_and_offers_only_what_a_command_uses(tmp_path):
    from harvester_cli import cli

    env = {"COLUMNS": "80", "XDG_CONFIG_HOME": str(tmp_path)}
    targets = [[name] for name in cli.COMMANDS] + [["config", "keys"], ["config", "example"], ["db", "upgrade"],
                                                    ["db", "history"]]
    for args in targets:
        text = run_piped([*args, "--help"], env=env).stdout
        assert all(len(line) <= 80 for line in text.splitlines()), (args, [x for x in text.splitlines() if len(x) > 80])
        assert not re.search(r"[a-z]-\n", text), args   # harvester-|cli split at the hyphen
    example = run_piped(["config", "example", "--help"], env=env).stdout
    assert "--state" not in example and "--config" not in example and "--json" in example
    for args in (["demo"], ["db", "history"], ["config", "keys"]):
        assert "--state" not in run_piped([*args, "--help"], env=env).stdout, args
    assert "--state" in run_piped(["db", "upgrade", "--help"], env=env).stdout
    wrong = run_piped(["config", "example", "--state", "x.db"], env=env)
    assert wrong.returncode == 2 and "--state" in wrong.stderr
    kill = run_piped(["kill-workers", "--help"], env=env).stdout   # too long for 80: continued, still one command
    assert '--reason \\\n        "bad node" --now' in kill


# -- the renderer ------------------------------------------------------------------------------------------

def test_short_names_tell_the_ces_apart():
    from harvester_cli.output import short_names

    names = short_names(["ce503.cern.ch:9619", "ce504.cern.ch:9619", "https://arc01.ndgf.org:443/arex",
                         "ce01.site-a.org", "ce01.site-b.org", "10.0.0.1:9620", "localhost", None])
    assert names == {"ce503.cern.ch:9619": "ce503", "ce504.cern.ch:9619": "ce504",
                     "https://arc01.ndgf.org:443/arex": "arc01", "ce01.site-a.org": "ce01.site-a",
                     "ce01.site-b.org": "ce01.site-b", "10.0.0.1:9620": "10.0.0.1:9620", "localhost": "localhost"}


def test_cells_are_cut_at_words_in_the_middle_or_not_at_all():
    from harvester_cli.output import layout, text_of
    from harvester_cli.output.terminal import cut

    assert cut("held: the job ran out of memory", 16, "word") == "held: the job…"
    assert cut("UKI-NORTHGRID-MAN-HEP_UCORE", 15, "middle") == "UKI-NOR…P_UCORE"
    assert text_of("line one\nline\ttwo\x1b[31m") == "line one line two [31m"
    from harvester_cli.output import Column, number, state

    columns = [number("id"), Column("queue", min=12, cut="middle"), state("state"),
               Column("batch id", drop=1), Column("diag", fill=True, min=10)]
    cells = [["123456", "A_QUEUE_NAME_OF_20CH", "running", "1234567.0", "x " * 60]]
    shown, widths = layout(columns, cells, 60)
    assert shown == [0, 1, 2, 3, 4] and sum(widths.values()) + 2 * 4 <= 60 and widths[1] == 20
    shown, widths = layout(columns, cells, 50)   # the batch id goes before the queue is cut
    assert shown == [0, 1, 2, 4] and widths[1] == 20 and sum(widths.values()) + 2 * 3 == 50


def test_a_table_in_a_terminal_fits_and_in_a_pipe_is_whole(monkeypatch, capsys):
    from harvester_cli.output import Output

    url = "http://my-host.example.org:8080/logs/workers/2026-12-02/A_QUEUE_WITH_A_LONG_NAME/123456/pilot.out"
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(Output, "terminal", property(lambda self: True))
    out = Output()
    out.table("workers", ["id", "queue", "status", "diag", "stdout"],
              [(123456, "A_QUEUE_WITH_A_LONG_NAME", "running", "held: a diag " * 5, url)])
    out.emit({})
    text = ANSI.sub("", capsys.readouterr().out)
    assert all(len(line) <= 80 for line in text.splitlines()) and not BOX.search(text)
    assert [line.split()[0] for line in text.splitlines() if line] == ["workers", "id", "123456"], text   # one line
    assert re.search(r"^123456 .* running  held: a diag", text, re.M), text
    monkeypatch.setattr(Output, "terminal", property(lambda self: False))
    out.emit({})
    assert url in capsys.readouterr().out


def test_the_new_schema_revision_is_there(tmp_path):
    from harvester_cli.state.schema import running_commands

    url = new_state(tmp_path / "state.db")
    store = Store(url)
    run_id = monitoring.start_run(store, "poll", "h", 1, 10.0)
    with store.reading() as tx:
        assert tx.execute(sql_select(running_commands)).one().run_id == run_id
