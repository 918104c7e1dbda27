"""The soak's PanDA: harvester-cli's simulator in a process of its own, with a steady flow of activated jobs
and its records kept as counts (the simulator keeps every call with its arguments; over half an hour and
100k workers that is the simulator's memory, not harvester-cli's, so the counts are drained from it).

    python -m bench.soak_panda PKI_DIR PUSH_SITE PULL_SITE     # prints {"url": ...}, then one JSON line per request

Requests (one JSON object per line on stdin, one answer per line on stdout):
    {"feed": {"push_per_minute": n, "pull_per_minute": n, "pull_level": n}}
        from now on, add activated jobs: push jobs for harvester-cli to fetch, and pull jobs, which the pull
        queue's pilots would take: the simulator takes them itself at the same rate (harvester-cli's pilots here
        are short jobs that never call PanDA), so the pull queue always sees about `pull_level` activated
    {"stop_feed": true}   no new jobs from now on
    {"totals": true}      the counts so far (cumulative; the soak takes differences per window)
    {"audit": true}       the push jobs as the simulator recorded them: given out, final, lost, doubled
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

FINAL_WORKER = ("finished", "failed", "cancelled", "missed")
FINAL_JOB = ("finished", "failed")


class Records:
    """Counts from the simulator's call records, drained every second (the records are dropped)."""

    def __init__(self):
        self.calls: Counter = Counter()        # API path -> calls
        self.items: Counter = Counter()        # what the calls carried: job_updates, worker_updates, ...
        self.final_workers: set[int] = set()   # workers PanDA has seen final

    def take(self, records: list[dict]) -> None:
        for record in records:
            path = record["path"]
            self.calls[path] += 1
            args = record.get("args") or {}
            answer = record.get("answer") or {}
            if path == "pilot/update_jobs_bulk":
                entries = args.get("job_list") or []
                self.items["job_updates"] += len(entries)
                self.items["job_updates_final"] += sum(1 for e in entries if isinstance(e, dict)
                                                       and e.get("job_status") in FINAL_JOB)
            elif path == "pilot/update_job":
                self.items["job_updates"] += 1
                self.items["job_updates_final"] += args.get("job_status") in FINAL_JOB
            elif path == "harvester/update_workers":
                entries = [w for w in args.get("workers") or [] if isinstance(w, dict)]
                self.items["worker_updates"] += len(entries)
                for worker in entries:
                    if worker.get("status") in FINAL_WORKER and worker.get("workerID") not in self.final_workers:
                        self.final_workers.add(worker.get("workerID"))
                        self.items["workers_final"] += 1
            elif path == "pilot/acquire_jobs" and answer.get("success"):
                self.items["jobs_given"] += len((answer.get("data") or {}).get("jobs") or [])

    def totals(self) -> dict:
        return {"calls": dict(self.calls), "items": dict(self.items)}


def audit(sim, site: str) -> dict:
    """Push jobs as the simulator saw them: given out (acquire_jobs), finished or failed (a final update),
    lost (given out and never final), doubled (given out twice, two final updates, or in two workers)."""
    workers_of: dict[int, set[int]] = defaultdict(set)
    with sim.lock:
        sim._advance()
        for _harvester, worker_id, panda_id in sim.relations:
            workers_of[panda_id].add(worker_id)
        jobs = [j for j in sim.jobs.values() if j.site == site]
        given = [j for j in jobs if int(j.spec.get("nSent", 0)) >= 1]
        finals = {j.panda_id: sum(1 for u in j.updates if u.get("job_status") in FINAL_JOB) for j in given}
        lost = [j.panda_id for j in given if j.status not in ("holding", *FINAL_JOB)]
        doubled = sorted({j.panda_id for j in given if int(j.spec.get("nSent", 0)) > 1 or finals[j.panda_id] > 1
                          or len(workers_of.get(j.panda_id, ())) > 1})
        return {
            "activated_left": sum(1 for j in jobs if j.status == "activated"),
            "given": len(given),
            "finished": sum(1 for j in given if (j.final_status or j.status) == "finished"),
            "failed": sum(1 for j in given if (j.final_status or j.status) == "failed"),
            "lost": len(lost), "lost_ids": lost[:20],
            "doubled": len(doubled), "doubled_ids": doubled[:20],
        }


