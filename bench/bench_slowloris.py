"""serve-logs under a slowloris flood: N clients that send half a request head and stop, then a normal
client fetching a worker log 20 times. Prints how long the normal client waited, how many slow clients
were held, shed or timed out, and how many threads the server used. Loopback only; asserts nothing.

    python bench/bench_slowloris.py [--slow 300] [--max-connections 512] [--header-timeout 10]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harvester_cli.site.logserver import LogServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "logs"
        (root / "workers").mkdir(parents=True)
        (root / "workers" / "pilot.out").write_bytes(b"x" * 100_000)
        with LogServer(root, "127.0.0.1", 0, "/logs", max_connections=args.max_connections, threads=args.threads,
                       header_timeout=args.header_timeout) as server:
            began = time.monotonic()
            slow = []
            for _ in range(args.slow):
                s = socket.create_connection(server.address, timeout=30)
                s.sendall(b"GET /logs/workers/pilot.out HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(s)
            while server.stats["accepted"] < args.slow:
                time.sleep(0.01)
            opened = time.monotonic() - began
            waits = []
            for _ in range(20):
                t = time.monotonic()
                conn = http.client.HTTPConnection(*server.address, timeout=30)
                conn.request("GET", "/logs/workers/pilot.out")
                body = conn.getresponse().read()
                conn.close()
                waits.append(time.monotonic() - t)
                assert len(body) == 100_000
            threads = sum(1 for t in threading.enumerate() if t.name.startswith(server.name))
            held = server.open_connections
            print(f"{args.slow} slow clients opened in {opened:.2f} s; max_connections={args.max_connections}, "
                  f"threads={args.threads}, header_timeout={args.header_timeout:g} s")
            print(f"  while they hang: {held} connections open, {server.stats['evicted']} slow clients shed "
                  f"(oldest first, 503), {threads} server threads")
            print(f"  a normal client's 100 kB log: median {statistics.median(waits) * 1000:.1f} ms, "
                  f"max {max(waits) * 1000:.1f} ms over 20 requests")
            t = time.monotonic()
            answers = [s.recv(64) for s in slow]
            print(f"  every slow client closed after {time.monotonic() - t + opened:.1f} s at most: "
                  f"{sum(a.startswith(b'HTTP/1.1 408') for a in answers)} got 408, "
                  f"{sum(a.startswith(b'HTTP/1.1 503') for a in answers)} got 503")
            for s in slow:
                s.close()


if __name__ == "__main__":
    main()
