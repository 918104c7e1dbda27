"""Several hosts on one state database: what coordination costs.

    python bench/bench_multihost.py [--seconds 40] [--queues 8] [--hosts 1,2,4]
    python -m bench.bench_multihost

PostgreSQL and MariaDB (private servers started here), 1, 2 and 4 hosts, and one host on SQLite. Each host
is a network namespace running `cycle` after `cycle` (tests/support/multihost.py, as the multihost tests do) on
`--queues` push queues with a backlog the run cannot finish, against the PanDA simulator, with the
`local` backend and the pilot `true`. Per set-up: jobs fetched, workers submitted and updates sent (job +
worker updates PanDA took) per minute, claim conflicts (queue leases found held by another host, plus
deadlocks/serialization failures retried), database round trips (statements), CPU seconds of the
commands per item handled (and net of the floor: what one `cycle` with nothing to do costs, start-up and
imports, paid by every run whatever the number of hosts), and the most connections one command opened.
Then the ratios 2/1 and 4/1.

This machine has 2 cores: the hosts share them, so throughput cannot grow with hosts here. What the
figures show is what coordination costs: goals are CPU s per item at 4 hosts within 1.2x of 1 host,
throughput at 4 hosts at least 0.9x of 1 host, and no command opening more than 2 connections.
Run as root (namespaces, the servers' own users). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, func, select  # noqa: E402

from harvester_cli.panda.sim import certs  # noqa: E402
from harvester_cli.panda.sim.server import PandaSimulator  # noqa: E402
from harvester_cli.state.schema import workers  # noqa: E402
from tests.support import multihost  # noqa: E402
from tests.support.harness import kill_local_workers  # noqa: E402

GOALS = {"cpu_per_item": 1.2, "throughput": 0.9, "connections": 2}


def run_one(root: Path, pki, database: str, hosts: int, queues: int, seconds: float, limit: int) -> dict:
    with PandaSimulator(pki, host=multihost.SERVER, finish_delay=0.0, stats_refresh=0) as sim:
        names = [f"Q{i}" for i in range(queues)]
        limits = {"n_queue_limit_worker": limit, "max_workers": 10 * limit, "max_new_workers_per_cycle": limit,
                  "n_queue_limit_job": limit}
        site = multihost.Site(
            root, database,
            panda={"url": sim.url, "proxy": str(pki.proxy), "ca": str(pki.ca_file), "retries": 2, "timeout": 20},
            queues={n: {"mode": "push", "backend": "local", "pilot": "true", **limits} for n in names},
            harvester_id=f"bench-{root.name}",
            extra={"lease_seconds": 60, "max_new_workers_per_run": 1000,
                   "instance": {"db_timeout": 30}})
        site.add_hosts(hosts)
        site.upgrade_at_once()
        # The floor: what one `cycle` with nothing to do costs (start-up, imports, heartbeat, the empty
        # queries). Every run pays it whatever the number of hosts; the rest is work and coordination.
        floor = []
        for host in site.hosts:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            host.command("cycle")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            floor.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        idle = sum(floor) / len(floor)
        for name in names:
            sim.add_jobs(name, 3000, refresh=False)
        started = time.monotonic()
        site.start("cycle", pause=0.2)
        time.sleep(seconds)
        site.stop()
        elapsed = time.monotonic() - started
        kill_local_workers(site.harvester_id)
        with sim.lock:
            fetched = sum(int(j.spec.get("nSent", 0)) for j in sim.jobs.values())
            job_updates = sum(len(j.updates) for j in sim.jobs.values())
            worker_updates = sum(len(c["args"].get("workers") or []) for c in sim.calls
                                 if c["path"] == "harvester/update_workers" and isinstance(c.get("args"), dict))
        engine = create_engine(database)
        with engine.connect() as conn:
            submitted = conn.scalar(select(func.count()).select_from(workers).where(workers.c.batch_id.is_not(None)))
        engine.dispose()
        runs = [r for h in site.hosts for r in h.runs()]
        stats = [r["database"] for r in runs if r["database"]]
        items = fetched + submitted + job_updates + worker_updates
        cpu = sum(r["cpu"] for r in runs)
        return {
            "hosts": hosts, "seconds": elapsed, "runs": len(runs), "failed_runs": sum(r["rc"] not in (0, 1) for r in runs),
            "fetched_per_min": fetched * 60 / elapsed, "submitted_per_min": submitted * 60 / elapsed,
            "updates_per_min": (job_updates + worker_updates) * 60 / elapsed, "items_per_min": items * 60 / elapsed,
            "conflicts": sum(s["leases_busy"] + s["conflicts_retried"] for s in stats),
            "retried": sum(s["conflicts_retried"] for s in stats),
            "round_trips_per_item": sum(s["statements"] for s in stats) / max(items, 1),
            "cpu_per_item": cpu / max(items, 1), "max_connections": max((s["connections"] for s in stats), default=0),
            "idle_run_cpu": idle, "net_cpu_per_item": max(0.0, cpu - idle * len(runs)) / max(items, 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--queues", type=int, default=8)
    parser.add_argument("--limit", type=int, default=150, help="each queue's queued limit and per-cycle cap")
    parser.add_argument("--hosts", default="1,2,4")
    parser.add_argument("--databases", default="postgres,mariadb,sqlite")
    options = parser.parse_args()
    counts = [int(n) for n in options.hosts.split(",")]
    wanted = options.databases.split(",")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-multihost-") as tmp, multihost.Network(max(counts)):
        tmp_path = Path(tmp)
        pki = certs.create(tmp_path / "pki", addresses=(multihost.SERVER,))
        servers = []
        if "postgres" in wanted:
            servers.append(("PostgreSQL", multihost.PrivatePostgres()))
        if "mariadb" in wanted:
            servers.append(("MariaDB", multihost.PrivateMariaDB()))
        for label, server in servers:
            with server:
                for n in counts:
                    print(f"{label}, {n} host(s) ...", file=sys.stderr, flush=True)
                    results.setdefault(label, []).append(
                        run_one(tmp_path / f"{label}-{n}", pki, server.database(), n, options.queues, options.seconds,
                                options.limit))
        if "sqlite" in wanted:
            print("SQLite, 1 host ...", file=sys.stderr, flush=True)
            results["SQLite"] = [run_one(tmp_path / "sqlite-1", pki, f"sqlite:///{tmp_path / 'sqlite.db'}", 1,
                                         options.queues, options.seconds, options.limit)]
    report(results)
    return 0


def report(results: dict[str, list[dict]]) -> None:
    header = (f"{'database':<11}{'hosts':>6}{'runs':>6}{'fetched/min':>12}{'submitted/min':>14}{'updates/min':>12}"
              f"{'items/min':>10}{'conflicts':>10}{'retried':>8}{'trips/item':>11}{'CPU s/item':>11}{'net':>9}"
              f"{'idle run':>9}{'conn/cmd':>9}")
    print(header)
    print("-" * len(header))
    for label, rows in results.items():
        for r in rows:
            print(f"{label:<11}{r['hosts']:>6}{r['runs']:>6}{r['fetched_per_min']:>12.0f}{r['submitted_per_min']:>14.0f}"
                  f"{r['updates_per_min']:>12.0f}{r['items_per_min']:>10.0f}{r['conflicts']:>10}{r['retried']:>8}"
                  f"{r['round_trips_per_item']:>11.2f}{r['cpu_per_item'] * 1000:>9.2f}ms"
                  f"{r['net_cpu_per_item'] * 1000:>7.2f}ms{r['idle_run_cpu']:>8.2f}s{r['max_connections']:>9}")
    print()
    for label, rows in results.items():
        one = next((r for r in rows if r["hosts"] == 1), None)
        if one is None:
            continue
        for r in rows:
            if r["hosts"] == 1:
                continue
            throughput = r["items_per_min"] / max(one["items_per_min"], 1e-9)
            cpu = r["cpu_per_item"] / max(one["cpu_per_item"], 1e-9)
            net = r["net_cpu_per_item"] / max(one["net_cpu_per_item"], 1e-9)
            verdict = []
            if r["hosts"] == 4:
                verdict.append("CPU/item ok" if cpu <= GOALS["cpu_per_item"] else "CPU/item MISSES 1.2x")
                verdict.append("throughput ok" if throughput >= GOALS["throughput"] else "throughput MISSES 0.9x")
            print(f"{label} {r['hosts']}/1 hosts: throughput x{throughput:.2f}, CPU s per item x{cpu:.2f} "
                  f"(net of the idle-run floor x{net:.2f}), runs x{r['runs'] / max(one['runs'], 1):.1f}"
                  + (f"  ({', '.join(verdict)})" if verdict else ""))
    worst = max(r["max_connections"] for rows in results.values() for r in rows)
    print(f"most database connections opened by one command: {worst} (goal <= {GOALS['connections']})")


if __name__ == "__main__":
    sys.exit(main())
