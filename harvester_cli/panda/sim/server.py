"""PanDA server simulator: a real HTTPS server answering the v1 API like panda-server 1.0.4.

It follows docs/panda-api.md: JSON bodies with strict types on POST, `{success, message, data}` with
HTTP 200 on logical failure, a client certificate (or bearer token) for everything but is_alive, the
first-heartbeat and empty-ack quirks, final job updates stored as `holding`, `tobekilled` after a kill.
Jobs move from holding to their final state after `finish_delay` seconds, like the server's daemons.

Behaviours of the real server that clients trip over, modelled here and on by default:
- Registration. The first heartbeat of an unknown harvester id creates its instance row (without the
  heartbeat's data) and answers success:false; later heartbeats store startTime and friends. A pilot's
  acquire_jobs carrying harvester_id and worker_id always records the worker (running, nJobs 1), but the
  job-worker relation (`relations`: what PanDA's monitor shows as "job ran in worker N") only when the
  instance row exists. update_workers with pandaid_list writes relations without that check and drops
  the worker's other relations (many jobs in one worker: every PandaID it ran). A final worker with an
  error code stamps it (supErrorCode/supErrorDiag) on its related jobs that are still active, not on those
  whose own final update came first: each job of a many-job worker gets its own final update before it.
- Pilot logs. pilot_log is stored as a new log record on every update that carries one (`SimJob.pilot_logs`);
  pilot_id is kept as the job's pilotID, cut to 200 characters, batch_id to 80.
- Stale job counts. statistics/active_job_stats_by_site and statistics/active_job_detailed_stats_by_site
  (site -> resource type -> prodSourceLabel -> status) answer from a snapshot refreshed on every multiple
  of `stats_refresh` seconds since the epoch (60: the materialized view pg_cron refreshes every full
  minute), so counts lag the truth by up to that long. `refresh_job_counts()` refreshes at once.
  Both answer success:false with data {} when no job is active; `detailed_stats=False` makes the detailed
  route unknown (HTTP 403), as on servers older than 0.7.0.

Admin calls under /admin/ (client certificate required) let tests and `demo` add activated jobs and
commands and read the state; every API call is recorded in `calls`.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import random
import ssl
import threading
import time
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from harvester_cli.panda.sim.certs import TestPKI

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/"

# Texts as panda-server 1.0.4 writes them (pandaserver/api/v1/common.py and the handlers).
MSG_NO_JOBS = "No jobs in PanDA"
MSG_SECURE = "SSL secure connection is required"
MSG_PROD_ROLE = "production or pilot role required"
MSG_DATABASE = "database error in the PanDA server"
MSG_NO_PROD_ROLE_JOBS = "no production/pilot role in VOMS FQANs or non pilot owner"
MSG_NO_JOB_STATS = "Database failure getting the job statistics"
MSG_NO_DETAILED_JOB_STATS = "Database failure getting the job statistics with resource_type and prodsourcelabel"
VALID_JOB_STATES = ("running", "failed", "finished", "holding", "starting", "transferring")
# Columns of Harvester_Instances a heartbeat's `data` may set; any other key is a database error there.
HEARTBEAT_KEYS = {"startTime", "sw_version", "commit_stamp", "commands", "owner", "hostName", "description",
                  "lastUpdate"}


def _now_str() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


RESOURCE_TYPES = [
    {"resource_name": "SCORE", "mincore": 1, "maxcore": 1, "minrampercore": None, "maxrampercore": 2000},
    {"resource_name": "MCORE", "mincore": 2, "maxcore": None, "minrampercore": None, "maxrampercore": 2000},
    {"resource_name": "SCORE_HIMEM", "mincore": 1, "maxcore": 1, "minrampercore": 2001, "maxrampercore": None},
    {"resource_name": "MCORE_HIMEM", "mincore": 2, "maxcore": None, "minrampercore": 2001, "maxrampercore": None},
]

# Keys of every job dict acquire_jobs returns (docs/panda-api.md "Job dict from acquire_jobs").
JOB_KEYS = (
    "StatusCode PandaID prodSourceLabel swRelease homepackage transformation jobName jobDefinitionID cloud "
    "inFiles dispatchDblock dispatchDBlockToken dispatchDBlockTokenForOut outFiles destinationDblock "
    "destinationDBlockToken prodDBlocks prodDBlockToken realDatasets realDatasetsIn fileDestinationSE logFile "
    "logGUID jobPars attemptNr GUID checksum fsize scopeIn scopeOut scopeLog ddmEndPointIn ddmEndPointOut "
    "destinationSE prodUserID maxCpuCount minRamCount maxDiskCount cmtConfig processingType transferType "
    "sourceSite currentPriority taskID coreCount jobsetID reqID nucleus maxWalltime resource_type ioIntensity "
    "ioIntensityUnit nSent"
).split()


class ArgumentError(Exception):
    """A validation failure: HTTP 200, success false, this message."""


class ServerFault(Exception):
    """An exception escaping the handler: HTTP 500 with this text (the server's own bugs included)."""


@dataclass
class SimJob:
    panda_id: int
    site: str
    spec: dict
    status: str = "activated"
    attempt_nr: int = 1
    kill_requested: bool = False
    final_status: str | None = None
    holding_since: float | None = None
    updates: list[dict] = field(default_factory=list)
    pilot_logs: list[str] = field(default_factory=list)   # one record per update that carried pilot_log
    pilot_id: str | None = None
    batch_id: str | None = None
    # What a final worker with an error code stamps on its related jobs that are not holding yet
    # (supErrorCode, supErrorDiag): the worker's failure, shown as the job's supervisor error.
    sup_error_code: int | None = None
    sup_error_diag: str | None = None


# How a PanDA server (or what stands in front of it) can fail a call. Before the call is applied: 5xx,
# hang (no answer within the client's timeout), reset (connection closed), garbage (200, not JSON),
# truncated (200, the body cut short), refuse (success:false); after it is applied: lost_reply (applied,
# then a 502), partial_bulk (update_jobs_bulk: some entries refused).
FAULT_MODES = ("5xx", "hang", "reset", "garbage", "truncated", "refuse", "lost_reply", "partial_bulk")

REQ = object()    # a parameter without default
UNTYPED = object()  # a parameter without annotation: never type-checked


@dataclass
class Route:
    """A v1 method as its decorator and signature declare it: name -> (annotation, default)."""

    handler: str
    method: str
    params: dict[str, tuple[Any, Any]]
    secure: bool = True
    production: bool = False


_NUM = float | int
UPDATE_JOB_PARAMS: dict[str, tuple[Any, Any]] = {
    "job_id": (int, REQ), "job_status": (str, REQ), "job_output_report": (str, ""), "node": (str, None),
    "cpu_consumption_time": (int, None), "cpu_consumption_unit": (str, None), "scheduler_id": (str, None),
    "pilot_id": (str, None), "site_name": (str, None), "pilot_log": (str, ""), "meta_data": (str, ""),
    "cpu_conversion_factor": (_NUM, None), "trans_exit_code": (int, None), "pilot_error_code": (int, None),
    "pilot_error_diag": (str, None), "exe_error_code": (int, None), "exe_error_diag": (str, None),
    "pilot_timing": (str, None), "start_time": (str, None), "end_time": (str, None), "n_events": (int, None),
    "n_input_files": (int, None), "batch_id": (str, None), "attempt_nr": (int, None), "job_metrics": (str, None),
    "stdout": (str, ""), "job_sub_status": (str, None), "core_count": (int, None),
    **{f"{a}_{b}": (_NUM, None) for a in ("max", "avg") for b in ("rss", "vmem", "swap", "pss")},
    **{f"{a}_{b}": (_NUM, None) for a in ("tot", "rate") for b in ("rchar", "wchar", "rbytes", "wbytes")},
    "corrupted_files": (str, None), "mean_core_count": (int, None), "cpu_architecture_level": (str, None),
    "grid": (str, None), "source_site": (str, None), "destination_site": (str, None), "timeout": (int, 60),
}

ROUTES: dict[str, Route] = {
    "system/is_alive": Route("is_alive", "GET", {}, secure=False),
    "harvester/heartbeat": Route("heartbeat", "POST", {"harvester_id": (str, REQ), "data": (dict, None)}),
    "pilot/acquire_jobs": Route("acquire_jobs", "POST", {
        "site_name": (str, REQ), "timeout": (int, 60), "memory": (int, None), "disk_space": (int, None),
        "prod_source_label": (str, None), "node": (str, None), "computing_element": (str, None),
        "prod_user_id": (str, None), "get_proxy_key": (str, None), "task_id": (int, None), "n_jobs": (int, 1),
        "background": (bool, None), "resource_type": (str, None), "harvester_id": (str, None),
        "worker_id": (int, None), "scheduler_id": (str, None), "job_type": (str, None), "via_topic": (bool, None),
        "remaining_time": (UNTYPED, None), "target_architecture": (dict | str, None),
    }),
    "pilot/update_job": Route("update_job", "POST", UPDATE_JOB_PARAMS, production=True),
    "pilot/update_jobs_bulk": Route("update_jobs_bulk", "POST",
                                    {"job_list": (list, REQ), "harvester_id": (str, None)}, production=True),
    "pilot/get_job_status": Route("get_job_status", "GET", {"job_ids": (list[int], REQ), "timeout": (int, 60)}),
    "harvester/update_workers": Route("update_workers", "POST", {"harvester_id": (str, REQ), "workers": (list, REQ)}),
    "harvester/report_worker_statistics": Route("report_worker_statistics", "POST", {
        "harvester_id": (str, REQ), "panda_queue": (str, REQ), "statistics": (str, REQ)}),
    "harvester/acquire_commands": Route("acquire_commands", "POST", {
        "harvester_id": (str, REQ), "n_commands": (int, REQ), "timeout": (int, 30)}, production=True),
    "harvester/acknowledge_commands": Route("acknowledge_commands", "POST", {
        "command_ids": (list, REQ), "timeout": (int, 30)}, production=True),
    "harvester/get_current_worker_id": Route("get_current_worker_id", "GET", {"harvester_id": (str, REQ)}),
    # secure, no production role (harvester_api.update_service_metrics in 0.6.13 .. 1.0.4)
    "harvester/update_service_metrics": Route("update_service_metrics", "POST", {
        "harvester_id": (str, REQ), "metrics": (list, REQ)}),
    "metaconfig/get_resource_types": Route("get_resource_types", "GET", {}),
    "statistics/active_job_stats_by_site": Route("active_job_stats_by_site", "GET", {}, secure=False),
    "statistics/active_job_detailed_stats_by_site": Route("active_job_detailed_stats_by_site", "GET", {},
                                                          secure=False),
    "job/kill": Route("kill_jobs", "POST", {
        "job_ids": (list[int], REQ), "code": (int, None), "use_email_as_id": (bool, False),
        "kill_options": (list[str], [])}),
}


def _bind(route: Route, args: dict) -> dict:
    """inspect.signature().bind() as the server does it: a missing argument first, then an unknown one."""
    for name, (_, default) in route.params.items():
        if default is REQ and name not in args:
            raise ArgumentError(f"Argument error: missing a required argument: '{name}'")
    for name in args:
        if name not in route.params:
            raise ArgumentError(f"Argument error: got an unexpected keyword argument '{name}'")
    return {name: args.get(name, default) for name, (_, default) in route.params.items()}


@functools.cache
def _origin(annotation: Any) -> Any:
    return typing.get_origin(annotation)


def _type_check(route: Route, args: dict, given: dict | None = None) -> None:
    """The decorator's type check, quirks included: a value equal to the default is not checked, int
    accepts bool, float rejects int, and a union annotation that does not match is an HTTP 500. Only
    the `given` arguments can fail (the others are their defaults), in the signature's order."""
    for name, (annotation, default) in route.params.items():
        if given is not None and name not in given:
            continue
        value = args[name]
        if annotation is UNTYPED or (default is not REQ and value == default):
            continue
        origin = _origin(annotation)
        if origin is types.UnionType or origin is typing.Union:
            if not isinstance(value, typing.get_args(annotation)):
                raise ServerFault("'types.UnionType' object has no attribute '__name__'")
            continue
        if origin is list:
            if not isinstance(value, list):
                raise ArgumentError(f"Type error: '{name}' must be of type list, got {type(value).__name__}.")
            (item,) = typing.get_args(annotation)
            if not all(isinstance(v, item) for v in value):
                raise ArgumentError(f"Type error: All elements in '{name}' must be {item.__name__}.")
            continue
        if not isinstance(value, annotation) and not (value is None and default is None):
            raise ArgumentError(f"Type error: '{name}' must be of type {annotation.__name__}, got {type(value).__name__}.")


def _cast_get(route: Route, query: str) -> tuple[dict, str | None]:
    """GET: query strings become typed values before the type check (repeated keys are lists).
    Returns the arguments and the server's type error for a value that cannot be cast, if any."""
    pairs: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        pairs[name] = [*pairs[name], value] if isinstance(pairs.get(name), list) else (
            [pairs[name], value] if name in pairs else value)
    out, error = {}, None
    for name, value in pairs.items():
        annotation, default = route.params.get(name, (str, None))
        try:
            if value == "None" and default is None:
                out[name] = None
            elif annotation is int:
                out[name] = int(float(value))
            elif annotation is bool:
                out[name] = str(value).lower() in ("true", "1")
            elif typing.get_origin(annotation) is list:
                (item,) = typing.get_args(annotation)
                items = value if isinstance(value, list) else [value]
                out[name] = [int(float(v)) for v in items] if item is int else items
            else:
                out[name] = value
        except ValueError:
            is_list = typing.get_origin(annotation) is list
            shown = value if isinstance(value, list) or not is_list else [value]
            target = "List" if is_list else annotation.__name__
            error = error or (f"Type error: '{name}' with value '{shown}' could not be casted to type {target} "
                              f"from {type(shown).__name__}.")
            out[name] = value
    return out, error


# OpenSSL's short names, as Apache's SSL_CLIENT_S_DN (legacy format) writes them.
_DN_NAMES = {"domainComponent": "DC", "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST", "emailAddress": "emailAddress"}


class PandaSimulator:
    def __init__(self, pki: TestPKI, host: str = "127.0.0.1", port: int = 0, *,
                 tokens: tuple[str, ...] = (), finish_delay: float = 0.0, first_panda_id: int = 4000000000,
                 production_dns: tuple[str, ...] | None = None, stats_refresh: float = 60.0,
                 detailed_stats: bool = True):
        self.pki = pki
        self.host = host
        self.port = port
        self.tokens = set(tokens)
        self.finish_delay = finish_delay
        # DNs (substrings) with the production role; None: every authenticated client has it.
        self.production_dns = production_dns
        self.lock = threading.RLock()
        self.jobs: dict[int, SimJob] = {}
        self.queue_status: dict[str, str] = {}
        self.harvesters: dict[str, dict] = {}
        # Harvester_Instances rows: made by the first heartbeat of an id, updated by the later ones.
        self.instances: dict[str, dict] = {}
        # (harvester id, worker id, PandaID): Harvester_Rel_Jobs_Workers
        self.relations: set[tuple[str, int, int]] = set()
        self.stats_refresh = stats_refresh
        self.detailed_stats = detailed_stats
        self._stats_snapshot: tuple[float, dict] | None = None
        self._stop_refresher = threading.Event()
        self.commands: dict[int, dict] = {}
        # HARVESTER_METRICS rows: harvester_id, creation_time (datetime), host, metrics (the JSON text as sent)
        self.service_metrics: list[dict] = []
        self.calls: list[dict] = []
        self.connections = 0
        self.fail_next: list[int] = []   # HTTP status codes to answer the next requests with (outage tests)
        # path -> how many of its next calls are applied but their reply lost (a 502 from the proxy in front)
        self.lose_reply: dict[str, int] = {}
        # Fault injection for the fault suite: mode -> probability per API call (see FAULT_MODES), drawn
        # from `fault_random` (seed it for a repeatable run); `faults_seen` counts what was injected.
        self.faults: dict[str, float] = {}
        self.fault_random = random.Random()
        self.faults_seen: dict[str, int] = {}
        self.hang_seconds = 30.0
        self._refuse_entries = False
        self._ids = itertools.count(first_panda_id)
        self._command_ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/api/v1"

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.host_cert, self.pki.host_key)
        context.load_verify_locations(cafile=str(self.pki.ca_file))
        # Like Apache's "SSLVerifyClient optional": no certificate is the application's refusal, not TLS's.
        context.verify_mode = ssl.CERT_OPTIONAL
        context.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
        return context

    def start(self) -> "PandaSimulator":
        simulator = self

        class Handler(_Handler):
            sim = simulator

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        server.socket = self.ssl_context().wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="panda-sim", daemon=True)
        self._thread.start()
        if self.stats_refresh:
            self.refresh_job_counts()
            threading.Thread(target=self._refresher, args=(self._stop_refresher,), name="panda-sim-view",
                             daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop_refresher.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "PandaSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- admin -------------------------------------------------------------------------------

    def make_job(self, site: str, **spec: Any) -> dict:
        panda_id = next(self._ids)
        job = {key: "NULL" for key in JOB_KEYS}
        job.update({
            "StatusCode": 0, "PandaID": panda_id, "prodSourceLabel": "managed", "swRelease": "Atlas-25.0.0",
            "homepackage": "AtlasOffline/25.0.0", "transformation": "runGen-00-00-02", "jobName": f"sim.{panda_id}",
            "jobDefinitionID": 1, "cloud": "WORLD", "inFiles": "", "outFiles": f"log.{panda_id}.tgz",
            "logFile": f"log.{panda_id}.tgz", "logGUID": f"{panda_id:032x}", "attemptNr": 1,
            "jobPars": f"echo job {panda_id} ran", "maxCpuCount": 0, "minRamCount": 2000, "maxDiskCount": 0,
            "cmtConfig": "x86_64-el9-gcc13-opt", "processingType": "simulation", "transferType": "NULL",
            "sourceSite": "NULL", "currentPriority": 1000, "taskID": 1, "coreCount": 1, "jobsetID": "NULL",
            "reqID": "NULL", "maxWalltime": "NULL", "resource_type": "SCORE", "ioIntensity": "NULL",
            "ioIntensityUnit": "NULL", "nSent": 0,
        })
        job.update(spec)
        job["PandaID"] = panda_id
        return job

    def add_jobs(self, site: str, count: int = 1, refresh: bool = True, **spec: Any) -> list[int]:
        """Add `count` activated jobs to `site`; `spec` overrides job dict fields (jobPars, coreCount, ...).
        With `refresh` the job counts are refreshed at once, as if the view's refresh came just after; without
        it, the new jobs show in the counts from the next refresh on."""
        ids = []
        with self.lock:
            for _ in range(count):
                job = self.make_job(site, **spec)
                self.jobs[job["PandaID"]] = SimJob(job["PandaID"], site, job, attempt_nr=int(job["attemptNr"]))
                ids.append(job["PandaID"])
            if refresh and self.stats_refresh:
                self.refresh_job_counts()
        return ids

    def add_command(self, command: str, params: Any, ack_requested: bool = False, harvester_id: str | None = None) -> int:
        with self.lock:
            command_id = next(self._command_ids)
            self.commands[command_id] = {
                # The server sends the database's number for ack_requested and creation_date.isoformat().
                "command_id": command_id, "command": command, "params": params, "ack_requested": int(ack_requested),
                "creation_date": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(),
                "harvester_id": harvester_id, "status": "new",
            }
        return command_id

    def job_status(self, panda_id: int) -> str:
        with self.lock:
            self._advance()
            return self.jobs[panda_id].status

    def workers(self, harvester_id: str) -> dict[int, dict]:
        with self.lock:
            return dict(self.harvesters.get(harvester_id, {}).get("workers", {}))

    def calls_to(self, path: str) -> list[dict]:
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def _advance(self) -> None:
        """The server's daemons: holding jobs reach their final state after finish_delay."""
        at = time.time()
        for job in self.jobs.values():
            if job.status == "holding" and job.holding_since is not None and at - job.holding_since >= self.finish_delay:
                job.status = job.final_status or "failed"

    def snapshot(self) -> dict:
        with self.lock:
            self._advance()
            return {
                "jobs": [{"panda_id": j.panda_id, "site": j.site, "status": j.status, "attempt_nr": j.attempt_nr,
                          "updates": len(j.updates)} for j in self.jobs.values()],
                "harvesters": {h: {"workers": list(v.get("workers", {}).values()), "stats": v.get("stats", {})}
                               for h, v in self.harvesters.items()},
                "instances": self.instances,
                "relations": sorted(self.relations),
                "commands": list(self.commands.values()),
            }

    # -- API handlers (called with the lock held; `dn` is the client's DN or the token's identity) ------

    def is_alive(self, dn):
        return True, "", None

    def heartbeat(self, dn, harvester_id, data):
        if not isinstance(data, dict) or set(data) - HEARTBEAT_KEYS:
            return False, MSG_DATABASE, None
        entry = self._harvester(harvester_id)
        entry["dn"] = dn
        if data.get("commands"):
            entry["subscriptions"] = data["commands"]
        if harvester_id not in self.instances:
            # The server inserts the instance row without the heartbeat's data, then reports "no instance record".
            self.instances[harvester_id] = {"registered": time.time(), "owner": dn, "description": "automatic"}
            return False, MSG_DATABASE, None
        self.instances[harvester_id].update({k: v for k, v in data.items() if k != "commands"},
                                            lastUpdate=_now_str())
        entry["heartbeats"].append({"time": _now_str(), "data": data})
        return True, "", None

    def acquire_jobs(self, dn, site_name, n_jobs, prod_source_label, resource_type, job_type, background,
                     harvester_id, worker_id, scheduler_id, **_):
        if not self._production(dn) and prod_source_label != "user":
            return False, MSG_NO_PROD_ROLE_JOBS, None
        harvester_id = harvester_id or scheduler_id
        picked = []
        for job in self.jobs.values():
            if len(picked) >= n_jobs:
                break
            if job.status != "activated" or job.site != site_name:
                continue
            if prod_source_label and job.spec.get("prodSourceLabel") != prod_source_label:
                continue
            if resource_type and job.spec.get("resource_type") != resource_type:
                continue
            if bool(job.spec.get("background", False)) != bool(background):
                continue
            job.status = "sent"
            job.spec["nSent"] = int(job.spec.get("nSent", 0)) + 1
            picked.append({k: v for k, v in job.spec.items() if k != "background"})
            if harvester_id is not None and worker_id is not None:
                # The worker row is written whatever happens; the relation only for a known instance.
                self._harvester(harvester_id)["workers"].setdefault(worker_id, {"workerID": worker_id}).update(
                    status="running", nJobs=1, lastUpdate=_now_str())
                if harvester_id in self.instances:
                    self.relations.add((harvester_id, worker_id, job.panda_id))
        if not picked:
            return False, MSG_NO_JOBS, None
        return True, "", {"StatusCode": 0, "jobs": picked}

    def update_job(self, dn, job_id, job_status, attempt_nr, **fields):
        if job_status not in VALID_JOB_STATES:
            return False, f"Invalid job status: {job_status}", {"StatusCode": 50}
        job = self.jobs.get(job_id)
        if job is None or job.status not in ("sent", "starting", "running", "transferring", "holding"):
            return True, "", {"StatusCode": 0, "command": "tobekilled"}
        if attempt_nr is not None and attempt_nr != job.attempt_nr:
            return True, "", {"StatusCode": 0, "command": "tobekilled"}
        update = {"job_id": job_id, "job_status": job_status, "attempt_nr": attempt_nr,
                  **{k: v for k, v in fields.items() if v not in (None, "") and k != "timeout"}}
        job.updates.append(update)
        if fields.get("pilot_log"):   # a new log record on every call that carries one
            job.pilot_logs.append(str(fields["pilot_log"])[:4000])
        if fields.get("pilot_id"):
            job.pilot_id = str(fields["pilot_id"])[:200]
        if fields.get("batch_id"):
            job.batch_id = str(fields["batch_id"])[:80]
        if job.status == "holding" and job_status in ("finished", "failed"):
            return True, "", {"StatusCode": 0, "command": "alreadydone"}
        command = "tobekilled" if job.kill_requested else "NULL"
        if job_status in ("finished", "failed"):
            job.status = "holding"
            job.final_status = job_status
            job.holding_since = time.time()
        else:
            job.status = job_status
        return True, "", {"StatusCode": 0, "command": command}

    def update_jobs_bulk(self, dn, job_list, harvester_id):
        route = ROUTES["pilot/update_job"]
        answers = []
        for entry in job_list:
            if self._refuse_entries and self.fault_random.random() < 0.5:   # not applied, and says so
                answers.append(_as_answer(False, "failed with OperationalError (simulated)", {"StatusCode": 30}))
                continue
            if not isinstance(entry, dict):
                return False, f"failed with TypeError {type(entry).__name__} is not a mapping", []
            entry = dict(entry)
            for key in ("job_id", "job_status"):
                if key not in entry:
                    return False, f"failed with KeyError '{key}'", []
            if "meta_data" in entry:
                entry["meta_data"] = str(entry["meta_data"])
            try:
                answers.append(_as_answer(*self._call(route, dn, entry)))
            except ServerFault as exc:
                return False, f"failed with AttributeError {exc}", []
        return True, "", answers

    def get_job_status(self, dn, job_ids, timeout):
        self._advance()
        out = []
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None:
                out.append({"job_id": job_id, "status": "not found", "attempt_number": 0})
            else:
                out.append({"job_id": job_id, "status": job.status, "attempt_number": job.attempt_nr})
        return True, "", out

    def update_workers(self, dn, harvester_id, workers):
        if not workers or any(not isinstance(w, dict) or "workerID" not in w for w in workers):
            return False, MSG_DATABASE, None
        stored = self._harvester(harvester_id)["workers"]
        for worker in workers:
            old = stored.setdefault(worker["workerID"], {})
            # A final worker keeps its final status (the server ignores late non-final updates).
            if old.get("status") in ("finished", "failed", "cancelled", "missed"):
                worker = {k: v for k, v in worker.items() if k != "status"}
            old.update(worker)
            panda_ids = worker.get("pandaid_list")
            if panda_ids:   # written without checking the instance; other relations of the worker go
                self.relations -= {r for r in self.relations if r[:2] == (harvester_id, worker["workerID"])
                                   and r[2] not in panda_ids}
                self.relations |= {(harvester_id, worker["workerID"], int(p)) for p in panda_ids}
            self._stamp_worker_error(harvester_id, old)
        return True, "", [True] * len(workers)

    def _stamp_worker_error(self, harvester_id: str, worker: dict) -> None:
        """DBProxy.updateWorkers: a final worker with an error code sets supErrorCode and supErrorDiag on each
        related job that is still active and not holding (a job whose own final update came first keeps its
        own story; one still running gets the worker's)."""
        if worker.get("status") not in ("finished", "failed", "cancelled", "missed") or \
                worker.get("errorCode") in (None, 0):
            return
        for harvester, worker_id, panda_id in self.relations:
            job = self.jobs.get(panda_id)
            if harvester != harvester_id or worker_id != worker.get("workerID") or job is None:
                continue
            if job.status in ("sent", "starting", "running", "transferring"):
                job.sup_error_code = worker["errorCode"]
                job.sup_error_diag = f"Diag from worker : {worker.get('diagMessage')}"[:250]

    def report_worker_statistics(self, dn, harvester_id, panda_queue, statistics):
        try:
            stats = json.loads(statistics)
        except ValueError:
            return False, "database error", None
        self._harvester(harvester_id)["stats"][panda_queue] = stats
        return True, "OK", None

    def acquire_commands(self, dn, harvester_id, n_commands, timeout):
        out = []
        for command in self.commands.values():
            if len(out) >= n_commands:
                break
            if command["status"] == "new" and command["harvester_id"] in (None, harvester_id):
                command["status"] = "retrieved"
                out.append({k: command[k] for k in ("command_id", "command", "params", "ack_requested",
                                                     "creation_date")})
        return True, "", out

    def acknowledge_commands(self, dn, command_ids, timeout):
        if not command_ids:   # SQL "IN ()" fails in the real server
            return False, MSG_DATABASE, None
        for command_id in command_ids:
            if command_id in self.commands:
                self.commands[command_id]["status"] = "acknowledged"
        return True, "", None

    def update_service_metrics(self, dn, harvester_id, metrics):
        """DBProxy.updateServiceMetrics: every entry is [creation_time "%Y-%m-%d %H:%M:%S.%f", host, metrics
        text] (timestamp first, whatever the docstring says), inserted with one executemany into
        HARVESTER_METRICS (HOST VARCHAR2(100), METRICS VARCHAR2(4000)) and committed; any exception rolls
        the whole call back and answers the database error. An empty list is inserted as nothing and
        answers [True] (UNCONFIRMED on Oracle; harvester-cli never sends one)."""
        rows = []
        try:
            for entry in metrics:
                created = datetime.strptime(entry[0], "%Y-%m-%d %H:%M:%S.%f")
                host, text = entry[1], entry[2]
                # What the Oracle columns take: a string (a JSON object is no bind value), within its size.
                if not isinstance(host, str) or len(host.encode()) > 100:
                    raise ValueError("HARVESTER_HOST")
                if not isinstance(text, str) or len(text.encode()) > 4000:
                    raise ValueError("METRICS")
                rows.append({"harvester_id": harvester_id, "creation_time": created, "host": host, "metrics": text})
        except (TypeError, ValueError, IndexError, KeyError):
            return False, MSG_DATABASE, None
        self.service_metrics.extend(rows)
        return True, "", [True]

    def get_current_worker_id(self, dn, harvester_id):
        workers = self.harvesters.get(harvester_id, {}).get("workers", {})
        if not workers:   # MAX() over no rows is NULL: the server calls that a database error
            return False, MSG_DATABASE, None
        return True, "", max(workers)

    def get_resource_types(self, dn):
        return True, "", RESOURCE_TYPES

    def refresh_job_counts(self) -> None:
        """The materialized view's refresh: count active jobs {site: {resource_type: {label: {status: n}}}}."""
        with self.lock:
            self._advance()
            counts: dict = {}
            for job in self.jobs.values():
                if job.status in ("finished", "failed", "cancelled", "closed", "merging"):
                    continue
                by_label = counts.setdefault(job.site, {}).setdefault(str(job.spec.get("resource_type")), {})
                by_status = by_label.setdefault(str(job.spec.get("prodSourceLabel")),
                                                {"assigned": 0, "activated": 0, "running": 0})
                by_status[job.status] = by_status.get(job.status, 0) + 1
            self._stats_snapshot = (time.time(), counts)

    def _refresher(self, stop: threading.Event) -> None:
        """Like pg_cron's "* * * * *": a refresh on every multiple of stats_refresh seconds since the epoch."""
        while not stop.wait(self.stats_refresh - time.time() % self.stats_refresh):
            self.refresh_job_counts()

    def _job_counts(self) -> dict:
        if not self.stats_refresh or self._stats_snapshot is None:
            self.refresh_job_counts()
        return self._stats_snapshot[1]

    def active_job_stats_by_site(self, dn):
        stats: dict[str, dict[str, int]] = {}
        for site, by_type in self._job_counts().items():
            by_status = stats.setdefault(site, {})
            for by_label in by_type.values():
                for counts in by_label.values():
                    for status, n in counts.items():
                        by_status[status] = by_status.get(status, 0) + n
        if not stats:
            return False, MSG_NO_JOB_STATS, {}
        return True, "", stats

    def active_job_detailed_stats_by_site(self, dn):
        counts = self._job_counts()
        if not counts:
            return False, MSG_NO_DETAILED_JOB_STATS, {}
        return True, "", json.loads(json.dumps(counts))

    def kill_jobs(self, dn, job_ids, code, use_email_as_id, kill_options):
        if use_email_as_id:
            raise ServerFault("get_email_address() missing 1 required positional argument: 'tmp_logger'")
        done = []
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is not None and job.status not in ("finished", "failed", "cancelled", "closed"):
                job.kill_requested = True
                done.append(True)
            else:
                done.append(False)
        return True, "", done

    # -- plumbing ----------------------------------------------------------------------------

    def draw_fault(self, path: str) -> str | None:
        """The fault this call gets, if any (is_alive is never failed: it is how clients check the server)."""
        with self.lock:
            if not self.faults or path == "system/is_alive":
                return None
            for mode, rate in self.faults.items():
                if mode == "partial_bulk" and path != "pilot/update_jobs_bulk":
                    continue
                if self.fault_random.random() < rate:
                    self.faults_seen[mode] = self.faults_seen.get(mode, 0) + 1
                    return mode
        return None

    def _harvester(self, harvester_id: str) -> dict:
        return self.harvesters.setdefault(harvester_id, {"workers": {}, "stats": {}, "heartbeats": []})

    def _production(self, dn: str | None) -> bool:
        return self.production_dns is None or any(p in (dn or "") for p in self.production_dns)

    def _call(self, route: Route, dn: str | None, args: dict) -> tuple[bool, str, Any]:
        """The decorator's checks in the server's order (secure, production, method is checked by the
        caller), then the handler."""
        if route.secure and dn is None:
            return False, MSG_SECURE, None
        if route.production and not self._production(dn):
            return False, MSG_PROD_ROLE, None
        try:
            bound = _bind(route, args)
            _type_check(route, bound, args)
        except ArgumentError as exc:
            return False, str(exc), None
        return getattr(self, route.handler)(dn, **bound)

    # -- admin over HTTP ---------------------------------------------------------------------

    def admin(self, name: str, body: dict) -> Any:
        if name == "add_jobs":
            return self.add_jobs(body["site"], int(body.get("count", 1)), **body.get("spec", {}))
        if name == "add_command":
            return self.add_command(body["command"], body.get("params"), bool(body.get("ack_requested")),
                                    body.get("harvester_id"))
        if name == "state":
            return self.snapshot()
        if name == "calls":
            with self.lock:
                return list(self.calls)
        raise KeyError(name)


def _as_answer(success: bool, message: str, data: Any) -> dict:
    return {"success": success, "message": message, "data": data}


def _encode_special(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return {"__datetime__": obj.isoformat()}
    raise TypeError(f"Type not serializable for {obj} ({type(obj)})")


class _Handler(BaseHTTPRequestHandler):
    sim: PandaSimulator
    protocol_version = "HTTP/1.1"   # keep-alive, like Apache in front of the real server

    def setup(self) -> None:
        self.request.do_handshake()
        with self.sim.lock:
            self.sim.connections += 1
        super().setup()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("sim %s - %s", self.address_string(), fmt % args)

    def _identity(self) -> str | None:
        """The client DN (certificate), or the token's subject; None if neither."""
        cert = self.request.getpeercert()
        if cert:
            dn = "/" + "/".join(f"{_DN_NAMES.get(k, k)}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
            return None if "/CN=limited proxy" in dn else dn
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer ") and header[7:].strip() in self.sim.tokens and self.headers.get("Origin"):
            return f"token:{self.headers['Origin']}"
        return None

    def _reply(self, status: int, body: bytes) -> None:
        # The real server labels every answer text/plain, JSON or not.
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            raw = gzip.decompress(raw)
        return raw

    def _dispatch(self, method: str) -> None:
        sim = self.sim
        url = urlsplit(self.path)
        raw = self._read_body()
        with sim.lock:
            outage = sim.fail_next.pop(0) if sim.fail_next else None
        if outage:
            self._reply(outage, b"simulated outage")
            return
        identity = self._identity()
        if url.path.startswith("/admin/"):
            self._admin(url.path.removeprefix("/admin/"), identity, raw)
            return
        path = url.path.removeprefix(API_PREFIX)
        fault = None if self.headers.get("User-Agent", "").startswith("harvester-cli-testpilot") else sim.draw_fault(path)
        if fault in ("5xx", "hang", "reset", "garbage", "truncated"):
            self._fail(fault)
            return
        if fault == "refuse":
            self._reply(200, json.dumps(_as_answer(False, "simulated failure: try again later", None)).encode())
            return
        route = ROUTES.get(path) if url.path.startswith(API_PREFIX) else None
        if route is not None and route.handler == "active_job_detailed_stats_by_site" and not sim.detailed_stats:
            route = None   # servers before 0.7.0
        if route is None:
            self._reply(403, f"ERROR : method {path.rsplit('/', 1)[-1]} is forbidden".encode())
            return
        content_type = self.headers.get("Content-Type", "")
        json_app = content_type == "application/json" or self.headers.get("Accept", "") == "application/json"
        record: dict[str, Any] = {"method": method, "path": path, "dn": identity, "time": time.time()}
        cast_error = None
        try:
            if method == "POST" and content_type == "application/json":
                try:
                    args = json.loads(raw or b"{}")
                except ValueError as exc:
                    raise ServerFault(f"ERROR : received invalid JSON : {exc}") from None
                if not isinstance(args, dict):
                    raise ServerFault(f"tmp_method() argument after ** must be a mapping, not {type(args).__name__}")
            elif method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
                args = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
            elif method == "POST":
                args = {}   # werkzeug reads no parameters from any other body (e.g. "application/json; charset=utf-8")
            else:
                args, cast_error = _cast_get(route, url.query)
            record["args"] = args
            with sim.lock:
                if route.secure and identity is None:
                    answer = (False, MSG_SECURE, None)
                elif route.production and not sim._production(identity):
                    answer = (False, MSG_PROD_ROLE, None)
                elif method != route.method:
                    answer = (False, f"expecting {route.method}, received {method}", None)
                elif cast_error:   # the server binds arguments before it type-checks them
                    try:
                        _bind(route, dict(args))
                        answer = (False, cast_error, None)
                    except ArgumentError as exc:
                        answer = (False, str(exc), None)
                else:
                    sim._refuse_entries = fault == "partial_bulk"
                    answer = sim._call(route, identity, dict(args))
                    sim._refuse_entries = False
                record["answer"] = _as_answer(*answer)
                sim.calls.append(record)
        except (ServerFault, ValueError) as exc:
            record["answer"] = {"http": 500, "text": str(exc)}
            with sim.lock:
                sim.calls.append(record)
            self._reply(500, str(exc).encode())
            return
        except Exception as exc:  # a simulator bug still answers like the real server: HTTP 500, plain text
            log.exception("simulator handler failed")
            self._reply(500, str(exc).encode())
            return
        with sim.lock:
            lost = sim.lose_reply.get(path, 0) > 0 or fault == "lost_reply"
            if sim.lose_reply.get(path, 0) > 0:
                sim.lose_reply[path] -= 1
        if lost:
            self._reply(502, b"reply lost after the server applied the call")
            return
        body = _as_answer(*answer)
        text = json.dumps(body, default=_encode_special) if json_app else str(body)
        self._reply(200, text.encode())

    def _fail(self, mode: str) -> None:
        """A fault that stops the call before the server applies it."""
        if mode == "5xx":
            self._reply(503, b"Service Unavailable (simulated)")
        elif mode == "hang":
            time.sleep(self.sim.hang_seconds)
            self.close_connection = True
        elif mode == "reset":
            self.close_connection = True
            self.request.close()
        elif mode == "garbage":
            self._reply(200, b"<html><body>Proxy Error (simulated)</body></html>")
        elif mode == "truncated":
            body = json.dumps(_as_answer(True, "", {"StatusCode": 0, "jobs": []})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            self.request.close()

    def _admin(self, name: str, identity: str | None, raw: bytes) -> None:
        if identity is None:
            self._reply(403, b"client certificate required")
            return
        try:
            body = json.loads(raw or b"{}")
            with self.sim.lock:
                data = self.sim.admin(name, body)
        except KeyError:
            self._reply(404, b"no such admin call")
            return
        except (ValueError, TypeError) as exc:
            self._reply(400, f"bad admin request: {exc}".encode())
            return
        self._reply(200, json.dumps(data, default=str).encode())


def _port(text: str) -> int:
    import argparse

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: 0 (any free port) to 65535")
    return port


def main(argv: list[str] | None = None) -> None:
    """Run harvester-cli's PanDA simulator standalone (HTTPS with a test CA, for the demo and tests): python -m
    harvester_cli.panda.sim --dir DIR [--port N] [--jobs SITE:N ...]."""
    import argparse
    import errno
    from pathlib import Path

    from harvester_cli.panda.sim import certs

    parser = argparse.ArgumentParser(prog="python -m harvester_cli.panda.sim", description=main.__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="directory for the test CA and certificates "
                        "(made on first use, reused after)")
    parser.add_argument("--port", type=_port, default=25443,
                        help="port on 127.0.0.1 (default: 25443, PanDA's own; 0: a free one, printed on the first "
                             "line)")
    parser.add_argument("--jobs", action="append", default=[], metavar="SITE:N",
                        help="activated jobs to add for a PanDA queue (repeatable)")
    parser.add_argument("--finish-delay", type=float, default=5.0, metavar="SECONDS",
                        help="how long a job of the test pilot takes (default: 5)")
    parser.add_argument("--stats-refresh", type=float, default=60.0, metavar="SECONDS",
                        help="seconds between refreshes of the job counts, the materialized view (default: 60)")
    options = parser.parse_args(argv)
    pki = certs.TestPKI(options.dir) if (options.dir / "ca.pem").exists() else certs.create(options.dir)
    try:
        sim = PandaSimulator(pki, port=options.port, finish_delay=options.finish_delay,
                             stats_refresh=options.stats_refresh).start()
    except OSError as exc:   # the port is taken (often: another simulator still runs)
        parser.exit(2, f"{parser.prog}: cannot listen on 127.0.0.1:{options.port}: {exc.strerror}"
                       f"{' (try --port 0 for a free one)' if exc.errno == errno.EADDRINUSE else ''}\n")
    for item in options.jobs:
        site, _, count = item.partition(":")
        sim.add_jobs(site, int(count or 1))
    print(f"PanDA simulator on {sim.url}\n  CA: {pki.ca_file}\n  proxy: {pki.proxy}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
