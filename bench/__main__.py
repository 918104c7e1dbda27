"""harvester-cli's hot paths next to their floors, measured in one run on this machine.

    python -m bench                # the full table (about 20 minutes)
    python -m bench --quick        # small sizes, one repetition: a smoke run (about 2 minutes)
    python -m bench --check        # exit 1 and name each row that misses its goal
    python -m bench --only poll    # rows whose path contains "poll"
    python -m bench --postgres URL # the PostgreSQL rows on that (empty) database instead of a local server
    python -m bench --propagate-million  # add propagate at 1M updates (about 15 minutes more)
    python -m bench soak --minutes 30    # the whole chain on the real peers at a central node's rate (bench/soak.py)
    python -m bench chaos --minutes 30 --seed 7  # the chaos run: several hosts, overlapping faults (bench/chaos.py)

Each row times our path and its floor, the two interleaved, and shows medians of the repetitions: machines
here are noisy, ratios are what count. A floor is the least work that gives the same result through the raw
driver, an HTTP session or os calls (bench/floors.py): it never runs harvester-cli's code, and a floor whose
process loaded a harvester_cli module stops the bench. Set-up (filling a database, making job dicts) may use
harvester-cli's code, outside the timed part. Every measurement runs in a process of its own, so its peak
RSS is its own. A command's time is its process's wall time (or CPU time, start-up); a library step's time
is taken inside its process around the step (bench/probes.py, the one module that calls the steps). Where
ours and the floor must leave the same rows, the bench compares what each left. The PanDA simulator runs in
a process of its own (bench/simulator.py). A row may also count what a run wrote (rows / reports written):
a poll where PanDA sees nothing change must write nothing, and misses its goal while it does.

The growth rows time one path at 10k, 50k, 200k and 1M rows with the batch system at a seam (the time
spent is harvester-cli's own) and compare the time per row with the smallest size's and the peak RSS
with the 200k run's.

Other studies, each its own script: bench/bench_empty_pilots.py (empty pilots from stale counts),
bench/bench_history.py (the history's size), bench/bench_slowloris.py (serve-logs under a flood),
bench/bench_slurm.py (the Slurm backend against raw sbatch/squeue), bench/bench_multihost.py (several hosts),
bench/bench_slurm_ssh.py (a poll through a login node over SSH against the same poll run locally),
bench/bench_resources.py (pilots waiting in Slurm and activation to start, with and without free_resources).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import sites  # noqa: E402
from bench.simulator import Simulator  # noqa: E402
from harvester_cli import model  # noqa: E402
from harvester_cli.panda.sim import certs  # noqa: E402

GROWTH_SIZES = (10_000, 50_000, 200_000, 1_000_000)
TIME = shutil.which("time") or "/usr/bin/time"   # GNU time (Debian package `time`), for each run's peak RSS
QUICK_GROWTH_SIZES = (2_000, 10_000)


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    result: dict
    cpu_seconds: float = 0.0   # user + system of the process
    after: dict = field(default_factory=dict)   # what the run left (Probe.after)


@dataclass
class Probe:
    argv: list[str]
    prepare: Callable[[], None] | None = None   # before each run, not timed
    expect: Callable[[dict], str | None] | None = None   # a wrong result names what went wrong
    after: Callable[[], dict] | None = None   # after each run, not timed: what it left in the database


@dataclass
class Row:
    goal: str                 # the name of the goal, e.g. "P4"
    path: str
    size: str
    ours: Probe
    floor: Probe | None = None
    max_ratio: float | None = None
    per_row: int | None = None      # rows handled, for the time per row
    clock: str = "wall"             # "cpu": user + system time, for rows that only compute (start-up)
    samples: dict = field(default_factory=lambda: {"ours": [], "floor": []})
    note: str = ""
    max_writes: int | None = None   # rows written + reports queued allowed per run (Probe.after's counts)
    same_result: bool = False       # ours and the floor must leave the same Probe.after
    repeat: int = 1                 # times the repetitions (short rows: more runs against noise)
    runs_of: "Row | None" = None    # shows another row's runs (by another clock): not measured again

    def median(self, which: str) -> float | None:
        values = [s.cpu_seconds if self.clock == "cpu" else s.seconds for s in self.samples[which]]
        return statistics.median(values) if values else None

    def rss(self) -> float:
        return max((s.rss_mb for s in self.samples["ours"]), default=0.0)

    def ratio(self) -> float | None:
        ours, floor = self.median("ours"), self.median("floor")
        return ours / floor if ours is not None and floor else None

    def writes(self) -> tuple[int, int] | None:
        """The most rows written and reports queued in one of our runs."""
        counts = [s.after for s in self.samples["ours"] if "rows_written" in s.after]
        if self.max_writes is None or not counts:
            return None
        return max(c["rows_written"] for c in counts), max(c["reports_queued"] for c in counts)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def probe(name: str, *args) -> list[str]:
    """Our side of a row that times a library step (bench/probes.py)."""
    return python("-m", "bench.probes", name, *map(str, args))


def floor(name: str, *args) -> list[str]:
    """A floor (bench/floors.py): no harvester-cli code in its process."""
    return python("-m", "bench.floors", name, *map(str, args))


def run(p: Probe, env: dict) -> Sample:
    """One measurement in a fresh process: wall time (or the time the probe reports) and peak RSS."""
    if p.prepare:
        p.prepare()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as peak:
        # Through GNU time: a child forked from this (large) process counts this process's pages in its own
        # peak RSS until it execs; time's child is forked from a small process, so time's %M is its own.
        argv = [TIME, "-f", "%M", "-o", peak.name, *p.argv]
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                   cwd=Path(__file__).resolve().parents[1])
        _, status, usage = os.wait4(process.pid, 0)   # CPU times include time's reaped child
        wall = time.perf_counter() - started
        peak_kb = int((peak.read().strip().splitlines() or ["0"])[-1] or 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode not in (0,):
        raise SystemExit(f"bench: {' '.join(p.argv[1:])} exited {process.returncode}:\n{stderr[-3000:]}")
    try:   # a command's --json answer, or a probe's one line
        result = json.loads(stdout) if stdout.lstrip().startswith("{") else {}
    except ValueError:
        raise SystemExit(f"bench: {' '.join(p.argv[1:])} printed no JSON: {stdout[-500:]!r}") from None
    problem = p.expect(result) if p.expect else None
    if result.get("project_modules"):
        problem = f"a floor ran harvester-cli's code: {', '.join(result['project_modules'][:10])}"
    if problem:
        raise SystemExit(f"bench: {' '.join(p.argv[1:])}: {problem}")
    return Sample(result.get("seconds", wall), peak_kb / 1024, result, usage.ru_utime + usage.ru_stime,
                  p.after() if p.after else {})


def measure(row: Row, repetitions: int, env: dict, report) -> None:
    for rep in range(repetitions * row.repeat):
        order = [("ours", row.ours), ("floor", row.floor)] if rep % 2 == 0 else [("floor", row.floor), ("ours", row.ours)]
        for which, p in order:
            if p is not None:
                row.samples[which].append(run(p, env))
    if row.same_result:
        left = {which: [s.after for s in row.samples[which]] for which in ("ours", "floor")}
        if any(a != left["ours"][0] for a in left["ours"] + left["floor"]):
            raise SystemExit(f"bench: {row.path}: ours and the floor left different results: {left}")
    report(row)


# -- the rows ------------------------------------------------------------------------------------

def expect_json(key: str, wanted) -> Callable[[dict], str | None]:
    def check(result: dict) -> str | None:
        value = result.get(key, result.get("result", {}).get(key))
        return None if value == wanted else f"expected {key}={wanted}, got {value!r} ({str(result)[:300]})"
    return check


def expect_command(key_path: tuple, wanted) -> Callable[[dict], str | None]:
    """For a command run with --json: the value at key_path."""
    def check(result: dict) -> str | None:
        value = result
        for key in key_path:
            value = value[key] if isinstance(value, dict) else value[int(key)]
        return None if value == wanted else f"expected {'.'.join(map(str, key_path))}={wanted}, got {value!r}"
    return check


class Plan:
    def __init__(self, root: Path, sim: Simulator, pki, sleeper: sites.Sleeper, quick: bool, pg_url: str | None):
        self.root, self.sim, self.pki, self.sleeper = root, sim, pki, sleeper
        self.quick, self.pg_url = quick, pg_url
        self.propagate_million = False
        self.next_panda_id = 9_000_000_000

    def site(self, name: str, queue: dict, database: str = "sqlite", credentials: bool = True) -> sites.Site:
        url = None
        if database == "postgresql":
            url = new_pg_database(self.pg_url)
        return sites.make_site(self.root / name, self.sim.url, self.pki if credentials else None, queue, url)

    def panda_ids(self, count: int) -> int:
        first = self.next_panda_id
        self.next_panda_id += count
        return first

    # P2: a command with nothing to do, minimal configuration (no proxy to read), empty state. Both clocks
    # from the same runs: the wall time (what cron waits for) and the CPU time (user + system, which a busy
    # machine disturbs less); three times the repetitions, as each run is short.
    def startup(self) -> list[Row]:
        site = self.site("startup", {"mode": "pull"}, credentials=False)
        rows = []
        for command in ("status", "poll"):
            wall = Row("P2", f"`{command}` with nothing to do (wall time)", "empty", Probe(site.argv(command)),
                       Probe(python("-c", "import sqlalchemy")), 1.3, repeat=3,
                       note="floor: `python -c 'import sqlalchemy'`, the process's wall time; ours and the floor "
                            "alternate")
            rows += [wall, Row("P2", f"`{command}` with nothing to do (CPU time)", "empty", wall.ours, wall.floor, 1.3,
                               clock="cpu", samples=wall.samples, runs_of=wall,
                               note="the same runs' CPU time (user + system of the process)")]
        return rows

    # fetch-jobs: storing the received job dicts
    def store(self) -> list[Row]:
        n = 2000 if self.quick else 10_000
        site = self.site("store-jobs", {"mode": "push"})
        received = sites.write_received_jobs(self.root / "received-jobs.json", self.pki, n, self.panda_ids(n))
        reset = lambda: sites.remove_jobs(site)  # noqa: E731
        left = lambda: sites.stored_jobs(site)  # noqa: E731
        return [Row("fetch", f"storing {n:,} fetched jobs (library step)", f"{n:,}",
                    Probe(probe("store_jobs_step", site.config, received), reset, expect_json("stored", n), left),
                    Probe(floor("store_jobs_floor", site.state_url, received, sites.QUEUE), reset,
                          expect_json("stored", n), left), 1.2, per_row=n, same_result=True,
                    note="ours: steps.fetch_jobs.store_jobs; floor: the same rows (json.dumps of each job "
                         "included) by one sqlite3 executemany INSERT in one transaction; both read the same job "
                         "dicts (made with the simulator's make_job, set-up) from a file before the clock starts")]

    # P4: poll of many workers: nothing changed (command, real local backend), the backend cannot see them
    # yet (command, within lost_grace_seconds), every worker changed (step, batch system at the seam)
    def poll(self, database: str) -> list[Row]:
        n = 20_000 if self.quick else 200_000
        label = "" if database == "sqlite" else f" ({database})"
        host = socket.gethostname()
        grace = 86400

        def read_check_floor(site: sites.Site, expect) -> Probe:
            return Probe(floor("poll_read_check_floor", site.state_url, sites.QUEUE, host, site.work / sites.QUEUE,
                               grace), expect=expect)

        unchanged = self.site(f"poll-unchanged-{database}", {"mode": "pull", "lost_grace_seconds": grace}, database)
        sites.add_workers(unchanged, n, model.RUNNING)
        sites.add_work_directories(unchanged, n, self.sleeper.pid_line)
        unchanged_writes = sites.Writes(unchanged)
        changed = self.site(f"poll-changed-{database}", {"mode": "pull"}, database)
        sites.add_workers(changed, n, model.SUBMITTED)
        reset = lambda: sites.reset_workers(changed, model.SUBMITTED)  # noqa: E731
        left = lambda: sites.polled_workers(changed)  # noqa: E731
        rows = [
            Row("P4", f"`poll`, nothing changed, local backend{label}", f"{n:,}",
                Probe(unchanged.argv("--json", "poll"), unchanged_writes.before,
                      expect_command(("queues", 0, "checked"), n), unchanged_writes.after),
                read_check_floor(unchanged, expect_json("running", n)), 1.5, per_row=n, max_writes=0,
                note="floor: the same keyset pages read by the driver, and per worker the local backend's os "
                     "calls done directly (listdir of its directory, read .pid and /proc/PID/stat, stat .pid)"),
            Row("P4", f"poll step, every worker changed{label}", f"{n:,}",
                Probe(probe("poll_step", changed.config), reset, expect_json("checked", n), left),
                Probe(floor("poll_update_floor", changed.state_url, sites.QUEUE), reset, expect_json("changed", n),
                      left), 2.0, per_row=n, same_result=True,
                note="floor: one read of (worker_id, status, modified), then in one transaction one executemany "
                     "UPDATE with the compare-and-set in its WHERE and one executemany INSERT into the outbox"),
        ]
        if database == "sqlite":   # what a poll writes does not depend on the database
            unseen = self.site("poll-unseen", {"mode": "pull", "lost_grace_seconds": grace}, database)
            sites.add_workers(unseen, n, model.SUBMITTED)
            unseen_writes = sites.Writes(unseen)

            def reset_unseen():
                sites.reset_workers(unseen, model.SUBMITTED)
                unseen_writes.before()

            rows.insert(1, Row(
                "P4", f"`poll`, workers the backend cannot see yet{label}", f"{n:,}",
                Probe(unseen.argv("--json", "poll"), reset_unseen, expect_command(("queues", 0, "checked"), n),
                      unseen_writes.after),
                read_check_floor(unseen, expect_json("unseen", n)), 1.5, per_row=n, max_writes=0,
                note=f"submitted workers without a work directory, within lost_grace_seconds ({grace}): PanDA "
                     "sees nothing change, so nothing is to be written; floor as for nothing changed (listdir "
                     "fails)"))
        return rows

    # P7: submit --count 1000 on the local backend, pilot `true`
    def submit(self, database: str) -> list[Row]:
        n = 200 if self.quick else 1000
        label = "" if database == "sqlite" else f" ({database})"
        site = self.site(f"submit-{database}", {"mode": "pull", "pilot": "true", "max_workers": 10 * n},
                         database)
        wrapper_dir = self.root / f"submit-floor-{database}"

        def reset():
            sites.wait_for_bench_processes()
            sites.remove_work(site)
            conn = site.connect()
            for table in ("job_workers", "workers", "pending_reports", "status_history"):
                conn.execute(f"DELETE FROM {table}")
            conn.close()

        def reset_floor():
            sites.wait_for_bench_processes()
            shutil.rmtree(wrapper_dir, ignore_errors=True)
            wrapper_dir.mkdir(parents=True)
            from harvester_cli.backends import local   # set-up: the wrapper script the backend starts
            (wrapper_dir / local.WRAPPER_NAME).write_text(local.WRAPPER)

        return [Row("P7", f"`submit --count {n}`, local backend, pilot `true`{label}", f"{n:,}",
                    Probe(site.argv("--json", "submit", "--count", str(n)), reset,
                          lambda r: None if len(r["queues"][0]["submitted"]) == n else f"submitted {r['queues'][0]}"),
                    Probe(floor("submit_spawn_floor", wrapper_dir / ".harvester-worker.sh", n), reset_floor), 1.3, per_row=n,
                    note="floor: the same wrapper started n times by subprocess.Popen")]

    # P5: propagate of 10k final job updates
    def propagate(self, database: str) -> list[Row]:
        n = 2000 if self.quick else 10_000
        label = "" if database == "sqlite" else f" ({database})"
        site = self.site(f"propagate-{database}", {"mode": "push"}, database)
        ids = sites.add_reporting_jobs(site, self.sim, n, self.panda_ids(n))
        reset = lambda: sites.reset_reporting_jobs(site, self.sim, ids)  # noqa: E731
        calls = -(-n // 100)
        return [Row("P5", f"`propagate` of {n:,} final job updates{label}", f"{n:,}",
                    Probe(site.argv("--json", "propagate"), reset, expect_command(("jobs_sent",), n)),
                    Probe(floor("propagate_floor", site.state_url, self.sim.url, self.pki.proxy, self.pki.ca_file, 100,
                                sites.HARVESTER_ID), reset, expect_json("accepted", n)), 1.3, per_row=n,
                    note=f"floor: the outbox read by the driver, the same {calls} bulk calls on one requests."
                         "Session, and after each the accepted updates deleted from the outbox (by key and version, "
                         "one executemany); the simulator in a process of its own for both sides")]

    # growth: time per row and peak RSS from 10k to 1M rows
    def growth(self) -> list[Row]:
        sizes = QUICK_GROWTH_SIZES if self.quick else GROWTH_SIZES
        rows = []
        for n in sizes:
            poll_site = self.site(f"growth-poll-{n}", {"mode": "pull"})
            sites.add_workers(poll_site, n, model.RUNNING)
            rows.append(Row("growth", "poll step, nothing changed (seam)", f"{n:,}",
                            Probe(probe("poll_step", poll_site.config), expect=expect_json("checked", n)), per_row=n))
        for n in sizes:
            submit_site = self.site(f"growth-submit-{n}", {"mode": "pull", "max_workers": 10 * n})

            def reset(site=submit_site):
                conn = site.connect()
                for table in ("workers", "pending_reports"):
                    conn.execute(f"DELETE FROM {table}")
                conn.close()

            rows.append(Row("growth", "submit step (seam)", f"{n:,}",
                            Probe(probe("submit_step", submit_site.config, n), reset, expect_json("submitted", n)),
                            per_row=n))
        # At a million updates the simulator's own work (about 1 ms per update) makes the row a quarter of an
        # hour: only with --propagate-million.
        for n in (s for s in sizes if s < 1_000_000 or self.propagate_million):
            site = self.site(f"growth-propagate-{n}", {"mode": "push"})
            ids = sites.add_reporting_jobs(site, self.sim, n, self.panda_ids(n))
            rows.append(Row("growth", "`propagate` of final job updates", f"{n:,}",
                            Probe(site.argv("--json", "propagate"), lambda s=site, i=ids: sites.reset_reporting_jobs(
                                s, self.sim, i), expect_command(("jobs_sent",), n)), per_row=n))
        return rows


def growth_verdicts(rows: list[Row]) -> None:
    """Per path: time per row against the smallest size's (flat: at most 1.5x), and RSS at the largest
    size against the 200k run's (at most 2x)."""
    by_path: dict[str, list[Row]] = {}
    for row in rows:
        if row.goal == "growth" and row.samples["ours"]:
            by_path.setdefault(row.path, []).append(row)
    for series in by_path.values():
        base = series[0].median("ours") / series[0].per_row
        rss_200k = next((r.rss() for r in series if r.per_row == 200_000), None)
        for row in series:
            row.max_ratio = 1.5
            row.samples["floor"] = [Sample(base * row.per_row, 0.0, {})]   # the smallest size's per-row cost, scaled
            if row is series[0]:
                row.note = "growth floor: the smallest size's time per row times the rows (flat: ratio <= 1.5)"
            if row.per_row == max(r.per_row for r in series) and rss_200k:
                row.note = f"RSS {row.rss() / rss_200k:.2f}x the 200k run's (goal <= 2x)"
                if row.rss() > 2 * rss_200k:
                    row.max_ratio = 0.0   # misses its goal whatever the time