class Feeder:
    """Adds activated jobs every second at the asked rates; takes pull jobs as pilots would."""

    def __init__(self, sim, push_site: str, pull_site: str):
        self.sim, self.push_site, self.pull_site = sim, push_site, pull_site
        self.rates = None
        self.owed = Counter()
        self.pull_waiting: list[int] = []
        self.added = Counter()
        self.stop = threading.Event()
        threading.Thread(target=self._run, name="soak-feeder", daemon=True).start()

    def start(self, push_per_minute: float, pull_per_minute: float, pull_level: int) -> None:
        """The flow from now on; a minute's push jobs at once, so the first cycle finds as many as the others."""
        with self.sim.lock:
            self.rates = (push_per_minute / 60, pull_per_minute / 60)
            self.sim.add_jobs(self.push_site, int(push_per_minute), refresh=False)
            self.added["push"] += int(push_per_minute)
            missing = pull_level - len(self.pull_waiting)
            if missing > 0:
                self.pull_waiting += self.sim.add_jobs(self.pull_site, missing, refresh=False)
                self.added["pull"] += missing
            self.sim.refresh_job_counts()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            if self.rates is None:
                continue
            push, pull = self.rates
            self.owed["push"] += push
            self.owed["pull"] += pull
            with self.sim.lock:
                n = int(self.owed["push"])
                if n:
                    self.sim.add_jobs(self.push_site, n, refresh=False)
                    self.owed["push"] -= n
                    self.added["push"] += n
                n = int(self.owed["pull"])
                if n:
                    self.pull_waiting += self.sim.add_jobs(self.pull_site, n, refresh=False)
                    self.owed["pull"] -= n
                    self.added["pull"] += n
                    # the pilots take as many as came: the oldest activated ones run and end
                    taken, self.pull_waiting = self.pull_waiting[:n], self.pull_waiting[n:]
                    self._take(taken)

    def _take(self, panda_ids: list[int]) -> None:
        for panda_id in panda_ids:
            job = self.sim.jobs[panda_id]
            if job.status == "activated":
                job.status = job.final_status = "finished"

    def stop_feeding(self) -> None:
        """No new jobs; the pull queue's pilots take what is left."""
        with self.sim.lock:
            self.rates = None
            self._take(self.pull_waiting)
            self.pull_waiting = []
            self.sim.refresh_job_counts()


def serve(pki_dir: str, push_site: str, pull_site: str) -> None:
    from harvester_cli.panda.sim import certs
    from harvester_cli.panda.sim.server import PandaSimulator

    records = Records()
    records_lock = threading.Lock()   # the drainer thread and a request both drain
    with PandaSimulator(certs.TestPKI(Path(pki_dir)), finish_delay=0.0) as sim:
        feeder = Feeder(sim, push_site, pull_site)

        def drain() -> None:
            with records_lock:
                with sim.lock:
                    taken, sim.calls = sim.calls, []
                records.take(taken)

        def drainer() -> None:
            while True:
                time.sleep(1.0)
                drain()

        threading.Thread(target=drainer, name="soak-records", daemon=True).start()
        print(json.dumps({"url": sim.url}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            if "feed" in request:
                feeder.start(**request["feed"])
                answer = {"feeding": True}
            elif "stop_feed" in request:
                feeder.stop_feeding()
                answer = {"feeding": False}
            elif "totals" in request:
                drain()
                answer = {**records.totals(), "added": dict(feeder.added), "at": time.time()}
            elif "audit" in request:
                drain()
                answer = audit(sim, push_site)
            else:
                answer = {"error": f"unknown request {request}"}
            print(json.dumps(answer), flush=True)
        feeder.stop.set()


if __name__ == "__main__":
    serve(*sys.argv[1:4])
