"""How big the worker count history gets: a week of one-minute snapshots (what a poll a minute leaves)
for 100 queues, in a real SQLite state database made by the migrations, and how long the status page's
24-hour read and sweep's trim take on it.

    python bench/bench_history.py [--queues 100] [--series-per-queue 1] [--days 7]

Each snapshot row is one (queue, CE, resource type) series: 100 queues with one CE and one resource type
are 100 rows a minute, 1,008,000 a week. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harvester_cli.state import monitoring, upgrade, views  # noqa: E402
from harvester_cli.state.schema import status_history  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--series-per-queue", type=int, default=1, help="CEs x resource types per queue")
    parser.add_argument("--days", type=float, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        store = upgrade.create(f"sqlite:///{path}")
        base = os.path.getsize(path)
        keys = [(f"QUEUE_{q:03d}", f"ce{s}.example.org:9619", "SCORE" if s % 2 == 0 else "MCORE")
                for q in range(args.queues) for s in range(args.series_per_queue)]
        with store.transaction() as conn:
            ids = list(monitoring.series_ids(conn, keys).values())
        snapshots = int(args.days * 1440)
        now = int(time.time())
        start = now - snapshots * 60
        began = time.monotonic()
        for chunk in range(0, snapshots, 60):   # an hour of snapshots per transaction
            rows = []
            for minute in range(chunk, min(chunk + 60, snapshots)):
                for i, sid in enumerate(ids):
                    running = 50 + (minute + i) % 40
                    rows.append({"taken": start + minute * 60, "series_id": sid, "pending": 0,
                                 "submitted": (minute * 7 + i) % 12, "running": running, "idle": (minute + i) % 3,
                                 "finished": 200 + minute % 500, "failed": (minute // 30 + i) % 25, "cancelled": i % 4,
                                 "missed": (minute // 60) % 5})
            with store.transaction() as conn:
                conn.execute(status_history.insert(), rows)
        written = time.monotonic() - began
        store.close()
        size = os.path.getsize(path) + sum(os.path.getsize(p) for p in Path(tmp).glob("state.db-*"))
        import sqlite3

        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
        packed = os.path.getsize(path)
        store = upgrade.create(f"sqlite:///{path}")
        queues = sorted({k[0] for k in keys})
        began = time.monotonic()
        history = views.history(store, queues, now - 86400)
        read = time.monotonic() - began
        began = time.monotonic()
        trimmed = monitoring.trim_history(store, now - 86400 * (args.days - 1))
        trim = time.monotonic() - began
        rows = snapshots * len(ids)
        print(f"{args.queues} queues x {args.series_per_queue} series, {snapshots} one-minute snapshots "
              f"({args.days:g} days): {rows:,} rows")
        print(f"  state database: {size / 2**20:.1f} MiB as written, {packed / 2**20:.1f} MiB after VACUUM "
              f"(empty database {base / 2**10:.0f} KiB), {(packed - base) / rows:.1f} bytes per row")
        print(f"  written in {written:.1f} s; 24 h read for the status page ({sum(len(v) for v in history.values()):,}"
              f" points over {len(history)} queues) {read:.2f} s; sweep's trim of one day ({trimmed:,} rows) {trim:.2f} s")


if __name__ == "__main__":
    main()
