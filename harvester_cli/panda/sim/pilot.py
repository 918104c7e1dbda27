"""A small test pilot for demo and tests; not the ATLAS pilot.

Pull mode (no pandaJobData.out in the work directory): ask PanDA for one job with acquire_jobs, run its
jobPars as a shell command, report running and then finished/failed with update_job. No job: exit 0
(an empty pilot). Settings come from the environment the submitter sets (HARVESTER_PANDA_URL,
X509_USER_PROXY or PANDA_AUTH_TOKEN + PANDA_AUTH_ORIGIN, HARVESTER_PANDA_CA, PANDA_QUEUE, ...).

Push mode (pandaJobData.out present): never talk to PanDA; run jobPars and write heartbeat.json (the
final job state, with the pilot's camelCase names) and jobReport.json beside it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PILOT_AGENT = "harvester-cli-testpilot"


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def run_payload(job: dict) -> tuple[int, float, float, float]:
    """Run jobPars; returns (exit code, start, end, cpu seconds)."""
    start = time.time()
    before = os.times()
    print(f"test pilot: running job {job['PandaID']}: {job.get('jobPars')}", flush=True)
    code = subprocess.call(["/bin/sh", "-c", str(job.get("jobPars") or "true")])
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return code, start, time.time(), cpu


def job_report(job: dict, code: int) -> dict:
    return {
        "reportVersion": "1.0.0", "exitCode": code, "exitMsg": "OK" if code == 0 else f"payload exited {code}",
        "resource": {"machine": {"node": socket.gethostname()}},
        "executor": [{"name": "testpilot", "rc": code,
                      "logfileReport": {"countSummary": {"INFO": 1}, "details": {"INFO": [
                          {"message": f"job {job['PandaID']} log line", "firstLine": 1, "count": 1}]}}}],
    }


def push(work: Path) -> int:
    job = json.loads((work / "pandaJobData.out").read_text())
    code, start, end, cpu = run_payload(job)
    heartbeat = {
        "jobId": job["PandaID"], "state": "finished" if code == 0 else "failed", "attemptNr": job.get("attemptNr"),
        "node": socket.gethostname(), "startTime": _stamp(start), "endTime": _stamp(end),
        "cpuConsumptionTime": int(cpu), "cpuConsumptionUnit": "s", "coreCount": job.get("coreCount"),
        "exeErrorCode": code, "exeErrorDiag": "" if code == 0 else f"payload exited with code {code}",
        "transExitCode": code, "timestamp": _stamp(end),
    }
    (work / "jobReport.json").write_text(json.dumps(job_report(job, code)))
    (work / "heartbeat.json").write_text(json.dumps(heartbeat))
    return 0


def pull() -> int:
    from harvester_cli.config import PandaConfig
    from harvester_cli.errors import PandaError
    from harvester_cli.panda.client import PandaClient

    env = os.environ
    ca = env.get("HARVESTER_PANDA_CA")
    proxy = env.get("X509_USER_PROXY")
    token = env.get("PANDA_AUTH_TOKEN")
    if token:   # as PanDA pilots do: a token file name, relative to PANDA_AUTH_DIR or the work directory
        token_file = Path(env.get("PANDA_AUTH_DIR") or os.getcwd()) / token
        settings = {"token_file": token_file, "token_origin": env.get("PANDA_AUTH_ORIGIN")}
        print(f"test pilot: PanDA token {token_file.name}, origin {settings['token_origin']}", flush=True)
    else:
        settings = {"proxy": Path(proxy) if proxy else None}
    client = PandaClient(PandaConfig(url=env["HARVESTER_PANDA_URL"], ca=Path(ca) if ca else None, timeout=30,
                                     retries=3, **settings),
                         env.get("HARVESTER_ID", "testpilot"))
    # A pilot of its own name: the simulator's fault injection is for the harvester's calls, not a pilot's.
    client.session.headers["User-Agent"] = PILOT_AGENT
    worker_id = int(env.get("HARVESTER_WORKER_ID", "0")) or None
    try:
        jobs = client.acquire_jobs(env["PANDA_QUEUE"], 1, prod_source_label=env.get("PANDA_PROD_SOURCE_LABEL"),
                                   resource_type=env.get("PANDA_RESOURCE_TYPE"), worker_id=worker_id,
                                   node=socket.gethostname(), background=True if env.get("PANDA_BACKGROUND") else None)
    except PandaError as exc:
        print(f"test pilot: cannot get a job: {exc}", file=sys.stderr)
        return 2
    if not jobs:
        print("test pilot: no job (empty pilot)")
        return 0
    job = jobs[0]
    base = {"job_id": int(job["PandaID"]), "attempt_nr": int(job["attemptNr"]), "node": socket.gethostname()}
    try:
        client.update_job({**base, "job_status": "running", "start_time": _stamp(time.time())})
        code, start, end, cpu = run_payload(job)
        final = {**base, "job_status": "finished" if code == 0 else "failed", "start_time": _stamp(start),
                 "end_time": _stamp(end), "exe_error_code": code, "cpu_consumption_time": int(cpu),
                 "meta_data": json.dumps(job_report(job, code))}
        answer = client.update_job(final)
    except PandaError as exc:
        print(f"test pilot: cannot report job {job['PandaID']}: {exc}", file=sys.stderr)
        return 3
    print(f"test pilot: job {job['PandaID']} {final['job_status']}; PanDA says {answer}")
    return 0


def main() -> int:
    if os.environ.get("HARVESTER_TEST_PILOT") != "1":
        # It runs each job's jobPars with /bin/sh: against a real PanDA server it would take real jobs and fail them.
        print("test pilot: not allowed here: it is the PanDA simulator's pilot, started only by a configuration with "
              "[panda] allow_test_pilot = true", file=sys.stderr)
        return 64
    work = Path.cwd()
    return push(work) if (work / "pandaJobData.out").exists() else pull()


if __name__ == "__main__":
    sys.exit(main())
