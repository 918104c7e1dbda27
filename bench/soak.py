"""The soak: the whole chain at a central node's rate, on the real peers, for half an hour.

    python -m bench soak --minutes 30      # the soak (about 45 minutes with the loading and the drain)
    python -m bench soak --minutes 2       # a smoke run
    python -m bench soak --minutes 2 --live 10000   # a smoke run with fewer live workers (quicker to load)

Run it as root on a quiet machine; on a shared one, under `flock /tmp/harvester-peers.lock` (the real daemons).

What runs, each in processes of its own:
- the cron chain as a site runs it: `harvester-cli-cron --json cycle` started every minute (the wrapper skips a
  minute whose previous cycle still runs, as under cron), and `harvester-cli-cron clean-logs` every 10 minutes
  (a site runs it nightly); renew-proxy is left out (no proxy profile here, so it would call nobody);
- PostgreSQL (the machine's cluster, a database of the soak's own) as the state database;
- a real HTCondor schedd (bench/soak_pool.py: the minicondor chroot with the soak's own configuration);
- the PanDA simulator (bench/soak_panda.py) with a steady flow of activated jobs.

Three queues on the schedd:
- SOAK_IDLE (pull): the live workers, loaded before the window by `harvester-cli submit --count` at full speed
  (the real path: the rows, the per-worker files, Schedd.submit); their pilots wait idle for the whole soak, as
  queued pilots do at a full site (their requirements match no slot, and their priority is below the flow's: the
  schedd offers the negotiator its jobs by priority and stops at the first one no slot takes). Every cycle polls
  all of them.
- SOAK_PULL (pull) and SOAK_PUSH (push): the flow, half the rate each (max_new_workers_per_cycle), pilots that
  run at once in the pool's slots: the pull pilot exits, the push pilot writes the heartbeat.json of a finished
  job. The simulator adds push jobs at the rate, and keeps the pull queue's activated jobs level (its pilots
  would take them; here the simulator takes them itself, as the pilots never call PanDA).

Retention for the soak, in minutes: workers and jobs 5 ([sweep] worker_retention, job_retention = 300 s), the
worker count history 60 (its least), worker and submit-file logs 10 ([log_retention.*] max_age = 600 s).

Per window (5 minutes; 1 for runs under 10 minutes) the table shows what cycles started in it did, PanDA's records
and the samples taken at its end. CPU seconds are those of harvester-cli's own process trees (the cron wrapper and
the command, from wait4's rusage through GNU time, which also gives each run's peak RSS); the schedd's pool,
PostgreSQL (the whole cluster) and the simulator are shown apart. After the window the feed stops and the chain
runs until every push job PanDA handed out is final (at most --drain minutes); then jobs lost or doubled are
counted from the simulator's own records.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench import soak_pool

REPO = Path(__file__).resolve().parents[1]
TIME = shutil.which("time") or "/usr/bin/time"   # GNU time: each run's peak RSS
HARVESTER_ID = "soak"
IDLE, PULL, PUSH = "SOAK_IDLE", "SOAK_PULL", "SOAK_PUSH"
BULK = 100                     # [panda] bulk_size (the default)
RETENTION = 300                # workers and jobs, seconds
LOG_RETENTION = 600            # worker and submit-file logs, seconds
CLEAN_LOGS_EVERY = 10          # minutes
PRELOAD_CHUNK = 20_000         # workers per `submit --count` run while loading
MIN_FREE_GB = 3.0              # the soak stops early below this much free disk
BYTES_PER_LIVE_WORKER = 40_000  # files and directories per worker, the database and the pool's queue


# -- processes ------------------------------------------------------------------------------

@dataclass
class Run:
    command: str
    started: float
    ended: float | None = None
    cpu: float = 0.0           # user + system of the process tree
    rss_mb: float = 0.0        # peak RSS of its largest process
    exit: int | None = None
    result: dict | None = None  # the command's --json answer (from the cron log)


class Launcher:
    """Starts commands through GNU time in threads of their own and keeps a Run per start."""

    def __init__(self, env: dict, work: Path):
        self.env, self.work = env, work
        self.runs: list[Run] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.stderr = open(work / "commands.stderr", "ab")

    def start(self, command: str, argv: list[str]) -> Run:
        run = Run(command, time.time())
        with self.lock:
            self.runs.append(run)
        thread = threading.Thread(target=self._run, args=(run, argv), daemon=True)
        thread.start()
        self.threads.append(thread)
        return run

    def run(self, command: str, argv: list[str]) -> Run:
        run = self.start(command, argv)
        self.threads[-1].join()
        return run

    def _run(self, run: Run, argv: list[str]) -> None:
        # Through GNU time: a child forked from this (large) process would count its pages in the child's
        # peak RSS until the exec; time's child is forked from a small process.
        with tempfile.NamedTemporaryFile("r", dir=self.work, prefix="peak-") as peak:
            process = subprocess.Popen([TIME, "-f", "%M", "-o", peak.name, *argv], env=self.env, cwd=REPO,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            lines = peak.read().strip().splitlines()
        run.rss_mb = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else 0.0
        run.cpu = usage.ru_utime + usage.ru_stime
        run.exit = process.returncode
        run.ended = time.time()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def cron(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from harvester_cli.cron import main; main()", "--config", str(config), *args]


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "harvester_cli", "--config", str(config), *args]


# -- what the cron log says ----------------------------------------------------------------

HEADER = re.compile(r"^--- (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) harvester-cli ")
EXIT = re.compile(r"^--- exit (-?\d+) after ([\d.]+) s$")


def cron_sections(text: str) -> list[dict]:
    """The completed runs in a harvester-cli-cron log: {"started", "exit", "seconds", "result"} each, the result
    being the command's JSON answer (None if it printed none)."""
    sections, current = [], None
    for line in text.splitlines():
        header = HEADER.match(line)
        if header:
            started = datetime.strptime(header.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            current = {"started": started.timestamp(), "lines": []}
            continue
        done = EXIT.match(line)
        if done and current is not None:
            body = current.pop("lines")
            result = None
            try:
                first = max(i for i, text in enumerate(body) if text == "{")
                last = next(i for i in range(len(body) - 1, first, -1) if body[i] == "}")
                result = json.loads("\n".join(body[first:last + 1]))
            except (ValueError, StopIteration):
                pass
            sections.append({**current, "exit": int(done.group(1)), "seconds": float(done.group(2)),
                             "result": result})
            current = None
        elif current is not None:
            current["lines"].append(line)
    return sections


def attach_results(runs: list[Run], log: Path) -> None:
    """Give each run of the log's command its JSON answer, by start time (the header has whole seconds)."""
    try:
        sections = cron_sections(log.read_text(errors="replace"))
    except OSError:
        return
    for run in runs:
        if run.result is None:
            near = [s for s in sections if abs(s["started"] - run.started) <= 2.5]
            if near:
                run.result = min(near, key=lambda s: abs(s["started"] - run.started))["result"]


# What each step's `items` counts (steps/cycle.py); poll's summary adds how many workers changed.
STEP_ITEMS = {"fetch-jobs": "stored", "submit": "submitted", "poll": "polled", "propagate": "sent",
              "sweep": "killed_or_cleaned"}
CHANGED = re.compile(r"(\d+) changed")


def cycle_numbers(result: dict | None) -> dict:
    """What one cycle did, from its steps' items (and poll's summary), and each step's wall time."""
    out: dict = {"step_seconds": {}, "partial": []}
    for step in (result or {}).get("steps", []):
        name = step["step"]
        if name in STEP_ITEMS:
            out[STEP_ITEMS[name]] = int(step.get("items") or 0)
        if name == "poll" and (found := CHANGED.search(step.get("summary", ""))):
            out["changed"] = int(found.group(1))
        out["step_seconds"][name] = step["ended"] - step["started"]
        if step.get("partial"):
            out["partial"].append(f"{name}: {'; '.join(step.get('problems') or [])[:200]}")
    return out


# -- CPU of the peers -----------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its descendants, the children they reaped included (cutime, cstime)."""
    total, frontier, seen = 0.0, [root], set()
    while frontier:
        pid = frontier.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / TICK
            frontier += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK, sum(values) / TICK


# -- PostgreSQL -----------------------------------------------------------------------------

class Postgres:
    """The machine's PostgreSQL cluster (started if it is not), a role and a database of the soak's own."""

    ROLE = "harvester_cli_soak"

    def __init__(self):
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres")) if Path("/usr/lib/postgresql").exists() else []
        if not versions or not shutil.which("pg_ctlcluster"):
            raise SystemExit("soak: PostgreSQL is not installed (apt-get install postgresql)")
        self.version = versions[-1].parent.parent.name
        subprocess.run(["pg_ctlcluster", self.version, "main", "start"], capture_output=True)
        self.name = f"soak_{uuid.uuid4().hex[:8]}"
        self._psql(f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{self.ROLE}') THEN "
                   f"CREATE ROLE {self.ROLE} LOGIN PASSWORD '{self.ROLE}'; END IF; END$$")
        self._psql(f"CREATE DATABASE {self.name} OWNER {self.ROLE}")
        self.url = f"postgresql+psycopg://{self.ROLE}:{self.ROLE}@127.0.0.1/{self.name}"
        self.admin = None

    def _psql(self, sql: str) -> None:
        result = subprocess.run(["su", "postgres", "-c", f"psql -qc {shlex_quote(sql)}"], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"soak: psql failed: {sql}: {result.stderr.strip()}")

    def connect(self):
        import psycopg

        return psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def postmaster(self) -> int | None:
        pidfile = Path(f"/var/lib/postgresql/{self.version}/main/postmaster.pid")
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def drop(self) -> None:
        subprocess.run(["su", "postgres", "-c", f"psql -qc 'DROP DATABASE IF EXISTS {self.name} WITH (FORCE)'"],
                       capture_output=True)


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def database_sample(pg: Postgres) -> dict:
    with pg.connect() as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        outbox = dict(conn.execute("SELECT kind, count(*) FROM pending_reports GROUP BY kind").fetchall())
        statuses = dict(conn.execute("SELECT status, count(*) FROM workers GROUP BY status").fetchall())
        jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    live = sum(n for s, n in statuses.items() if s in ("pending", "submitted", "running", "idle"))
    return {"db_bytes": size, "outbox_jobs": outbox.get("job", 0), "outbox_workers": outbox.get("worker", 0),
            "live": live, "worker_rows": sum(statuses.values()), "job_rows": jobs}


# -- the simulator ------------------------------------------------------------------------------

class Panda:
    def __init__(self, pki_dir: Path, env: dict):
        self.process = subprocess.Popen([sys.executable, "-m", "bench.soak_panda", str(pki_dir), PUSH, PULL],
                                        env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.ask_line()["url"]
        self.lock = threading.Lock()

    def ask_line(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"soak: the PanDA simulator's process ended ({self.process.wait()})")
        return json.loads(line)

    def ask(self, **request) -> dict:
        with self.lock:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return self.ask_line()

    def stop(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


# -- the site ---------------------------------------------------------------------------------

PUSH_PILOT = ("echo '{{\"state\": \"finished\", \"exeErrorCode\": 0, \"pilotErrorCode\": 0, \"nEvents\": 100, "
              "\"cpuConsumptionTime\": 1, \"node\": \"soak-wn\"}}' > heartbeat.json")


def write_config(root: Path, pg_url: str, panda_url: str, pki, proxy_copy: Path, live: int, per_cycle: int) -> Path:
    # No slot has it: these pilots wait, as at a full site. A lower priority than the flow's: the schedd offers
    # the negotiator its jobs in priority order and stops at the first one no slot takes.
    waiting = {"requirements": "(TARGET.SoakSlotForQueuedPilots =?= True)", "priority": "-10"}
    options = {"schedd": soak_pool.SCHEDD, "collector": soak_pool.COLLECTOR, "job_owner": soak_pool.USER,
               "proxy": str(proxy_copy), "disk_mb_per_core": 10}
    common = {"backend": "htcondor", "memory_mb_per_core": 100, "walltime": 3600}
    queues = {
        IDLE: ({**common, "mode": "pull", "pilot": "true", "n_queue_limit_worker": live, "max_workers": 2 * live + 1000,
                "max_new_workers_per_cycle": 1, "empty_pilot_floor": 0}, waiting),
        PULL: ({**common, "mode": "pull", "pilot": "true", "n_queue_limit_worker": 10 * per_cycle,
                "max_workers": 20 * per_cycle, "max_new_workers_per_cycle": per_cycle, "empty_pilot_floor": 0}, {}),
        PUSH: ({**common, "mode": "push", "pilot": PUSH_PILOT, "n_queue_limit_worker": 10 * per_cycle,
                "n_queue_limit_job": 3 * per_cycle, "max_workers": 20 * per_cycle,
                "max_new_workers_per_cycle": per_cycle}, {}),
    }
    lines = [f"harvester_id = {json.dumps(HARVESTER_ID)}", f"state = {json.dumps(pg_url)}",
             f"log_dir = {json.dumps(str(root / 'logs'))}", f"work_dir = {json.dumps(str(root / 'work'))}",
             f"max_new_workers_per_run = {max(1000, 3 * per_cycle)}",
             "[panda]", f"url = {json.dumps(panda_url)}", f"proxy = {json.dumps(str(pki.proxy))}",
             f"ca = {json.dumps(str(pki.ca_file))}", f"bulk_size = {BULK}",
             "[sweep]", f"worker_retention = {RETENTION}", f"job_retention = {RETENTION}", "history_retention = 3600",
             "[log_retention.workers]", f"max_age = {LOG_RETENTION}",
             "[log_retention.submit_files]", f"max_age = {LOG_RETENTION}"]
    for name, (queue, extra) in queues.items():
        lines.append(f"[queues.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in queue.items()]
        lines.append(f"[queues.{name}.backend_options]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
        if extra:
            lines.append(f"[queues.{name}.backend_options.extra_attributes]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    config = root / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


# -- windows ------------------------------------------------------------------------------------

@dataclass
class Sample:
    at: float
    panda: dict
    database: dict
    pool_cpu: float
    pg_cpu: float
    sim_cpu: float
    machine: tuple[float, float]
    free_gb: float


@dataclass
class Window:
    label: str
    start: float
    end: float
    runs: list[Run] = field(default_factory=list)
    before: Sample | None = None
    after: Sample | None = None

    def cycles(self) -> list[Run]:
        return [r for r in self.runs if r.command == "cycle"]

    def done(self) -> list[Run]:
        """Cycles that ran (not skipped by the wrapper because the previous one still ran)."""
        return [r for r in self.cycles() if r.result is not None]

    def total(self, key: str) -> int:
        return sum(cycle_numbers(r.result).get(key, 0) for r in self.done())

    def panda(self, kind: str, key: str) -> int:
        return self.after.panda[kind].get(key, 0) - self.before.panda[kind].get(key, 0)

    def calls(self) -> int:
        return sum(self.after.panda["calls"].values()) - sum(self.before.panda["calls"].values())

    def seconds(self) -> float:
        return self.after.at - self.before.at

    def cpu(self) -> float:
        return sum(r.cpu for r in self.runs)

    def rss(self, command_name: str) -> float:
        """Peak RSS of the command's runs that did work: a cycle the wrapper skipped is the wrapper alone."""
        runs = self.done() if command_name == "cycle" else [r for r in self.runs if r.command == command_name]
        return max((r.rss_mb for r in runs), default=0.0)

    def longest(self) -> float:
        return max(((r.ended or r.started) - r.started for r in self.cycles()), default=0.0)

    def share(self, attr: str) -> float:
        return (getattr(self.after, attr) - getattr(self.before, attr)) / self.seconds()


def megabytes(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def table(windows: list[Window], idle_calls: int) -> str:
    header = ("window", "cycles (skipped)", "submitted", "polled", "finished", "job upd", "worker upd",
              "PanDA calls/cycle (bound)", "longest cycle", "our CPU s (cores)", "peak RSS cycle / clean-logs",
              "pg_database_size", "outbox jobs/workers", "live workers", "pool / PG / sim CPU (cores)")
    rows = []
    for w in windows:
        done = w.done()
        calls = w.calls()
        bound = bound_calls(len(done), idle_calls, w.panda("items", "job_updates"), w.panda("items", "worker_updates"))
        per_cycle = f"{calls / len(done):.1f} ({bound / len(done):.1f})" if done else f"{calls} (-)"
        rows.append((
            w.label, f"{len(done)} ({len(w.cycles()) - len(done)})", f"{w.total('submitted'):,}",
            f"{w.total('polled'):,}", f"{w.panda('items', 'workers_final'):,}", f"{w.panda('items', 'job_updates'):,}",
            f"{w.panda('items', 'worker_updates'):,}", per_cycle, f"{w.longest():.1f} s",
            f"{w.cpu():.1f} ({w.cpu() / w.seconds():.3f})", f"{w.rss('cycle'):.0f} / {w.rss('clean-logs'):.0f} MB",
            megabytes(w.after.database["db_bytes"]),
            f"{w.after.database['outbox_jobs']:,} / {w.after.database['outbox_workers']:,}",
            f"{w.after.database['live']:,}",
            f"{w.share('pool_cpu'):.3f} / {w.share('pg_cpu'):.3f} / {w.share('sim_cpu'):.3f}",
        ))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = ["| " + " | ".join(h.ljust(n) for h, n in zip(header, widths)) + " |",
           "|" + "|".join("-" * (n + 2) for n in widths) + "|"]
    out += ["| " + " | ".join(str(c).ljust(n) for c, n in zip(row, widths)) + " |" for row in rows]
    return "\n".join(out)


def bound_calls(cycles: int, idle_calls: int, job_updates: int, worker_updates: int) -> int:
    """What the cycles may call PanDA at most: a cycle with nothing changed calls `idle_calls` times; each
    changed item adds at most 1/BULK of a call, rounded up per cycle and kind (two more calls per cycle)."""
    return cycles * (idle_calls + 2) + math.ceil(job_updates / BULK) + math.ceil(worker_updates / BULK)


# -- the soak -----------------------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.per_cycle = max(1, round(args.rate / 60 / 2))   # workers per minute and flowing queue
        self.window_minutes = args.window or (5 if args.minutes >= 10 else 1)
        self.root = soak_pool.JOBDIR / f"soak-{os.getpid()}"
        self.notes: list[str] = []
        self.pg = self.pool = self.panda = None
        self.preload: dict = {}
        self.idle_calls = 0

    # -- set-up --------------------------------------------------------------------------------

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise SystemExit("soak: run as root (the HTCondor chroot, PostgreSQL's own account, the job owner)")
        try:
            import htcondor2  # noqa: F401
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise SystemExit(f"soak: {exc.name} is missing (pip install htcondor psycopg[binary])") from None
        soak_pool.JOBDIR.mkdir(exist_ok=True)
        free = shutil.disk_usage(soak_pool.JOBDIR).free / 1e9
        needed = MIN_FREE_GB + self.args.live * BYTES_PER_LIVE_WORKER / 1e9 + self.args.rate * 0.02 / 1e3
        if free < needed:
            raise SystemExit(f"soak: {free:.1f} GB free under {soak_pool.JOBDIR}, {needed:.1f} GB needed "
                             f"({self.args.live:,} live workers' files, the database and the pool's queue)")

    def setup(self) -> None:
        from harvester_cli.panda.sim import certs

        self.root.mkdir(mode=0o755)
        for sub in ("logs", "work"):
            (self.root / sub).mkdir(mode=0o755)
        self.pki = certs.create(self.root / "pki")
        job_files = self.root / "job-files"
        job_files.mkdir(mode=0o755)
        self.proxy_copy = job_files / "proxy.pem"
        shutil.copyfile(self.pki.proxy, self.proxy_copy)
        os.chown(self.proxy_copy, soak_pool.UID, soak_pool.UID)
        self.proxy_copy.chmod(0o600)
        # an installed package has its bytecode compiled: so must the checkout every run starts from
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "harvester_cli"), str(REPO / "bench")],
                       check=True, stdout=subprocess.DEVNULL)
        self.pool = soak_pool.Pool(self.root, self.args.slots)
        self.pool.keep_logs = self.args.keep
        self.pool.start()
        self.pg = Postgres()
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
                    "CONDOR_CONFIG": str(self.pool.client_config),
                    "XDG_CONFIG_HOME": str(self.root / "xdg-config"), "XDG_STATE_HOME": str(self.root / "xdg-state")}
        self.env.pop("HARVESTER_CLI_CONFIG", None)
        self.panda = Panda(self.root / "pki", self.env)
        self.config = write_config(self.root, self.pg.url, self.panda.url, self.pki, self.proxy_copy, self.args.live,
                                   self.per_cycle)
        self.env["HARVESTER_CLI_CONFIG"] = str(self.config)
        self.launcher = Launcher(self.env, self.root)
        upgrade = self.launcher.run("db upgrade", command(self.config, "db", "upgrade"))
        if upgrade.exit != 0:
            raise SystemExit(f"soak: db upgrade exited {upgrade.exit}; see {self.root / 'commands.stderr'}")
        say(f"pool: schedd {soak_pool.SCHEDD} with {self.args.slots} slots; MAX_JOBS_PER_OWNER="
            f"{self.pool.schedd_param('MAX_JOBS_PER_OWNER')}, MAX_JOBS_PER_SUBMISSION="
            f"{self.pool.schedd_param('MAX_JOBS_PER_SUBMISSION')}; state {self.pg.name}; work {self.root}")

    def load(self) -> None:
        """The live workers, submitted through harvester-cli at full speed, then a few cycles until a cycle
        finds nothing changed and the outbox is empty."""
        started = time.time()
        runs = []
        left = self.args.live
        while left > 0:
            count = min(PRELOAD_CHUNK, left)
            run = self.launcher.run("submit --count", command(self.config, "--queue", IDLE, "submit", "--count",
                                                              str(count)))
            runs.append(run)
            if run.exit not in (0,):
                raise SystemExit(f"soak: loading: submit --count {count} exited {run.exit}; see "
                                 f"{self.root / 'commands.stderr'}")
            left -= count
            say(f"loading: {self.args.live - left:,} of {self.args.live:,} workers submitted "
                f"({(self.args.live - left) / (time.time() - started):.0f}/s)")
        seconds = time.time() - started
        self.preload = {"workers": self.args.live, "seconds": seconds, "cpu": sum(r.cpu for r in runs),
                        "rss": max((r.rss_mb for r in runs), default=0.0), "runs": len(runs)}
        cycle_log = self.root / "logs" / "cron" / "cycle.log"
        for attempt in range(10):
            waiting = database_sample(self.pg)
            before = self.panda.ask(totals=True)
            run = self.launcher.run("cycle", cron(self.config, "--json", "cycle"))
            after = self.panda.ask(totals=True)
            attach_results([run], cycle_log)
            numbers = cycle_numbers(run.result)
            calls = sum(after["calls"].values()) - sum(before["calls"].values())
            say(f"settling: cycle {attempt + 1}: {run.ended - run.started:.1f} s, CPU {run.cpu:.1f} s, RSS "
                f"{run.rss_mb:.0f} MB, polled {numbers.get('polled', 0):,}, changed {numbers.get('changed', 0):,}, "
                f"{calls} PanDA calls")
            # settled: nothing waited in the outbox before this cycle, and it found nothing changed
            if numbers.get("changed", 1) == 0 and waiting["outbox_workers"] == 0 and waiting["outbox_jobs"] == 0:
                self.idle_calls = calls
                self.idle = {"seconds": run.ended - run.started, "cpu": run.cpu, "rss": run.rss_mb, "calls": calls,
                             "by_path": {p: n - before["calls"].get(p, 0) for p, n in after["calls"].items()
                                         if n != before["calls"].get(p, 0)}, "steps": numbers["step_seconds"]}
                return
        raise SystemExit("soak: the loaded workers did not settle in 10 cycles (see the cycle log)")

    # -- the window ------------------------------------------------------------------------------

    def sample(self) -> Sample:
        return Sample(time.time(), self.panda.ask(totals=True), database_sample(self.pg),
                      tree_cpu(self.pool.master.pid), tree_cpu(self.pg.postmaster() or 0),
                      tree_cpu(self.panda.process.pid), machine_cpu(),
                      shutil.disk_usage(soak_pool.JOBDIR).free / 1e9)

    def soak(self) -> tuple[list[Window], Window | None, dict]:
        """The timed window: a cycle every minute, clean-logs every CLEAN_LOGS_EVERY minutes, a sample at each
        window's end. A run belongs to the window it started in."""
        args = self.args
        self.panda.ask(feed={"push_per_minute": self.per_cycle, "pull_per_minute": self.per_cycle,
                             "pull_level": 30 * self.per_cycle})
        start = time.time()
        size = self.window_minutes
        windows = [Window(f"{i}-{min(args.minutes, i + size)} min", start + i * 60, start + min(args.minutes, i + size) * 60)
                   for i in range(0, args.minutes, size)]
        windows[0].before = self.sample()
        clean_at = min(CLEAN_LOGS_EVERY // 2, args.minutes // 2)
        shown = 0
        for minute in range(args.minutes):
            at = start + minute * 60
            wait_until(at)
            current = next(w for w in windows if w.start <= at + 1 < w.end)
            if current.before is None:   # the previous window ends here
                previous = windows[windows.index(current) - 1]
                previous.after = current.before = self.sample()
            current.runs.append(self.launcher.start("cycle", cron(self.config, "--json", "cycle")))
            if minute % CLEAN_LOGS_EVERY == clean_at:
                current.runs.append(self.launcher.start("clean-logs", cron(self.config, "clean-logs")))
            shown = self.show(windows, shown)
            free = shutil.disk_usage(soak_pool.JOBDIR).free / 1e9
            if free < MIN_FREE_GB:
                self.notes.append(f"stopped after {minute + 1} minutes: {free:.1f} GB free disk left")
                current.end = time.time()
                break
        wait_until(current.end)
        current.after = self.sample()
        windows = [w for w in windows if w.after is not None]
        self.panda.ask(stop_feed=True)
        drain = self.drain(current.after)
        self.launcher.wait(600)
        self.show(windows, shown)
        return windows, drain, self.panda.ask(audit=True)

    def show(self, windows: list[Window], shown: int) -> int:
        """Print the rows of the windows whose runs all ended (progress); returns how many are shown."""
        while shown < len(windows) and windows[shown].after is not None and \
                all(r.ended is not None for r in windows[shown].runs):
            attach_results(windows[shown].cycles(), self.root / "logs" / "cron" / "cycle.log")
            print(table([windows[shown]], self.idle_calls).splitlines()[-1], file=sys.stderr, flush=True)
            shown += 1
        return shown

    def drain(self, last: Sample) -> Window | None:
        """No new jobs: the chain goes on, a cycle a minute, until every push job PanDA handed out is final
        (at most --drain minutes)."""
        window = Window("drain", time.time(), time.time() + self.args.drain * 60, before=last)
        while time.time() < window.end:
            if self.panda.ask(audit=True)["lost"] == 0:
                break
            run = self.launcher.start("cycle", cron(self.config, "--json", "cycle"))
            window.runs.append(run)
            self.launcher.threads[-1].join()
            wait_until(run.started + 60)
        if not window.runs:
            return None
        window.after = self.sample()
        attach_results(window.cycles(), self.root / "logs" / "cron" / "cycle.log")
        return window

    # -- tear-down ------------------------------------------------------------------------------

    def teardown(self) -> None:
        if getattr(self, "launcher", None) is not None and not self.launcher.wait(300):
            say("some commands still run after 5 minutes; stopping the pool under them")
        if self.panda is not None:
            self.panda.stop()
        if self.pool is not None:
            self.pool.stop()
        if self.pg is not None:
            self.pg.drop()
        if self.args.keep:
            say(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- the report -----------------------------------------------------------------------------

    def report(self, windows: list[Window], drain: Window | None, audit: dict) -> str:
        args = self.args
        for window in windows + ([drain] if drain else []):
            attach_results(window.cycles(), self.root / "logs" / "cron" / "cycle.log")
        lines = [f"## harvester-cli soak: {args.minutes} min, {args.live:,} live workers loaded, {args.rate:,} new "
                 f"workers/hour asked, {args.slots} slots", ""]
        lines.append(table(windows + ([drain] if drain else []), self.idle_calls))
        done = [r for w in windows for r in w.done()]
        seconds = sum(w.seconds() for w in windows)
        cpu = sum(w.cpu() for w in windows)
        submitted = sum(w.total("submitted") for w in windows)
        rate = submitted * 3600 / seconds if seconds else 0
        longest = max((w.longest() for w in windows), default=0.0)
        calls = sum(w.calls() for w in windows)
        bound = sum(bound_calls(len(w.done()), self.idle_calls, w.panda("items", "job_updates"),
                                w.panda("items", "worker_updates")) for w in windows)
        rss = max((w.rss("cycle") for w in windows), default=0.0)
        clean_rss = max((w.rss("clean-logs") for w in windows), default=0.0)
        first, last = windows[0].rss("cycle"), windows[-1].rss("cycle")
        verdicts = [
            ("harvester-cli's CPU, all commands <= 0.25 core", f"{cpu / seconds:.3f} core ({cpu:.0f} s in {seconds:.0f} s)",
             cpu / seconds <= 0.25),
            ("every cycle <= 60 s", f"longest {longest:.1f} s", longest <= 60),
            ("PanDA calls per cycle <= nothing-changed calls + changed items / bulk size",
             f"{calls / max(1, len(done)):.1f} per cycle, bound {bound / max(1, len(done)):.1f} "
             f"(a cycle with {args.live:,} live workers and nothing changed: {self.idle_calls})", calls <= bound),
            ("peak RSS per command <= 150 MB", f"{rss:.0f} MB (cycle), clean-logs {clean_rss:.0f} MB",
             max(rss, clean_rss) <= 150),
            ("RSS of the last window within 5% of the first", f"{first:.0f} -> {last:.0f} MB (cycles that ran)",
             first > 0 and last > 0 and abs(last - first) <= 0.05 * first),
        ]
        ten = next((w for w in windows if w.end - windows[0].start >= 600 - 1), None)
        if ten is not None and ten is not windows[-1]:
            size10, size_end = ten.after.database["db_bytes"], windows[-1].after.database["db_bytes"]
            verdicts.append(("database size at the end within 10% of its size at 10 min",
                             f"{megabytes(size10)} -> {megabytes(size_end)} ({(size_end / size10 - 1) * 100:+.1f}%)",
                             abs(size_end - size10) <= 0.1 * size10))
        else:
            verdicts.append(("database size at the end within 10% of its size at 10 min",
                             f"run too short (end: {megabytes(windows[-1].after.database['db_bytes'])})", None))
        verdicts.append(("jobs lost / doubled (the simulator's records) = 0",
                         f"{audit['lost']} / {audit['doubled']} of {audit['given']:,} push jobs handed out "
                         f"({audit['finished']:,} finished, {audit['failed']:,} failed)",
                         audit["lost"] == 0 and audit["doubled"] == 0))
        verdicts.append(("rate: 20,000 new workers per hour", f"{rate:,.0f}/h submitted in the window", rate >= 0.95 * args.rate))
        lines += ["", "| goal | measured | |", "|---|---|---|"]
        lines += [f"| {g} | {m} | {'-' if ok is None else 'ok' if ok else 'MISSED'} |" for g, m, ok in verdicts]
        steps: dict[str, list[float]] = {}
        for run in done:
            for step, secs in cycle_numbers(run.result).get("step_seconds", {}).items():
                steps.setdefault(step, []).append(secs)
        machine = [(w.after.machine[0] - w.before.machine[0]) / w.seconds() for w in windows]
        pre = self.preload
        lines += ["",
                  f"- loading: {pre['workers']:,} workers by `harvester-cli --queue {IDLE} submit --count` "
                  f"({pre['runs']} runs of at most {PRELOAD_CHUNK:,}) in {pre['seconds']:.0f} s, "
                  f"{pre['workers'] / pre['seconds']:.0f} workers/s, {pre['cpu'] / pre['workers'] * 1000:.2f} ms CPU per "
                  f"worker, peak RSS {pre['rss']:.0f} MB; their pilots wait idle (requirements no slot has)",
                  f"- a cycle with nothing changed ({args.live:,} live workers): {self.idle['seconds']:.1f} s, CPU "
                  f"{self.idle['cpu']:.1f} s, RSS {self.idle['rss']:.0f} MB, {self.idle['calls']} PanDA calls "
                  f"({', '.join(f'{p} {n}' for p, n in sorted(self.idle['by_path'].items()))}); steps "
                  + ", ".join(f"{s} {v:.1f} s" for s, v in self.idle["steps"].items()),
                  "- where our time goes, mean wall seconds per cycle in the window: "
                  + ", ".join(f"{s} {sum(v) / len(v):.1f}" for s, v in steps.items()),
                  f"- our CPU per worker submitted at the rate reached: "
                  f"{cpu / submitted * 1000 if submitted else 0:.0f} ms (all commands' CPU / workers submitted)",
                  f"- the machine's CPU busy: {min(machine, default=0):.2f}-{max(machine, default=0):.2f} of 2 cores per "
                  f"window (other helpers' work included on a shared machine)",
                  f"- retention: workers and jobs {RETENTION // 60} min, worker count history 60 min, worker and "
                  f"submit-file logs {LOG_RETENTION // 60} min (clean-logs every {CLEAN_LOGS_EVERY} min)",
                  f"- flow: {PULL} and {PUSH} at {self.per_cycle}/cycle each; push jobs handed out "
                  f"{audit['given']:,}, activated left at the end {audit['activated_left']:,}"]
        partial = [p for w in windows for r in w.done() for p in cycle_numbers(r.result)["partial"]]
        if partial:
            lines.append(f"- partial steps: {len(partial)}, e.g. {partial[0]}")
        failed = [r for w in windows for r in w.runs if r.exit not in (0, None)]
        if failed:
            lines.append(f"- runs with a non-zero exit: {len(failed)} ({', '.join(sorted({f'{r.command} {r.exit}' for r in failed}))})")
        if audit["lost"] or audit["doubled"]:
            lines.append(f"- lost ids {audit['lost_ids']}, doubled ids {audit['doubled_ids']}")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def wait_until(at: float) -> None:
    while (left := at - time.time()) > 0:
        time.sleep(min(left, 1.0))


def say(text: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')}: {text}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30, help="the timed window (default 30)")
    parser.add_argument("--live", type=int, default=100_000, help="live workers loaded before it (default 100,000)")
    parser.add_argument("--rate", type=int, default=20_000, help="new workers per hour in it (default 20,000)")
    parser.add_argument("--slots", type=int, default=24, help="slots the short pilots run in (default 24)")
    parser.add_argument("--window", type=int, help="minutes per row (default 5; 1 under 10 minutes)")
    parser.add_argument("--drain", type=int, default=10, help="minutes at most to let the push jobs end (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configuration)")
    args = parser.parse_args(argv)
    soak = Soak(args)
    soak.preflight()
    try:
        soak.setup()
        soak.load()
        windows, drain, audit = soak.soak()
        report = soak.report(windows, drain, audit)
    finally:
        soak.teardown()
    print(report)
    return 0
