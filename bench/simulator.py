"""The PanDA simulator in a process of its own, for both sides of a row: neither our command nor a floor
shares an interpreter with it, and the bench's own process (large, mostly waiting) does not serve it.

    python -m bench.simulator PKI_DIR      # prints {"url": ...}, then answers one JSON line per request

The bench's process steers it over stdin/stdout, one JSON request per line, one JSON answer per line:
{"running": [first_panda_id, count]} makes those jobs running at PanDA (added, or put back: no update, no
pilot log, no final state), as a push job's worker left them before its final update is propagated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Self


def serve(pki_dir: str) -> None:
    from harvester_cli.panda.sim import certs
    from harvester_cli.panda.sim.server import PandaSimulator, SimJob

    queue = "BENCH"   # sites.QUEUE: the job's site at the simulator
    with PandaSimulator(certs.TestPKI(Path(pki_dir)), finish_delay=0.0) as sim:
        print(json.dumps({"url": sim.url}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            first, count = request["running"]
            with sim.lock:
                for panda_id in range(first, first + count):
                    job = sim.jobs.get(panda_id)
                    if job is None:
                        sim.jobs[panda_id] = SimJob(panda_id, queue, {"PandaID": panda_id}, status="running")
                    else:
                        job.status, job.final_status, job.holding_since = "running", None, None
                        job.updates.clear()
                        job.pilot_logs.clear()
            print(json.dumps({"running": count}), flush=True)


class Simulator:
    """The bench's handle on the simulator process: its URL, and jobs made running there."""

    def __init__(self, pki_dir: Path, env: dict):
        self.process = subprocess.Popen([sys.executable, "-m", "bench.simulator", str(pki_dir)], env=env,
                                        cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.url = self._answer()["url"]

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"bench: the PanDA simulator's process ended ({self.process.wait()})")
        return json.loads(line)

    def running(self, first: int, count: int) -> None:
        self.process.stdin.write(json.dumps({"running": [first, count]}) + "\n")
        self.process.stdin.flush()
        self._answer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
