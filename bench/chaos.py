"""A chaos run: the cron chain on several hosts over PostgreSQL or MariaDB, with overlapping faults.

    python -m bench chaos --minutes 30 --seed 7                 # PostgreSQL and MariaDB, one after the other
    python -m bench chaos --minutes 5 --seed 7 --database mariadb --hosts 2

Each host is a network namespace (tests/support/multihost.py) running its own cron (bench/chaos_loop.py):
`cycle`, or the chain fetch-jobs, submit, poll, propagate, sweep, again and again, on push queues of the
`local` backend against the PanDA simulator, with a private PostgreSQL or MariaDB server (durable: an
answered COMMIT survives a crash of the server). Jobs keep arriving. Faults are drawn from the seed (every
kind once first, in an order drawn from the seed, then at random) and overlap:

- kill: kill -9 of whatever command a host runs at that moment;
- panda: one of the simulator's fault modes (5xx, hang, reset, garbage, truncated, refuse, lost_reply,
  partial_bulk) on a share of the calls for a while;
- db_restart_fast / db_restart_immediate: the database server stopped (PostgreSQL's fast or immediate
  shutdown; MariaDB's own shutdown or SIGKILL) under the running commands, down a while, started again;
  a COMMIT whose answer never came has an unknown outcome, which the commands must treat so;
- db_cut: one host's database traffic dropped by an nft port filter in its namespace, while PanDA (on
  the same address) stays reachable;
- log_full: the log volume (a small tmpfs holding every host's log_dir) filled to the last byte a while;
- clock_step: one command of one host runs under libfaketime with its wall clock moved (hours or a day,
  ahead or back); the machine's clock and the other commands are untouched.

Every fault is printed with the seed; the same --seed draws the same faults, hosts and moments again.
Per fault, the recovery time: from the fault's end until a moment where every state is consistent: the
database answers, every report queued before the fault's end has reached PanDA (the outbox is drained of
it), every worker and every acknowledged job changed before then has the same state at PanDA, and no row
is claimed by a process that no longer exists with a lease still running. The bound applies from the end
of the last fault that overlapped the recovery. At the end the faults stop and the hosts run until every
job is final, then the simulator's own records are checked: every job the hosts stored final once at
PanDA, no worker started twice (or by another host), no update lost or sent with a conflicting state.
Also bounded: the longest time no job reached its final state at PanDA while jobs waited (a queue no
host submits for any more is consistent, only still). Jobs PanDA sent that no host kept (a command killed
after PanDA answered, a reply lost) are counted apart: PanDA's own 'sent' timeout takes them back. Run as
root (namespaces, nft, tmpfs, the servers' own users), beside the tests (namespaces hk*, 10.81.0.0/24; the
multihost tests have 10.77, the Slurm node tests 10.78, the login-node tests 10.79, the chaos test 10.80).
Exit 1 when a check fails, a recovery misses its bound, or the work stood still too long.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, select  # noqa: E402

from harvester_cli import model  # noqa: E402
from harvester_cli.panda.sim import certs  # noqa: E402
from harvester_cli.panda.sim.server import FAULT_MODES, PandaSimulator  # noqa: E402
from harvester_cli.state.schema import commands, job_workers, jobs, locks, reports, workers  # noqa: E402
from tests.support import multihost  # noqa: E402
from tests.support.harness import kill_local_workers  # noqa: E402

KINDS = ("kill", "panda", "db_restart_fast", "db_restart_immediate", "db_cut", "log_full", "clock_step")
# The chaos run's own namespaces, bridge and servers, beside the multihost tests' (hc*, 10.77.0.0/24, ports
# 55432 and 53306): it may run while they do.
PREFIX, SUBNET = "hk", "10.81.0"
PG_PORT, MARIA_PORT = 55433, 53307
LEASE = 10            # lease_seconds: how long a dead host's claims block the others
RECONNECT = 8         # db_reconnect_seconds: a restart shorter than this is ridden through
# Recovery bound, from the end of the last fault in the way: a lease, the hosts' next rounds (each a few
# seconds, longer on a busy machine), and PanDA's retries.
BOUND = 60.0
STALL = 2 * BOUND    # the longest time the work may stand still (the faults in the way included)
CLOCK_STEPS = ("+1h", "-1h", "+10m", "-10m", "+1d", "-1d")
QUEUES = ("CHAOS_A", "CHAOS_B")
LIMITS = {"n_queue_limit_worker": 4, "max_workers": 6, "max_new_workers_per_cycle": 3}
CLAIMED_TABLES = (jobs, workers, reports, commands, locks)


@dataclass
class Fault:
    number: int
    kind: str
    at: float            # seconds after the start of the run
    duration: float      # how long it lasts (kill: a moment; clock_step: until its command ended)
    host: int            # the host it hits (1..hosts), where it hits one
    detail: str = ""     # PanDA fault mode and rate, clock offset
    started: float | None = None    # time.time() of the moments below
    ended: float | None = None
    recovered: float | None = None
    quiet: float | None = None      # the end of the last fault that overlapped the recovery
    note: str = ""

    def label(self) -> str:
        where = f" on h{self.host}" if self.kind in ("kill", "db_cut", "clock_step") else ""
        return f"#{self.number} {self.kind}{where}{f' ({self.detail})' if self.detail else ''}"


def schedule(seed: int, seconds: float, hosts: int, mean_gap: float = 6.0) -> list[Fault]:
    """The faults of a run, from its seed alone: every kind once first (in an order drawn from the seed),
    then kinds at random. Faults overlap, but not two on the same resource (the server, the log volume, a
    host's filter, a host's next command, PanDA's fault mode)."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    busy_until: dict[str, float] = {}
    faults: list[Fault] = []
    at = rng.uniform(2, 4)
    while at < seconds:
        kind = first.pop(0) if first else rng.choice(KINDS)
        host = rng.randint(1, hosts)
        detail, duration = "", 0.0
        if kind == "panda":
            mode = rng.choice(FAULT_MODES)
            detail, duration = f"{mode} {0.8 if mode == 'partial_bulk' else rng.choice((0.2, 0.4, 0.6)):.1f}", \
                rng.uniform(3, 15)
        elif kind.startswith("db_restart"):
            duration = rng.choice((rng.uniform(0.2, 2), rng.uniform(2, 6), rng.uniform(6, 15)))
        elif kind == "db_cut":
            duration = rng.uniform(2, 2 * LEASE)
        elif kind == "log_full":
            duration = rng.uniform(3, 15)
        elif kind == "clock_step":
            detail = rng.choice(CLOCK_STEPS)
        resource = {"db_restart_fast": "db", "db_restart_immediate": "db", "kill": None, "panda": "panda",
                    "log_full": "log", "db_cut": f"cut{host}", "clock_step": f"clock{host}"}[kind]
        start = max(at, busy_until.get(resource, 0.0)) if resource else at
        if resource:
            busy_until[resource] = start + duration + (30 if kind == "clock_step" else 1)
        if start < seconds:
            faults.append(Fault(len(faults) + 1, kind, round(start, 2), round(duration, 2), host, detail))
        at += rng.expovariate(1 / mean_gap)
    return sorted(faults, key=lambda f: f.at)


# -- the run -------------------------------------------------------------------------------------

@dataclass
class Run:
    root: Path
    database: str          # "postgresql" | "mariadb"
    server: object         # multihost.PrivatePostgres | multihost.PrivateMariaDB (durable)
    network: multihost.Network
    sim: PandaSimulator
    seed: int
    seconds: float
    hosts: int = 3
    say: object = print
    mean_gap: float = 6.0   # mean seconds between two faults' starts
    faults: list[Fault] = field(default_factory=list)
    log_volume: Path | None = None
    problems: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def __post_init__(self):
        self.url = self.server.database()
        self.starts = self.root / "starts.log"
        self.harvester_id = f"chaos-{self.database}-{self.seed}"
        self.rng = random.Random(self.seed)   # job arrivals
        self.sim.fault_random.seed(self.seed)
        self.sim.hang_seconds = 4.0
        self.engine = create_engine(self.url, pool_pre_ping=True, connect_args=_connect_timeout(self.database))
        self.job_ids: list[int] = []
        self.filler: Path | None = None
        self.progress = (0, time.time())   # jobs final at PanDA, and since when
        self.longest_stall = 0.0

    # -- set-up ----------------------------------------------------------------------------------

    def site(self) -> multihost.Site:
        pilot = multihost.pilot_template(self.starts, "{python} -m harvester_cli.panda.sim.pilot")
        self.log_volume = self.root / "logs"
        self.log_volume.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(self.log_volume)], check=True)
        site = multihost.Site(
            self.root, self.url,
            panda={"url": self.sim.url, "proxy": str(self.sim.pki.proxy), "ca": str(self.sim.pki.ca_file),
                   "retries": 2, "timeout": 3, "allow_test_pilot": True},
            queues={q: {"mode": "push", "backend": "local", "pilot": pilot, "lost_grace_seconds": 5, **LIMITS}
                    for q in QUEUES},
            harvester_id=self.harvester_id, network=self.network,
            extra={"lease_seconds": LEASE,
                   "instance": {"cycle_interval": 2, "db_timeout": 5, "db_reconnect_seconds": RECONNECT}})
        site.add_hosts(self.hosts)
        for host in site.hosts:   # the log tree on the small volume
            text = host.config.read_text().replace(str(host.directory / "logs"), str(self.log_volume / host.name))
            host.config.write_text(text)
        site.upgrade_at_once()
        return site

    def start_loops(self, site: multihost.Site) -> None:
        for host in site.hosts:
            host.loop = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, sys.executable,
                 str(Path(__file__).with_name("chaos_loop.py")), str(host.config), str(host.directory),
                 str(self.seed * 100 + host.index), "0.3"],
                env=host.env(), stdout=subprocess.DEVNULL, stderr=open(host.directory / "loop.err", "a"),
                start_new_session=True)

    def stop_loops(self, site: multihost.Site) -> None:
        site.stop()
        kill_local_workers(self.harvester_id)

    # -- faults ----------------------------------------------------------------------------------

    def begin(self, fault: Fault, site: multihost.Site) -> None:
        fault.started = time.time()
        self.say(f"chaos seed={self.seed} t={fault.at:6.1f}s {self.database}: {fault.label()} for "
                 f"{fault.duration:.1f} s (replay: python -m bench chaos --seed {self.seed} --database "
                 f"{self.database} --hosts {self.hosts})")
        host = site.hosts[fault.host - 1]
        if fault.kind == "kill":
            fault.note = self.kill_command(host)
            fault.ended = time.time()
        elif fault.kind == "panda":
            mode, rate = fault.detail.split()
            self.sim.faults = {mode: float(rate)}
        elif fault.kind.startswith("db_restart"):
            fault.note = f"stopped with {self.wait_for_transactions()} transactions open"
            self.server.stop("immediate" if fault.kind.endswith("immediate") else "fast")
        elif fault.kind == "db_cut":
            ports = f"{PG_PORT}, {MARIA_PORT}"
            rules = (f"table inet chaos {{\n chain out {{\n  type filter hook output priority 0;\n"
                     f"  tcp dport {{ {ports} }} drop\n }}\n}}\n")
            subprocess.run(["ip", "netns", "exec", host.namespace, "nft", "-f", "-"], input=rules,
                           text=True, check=True, capture_output=True)
        elif fault.kind == "log_full":
            self.filler = self.log_volume / ".filler"
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for block in (1 << 20, 1 << 12):   # to the last page
                    try:
                        while True:
                            os.write(fd, b"\0" * block)
                    except OSError:
                        pass
            finally:
                os.close(fd)
        elif fault.kind == "clock_step":
            (host.directory / "clock").write_text(json.dumps({"fault": fault.number, "offset": fault.detail}))

    def end(self, fault: Fault, site: multihost.Site) -> None:
        host = site.hosts[fault.host - 1]
        if fault.kind == "panda":
            self.sim.faults = {}
        elif fault.kind.startswith("db_restart"):
            self.server.start()
        elif fault.kind == "db_cut":
            subprocess.run(["ip", "netns", "exec", host.namespace, "nft", "delete", "table", "inet",
                            "chaos"], check=False, capture_output=True)
        elif fault.kind == "log_full" and self.filler is not None:
            self.filler.unlink(missing_ok=True)
        fault.ended = time.time()

    def wait_for_transactions(self, timeout: float = 3.0) -> int:
        """Until a command is inside a transaction on the run's database (a stop then cuts it mid-way), for
        at most `timeout`: how many are open."""
        name = self.url.rsplit("/", 1)[1]
        if self.database == "postgresql":
            argv = ["runuser", "-u", "postgres", "--", str(self.server.bin / "psql"), "-h", str(self.server.dir),
                    "-p", str(self.server.port), "-XAtqc",
                    f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' AND xact_start IS NOT NULL"]
        else:
            argv = ["mariadb", "--no-defaults", f"--socket={self.server.socket}", "-uroot", "-NBe",
                    f"SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
                    f"ON p.id = t.trx_mysql_thread_id WHERE p.db = '{name}'"]
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
            count = int(out) if out.isdigit() else 0
            if count or time.monotonic() > deadline:
                return count
            time.sleep(0.02)

    def clock_step_done(self, fault: Fault, site: multihost.Site) -> bool:
        host = site.hosts[fault.host - 1]
        for run in host.runs():
            if run.get("fault") == fault.number:
                fault.note = f"{run['command']} exit {run['rc']}"
                return True
        return False

    def kill_command(self, host: multihost.Host) -> str:
        """kill -9 of the command the host runs now (waiting for the next one when it is between two)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid, command = (host.directory / "current").read_text().split()
                os.kill(int(pid), signal.SIGKILL)
                host.kills += 1
                return f"killed {command} (pid {pid})"
            except (FileNotFoundError, ValueError, ProcessLookupError):
                time.sleep(0.05)
        return "no command to kill"

    # -- consistency -----------------------------------------------------------------------------

    def sample(self) -> dict | None:
        """One look at the state database and the simulator: None when the database does not answer."""
        try:
            with self.engine.connect() as conn:
                snap = {"reports": conn.execute(select(reports.c.kind, reports.c.key, reports.c.created)).all(),
                        "workers": conn.execute(select(workers.c.worker_id, workers.c.status,
                                                       workers.c.modified)).all(),
                        "jobs": conn.execute(select(jobs.c.panda_id, jobs.c.status, jobs.c.sub_status,
                                                    jobs.c.modified)).all(),
                        "claims": [row for table in CLAIMED_TABLES for row in conn.execute(
                            select(table.c.lock_owner, table.c.lock_expires).where(table.c.lock_owner.is_not(None)))]}
        except Exception:   # noqa: BLE001 - a server down or cut: not consistent at this moment
            return None
        with self.sim.lock:
            self.sim._advance()
            snap["panda_workers"] = {w: dict(v) for w, v in self.sim.workers(self.harvester_id).items()}
            snap["panda_jobs"] = {i: (j.status, j.final_status) for i, j in self.sim.jobs.items()}
        snap["at"] = time.time()
        return snap

    @staticmethod
    def consistent(snap: dict, since: float) -> bool:
        """Everything that happened before `since` has settled (see the module's doc)."""
        if any(r.created <= since for r in snap["reports"]):
            return False
        for w in snap["workers"]:
            if w.modified <= since and snap["panda_workers"].get(w.worker_id, {}).get("status") != w.status:
                return False
        for j in snap["jobs"]:
            if j.modified <= since and j.sub_status == model.SUB_DONE:
                status, final = snap["panda_jobs"].get(j.panda_id, (None, None))
                if (final or status) != j.status:
                    return False
        now = snap["at"]
        return not any(dead_owner(owner) and (expires or 0) > now for owner, expires in snap["claims"])

    # -- the whole run ---------------------------------------------------------------------------

    def top_up(self) -> None:
        """Jobs keep arriving: each queue keeps a few activated jobs."""
        with self.sim.lock:
            waiting = Counter(j.site for j in self.sim.jobs.values() if j.status == "activated")
        for queue in QUEUES:
            if waiting[queue] < 3:
                self.job_ids += self.sim.add_jobs(queue, self.rng.randint(1, 4), jobPars="sleep 0.5")

    def execute(self) -> bool:
        self.faults = schedule(self.seed, self.seconds, self.hosts, self.mean_gap)
        active: list[Fault] = []
        pending = list(self.faults)
        last_sample = 0.0
        site = None
        try:
            site = self.site()
            self.top_up()
            self.start_loops(site)
            began = time.time()
            while time.time() - began < self.seconds or active:
                now = time.time()
                while pending and now - began >= pending[0].at:
                    fault = pending.pop(0)
                    self.begin(fault, site)
                    if fault.ended is None:
                        active.append(fault)
                for fault in list(active):
                    if fault.kind == "clock_step":
                        if self.clock_step_done(fault, site):
                            fault.ended = time.time()
                            active.remove(fault)
                    elif now >= fault.started + fault.duration:
                        self.end(fault, site)
                        active.remove(fault)
                if now - began < self.seconds:
                    self.top_up()
                if now - last_sample >= 1.0:
                    last_sample = now
                    self.settle(self.sample())
                time.sleep(0.1)
            self.say(f"chaos seed={self.seed} {self.database}: faults over after {time.time() - began:.0f} s; "
                     "the hosts run on until everything is final")
            self.drain(site, began)
        finally:
            for fault in active:   # a run stopped early: leave nothing broken behind
                self.end(fault, site)
            if site is not None:
                self.stop_loops(site)
            if self.log_volume is not None:
                subprocess.run(["umount", "-l", str(self.log_volume)], check=False)
        self.check(site)
        self.verdicts()
        self.counts["longest_stall_s"] = round(self.longest_stall, 1)
        if self.longest_stall > STALL:
            self.problems.append(f"no job reached its final state for {self.longest_stall:.0f} s while jobs waited "
                                 f"(at most {STALL:.0f} s)")
        self.engine.dispose()
        return not self.problems

    def settle(self, snap: dict | None) -> None:
        """Record the recoveries this sample shows, and how long the work stood still: the longest time
        without a job reaching its final state at PanDA while jobs waited (a state no fault explains, a
        queue that never submits again, would not show as inconsistent, only as this)."""
        if snap is None:
            return
        done = sum(1 for status, _ in snap["panda_jobs"].values() if status in ("finished", "failed"))
        if done > self.progress[0] or done == len(snap["panda_jobs"]):
            self.progress = (done, snap["at"])
        self.longest_stall = max(self.longest_stall, snap["at"] - self.progress[1])
        for fault in self.faults:
            if fault.ended is not None and fault.recovered is None and self.consistent(snap, fault.ended):
                fault.recovered = snap["at"]
                # the faults that ended during this one's recovery held it up until they did
                overlapping = [f.ended for f in self.faults if f is not fault and f.ended is not None
                               and fault.ended < f.ended <= snap["at"]]
                fault.quiet = max([fault.ended, *overlapping])
                self.say(f"chaos seed={self.seed} {self.database}: {fault.label()}"
                         f"{f': {fault.note}' if fault.note else ''}; consistent again "
                         f"{fault.recovered - fault.ended:.1f} s after its end "
                         f"({fault.recovered - fault.quiet:.1f} s after the last fault in the way)")

    def drain(self, site: multihost.Site, began: float) -> None:
        deadline = time.time() + 3 * BOUND
        while time.time() < deadline:
            snap = self.sample()
            self.settle(snap)
            if snap is not None and self.drained(snap) and all(f.recovered for f in self.faults if f.ended):
                return
            time.sleep(1)
        self.problems.append(f"not everything final {3 * BOUND:.0f} s after the faults ended: "
                             + self.what_is_left(self.sample()))

    def drained(self, snap: dict) -> bool:
        stored = {j.panda_id for j in snap["jobs"]}
        return (not snap["reports"] and all(w.status in model.WORKER_FINAL for w in snap["workers"])
                and all(j.sub_status == model.SUB_DONE for j in snap["jobs"])
                and all(snap["panda_jobs"][i][0] in ("finished", "failed")
                        or (snap["panda_jobs"][i][0] == "sent" and i not in stored) for i in self.job_ids))

    def what_is_left(self, snap: dict | None) -> str:
        if snap is None:
            return "the database does not answer"
        return json.dumps({"reports": len(snap["reports"]),
                           "workers": Counter(w.status for w in snap["workers"] if w.status not in model.WORKER_FINAL),
                           "jobs": Counter(j.sub_status for j in snap["jobs"] if j.sub_status != model.SUB_DONE)},
                          default=str)

    # -- the checks, from the simulator's own records ----------------------------------------------

    def check(self, site: multihost.Site) -> None:
        with self.engine.connect() as conn:
            local_jobs = {r.panda_id: r for r in conn.execute(select(jobs)).all()}
            local_workers = {r.worker_id: r for r in conn.execute(select(workers)).all()}
            bindings = [(b.panda_id, b.worker_id) for b in conn.execute(select(job_workers)).all()]
        with self.sim.lock:
            self.sim._advance()
            panda_jobs = {i: self.sim.jobs[i] for i in self.job_ids}
            panda_workers = {w: dict(v) for w, v in self.sim.workers(self.harvester_id).items()}
            sent = [w for c in self.sim.calls if c["path"] == "harvester/update_workers"
                    and isinstance(c.get("args"), dict) and c["args"].get("harvester_id") == self.harvester_id
                    for w in c["args"].get("workers") or [] if isinstance(w, dict)]
        runs = [r for h in site.hosts for r in h.runs()]
        records = Records(panda_jobs, panda_workers, sent, local_jobs, local_workers, bindings,
                          multihost.starts(self.starts), {h.name: h.namespace for h in site.hosts}, runs)
        self.problems += verify(records)
        lost_in_flight = [i for i, j in panda_jobs.items() if j.status == "sent" and i not in local_jobs]
        given_back = [i for i, j in panda_jobs.items() if j.status == "failed" and i not in local_jobs]
        self.counts = {"jobs": len(self.job_ids), "stored": len(local_jobs), "lost_in_flight": len(lost_in_flight),
                       "given_back": len(given_back),
                       "finished": sum(j.status == "finished" for j in panda_jobs.values()),
                       "failed": sum(j.status == "failed" for j in panda_jobs.values()),
                       "failed_why": dict(Counter((mine.diag or "")[:70] for mine in local_jobs.values()
                                                  if mine.status == "failed").most_common(5)),
                       "workers": len(local_workers), "started": len(records.starts), "runs": len(runs),
                       "runs_by_exit": dict(Counter(r["rc"] for r in runs)),
                       "unanswered_commits": sum(r.get("unknown_commits", 0) for r in runs),
                       "reconnects": sum(r.get("reconnects", 0) for r in runs),
                       "panda_faults": dict(self.sim.faults_seen)}

    def verdicts(self) -> None:
        for fault in self.faults:
            if fault.ended is None:
                self.problems.append(f"{fault.label()} never ended")
            elif fault.recovered is None:
                self.problems.append(f"{fault.label()}: no consistent moment after it")
            elif fault.recovered - fault.quiet > BOUND:
                self.problems.append(f"{fault.label()}: recovered {fault.recovered - fault.quiet:.1f} s after the "
                                     f"last fault in the way, bound {BOUND:.0f} s")

    def table(self) -> str:
        by_kind: dict[str, list[Fault]] = defaultdict(list)
        for fault in self.faults:
            by_kind[fault.kind].append(fault)
        lines = [f"{self.database}, seed {self.seed}, {self.hosts} hosts, {self.seconds / 60:.1f} min of faults: "
                 + json.dumps(self.counts),
                 "| fault | count | recovery from its end: median / max | from the last fault in the way: median "
                 "/ max | bound | over |", "|---|---|---|---|---|---|"]
        for kind in KINDS:
            done = [f for f in by_kind.get(kind, []) if f.recovered is not None]
            if not by_kind.get(kind):
                continue
            own = sorted(f.recovered - f.ended for f in done)
            net = sorted(f.recovered - f.quiet for f in done)
            lines.append(f"| {kind} | {len(by_kind[kind])} | {_stat(own)} | {_stat(net)} | {BOUND:.0f} s | "
                         f"{sum(n > BOUND for n in net) + len(by_kind[kind]) - len(done)} |")
        return "\n".join(lines)


@dataclass
class Records:
    """What the checks read: the simulator's own records, the state database, the pilots' start lines."""
    panda_jobs: dict          # PandaID -> SimJob (status, updates) of every job the run added
    panda_workers: dict       # workerID -> what PanDA holds for this harvester's worker
    worker_updates: list      # every worker dict sent in update_workers, in order
    local_jobs: dict          # PandaID -> jobs row
    local_workers: dict       # worker id -> workers row
    bindings: list            # (PandaID, worker id) of job_workers
    starts: list              # (worker id, namespace) per pilot start
    namespaces: dict          # host name -> its namespace
    runs: list                # the hosts' runs (command, rc, stderr)


def verify(r: Records) -> list[str]:
    """Every job the hosts stored final once at PanDA, in the state they hold; no worker started twice or
    by another host; every worker's last state at PanDA; nothing sent after a final state that conflicts
    with it; no traceback and no exit code but 0, 1 or a kill."""
    problems = []
    final = ("finished", "failed")
    for panda_id, job in r.panda_jobs.items():
        statuses = [u["job_status"] for u in job.updates]
        finals = {s for s in statuses if s in final}
        if len(finals) > 1:
            problems.append(f"job {panda_id}: conflicting final updates {sorted(finals)}")
        first_final = next((k for k, s in enumerate(statuses) if s in final), len(statuses))
        if any(s not in final for s in statuses[first_final:]):
            problems.append(f"job {panda_id}: an update after its final one: {statuses[first_final:]}")
        mine = r.local_jobs.get(panda_id)
        if mine is None:
            # Sent and kept by no host (a command killed, a reply lost): PanDA's 'sent' timeout takes it back.
            # Failed: a host could not store it and gave it back at once (fetch-jobs' unstored jobs).
            if not (job.status == "sent" or (job.status == "failed" and statuses)):
                problems.append(f"job {panda_id}: {job.status} at PanDA, never stored by a host")
        elif job.status not in final:
            problems.append(f"job {panda_id}: {job.status} at PanDA, {mine.status}/{mine.sub_status} here")
        elif job.status != mine.status:
            problems.append(f"job {panda_id}: {job.status} at PanDA, {mine.status} here")
    twice = sorted(w for w, n in Counter(w for w, _ in r.starts).items() if n > 1)
    if twice:
        problems.append(f"workers started twice: {twice}")
    for worker_id, namespace in r.starts:
        row = r.local_workers.get(worker_id)
        if row is None:
            problems.append(f"worker {worker_id} started, unknown to the database")
        elif r.namespaces.get(row.harvester_host) != namespace:
            problems.append(f"worker {worker_id} of {row.harvester_host} started in {namespace}")
    started = {w for w, _ in r.starts}
    per_job = Counter(panda_id for panda_id, worker_id in r.bindings if worker_id in started)
    if any(n > 1 for n in per_job.values()):
        problems.append(f"jobs run by two workers: {sorted(j for j, n in per_job.items() if n > 1)}")
    for worker_id, row in r.local_workers.items():
        at_panda = r.panda_workers.get(worker_id, {}).get("status")
        if at_panda != row.status:
            problems.append(f"worker {worker_id}: {at_panda} at PanDA, {row.status} here (an update lost)")
    # PanDA keeps a worker's first final state whatever comes later: the updates sent show a conflict
    # its records would hide.
    last: dict = {}
    for w in r.worker_updates:
        status, before = w.get("status"), last.get(w.get("workerID"))
        if before in model.WORKER_FINAL and status is not None and status != before:
            problems.append(f"worker {w.get('workerID')}: sent {status} after {before}")
        if status is not None:
            last[w.get("workerID")] = status
    for run in [r for r in r.runs if "Traceback" in r["stderr"]][:3]:
        problems.append(f"{run['command']} printed a traceback: {run['stderr'][-800:]}")
    for run in [r for r in r.runs if r["rc"] not in (0, 1, -signal.SIGKILL)][:3]:
        problems.append(f"{run['command']} exited {run['rc']}: {run['stderr'][-400:]}")
    return problems


def _stat(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{values[len(values) // 2]:.1f} s / {values[-1]:.1f} s"


def _connect_timeout(database: str) -> dict:
    return {"connect_timeout": 3} if database == "postgresql" else {"connect_timeout": 3, "read_timeout": 5}


def dead_owner(owner: str) -> bool:
    """A claim's owner (host:pid:nonce): every host here shares this machine's process ids."""
    pid = owner.split(":")[1] if owner.count(":") >= 2 else ""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_one(database: str, seed: int, seconds: float, hosts: int, say=print) -> Run:
    """One run on its own network, server and simulator (the bench's entry; the tests share theirs)."""
    root = Path(tempfile.mkdtemp(prefix=f"harvester-cli-chaos-{database}-"))
    root.chmod(0o755)
    keep = False
    try:
        network = multihost.Network(hosts, prefix=PREFIX, subnet=SUBNET)
        pki = certs.create(root / "pki", addresses=(network.server,))
        server_class = multihost.PrivatePostgres if database == "postgresql" else multihost.PrivateMariaDB
        with network, server_class(PG_PORT if database == "postgresql" else MARIA_PORT, durable=True,
                                   listen=network.server) as server, \
                PandaSimulator(pki, host=network.server, finish_delay=0.0) as sim:
            run = Run(root, database, server, network, sim, seed, seconds, hosts, say)
            run.execute()
            keep = bool(run.problems)
            return run
    finally:
        if keep:   # the hosts' command logs and work trees, to find out why
            say(f"chaos seed={seed} {database}: a problem was found: the run's directory is kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5, help="minutes of faults (default 5)")
    parser.add_argument("--seed", type=int, help="the seed that draws the faults (default: a new one, printed)")
    parser.add_argument("--database", choices=("postgresql", "mariadb", "both"), default="both")
    parser.add_argument("--hosts", type=int, default=3, choices=(2, 3))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench chaos: run as root (network namespaces, nft, tmpfs, the database servers)", file=sys.stderr)
        return 2
    for tool in ("nft", "mariadbd"):
        if not shutil.which(tool):
            print(f"bench chaos: {tool} is missing: apt-get install -y $(cat scripts/apt-packages.txt)", file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"chaos: seed {seed} (python -m bench chaos --seed {seed} replays these faults)", flush=True)
    failed = False
    for database in (("postgresql", "mariadb") if args.database == "both" else (args.database,)):
        run = run_one(database, seed, args.minutes * 60, args.hosts, say=lambda s: print(s, flush=True))
        print(run.table(), flush=True)
        for problem in run.problems:
            print(f"chaos seed={seed} {database}: PROBLEM {problem}", flush=True)
        failed |= bool(run.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