def new_pg_database(admin_url: str) -> str:
    """A new empty database on the server of `admin_url` (whose role may create databases)."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def local_postgres() -> str | None:
    """The machine's PostgreSQL cluster (as the tests start it, root only), with a role for the bench."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres")) if Path("/usr/lib/postgresql").exists() else []
    if os.geteuid() != 0 or not versions or not shutil.which("pg_ctlcluster"):
        return None
    version = versions[-1].parent.parent.name
    subprocess.run(["pg_ctlcluster", version, "main", "start"], capture_output=True)
    role = "harvester_cli_bench"
    for sql in (f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{role}'"):
        subprocess.run(["su", "postgres", "-c", f'psql -qc "{sql}"'], capture_output=True)
    return f"postgresql+psycopg://{role}:{role}@127.0.0.1/postgres"


# -- the table -----------------------------------------------------------------------------------

def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def misses(row: Row) -> list[str]:
    """Why the row misses its goal: the ratio, and what a run wrote that it should not have."""
    why = []
    ratio, writes = row.ratio(), row.writes()
    if row.max_ratio is not None and ratio is not None and ratio > row.max_ratio:
        why.append(f"{ratio:.2f}x, goal <= {row.max_ratio:g}x")
    if writes and sum(writes) > row.max_writes:
        why.append(f"wrote {writes[0]:,} rows and queued {writes[1]:,} reports, goal {row.max_writes}")
    return why


def verdict(row: Row) -> str:
    if (row.max_ratio is None or row.ratio() is None) and row.writes() is None:
        return ""
    return "MISSED" if misses(row) else "ok"


def written(row: Row) -> str:
    writes = row.writes()
    return f"{writes[0]:,} / {writes[1]:,}" if writes else ""


def table(rows: list[Row]) -> str:
    header = ("goal", "path", "size", "ours", "floor", "ratio", "goal", "per row", "peak RSS", "rows / reports written", "")
    lines = []
    for row in rows:
        ratio = row.ratio()
        per_row = f"{row.median('ours') / row.per_row * 1e6:.1f} us" if row.per_row and row.samples["ours"] else ""
        lines.append((row.goal, row.path, row.size, seconds(row.median("ours")), seconds(row.median("floor")),
                      f"{ratio:.2f}x" if ratio else "-", f"<= {row.max_ratio:g}x" if row.max_ratio else "",
                      per_row, f"{row.rss():.0f} MB", written(row), verdict(row)))
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    notes = [f"- {row.path}: {row.note}" for row in rows if row.note]
    return "\n".join(out + ([""] + notes if notes else []))


def main() -> int:
    if sys.argv[1:2] == ["soak"]:   # a study of its own, with its own options
        from bench import soak

        return soak.main(sys.argv[2:])
    if sys.argv[1:2] == ["chaos"]:
        from bench import chaos

        return chaos.main(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row misses its goal")
    parser.add_argument("--only", default="", help="rows whose goal or path contains this text")
    parser.add_argument("--repetitions", type=int, help="measurements of each side (default 5, quick 1)")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL URL whose role may create databases "
                        "(default: the machine's cluster when run as root; 'none' skips the PostgreSQL rows)")
    parser.add_argument("--json", action="store_true", help="the rows as JSON instead of a table")
    parser.add_argument("--propagate-million", action="store_true",
                        help="add the 1M row of propagate's growth (about 15 minutes more)")
    args = parser.parse_args()
    repetitions = args.repetitions or (1 if args.quick else 5)
    pg_url = None if args.postgres == "none" else (args.postgres or local_postgres())

    # An installed package has its bytecode compiled; a checkout run with PYTHONDONTWRITEBYTECODE (or
    # never run) would compile harvester-cli's sources in every timed process, and not SQLAlchemy's.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "harvester_cli")],
                   check=True, stdout=subprocess.DEVNULL)
    root = Path(tempfile.mkdtemp(prefix="harvester-cli-bench-"))
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg-config"), "XDG_STATE_HOME": str(root / "xdg-state"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("HARVESTER_CLI_CONFIG", None)
    rows: list[Row] = []

    def report(row: Row) -> None:
        ratio = row.ratio()
        print(f"  {row.goal:<6} {row.path} [{row.size}]: ours {seconds(row.median('ours'))}, floor "
              f"{seconds(row.median('floor'))}{f', {ratio:.2f}x' if ratio else ''}", file=sys.stderr, flush=True)

    try:
        pki = certs.create(root / "pki")
        with Simulator(root / "pki", env) as sim, sites.Sleeper() as sleeper:
            plan = Plan(root, sim, pki, sleeper, args.quick, pg_url)
            plan.propagate_million = args.propagate_million
            groups: list[Callable[[], list[Row]]] = [plan.startup, plan.store, lambda: plan.poll("sqlite"),
                                                     lambda: plan.submit("sqlite"), lambda: plan.propagate("sqlite")]
            if pg_url:
                groups += [lambda: plan.poll("postgresql"), lambda: plan.submit("postgresql"),
                           lambda: plan.propagate("postgresql")]
            groups.append(plan.growth)
            for group in groups:
                group_rows = group()
                # a row shown by another clock goes with the row whose runs it shows
                keep = {id(r) for r in group_rows if args.only in f"{r.goal} {r.path}"}
                keep |= {id(r.runs_of) for r in group_rows if r.runs_of and id(r) in keep}
                keep |= {id(r) for r in group_rows if r.runs_of and id(r.runs_of) in keep}
                for row in group_rows:
                    if id(row) not in keep:
                        continue
                    if row.runs_of is None:
                        measure(row, 1 if row.goal == "growth" else repetitions, env, report)
                    rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    growth_verdicts(rows)
    if args.json:
        print(json.dumps([{"goal": r.goal, "path": r.path, "size": r.size, "ours_seconds": r.median("ours"),
                           "floor_seconds": r.median("floor"), "ratio": r.ratio(), "max_ratio": r.max_ratio,
                           "peak_rss_mb": r.rss(), "clock": r.clock, "writes": r.writes(), "verdict": verdict(r),
                           "misses": misses(r), "note": r.note} for r in rows], indent=1))
    else:
        print(table(rows))
        if not pg_url:
            print("\n(PostgreSQL rows skipped: no server; run as root or pass --postgres URL)")
    missed = [r for r in rows if verdict(r) == "MISSED"]
    if args.check and missed:
        for row in missed:
            print(f"bench: missed {row.goal} {row.path} [{row.size}]: {'; '.join(misses(row))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
