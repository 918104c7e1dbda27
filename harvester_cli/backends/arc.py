"""ARC CE backend over the A-REX REST interface (pyarcrest): submitter, monitor, messenger, sweeper.

Each worker is one ARC job (`_arc_description`: ADL, and why ADL). The job name `<harvester id>:<worker
id>` is the tag `find` uses to adopt a job whose submission was interrupted. Jobs are grouped per CE
(`computing_element` = the A-REX endpoint URL) for bulk status, info, kill and clean calls.

Credentials (the queue's `ce_credentials`): `proxy` (default): the instance's X.509 proxy (`[panda]
proxy`, read from the context at every call) is the client certificate for the CE and the credential
delegated to the jobs (`_arc_delegation`). A pull pilot finds the delegated proxy in X509_USER_PROXY and
the CE's CA directory in X509_CERT_DIR, which the wrapper also passes as HARVESTER_PANDA_CA unless the
queue sets it. `token`: every REST call carries `Authorization: Bearer` with the CE's own token (the file
the queue's per-CE token profile keeps for that CE's audience; renew-proxy renews it, a renewed file
makes a new client); nothing is delegated, and the pilots get a PanDA token of their own
(`pilot_token_profile`, uploaded with the job). `both`: the token authorizes, the proxy is still the TLS
client certificate and is delegated for data. A CE that refuses the token fails each worker with one line:
the CE, the token file, and what in the token it would refuse (site.bearer.refusal_reason).

What A-REX 6.17 and pyarcrest 0.5 do with tokens (seen against the real CE, tests/test_tokens.py):
- A-REX answers every refused token with a bare 403 and no body (another audience, expired, no
  compute.create, untrusted issuer alike): the reason has to come from the token's own claims.
- A-REX fetches the issuer's JWKS itself (OIDC discovery on `iss`) with a client whose CA directory is
  always /etc/grid-security/certificates (not x509_cert_dir); the token needs a `kid`; EC keys in the
  JWKS fail to parse ("JWSE::ExtractPublicKey: key parsing error"), so ES256 tokens are refused: the
  issuer must sign with RS256. At DEBUG it logs whole bearer tokens.
- pyarcrest's REST 1.0 class asserts that it has no token; `connect` lifts that (`_Rest10`). pyarcrest
  writes the Authorization header into a mutable default dict, which would send the token on every later
  request of the process; `_copying_client` copies headers per request. With a token and a proxy,
  pyarcrest delegates the token unless createDelegation is given proxypath, and signs with
  self.proxypath, which it leaves empty for token clients.

Where the pilot's Python comes from: `{python}` in the queue's pilot command is the harvester host's
interpreter, meaningless on a CE; the backend runs `backend_options.python` (default `python3` from the
job's PATH) instead. Whatever the pilot imports must exist on the CE or be shipped with the job:
`input_files` (local files uploaded with every job, or URLs the CE fetches) plus `environment` (e.g.
PYTHONPATH="$PWD/pilot.zip"). The tests ship harvester_cli and its pure-Python dependencies as one zip,
so the same setup works on a CE that is not this host.

States (REST): ACCEPTING..QUEUING -> submitted; RUNNING, EXITINGLRMS, EXECUTED, FINISHING -> running;
HELD -> held; FINISHED -> finished (failed if the exit code is not 0); FAILED -> failed (an error on the
queue's `transient_errors` list asks for the job to be resubmitted); KILLED, WIPED -> cancelled; anything
else (KILLING, OTHER, a state not seen before) is in progress: the worker keeps its status. States are
not monotonic, so no order is assumed. A job the CE does not know (404) is missing (failed after the
queue's grace).

Outputs: when a job is seen ended, its stdout/stderr, heartbeat.json, jobReport.json, the queue's
`output_files` and A-REX's own log of the job (`pilot.log`; `arc-errors.log` before) are downloaded into the
worker's log directory before the end is reported; if the CE cannot deliver them now, the worker keeps its
status and the next poll tries again (for up to an hour after the job ended). The CE session is cleaned only
by `clean`, i.e. after the retention, when the outputs are long safe.

A CE that cannot be reached: submit raises before creating anything (the workers stay pending and the
next submit's repair asks the CE again, so an outage costs a job at most one attempt, not one per run);
check keeps every worker's status (an error of the poll when no CE of the batch answers); kill reports
the workers not killed (sweep retries); clean raises (sweep keeps the workers until the CE answers).

Retiring a queued pilot (`retire`): only while A-REX itself still holds the job (ACCEPTING..PREPARED), read
with `action=status` just before `action=kill`; A-REX 6.17's REST has no conditional kill and shows a job in
its batch system as RUNNING whether it waits there or runs, so such a job is left alone.

Example queue (TOML):

    [queues.SITE_ARC]
    mode = "push"
    backend = "arc"
    pilot = "/bin/bash runpilot2-wrapper.sh -s {queue} -r {queue} -q {queue} -j {prod_source_label}"
    [queues.SITE_ARC.backend_options]
    endpoints = ["https://arc1.example.org:443/arex", "https://arc2.example.org:443/arex"]
    queue = "grid"
    runtime_environments = ["ENV/PROXY"]
    input_files = ["https://pandaserver.cern.ch/cache/pilot/runpilot2-wrapper.sh"]
    stage_inputs = "rucio://rucio-lb-prod.cern.ch/replicas/{scope}/{lfn}"
    ca = "/etc/grid-security/certificates"
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
import sys
import warnings
from collections import defaultdict
from datetime import timezone
from pathlib import Path
from urllib.parse import urlsplit

from harvester_cli import model
from harvester_cli.backends import _arc_description as adl
from harvester_cli.backends._arc_delegation import Delegations
from harvester_cli.backends.base import (
    Backend,
    FreeResources,
    KillResult,
    Observation,
    RetireResult,
    SubmitResult,
    WorkerRef,
    WorkerSpec,
    part_file,
)
from harvester_cli.config.backend_options import ArcOptions
from harvester_cli.errors import BackendError
from harvester_cli.panda.pilot_outputs import JOB_DESCRIPTION, PILOT_OUTPUTS
from harvester_cli.site.logs import make_dirs
from harvester_cli.site.secretfiles import write_private

log = logging.getLogger(__name__)

QUEUED = frozenset({"ACCEPTING", "ACCEPTED", "PREPARING", "PREPARED", "SUBMITTING", "QUEUING"})
RUNNING = frozenset({"RUNNING", "EXITINGLRMS", "EXECUTED", "FINISHING"})
ENDED = frozenset({"FINISHED", "FAILED", "KILLED", "WIPED"})
# Held by A-REX itself, not yet given to its batch system: a kill there ends the job before any batch job
# exists (retire). SUBMITTING is not: A-REX defers a cancel until the submission is done, then cancels the
# batch job, which may have started.
HELD_BY_AREX = frozenset({"ACCEPTING", "ACCEPTED", "PREPARING", "PREPARED"})
# A job in these states may still wait for the files its submitter uploads (crash repair re-uploads).
WAITING_FOR_UPLOADS = frozenset({"ACCEPTING", "ACCEPTED", "PREPARING"})

BATCH_LOG = adl.BATCH_LOG   # A-REX's own log of the job (its "errors" diagnose file); arc-errors.log before
CHUNK = 100
# An ended job whose outputs the CE cannot deliver is reported without them after this long.
OUTPUT_RETRY_SECONDS = 3600
# CE fanout: recent history that weighs the CEs of a queue.
CE_HISTORY_SECONDS = 6 * 3600



class Refused(BackendError):
    """One CE answered and refused this client's credentials (a token, a proxy whose DN it does not map), or
    renew-proxy has not made the token: a reason of the workers, not an outage."""


class TokenProblem(Refused):
    """One CE refused its token, or renew-proxy has not made it."""


class CredentialsRefused(BackendError):
    """Every CE of the queue refused its credentials (or has no token yet): the workers fail with the reasons."""


def _unreachable(exc: BaseException) -> bool:
    """A transport failure (refused, reset, timeout, TLS): the CE said nothing about the jobs."""
    return isinstance(exc, (OSError, http.client.HTTPException))


def _http_status(value) -> int | None:
    return getattr(value, "status", None)


def _chunks(items: list, size: int = CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _epoch(value) -> float | None:
    try:
        return value.replace(tzinfo=timezone.utc).timestamp()
    except AttributeError:
        return None


def _copying_client(host: str, port: int, timeout: float):
    """pyarcrest's HTTPClient, except that each request gets its own headers and params: pyarcrest 0.5 writes
    the Authorization header into a mutable default argument, so without this a bearer token would ride on
    every later request of the process, other CEs' and proxy-only clients' included."""
    from pyarcrest.http import HTTPClient

    class CopyingHTTPClient(HTTPClient):
        def request(self, method, endpoint, headers=None, token=None, jsonData=None, data=None, params=None):
            return super().request(method, endpoint, dict(headers or {}), token, jsonData, data, dict(params or {}))

    return CopyingHTTPClient(host=host, port=port, timeout=timeout)


def connect(endpoint: str, proxy: Path | None, timeout: float, ca: Path | None, token: str | None = None):
    """A pyarcrest client for the highest REST version both sides speak, authenticated by the proxy (TLS
    client certificate), the bearer token (Authorization header), or both.

    pyarcrest does not verify the CE's certificate; with `ca` (a CA file or hashed directory) this
    connection does, host name included. pyarcrest 0.5's REST 1.0 class refuses tokens (an assert), though
    A-REX 6.17 takes them on every REST call; `_Rest10` lifts that.
    """
    from pyarcrest.arc import ARCRest, ARCRest_1_0, ARCRest_1_1

    if proxy is None and token is None:
        raise BackendError(f"ARC CE {endpoint}: neither a proxy nor a token to authenticate with")
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise BackendError(f"ARC endpoint {endpoint!r} is not an https URL")
    port = parts.port or 443
    api_base = parts.path.rstrip("/") or "/arex"
    client = _copying_client(parts.hostname, port, timeout)
    if ca is None:
        with warnings.catch_warnings():   # pyarcrest's unverified context uses the deprecated PROTOCOL_TLS
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None,
                                             capath=str(ca) if ca.is_dir() else None)
    if proxy is not None:
        context.load_cert_chain(str(proxy))
    client.conn = http.client.HTTPSConnection(parts.hostname, port, context=context, timeout=timeout)
    client.conn.set_debuglevel(0)   # pyarcrest turns http.client's header dump on (logged at DEBUG)

    class _Rest10(ARCRest_1_0):
        def __init__(self, *args):
            ARCRest.__init__(self, *args)
            self.version = "1.0"
            self.apiPath = f"{self.apiBase}/rest/{self.version}"

    versions = ARCRest.getAPIVersionsStatic(client, api_base, token)
    for version, implementation in (("1.1", ARCRest_1_1), ("1.0", _Rest10)):
        if version in versions:
            rest = implementation(client, token, str(proxy) if proxy else None, api_base, None, None, timeout)
            # pyarcrest keeps one of the two; delegating a proxy over a token connection signs with proxypath
            rest.proxypath = str(proxy) if proxy else None
            return rest
    client.close()
    raise BackendError(f"ARC CE {endpoint} offers REST versions {versions}; pyarcrest speaks 1.0 and 1.1")


# A-REX's states before its batch system has the job: a job that failed in one of them never started.
BEFORE_LRMS = frozenset({"ACCEPTING", "ACCEPTED", "PREPARING", "PREPARED", "SUBMITTING"})


def _started(info: dict) -> bool | None:
    """The CE's word on whether a failed job ever started: False when it failed before its batch system had
    it (REST info's restartState, where A-REX would restart it) and left no exit code; None otherwise."""
    restart = str(info.get("restartState") or info.get("RestartState") or "").rpartition(":")[2].upper()
    return False if restart in BEFORE_LRMS and info.get("ExitCode") is None else None


def _refused(exc: BaseException) -> bool:
    """The CE answered and said no to our credentials (A-REX: a bare 401 or 403)."""
    return _http_status(exc) in (401, 403)


class ArcBackend(Backend):
    name = "arc"
    delivers_files = True

    Options = ArcOptions
    retires_queued = True

    def __init__(self, queue, context):
        super().__init__(queue, context)
        self._clients: dict[str, tuple[object, tuple]] = {}
        self._delegations = Delegations(self.state_dir / "delegations.json", self.options.delegation_min_lifetime)
        self._fetched: set[int] = set()   # workers whose outputs check() brought home in this process

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.context.work_root / "arc"

    def staging_dir(self, worker_id: int) -> Path:
        """The files uploaded into a worker's session (the wrapper, pandaJobData.out), kept until clean."""
        return self.state_dir / self.queue.name / str(worker_id)

    def _proxy(self) -> Path:
        proxy = self.context.proxy
        if proxy is None:
            raise BackendError("the arc backend needs an X.509 proxy ([panda] proxy) with ce_credentials "
                               f"\"{self.context.ce_credentials}\": it authenticates to the CE and is delegated "
                               "to the jobs")
        return Path(proxy)

    @property
    def uses_proxy(self) -> bool:
        return self.context.ce_credentials in ("proxy", "both")

    @property
    def uses_token(self) -> bool:
        return self.context.ce_credentials in ("token", "both") and self.context.ce_token is not None

    def _token(self, endpoint: str):
        """This CE's token (CEToken) and its text; BackendError when renew-proxy has not made it."""
        from harvester_cli.site.secretfiles import register_secret

        ce_token = self.context.ce_token(endpoint, "arc-ce")
        try:
            text = ce_token.read()
        except BackendError as exc:
            raise TokenProblem(f"ARC CE {endpoint}: {exc}") from None
        register_secret(text)
        return ce_token, text

    def _client(self, endpoint: str):
        proxy = self._proxy() if self.uses_proxy else None
        token = self._token(endpoint) if self.uses_token else None
        stamp: tuple = ()
        for path in ([proxy] if proxy else []) + ([token[0].file] if token else []):
            try:
                stamp += (str(path), path.stat().st_mtime_ns)
            except FileNotFoundError:
                raise BackendError(f"{path} does not exist (the arc backend authenticates with it)") from None
        cached = self._clients.get(endpoint)
        if cached and cached[1] == stamp:
            return cached[0]
        if cached:   # renewed: the TLS client certificate is part of the connection, the token of the client
            self._drop(endpoint)
        try:
            client = connect(endpoint, proxy, self.options.timeout, self.options.ca, token[1] if token else None)
        except Exception as exc:
            if token and _refused(exc):
                raise TokenProblem(self._refusal(endpoint, exc)) from exc
            if _refused(exc):   # the proxy: its DN is not mapped, or it cannot be delegated
                raise Refused(f"ARC CE {endpoint} refused the proxy {proxy} (HTTP {_http_status(exc)}): its DN is "
                              "not authorized or mapped there, nothing can be delegated") from exc
            raise
        self._clients[endpoint] = (client, stamp)
        return client

    def _refusal(self, endpoint: str, exc: BaseException) -> str:
        """One line: which CE refused which token, and what in the token a CE would refuse."""
        from harvester_cli.site import bearer

        ce_token = self.context.ce_token(endpoint, "arc-ce")
        try:
            text = ce_token.file.read_text().strip()
        except OSError:
            text = None
        return (f"ARC CE {endpoint} refused the token {ce_token.file} (HTTP {_http_status(exc)}): "
                f"{bearer.refusal_reason(text, ce_token.audience)}")

    def _drop(self, endpoint: str) -> None:
        cached = self._clients.pop(endpoint, None)
        if cached:
            try:
                cached[0].close()
            except Exception:
                pass

    def close(self) -> None:
        for endpoint in list(self._clients):
            self._drop(endpoint)

    def _by_ce(self, workers: list[WorkerRef]) -> dict[str | None, list[WorkerRef]]:
        groups: dict[str | None, list[WorkerRef]] = defaultdict(list)
        for worker in workers:
            groups[worker.computing_element if worker.batch_id else None].append(worker)
        return groups

    # -- what can start now (free_resources) --------------------------------------------------------

    def free_resources(self, cores: int, memory_mb: int) -> list[FreeResources]:
        """Per CE: the free slots its GLUE2 information gives for the queue's ARC queue (_arc_resources.py),
        as workers of `cores`; a CE that does not answer cannot tell. Raises when none answers."""
        from harvester_cli.backends import _arc_resources as glue2

        out, problems = [], []
        for endpoint in self.options.endpoints:
            at = model.now()
            try:
                info = self._client(endpoint).getCEInfo()
            except Exception as exc:   # noqa: BLE001 (refused, unreachable, a bad answer: this CE cannot tell)
                self._drop(endpoint)
                problems.append(f"{endpoint}: {exc}")
                out.append(FreeResources(endpoint, f"A-REX info: {str(exc)[:200]}", at))
                continue
            found = glue2.pick(glue2.shares(info), self.options.queue)
            free = [n for n in (glue2.number(s.get("FreeSlots")) for s in found) if n is not None]
            if not free:
                queue = f"ARC queue {self.options.queue}" if self.options.queue else "any share"
                out.append(FreeResources(endpoint, f"A-REX GLUE2 info: no FreeSlots for {queue}", at))
                continue
            slots = sum(free)
            entries = [e for s in found for e in glue2.durations(s.get("FreeSlotsWithDuration"))]
            span = (glue2.window(entries, cores, self.queue.walltime, self.queue.min_walltime) if entries
                    else self.queue.walltime)
            waiting = [n for n in (glue2.number(s.get("WaitingJobs")) for s in found) if n is not None]
            names = ",".join(str(s.get("Name")) for s in found)
            out.append(FreeResources(endpoint, f"A-REX GLUE2 info, share {names}: FreeSlots={slots}", at,
                                     workers=slots // max(1, cores) if span else 0, window=span, idle_cores=slots,
                                     waiting=sum(waiting) if waiting else None))
        if problems and len(problems) == len(self.options.endpoints):
            raise BackendError("no ARC CE answered for its information (" + "; ".join(problems) + ")")
        return out

    # -- submit --------------------------------------------------------------------------------

    def submit(self, specs: list[WorkerSpec]) -> list[SubmitResult]:
        results: dict[int, SubmitResult] = {}
        try:
            assigned = self._assign(specs)
        except CredentialsRefused as exc:   # every CE said no to its credentials: each worker says why
            only = self.options.endpoints[0] if len(self.options.endpoints) == 1 else None
            return [SubmitResult(s.worker_id, error=str(exc), computing_element=only) for s in specs]
        for endpoint, group in assigned.items():
            for chunk in _chunks(group):
                results.update(self._submit_to(endpoint, chunk))
                self.submitted(len(chunk))
        return [results[s.worker_id] for s in specs]

    def _assign(self, specs: list[WorkerSpec]) -> dict[str, list[WorkerSpec]]:
        """Spread the workers over the reachable CEs not in an announced downtime, fewest recently queued first.

        No reachable CE is an error for the whole call: the workers stay pending and the next submit
        asks the CEs again (find), so a CE outage costs no job a submission attempt per run.
        """
        reachable, problems, refusals = [], [], []
        down = self.ces_in_downtime(list(self.options.endpoints))
        problems += [f"{endpoint}: {why}" for endpoint, why in down.items()]
        for endpoint in self.options.endpoints:
            if endpoint in down:   # an announced downtime: not even asked
                continue
            try:
                self._client(endpoint)
                reachable.append(endpoint)
            except Exception as exc:
                self._drop(endpoint)
                if isinstance(exc, Refused):
                    # the CE answered (or there is no token to show it): a reason of the workers, not an outage
                    refusals.append(str(exc))
                    log.warning("queue %s: %s", self.queue.name, exc)
                    continue
                problems.append(f"{endpoint}: {exc}")
                log.warning("queue %s: ARC CE %s unreachable: %s", self.queue.name, endpoint, exc)
        if not reachable and refusals and not problems:
            raise CredentialsRefused("; ".join(refusals))
        if not reachable:
            raise BackendError(f"no ARC CE reachable ({'; '.join(problems + refusals)})")
        load = {endpoint: 0 for endpoint in reachable}
        if len(reachable) > 1 and self.context.ce_statistics:
            stats = self.context.ce_statistics(self.queue.name, model.now() - CE_HISTORY_SECONDS)
            load.update({e: stats.get(e, {}).get("queued", 0) for e in reachable})
        groups: dict[str, list[WorkerSpec]] = defaultdict(list)
        for spec in specs:
            endpoint = min(reachable, key=lambda e: (load[e], reachable.index(e)))
            load[endpoint] += 1
            groups[endpoint].append(spec)
        return groups

    def _activity(self, spec: WorkerSpec, delegation: str | None) -> adl.Activity:
        staging = self.staging_dir(spec.worker_id)
        staging.mkdir(parents=True, exist_ok=True)
        command = spec.pilot_command.replace(sys.executable, self.options.python)
        wrapper = staging / adl.WRAPPER
        wrapper.write_text(adl.wrapper_script(spec.worker_id, self.context.harvester_id, spec.queue, command,
                                              spec.environment, self.options.environment))
        uploads = {adl.WRAPPER: str(wrapper)}
        uploads.update({name: str(path) for name, path in self.context.pilot_files.items()})
        annotations = []
        if spec.job is not None:

            # The job dict may carry secrets (pilotSecrets): readable by the harvester's user only.
            job_file = staging / JOB_DESCRIPTION
            write_private(job_file, spec.job.description.encode())
            uploads[JOB_DESCRIPTION] = str(job_file)
            annotations.append(f"PandaID={spec.job.panda_id}")
        remote = {}
        for source in self.options.input_files:
            if "://" in source:
                remote[adl.input_file_name(source)] = source
            else:
                uploads[adl.input_file_name(source)] = source
        remote.update(adl.staged_inputs(spec.job, self.options.stage_inputs))
        return adl.activity(
            name=adl.job_name(self.context.harvester_id, spec.worker_id), n_core=spec.n_core,
            memory_mb=spec.memory_mb, walltime=adl.walltime_seconds(spec.job, spec.walltime),
            queue=self.options.queue, runtime_environments=self.options.runtime_environments,
            delegation_id=delegation, uploads=uploads, remote_inputs=remote,
            outputs=[*PILOT_OUTPUTS, *self.options.output_files], annotations=annotations,
        )

    def _result(self, worker_id: int, endpoint: str, job_id: str) -> SubmitResult:
        return SubmitResult(worker_id, batch_id=job_id, submission_host=socket.gethostname(),
                            computing_element=endpoint, stdout=adl.STDOUT, stderr=adl.STDERR,
                            batch_log=BATCH_LOG)

    def _submit_to(self, endpoint: str, specs: list[WorkerSpec]) -> dict[int, SubmitResult]:
        """Create the jobs in one request, then upload each job's files.

        A transport failure is raised: jobs may exist on the CE, so the workers stay pending and the
        next submit's repair finds (and completes the uploads of) the ones that do.
        """
        client = self._client(endpoint)
        # token only: nothing to delegate (the job has no proxy; its pilot gets a PanDA token instead)
        try:
            delegation = self._delegations.get(client, endpoint, self._proxy()) if self.uses_proxy else None
        except Exception as exc:
            if _http_status(exc) is None:   # a transport failure: the CE said nothing
                self._drop(endpoint)
                raise
            reason = f"ARC CE {endpoint} refused the delegation (HTTP {_http_status(exc)}): {exc}"
            return {s.worker_id: SubmitResult(s.worker_id, error=reason, computing_element=endpoint) for s in specs}
        activities = [self._activity(spec, delegation) for spec in specs]
        for spec, activity in zip(specs, activities):
            try:   # what was submitted, for people (the monitor's .jdl link)
                make_dirs(spec.log_dir)
                (spec.log_dir / adl.DESCRIPTION).write_text(adl.bulk([activity]) + "\n")
            except OSError as exc:
                log.warning("worker %s: cannot write %s: %s", spec.worker_id, adl.DESCRIPTION, exc)
        try:
            created = client.createJobs(adl.bulk(activities))
        except Exception as exc:
            self._drop(endpoint)
            if self.uses_token and _refused(exc):
                reason = self._refusal(endpoint, exc)
                return {s.worker_id: SubmitResult(s.worker_id, error=reason) for s in specs}
            raise
        from harvester_cli.faults import fault_point

        fault_point("arc_after_create")   # crash tests: the jobs exist, their files are not uploaded
        if len(created) != len(specs):
            raise BackendError(f"ARC CE {endpoint} answered {len(created)} results for {len(specs)} jobs")
        results = {}
        for spec, activity, outcome in zip(specs, activities, created):
            if outcome.error:
                results[spec.worker_id] = SubmitResult(spec.worker_id, error=f"ARC CE {endpoint} refused the job: "
                                                       f"{outcome.value}", computing_element=endpoint)
                continue
            job_id = outcome.value[0]
            problem = self._upload(client, endpoint, job_id, activity.uploads)
            if problem:
                self._discard(client, job_id)
                results[spec.worker_id] = SubmitResult(spec.worker_id, error=problem, computing_element=endpoint)
            else:
                results[spec.worker_id] = self._result(spec.worker_id, endpoint, job_id)
        return results

    def _upload(self, client, endpoint: str, job_id: str, uploads: dict[str, str]) -> str | None:
        """Upload a job's files; returns a problem of this job, raises on transport failures."""
        from pyarcrest.errors import ARCHTTPError

        for name, path in uploads.items():
            try:
                client.uploadFile(job_id, name, path)
            except ARCHTTPError as exc:
                return f"ARC CE {endpoint} refused input {name} of job {job_id}: {exc}"
            except FileNotFoundError as exc:
                return f"input file {path} of job {job_id}: {exc.strerror}"
            except Exception:
                self._drop(endpoint)
                raise
        return None

    def _discard(self, client, job_id: str) -> None:
        try:
            client.killJobs([job_id])
            client.cleanJobs([job_id])
        except Exception as exc:
            log.warning("queue %s: cannot remove ARC job %s after a failed upload: %s", self.queue.name, job_id, exc)

    # -- check ---------------------------------------------------------------------------------

    def check(self, workers: list[WorkerRef]) -> list[Observation]:
        seen: dict[int, Observation] = {}
        groups = self._by_ce(workers)
        down = []
        for endpoint, group in groups.items():
            if endpoint is None:
                for w in group:
                    seen[w.worker_id] = Observation(w.worker_id, model.MISSING, diag="no ARC job id recorded")
                continue
            try:
                seen.update(self._check_ce(endpoint, group))
            except Exception as exc:
                if not _unreachable(exc) and _http_status(exc) is None:
                    raise
                self._drop(endpoint)
                down.append(f"{endpoint}: {exc}")
                for w in group:   # unchanged: nothing is known
                    seen[w.worker_id] = Observation(w.worker_id, w.status, diag=f"ARC CE unreachable: {exc}")
        if down and len(down) == len([e for e in groups if e is not None]):
            raise BackendError(f"ARC CE unreachable ({'; '.join(down)})")
        return [seen[w.worker_id] for w in workers]

    def _check_ce(self, endpoint: str, workers: list[WorkerRef]) -> dict[int, Observation]:
        client = self._client(endpoint)
        seen: dict[int, Observation] = {}
        ended: list[tuple[WorkerRef, str]] = []
        for chunk in _chunks(workers):
            for w, outcome in zip(chunk, client.getJobsStatus([w.batch_id for w in chunk])):
                if outcome.error:
                    if _http_status(outcome.value) == 404:
                        seen[w.worker_id] = Observation(w.worker_id, model.MISSING, diag=f"ARC job {w.batch_id} "
                                                        f"unknown to {endpoint} (cleaned or expired)")
                    else:
                        seen[w.worker_id] = Observation(w.worker_id, w.status, diag=f"ARC status: {outcome.value}")
                    continue
                state = str(outcome.value)
                if state in ENDED:
                    ended.append((w, state))
                elif state in QUEUED:
                    seen[w.worker_id] = Observation(w.worker_id, model.SUBMITTED, state)
                elif state in RUNNING:
                    seen[w.worker_id] = Observation(w.worker_id, model.RUNNING, state)
                elif state == "HELD":
                    seen[w.worker_id] = Observation(w.worker_id, model.HELD, state, diag="held by the CE")
                else:   # KILLING, OTHER, anything new: in progress, the worker keeps its status
                    seen[w.worker_id] = Observation(w.worker_id, w.status, state)
        for chunk in _chunks(ended):
            infos = client.getJobsInfo([w.batch_id for w, _ in chunk])
            for (w, state), info in zip(chunk, infos):
                seen[w.worker_id] = self._ended(client, endpoint, w, state, {} if info.error else info.value)
        return seen

    def _ended(self, client, endpoint: str, w: WorkerRef, state: str, info: dict) -> Observation:
        errors = [str(e) for e in info.get("Error") or []]
        exit_code = info.get("ExitCode")
        end = _epoch(info.get("EndTime"))
        try:
            self._download(client, w)
        except Exception as exc:
            if not _unreachable(exc) and _http_status(exc) is None:
                raise
            if _unreachable(exc):
                self._drop(endpoint)
            if end is None or model.now() - end < OUTPUT_RETRY_SECONDS:
                return Observation(w.worker_id, w.status, state, exit_code,
                                   f"ARC job {state}; outputs not retrieved yet: {exc}")
            errors.append(f"outputs lost: {exc}")
        diag = "; ".join(errors) or None
        if state == "FINISHED":
            if not exit_code:
                return Observation(w.worker_id, model.FINISHED, state, exit_code, diag, end_time=end)
            return Observation(w.worker_id, model.FAILED, state, exit_code, diag or f"exit code {exit_code}",
                               end_time=end)
        if state == "FAILED":
            text = (diag or "").lower()
            transient = any(t.lower() in text for t in self.options.transient_errors if t)
            return Observation(w.worker_id, model.FAILED, state, exit_code, diag or "ARC job failed",
                               end_time=end, resubmit=transient, started=_started(info))
        return Observation(w.worker_id, model.CANCELLED, state, exit_code, diag or f"ARC job {state.lower()}",
                           end_time=end)

    def _wanted_outputs(self) -> list[str]:
        return list(dict.fromkeys([adl.STDOUT, adl.STDERR, *PILOT_OUTPUTS, *self.options.output_files]))

    def _download(self, client, w: WorkerRef, names: list[str] | None = None) -> None:
        """Bring the job's outputs (those that exist) and A-REX's log of it into the worker's log directory."""
        from pyarcrest.errors import (
            ARCHTTPError,
            MissingDiagnoseFile,
            MissingOutputFile,
        )

        if w.log_dir is None:
            return
        make_dirs(w.log_dir)
        try:
            listing = set(client.downloadListing(w.batch_id, "")["file"])
        except ARCHTTPError as exc:
            if exc.status == 404:   # the session is gone (cleaned, expired): nothing to fetch
                return
            raise
        for name in names or self._wanted_outputs():
            if name in listing:
                tmp = part_file(w.log_dir / name)
                try:
                    client.downloadFile(w.batch_id, name, str(tmp))
                    os.replace(tmp, w.log_dir / name)
                except MissingOutputFile:
                    pass
                finally:   # a failed download leaves no part behind
                    tmp.unlink(missing_ok=True)
        if names is None:
            tmp = part_file(w.log_dir / BATCH_LOG)
            try:
                client.downloadDiagnoseFile(w.batch_id, "errors", str(tmp))
                os.replace(tmp, w.log_dir / BATCH_LOG)
            except MissingDiagnoseFile:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            self._fetched.add(w.worker_id)

    # -- outputs (push messenger) ----------------------------------------------------------------

    def fetch_outputs(self, worker: WorkerRef, names: list[str]) -> dict[str, Path]:
        if worker.log_dir is None:
            return {}
        missing = [n for n in names if not (worker.log_dir / n).is_file()]
        if missing and worker.worker_id not in self._fetched and worker.batch_id and worker.computing_element:
            self._download(self._client(worker.computing_element), worker, missing)
        return {n: worker.log_dir / n for n in names if (worker.log_dir / n).is_file()}

    # -- kill ----------------------------------------------------------------------------------

    def kill(self, workers: list[WorkerRef], reason: str) -> list[KillResult]:
        done: dict[int, KillResult] = {}
        for endpoint, group in self._by_ce(workers).items():
            if endpoint is None:   # never reached a CE
                done.update({w.worker_id: KillResult(w.worker_id, True) for w in group})
                continue
            try:
                client = self._client(endpoint)
                for chunk in _chunks(group):
                    for w, outcome in zip(chunk, client.killJobs([w.batch_id for w in chunk])):
                        if not outcome.error or _http_status(outcome.value) == 404:   # 404: the CE forgot it
                            done[w.worker_id] = KillResult(w.worker_id, True)
                        else:
                            done[w.worker_id] = KillResult(w.worker_id, False, f"ARC kill: {outcome.value}")
            except Exception as exc:
                if not _unreachable(exc) and _http_status(exc) is None:
                    raise
                self._drop(endpoint)
                for w in group:
                    done.setdefault(w.worker_id, KillResult(w.worker_id, False, f"ARC CE {endpoint} unreachable: {exc}"))
        if any(r.ok for r in done.values()):
            log.info("queue %s: asked ARC to kill %d workers (%s)", self.queue.name,
                     sum(r.ok for r in done.values()), reason)
        return [done[w.worker_id] for w in workers]

    # -- retire --------------------------------------------------------------------------------

    def retire(self, workers: list[WorkerRef], reason: str) -> list[RetireResult]:
        """Kill each job only while A-REX still holds it, before its batch system has it. A-REX 6.17's REST
        interface (1.0) has no conditional kill (`action=kill` cancels whatever the job does) and reports a job
        in its batch system as RUNNING whether it waits there or runs ("talking to LRMS would be too heavy"),
        so the only state in which a pilot surely has not started is one before A-REX submits it
        (ACCEPTING, ACCEPTED, PREPARING, PREPARED: a cancel request there ends the job without a batch job).
        The status is read, then those are killed; a job A-REX hands to its batch system in between is
        cancelled there (a window of A-REX's own processing loop). Every other live job is left alone."""
        done: dict[int, RetireResult] = {}
        for endpoint, group in self._by_ce(workers).items():
            if endpoint is None:   # never reached a CE
                done.update({w.worker_id: RetireResult(w.worker_id, RetireResult.GONE, "no ARC job id recorded")
                             for w in group})
                continue
            try:
                client = self._client(endpoint)
                for chunk in _chunks(group):
                    holding = []
                    for w, outcome in zip(chunk, client.getJobsStatus([w.batch_id for w in chunk])):
                        if outcome.error:
                            if _http_status(outcome.value) == 404:
                                done[w.worker_id] = RetireResult(w.worker_id, RetireResult.GONE, "unknown to the CE")
                            else:
                                done[w.worker_id] = RetireResult(w.worker_id, RetireResult.FAILED,
                                                                 f"ARC status: {outcome.value}")
                        elif str(outcome.value) in HELD_BY_AREX:
                            holding.append((w, str(outcome.value)))
                        elif str(outcome.value) in ENDED:
                            done[w.worker_id] = RetireResult(w.worker_id, RetireResult.GONE, str(outcome.value))
                        else:   # in the batch system (or on its way there): it may run any moment
                            done[w.worker_id] = RetireResult(w.worker_id, RetireResult.STARTED, str(outcome.value))
                    if not holding:
                        continue
                    killed = client.killJobs([w.batch_id for w, _ in holding])
                    for (w, state), outcome in zip(holding, killed):
                        if not outcome.error:
                            done[w.worker_id] = RetireResult(w.worker_id, RetireResult.RETIRED, state)
                        elif _http_status(outcome.value) == 404:
                            done[w.worker_id] = RetireResult(w.worker_id, RetireResult.GONE, "unknown to the CE")
                        else:
                            done[w.worker_id] = RetireResult(w.worker_id, RetireResult.FAILED, f"ARC kill: {outcome.value}")
            except Exception as exc:
                if not _unreachable(exc) and _http_status(exc) is None:
                    raise
                self._drop(endpoint)
                for w in group:
                    done.setdefault(w.worker_id, RetireResult(w.worker_id, RetireResult.FAILED,
                                                              f"ARC CE {endpoint} unreachable: {exc}"))
        retired = sum(r.outcome == RetireResult.RETIRED for r in done.values())
        if retired:
            log.info("queue %s: asked ARC to kill %d queued workers (%s)", self.queue.name, retired, reason)
        return [done[w.worker_id] for w in workers]

    # -- crash repair --------------------------------------------------------------------------

    def find(self, workers: list[WorkerRef]) -> list[SubmitResult | None]:
        """Look the workers' job names up on every CE of the queue (all jobs of this proxy's owner)."""
        wanted = {adl.job_name(self.context.harvester_id, w.worker_id): w.worker_id for w in workers}
        found: dict[int, SubmitResult] = {}
        for endpoint in self.options.endpoints:
            client = self._client(endpoint)   # unreachable: raise, the workers stay pending
            ids = client.getJobsList()
            for chunk in _chunks(ids):
                for job_id, info in zip(chunk, client.getJobsInfo(chunk)):
                    if info.error or info.value.get("Name") not in wanted:
                        continue
                    worker_id = wanted[info.value["Name"]]
                    if worker_id in found:
                        continue
                    found[worker_id] = self._result(worker_id, endpoint, job_id)
                    if info.value.get("state") in WAITING_FOR_UPLOADS:
                        self._complete_uploads(client, endpoint, worker_id, job_id)
        return [found.get(w.worker_id) for w in workers]

    def _complete_uploads(self, client, endpoint: str, worker_id: int, job_id: str) -> None:
        """An interrupted submission may have created the job but not uploaded its files: upload them again."""
        staging = self.staging_dir(worker_id)
        uploads = {name: str(staging / name) for name in (adl.WRAPPER, JOB_DESCRIPTION) if (staging / name).is_file()}
        uploads.update({adl.input_file_name(s): s for s in self.options.input_files if "://" not in s})
        problem = self._upload(client, endpoint, job_id, uploads) if uploads else None
        if problem:
            log.warning("queue %s: worker %s: %s", self.queue.name, worker_id, problem)

    # -- clean ---------------------------------------------------------------------------------

    def clean(self, workers: list[WorkerRef]) -> None:
        """Remove the CE sessions of final workers (their outputs are long in the log directory)."""
        for endpoint, group in self._by_ce(workers).items():
            if endpoint is not None:
                try:
                    client = self._client(endpoint)
                    for chunk in _chunks(group):
                        for w, outcome in zip(chunk, client.cleanJobs([w.batch_id for w in chunk])):
                            if outcome.error and _http_status(outcome.value) != 404:
                                log.warning("queue %s: worker %s: ARC clean of %s: %s", self.queue.name,
                                            w.worker_id, w.batch_id, outcome.value)
                except Exception as exc:
                    if _unreachable(exc):
                        self._drop(endpoint)
                    raise BackendError(f"ARC CE {endpoint}: cannot clean: {exc}") from exc
            for w in group:
                self._remove_staging(w.worker_id)

    def _remove_staging(self, worker_id: int) -> None:
        import shutil

        shutil.rmtree(self.staging_dir(worker_id), ignore_errors=True)


BACKEND = ArcBackend
