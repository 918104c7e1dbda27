"""Cross-check: PanDA Harvester's own DB layer storing the same fetched jobs as harvester-cli's store_jobs
and the raw floor (issue 25: harvester-cli was 7.6x faster than Harvester here; the goal is 10x).

    python bench/bench_harvester.py HARVESTER_CHECKOUT [--jobs 10000] [--repetitions 5] [--python PY]

HARVESTER_CHECKOUT is a checkout of PanDA Harvester (the public repository HSF/harvester); nothing of it is
kept in this repository. Its DB layer needs panda-common, pycryptodomex and rpyc, importable by --python (default:
this interpreter), for example a venv made with --system-site-packages and `pip install panda-common
pycryptodomex rpyc`. Newer panda-common packages its modules under `pandacommon.`; Harvester imports them as
`pandalogger` and `liveconfigparser`, so the child aliases them.

Three sides, each run a process of its own, interleaved, medians shown; each times only the storing of the
same received job dicts (read from one JSON file before its clock starts) into an empty SQLite database
in WAL mode:
- harvester-cli: steps.fetch_jobs.store_jobs (bench/probes.py store_jobs_step);
- floor: the same rows by one sqlite3 executemany INSERT (bench/floors.py store_jobs_floor);
- Harvester: what its job fetcher does with the jobs PanDA sent (harvesterbody/job_fetcher.py, no extractor
  plugin): a JobSpec per job (convert_job_json, status starting/fetched, times, schedulerID), a FileSpec
  per input file with the file's status looked up once per LFN (DBProxy.get_file_status), then
  DBProxy.insert_jobs. Harvester's log level is INFO, so its debug lines are not in its time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HARVESTER_ID = "bench"
QUEUE = "BENCH"

COMMON_CFG = """\
[logger]
loghost=localhost
monport-apache=80
method=GET
encoding=url
monurlprefix=/logger/logger/query
logdir={logs}
nemitters=10
log_level=INFO
"""

HARVESTER_CFG = """\
[master]
uname = root
gname = root
loggername = harvester
harvester_id = {harvester_id}

[db]
verbose = False
useInspect = False
nConnections = 1
engine = sqlite
database_filename = {database}
useMySQLdb = False
reconnectTimeout = 300
syncMaxWorkerID = False
"""


# -- Harvester's side, in a process of its own (run by --python) ----------------------------------

def harvester_store(checkout: str, jobs_file: str, home: str) -> dict:
    database = Path(home) / "harvester.db"
    for leftover in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        leftover.unlink(missing_ok=True)
    os.environ["PANDA_HOME"] = home
    sys.path.insert(0, checkout)
    for name in ("liveconfigparser", "pandalogger"):
        try:
            importlib.import_module(name)
        except ImportError:   # panda-common >= 0.1: pandacommon.<name>
            package = importlib.import_module(f"pandacommon.{name}")
            sys.modules[name] = package
            for module in {"liveconfigparser": ("LiveConfigParser",), "pandalogger": ("PandaLogger", "LogWrapper")}[name]:
                sys.modules[f"{name}.{module}"] = importlib.import_module(f"pandacommon.{name}.{module}")
    from pandaharvester.harvestercore import core_utils, db_proxy
    from pandaharvester.harvestercore.event_spec import EventSpec
    from pandaharvester.harvestercore.file_spec import FileSpec
    from pandaharvester.harvestercore.job_spec import JobSpec
    from pandaharvester.harvestercore.job_worker_relation_spec import JobWorkerRelationSpec

    with open(jobs_file) as f:
        received = json.load(f)
    proxy = db_proxy.DBProxy()
    for spec, table in ((JobSpec, db_proxy.jobTableName), (FileSpec, db_proxy.fileTableName),
                        (EventSpec, db_proxy.eventTableName), (JobWorkerRelationSpec, db_proxy.jobWorkerTableName)):
        proxy.make_table(spec, table)

    started = time.perf_counter()
    specs, file_status = [], {}
    for job in received:
        at = core_utils.naive_utcnow()
        spec = JobSpec()
        spec.convert_job_json(job)
        spec.computingSite = QUEUE
        spec.status, spec.subStatus = "starting", "fetched"
        spec.creationTime = spec.stateChangeTime = at
        spec.set_one_attribute("schedulerID", f"harvester-{HARVESTER_ID}")
        for lfn, attributes in spec.get_input_file_attributes().items():
            file_spec = FileSpec()
            file_spec.PandaID, file_spec.taskID, file_spec.lfn = spec.PandaID, spec.taskID, lfn
            file_spec.endpoint, file_spec.scope, file_spec.fileType = None, attributes["scope"], "input"
            if lfn not in file_status:
                file_status[lfn] = proxy.get_file_status(lfn, "input", None, "starting")
            taken = any(s in file_status[lfn] for s in ("ready", "preparing", "to_prepare", "triggered"))
            file_spec.status = "preparing" if taken else "to_prepare"
            file_status[lfn].setdefault(file_spec.status, None)
            spec.add_in_file(file_spec)
        spec.trigger_propagation()
        specs.append(spec)
    stored = proxy.insert_jobs(specs)
    seconds = time.perf_counter() - started
    count = proxy.cur.execute(f"SELECT count(*) FROM {db_proxy.jobTableName}").fetchone()[0]
    return {"seconds": seconds, "result": {"stored": count if stored else 0}}


# -- the comparison ---------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", help="a checkout of PanDA Harvester (HSF/harvester)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="an interpreter with Harvester's dependencies")
    parser.add_argument("--harvester-child", nargs=2, metavar=("JOBS_FILE", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.harvester_child:
        print(json.dumps(harvester_store(args.checkout, *args.harvester_child)))
        return 0

    from bench import sites
    from bench.__main__ import Probe, expect_json, floor, probe, run

    checkout = str(Path(args.checkout).resolve())
    if not (Path(checkout) / "pandaharvester" / "harvestercore" / "db_proxy.py").exists():
        raise SystemExit(f"bench_harvester: {checkout} is not a checkout of PanDA Harvester")
    root = Path(tempfile.mkdtemp(prefix="harvester-cli-bench-harvester-"))
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg-config"), "XDG_STATE_HOME": str(root / "xdg-state")}
    env.pop("HARVESTER_CLI_CONFIG", None)
    try:
        n = args.jobs
        received = sites.write_received_jobs(root / "received-jobs.json", None, n, 9_000_000_000)
        site = sites.make_site(root / "site", "https://127.0.0.1:1/api/v1", None, {"mode": "push"})
        home = root / "panda-home"
        (home / "etc" / "panda").mkdir(parents=True)
        (home / "logs").mkdir()
        (home / "etc" / "panda" / "panda_common.cfg").write_text(COMMON_CFG.format(logs=home / "logs"))
        (home / "etc" / "panda" / "panda_harvester.cfg").write_text(
            HARVESTER_CFG.format(harvester_id=HARVESTER_ID, database=home / "harvester.db"))

        def reset():
            sites.remove_jobs(site)

        sides = {
            "harvester-cli": Probe(probe("store_jobs_step", site.config, received), reset, expect_json("stored", n)),
            "floor": Probe(floor("store_jobs_floor", site.state_url, received, sites.QUEUE), reset,
                           expect_json("stored", n)),
            "Harvester": Probe([args.python, str(Path(__file__).resolve()), checkout, "--harvester-child",
                                str(received), str(home)], expect=expect_json("stored", n)),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for rep in range(args.repetitions):
            order = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for name in order:
                times[name].append(run(sides[name], env).seconds)
            print(f"  repetition {rep + 1}: " + ", ".join(f"{k} {times[k][-1]:.3f} s" for k in sides),
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours, raw, harvester = (statistics.median(times[k]) for k in sides)
    print(f"| storing {n:,} fetched jobs (SQLite) | seconds (median of {args.repetitions}) | |")
    print("|---|---|---|")
    print(f"| harvester-cli store_jobs | {ours:.3f} | {ours / raw:.2f}x the floor (goal <= 1.2x) |")
    print(f"| floor: one sqlite3 executemany | {raw:.3f} | |")
    print(f"| PanDA Harvester (JobSpec, FileSpec, insert_jobs) | {harvester:.3f} | "
          f"{harvester / ours:.1f}x harvester-cli (goal >= 10x) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
