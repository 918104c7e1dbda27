"""HTCondor backend (PyPI `htcondor`, module `htcondor2`): vanilla jobs in a schedd's pool, or grid jobs to
HTCondor-CEs (condor-C) and ARC-CEs, APF/Harvester style.

Submission: per queue and CE one `Schedd.submit` call with itemdata (one job per worker, at most
`max_at_once` per call) from a submit description template per CE flavour (templates/htcondor/*.sub, or
the queue's `template`); the per-worker values are HTCondor macros (list in _htcondor_submit.py). Each job
carries +harvesterID, +harvesterWorkerID, +harvesterQueue and +harvesterCE. The executable is a small
per-worker wrapper (in the worker's private directory under work_dir) that exports the pilot environment,
runs the pilot command and copies the pilot's outputs (heartbeat.json, jobReport.json) into a
`harvester-outputs` directory that HTCondor always brings back (a missing output file would hold the job).
The job's initial directory is the worker's log directory: pilot.out, pilot.err, pilot.log (the job event
log), pilot.jdl (what was submitted) and harvester-outputs/ land there (batch.log and submit.sub for workers
made before). Push mode ships pandaJobData.out (mode 0600, in the private directory) with
transfer_input_files.

CE fanout (ce_choice.py): the queue's CEs come from `ces` or a CRIC pandaqueue file; each worker's CE is a
weighted random choice (recent throughput from the state store mixed with a fair share); CEs that queue the
queue limit get nothing; CEs that keep failing or cannot be reached (GridResourceUnavailableTime seen by
poll, remembered in <work_dir>/<queue>/.ce-health.json) are benched for `ce_backoff_seconds`; CEs in an
announced downtime (or one a worker's walltime would run into) get nothing while it lasts.

Monitoring: one `Schedd.query` per schedd per poll round of up to 10,000 workers (projection only, constraint
on harvester id and the round's worker id range), then `Schedd.history` bounded in age (`history_window`) for
those no longer in the queue. Held jobs stay idle with the hold reason; the policy asks for removal when held
longer than `held_timeout`, for a hold reason on `kill_hold_reasons`, or when a grid job's CE has been
unreachable for `unavailable_timeout`. `kill` removes with `Schedd.act(JobAction.Remove, ids, reason=(text,
code))` and checks the counts. `retire` removes with a constraint that adds `JobStatus == 1`, which the schedd
evaluates as it removes: a pilot that started meanwhile is left running. For grid jobs JobStatus is the
gridmanager's view of the CE, as fresh as its last probe (GRIDMANAGER_JOB_PROBE_INTERVAL): a pilot that
started at the CE since then is idle here, and removing it ends it at the CE. `find` (crash repair) looks the
tags up in the queue and the history.

Identity: the schedd runs jobs as the authenticated user and refuses Owner root. Run harvester-cli as the
submitting account; if it must run as root (the test suite does), authenticate as another account (e.g.
SEC_CLAIMTOBE_USER in a test pool's client config, or IDTOKENS for that user) and set `job_owner` to it, so
that the per-worker directories harvester-cli creates belong to the account the shadow writes them as.

Tokens: with `ce_credentials` token or both, each grid job's `scitokens_file` is its own CE's token (the
file the queue's per-CE token profile keeps for that CE's audience; with token alone there is no
`x509userproxy`); without a per-CE profile, `token_file` serves every CE. Running as root for a
`job_owner`, the token is copied into the worker's private directory (the gridmanager reads it as that
account); otherwise the job points at the live file renew-proxy rewrites. The pilot's PanDA token (and
key) are copied into the worker's directory and travel with transfer_input_files. With
`schedd_token_file`, every call to the schedd authenticates with that token (SCITOKENS only).

What HTCondor 25 does with SCITOKENS (seen against the real schedd, tests/test_tokens.py):
- SCITOKENS runs inside an SSL handshake: the schedd needs a host certificate (AUTH_SSL_SERVER_CERTFILE)
  whose names include the host alias in its address (the short host name, not only localhost), and the
  client must trust it (AUTH_SSL_CLIENT_CAFILE in its HTCondor configuration).
- The schedd verifies the token with scitokens-cpp, which fetches the issuer's JWKS with libcurl and the
  system CA bundle unless SCITOKEN_CONFIG_TLS_CA_FILE is in the daemon's environment (no HTCondor knob).
- A wrong audience fails authentication ("'aud' claim verification failed" in the SchedLog; the client
  only sees "Failed to authenticate using SCITOKENS"); a token whose scopes lack compute.read is
  authenticated and mapped but DENIED: a submission needs compute.read and compute.create.
- Condor-C: the gridmanager hands the job's scitokens_file to the C-GAHP (UPDATE_TOKEN), but the CE picks
  the method from its own list: with FS or CLAIMTOBE before SCITOKENS there, the job gets in without its
  token. The test CE lists SCITOKENS first; its copy of the job then carries AuthTokenSubject/Issuer.
- A /regex/ principal in the map file with the issuer URL's slashes escaped did not match; a quoted
  literal "ISSUER,SUBJECT" did.
- htcondor2 keeps the GIL while it authenticates (an issuer thread in the same process cannot answer
  the schedd's JWKS request), has no SecMan in v2 (security settings are the process-wide `param`,
  set around each call here), and reuses an authenticated session for later calls of the process.

htcondor2 is imported only inside the calls that talk to HTCondor (config check and --help stay light).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import socket
from collections import defaultdict
from pathlib import Path

from harvester_cli import model
from harvester_cli.backends import _htcondor_status as status_map
from harvester_cli.backends import _htcondor_submit as build
from harvester_cli.backends import ce_choice
from harvester_cli.backends.base import (
    Backend,
    KillResult,
    Observation,
    RetireResult,
    SubmitResult,
    WorkerRef,
    WorkerSpec,
    copy_into_place,
)
from harvester_cli.config.backend_options import HTCondorOptions
from harvester_cli.config.ces import CE_FLAVOURS
from harvester_cli.panda.pilot_outputs import JOB_DESCRIPTION, PILOT_OUTPUTS
from harvester_cli.site.logs import make_dirs
from harvester_cli.site.secretfiles import write_private

log = logging.getLogger(__name__)

HEALTH_FILE = ".ce-health.json"
# A spooled job that ended whose outputs the schedd cannot deliver is reported without them after this long.
OUTPUT_RETRY_SECONDS = 3600
# HoldReasonCode-like code sent with our removals (1: by the user).
REMOVE_CODE = 1


class HTCondorBackend(Backend):
    name = "htcondor"
    delivers_files = True

    Options = HTCondorOptions
    retires_queued = True
    # The schedd evaluates a query's constraint on every job of its queue: with 100k live workers, pages of 500
    # cost 200 scans per poll (25 s), pages of 10,000 cost 10.
    check_page = 10_000

    def __init__(self, queue, context):
        super().__init__(queue, context)
        self._schedds: dict[str, object] = {}
        self._forced: dict[str, float] = {}   # schedd -> when this process last forced its stuck removed jobs out
        self._rng = random.Random()
        self.policy = status_map.Policy(self.options.held_timeout, tuple(self.options.kill_hold_reasons),
                                        self.options.unavailable_timeout)

    @classmethod
    def is_host_bound(cls, options: HTCondorOptions | None) -> bool:
        """This host's own schedd (no `schedd` or `schedds` named) is reached from this host only: its workers
        are this host's. A named schedd (located through a collector) any host reaches: any host works them."""
        return options is None or (options.schedd is None and not options.schedds)

    # -- places ------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return (self.options.work_dir or self.context.work_root) / self.queue.name

    def work_dir(self, worker_id: int) -> Path:
        return self.root / str(worker_id)

    @property
    def proxy(self) -> Path | None:
        return self.options.proxy or self.context.proxy

    def schedd_name(self) -> str:
        if self.options.schedd:
            return self.options.schedd
        import htcondor2

        return htcondor2.param.get("SCHEDD_NAME") or socket.getfqdn()

    def schedd(self, name: str | None = None):
        """The schedd of this queue (or the named one a worker was submitted to), located once per process."""
        import htcondor2

        name = name or self.schedd_name()
        if name not in self._schedds:
            if name == self.schedd_name() and not self.options.schedd:
                self._schedds[name] = htcondor2.Schedd()
            else:
                address = next((s.collector for s in self.options.schedds if s.name == name and s.collector),
                               self.options.collector)
                collector = htcondor2.Collector(address) if address else htcondor2.Collector()
                ad = collector.locate(htcondor2.DaemonType.Schedd, name)
                if ad is None:
                    raise RuntimeError(f"collector {address or 'of the HTCondor config'} "
                                       f"does not know schedd {name!r}")
                self._schedds[name] = htcondor2.Schedd(ad)
        return self._schedds[name]

    @contextlib.contextmanager
    def schedd_auth(self):
        """With `schedd_token_file`, every call to the schedd authenticates with that bearer token and nothing
        else. htcondor2 reads the client's security settings from its process-wide configuration, so they are
        set around each call and restored after (other queues may talk to other schedds)."""
        if self.options.schedd_token_file is None:
            yield
            return
        import htcondor2

        wanted = {"SCITOKENS_FILE": str(self.options.schedd_token_file),
                  "SEC_CLIENT_AUTHENTICATION_METHODS": "SCITOKENS"}
        saved = {k: htcondor2.param.get(k) for k in wanted}
        for key, value in wanted.items():
            htcondor2.param[key] = value
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    htcondor2.param.pop(key, None)
                else:
                    htcondor2.param[key] = value

    def ce_token(self, ce: ce_choice.CEEntry | None) -> Path | None:
        """The bearer token a grid job carries to its CE (scitokens_file): the CE's own from the queue's per-CE
        profile, else the queue's one token_file; none for proxy-only queues and vanilla jobs."""
        if ce is None or self.context.ce_credentials == "proxy":
            return self.options.token_file if ce is not None else None
        if self.context.ce_token is None:
            return self.options.token_file
        return self.context.ce_token(ce.endpoint, ce.flavour).file

    def computing_elements(self) -> list[ce_choice.CEEntry]:
        """The queue's ACTIVE CEs (empty: vanilla jobs in the schedd's pool)."""
        if self.options.cric_file:
            try:
                data = json.loads(self.options.cric_file.read_text())
                entries = ce_choice.from_cric(data, self.queue.site)
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"cannot read the CEs of {self.queue.site} from {self.options.cric_file}: {exc}")
        else:
            entries = [ce_choice.CEEntry(c.endpoint, c.flavour, c.queue, c.state) for c in self.options.ces]
        usable = []
        for entry in entries:
            if entry.flavour not in CE_FLAVOURS:
                log.warning("queue %s: CE %s: flavour %s is not one this backend submits to (%s); skipped",
                            self.queue.name, entry.endpoint, entry.flavour, ", ".join(CE_FLAVOURS))
            elif entry.active:
                usable.append(entry)
        return usable

    def _ce_names(self) -> dict[str, str | None]:
        return {c.endpoint: c.name for c in self.options.ces}

    # -- CE health (between poll and submit runs) --------------------------------------------

    def _health_path(self) -> Path:
        return self.root / HEALTH_FILE

    def load_health(self) -> dict:
        try:
            return json.loads(self._health_path().read_text())
        except (OSError, ValueError):
            return {}

    def save_health(self, health: dict) -> None:
        path = self._health_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(health))
        tmp.replace(path)

    # -- submit ------------------------------------------------------------------------------

    def assign_ces(self, specs: list[WorkerSpec]) -> tuple[list[tuple[WorkerSpec, ce_choice.CEEntry | None]], list[SubmitResult]]:
        """A CE per worker (None: vanilla), and an error result for workers no CE can take."""
        try:
            ces = self.computing_elements()
        except RuntimeError as exc:   # e.g. an unreadable CRIC file: say so on every worker
            return [], [SubmitResult(s.worker_id, error=str(exc)) for s in specs]
        if not ces:
            if self.options.ces or self.options.cric_file:
                return [], [SubmitResult(s.worker_id, error="no ACTIVE CE for this queue") for s in specs]
            return [(s, None) for s in specs], []
        at = model.now()
        names = [c.endpoint for c in ces]
        stats_of = self.context.ce_statistics or (lambda queue, since: {})
        stats = stats_of(self.queue.name, at - self.options.ce_stats_window)
        recent = stats_of(self.queue.name, at - self.options.ce_backoff_seconds)
        benched = ce_choice.bench_reasons(names, health=self.load_health(), recent=recent, at=at,
                                          backoff_seconds=self.options.ce_backoff_seconds,
                                          max_failures=self.options.ce_backoff_failures)
        benched.update(self.ces_in_downtime(names))
        usable = [n for n in names if n not in benched]
        limit = self.queue.n_queue_limit_worker
        capacity = {n: max(0, limit - stats.get(n, {}).get("queued", 0)) for n in usable}
        weights = ce_choice.weights(usable, stats, self.options.ce_fair_share)
        picks = ce_choice.choose(weights, len(specs), capacity, self._rng)
        by_name = {c.endpoint: c for c in ces}
        assigned = [(spec, by_name[ce]) for spec, ce in zip(specs, picks)]
        if len(picks) < len(specs):
            why = [f"{ce}: {reason}" for ce, reason in benched.items()]
            why += [f"{ce}: already queues {limit - room} of {limit}" for ce, room in capacity.items() if room <= 0]
            error = "no CE can take this worker (" + ("; ".join(why) or "no usable CE") + ")"
            only = names[0] if len(names) == 1 else None   # counted against it (errors per CE)
            return assigned, [SubmitResult(s.worker_id, error=error, computing_element=only)
                              for s in specs[len(picks):]]
        return assigned, []

    def assign_schedds(self, specs: list[WorkerSpec]) -> tuple[dict[int, str], list[SubmitResult]]:
        """Schedd fanout (backend_options.schedds): a schedd per worker, chosen as CEs are (ce_choice: recent
        throughput with ce_fair_share, at most n_queue_limit_worker queued per schedd, benched after
        ce_backoff_failures failed submissions in ce_backoff_seconds), and an error for workers none can take.
        Without schedds, every worker goes to the one schedd."""
        if not self.options.schedds:
            return {s.worker_id: self.schedd_name() for s in specs}, []
        names = [s.name for s in self.options.schedds if s.state == "ACTIVE"]
        at = model.now()
        stats_of = self.context.ce_statistics or (lambda queue, since, by: {})
        stats = stats_of(self.queue.name, at - self.options.ce_stats_window, by="submission_host")
        recent = stats_of(self.queue.name, at - self.options.ce_backoff_seconds, by="submission_host")
        benched = ce_choice.bench_reasons(names, health={}, recent=recent, at=at,
                                          backoff_seconds=self.options.ce_backoff_seconds,
                                          max_failures=self.options.ce_backoff_failures)
        usable = [n for n in names if n not in benched]
        limit = self.queue.n_queue_limit_worker
        capacity = {n: max(0, limit - stats.get(n, {}).get("queued", 0)) for n in usable}
        picks = ce_choice.choose(ce_choice.weights(usable, stats, self.options.ce_fair_share), len(specs), capacity,
                                 self._rng)
        chosen = {spec.worker_id: name for spec, name in zip(specs, picks)}
        if len(picks) == len(specs):
            return chosen, []
        why = [f"{n}: {reason}" for n, reason in benched.items()]
        why += [f"{n}: already queues {limit - room} of {limit}" for n, room in capacity.items() if room <= 0]
        error = "no schedd can take this worker (" + ("; ".join(why) or "no ACTIVE schedd") + ")"
        return chosen, [SubmitResult(s.worker_id, error=error) for s in specs[len(picks):]]

    def submit(self, specs: list[WorkerSpec]) -> list[SubmitResult]:
        schedd_of, results = self.assign_schedds(specs)
        assigned, failed = self.assign_ces([s for s in specs if s.worker_id in schedd_of])
        results += failed
        groups: dict[tuple[str, str], list[tuple[WorkerSpec, ce_choice.CEEntry | None]]] = defaultdict(list)
        for spec, ce in assigned:
            groups[(schedd_of[spec.worker_id], ce.endpoint if ce else "")].append((spec, ce))
        for (schedd_name, _), members in groups.items():
            for start in range(0, len(members), self.options.max_at_once):
                outcome = self._submit_group(members[start:start + self.options.max_at_once], schedd_name)
                for result in outcome:   # a failure counts against its schedd (the fanout's back-off)
                    if not result.ok and result.submission_host is None and self.options.schedds:
                        result.submission_host = schedd_name
                results += outcome
                self.submitted(len(outcome))
        order = {s.worker_id: i for i, s in enumerate(specs)}
        return sorted(results, key=lambda r: order[r.worker_id])

    def _prepare(self, spec: WorkerSpec, ce: ce_choice.CEEntry | None, schedd_name: str) -> dict[str, str]:
        """The worker's directories and files; returns its macros."""
        work = self.work_dir(spec.worker_id)
        for directory in (spec.log_dir, work):
            make_dirs(directory)
        inputs = list(self.options.input_files)
        if spec.job is not None:
            # The job dict may carry secrets (pilotSecrets): readable by the job's account only.
            job_file = work / JOB_DESCRIPTION
            write_private(job_file, spec.job.description.encode())
            inputs.insert(0, str(job_file))
        proxy = self.proxy if ce is None or self.context.ce_credentials != "token" else None
        token = self.ce_token(ce)
        if token is not None and self.options.job_owner and os.geteuid() == 0:
            # Running as root for another account: the gridmanager reads the token as that account.
            token = self._private_copy(token, work / "ce.token")
        for name, source in self.context.pilot_files.items():
            # The pilot's PanDA token travels with the job (transfer_input_files keeps the name).
            inputs.append(str(self._private_copy(source, work / name)))
        environment = dict(spec.environment)
        if proxy:
            environment.pop("X509_USER_PROXY", None)   # HTCondor sets it to the job's copy of x509userproxy
        script = work / build.WRAPPER_NAME
        script.write_text(build.wrapper(spec, self.context.harvester_id, PILOT_OUTPUTS, environment))
        script.chmod(0o755)
        work.chmod(0o700)
        self._hand_over([spec.log_dir, work, script] + ([work / JOB_DESCRIPTION] if spec.job is not None else []))
        endpoint = ce.endpoint if ce else schedd_name
        return build.macros(
            spec, harvester_id=self.context.harvester_id, queue=self.queue, work_dir=work, input_files=inputs,
            ce_endpoint=endpoint, ce_flavour=ce.flavour if ce else "vanilla",
            ce_name=self._ce_names().get(endpoint) if ce else schedd_name, ce_queue=ce.queue if ce else None,
            proxy=proxy, token=token, disk_mb_per_core=self.options.disk_mb_per_core)

    def _private_copy(self, source: Path, target: Path) -> Path:
        write_private(target, source.read_bytes())
        self._hand_over([target])
        return target

    def _hand_over(self, paths: list[Path]) -> None:
        if not self.options.job_owner or os.geteuid() != 0:
            return
        import pwd

        entry = pwd.getpwnam(self.options.job_owner)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _submit_group(self, members: list[tuple[WorkerSpec, ce_choice.CEEntry | None]],
                      schedd_name: str | None = None) -> list[SubmitResult]:
        schedd_name = schedd_name or self.schedd_name()
        ce = members[0][1]
        endpoint = ce.endpoint if ce else schedd_name
        items, ready, results = [], [], []
        for spec, _ in members:
            try:
                items.append(self._prepare(spec, ce, schedd_name))
                ready.append(spec)
            except (OSError, ValueError, KeyError) as exc:
                results.append(SubmitResult(spec.worker_id, error=f"cannot prepare the worker's files: {exc}"))
        if not ready:
            return results
        if ce is not None and self.context.ce_credentials != "proxy" and self.context.ce_token is not None:
            ce_token = self.context.ce_token(ce.endpoint, ce.flavour)
            if not ce_token.file.is_file():
                error = (f"CE {ce.endpoint}: no token for audience {ce_token.audience} ({ce_token.file} does not "
                         "exist: run harvester-cli renew-proxy)")
                return results + [SubmitResult(s.worker_id, error=error) for s in ready]
        text = build.template_text(ce.flavour if ce else "vanilla", self.options.template)
        submit = build.description(text, harvester_id=self.context.harvester_id, queue_name=self.queue.name,
                                   ce=endpoint, extra=self.options.extra_attributes)
        names = build.log_names(submit)
        for spec, item in zip(ready, items):
            try:
                (spec.log_dir / names.jdl).write_text(build.rendered(submit, item))
            except OSError as exc:
                log.warning("worker %s: cannot write %s: %s", spec.worker_id, names.jdl, exc)
        try:
            schedd = self.schedd(schedd_name)   # located through the collector with the usual methods
            with self.schedd_auth():
                outcome = schedd.submit(submit, itemdata=iter(items), spool=self.options.spool)
                if self.options.spool:
                    self._spool(schedd, outcome)
        except Exception as exc:   # the schedd may have taken them before failing: ask it
            log.warning("queue %s: submission of %d workers to %s failed: %s", self.queue.name, len(ready),
                        endpoint, exc)
            if self.options.schedd_token_file is not None and "SCITOKENS" in str(exc):
                reason = self._token_refusal(schedd_name)
                return results + [SubmitResult(s.worker_id, error=f"schedd {schedd_name} refused the token "
                                                                  f"{self.options.schedd_token_file}: {reason} ({exc})")
                                  for s in ready]
            found = self.find([WorkerRef(s.worker_id, self.queue.name, None, schedd_name, None, model.PENDING,
                                         s.log_dir) for s in ready])
            return results + [f or SubmitResult(s.worker_id, error=f"schedd {schedd_name} refused the submission: {exc}")
                              for s, f in zip(ready, found)]
        cluster, first = outcome.cluster(), outcome.first_proc()
        if outcome.num_procs() != len(ready):   # never seen; do not guess which job is which worker
            log.warning("queue %s: asked for %d jobs, schedd made %d: looking them up", self.queue.name, len(ready),
                        outcome.num_procs())
            found = self.find([WorkerRef(s.worker_id, self.queue.name, None, schedd_name, None, model.PENDING,
                                         s.log_dir) for s in ready])
            return results + [f or SubmitResult(s.worker_id, error=f"schedd {schedd_name} made no job for this worker")
                              for s, f in zip(ready, found)]
        for i, spec in enumerate(ready):
            results.append(self._result(spec.worker_id, f"{cluster}.{first + i}", schedd_name, endpoint, names))
        return results

    @staticmethod
    def _spool(schedd, outcome) -> None:
        """Send a spooled submission's input files to the schedd; if that fails, take the jobs (held waiting for
        them) back out, so that the submission fails whole and the workers are missed, not held for good."""
        import htcondor2

        try:
            schedd.spool(outcome)
        except Exception as exc:
            try:
                schedd.act(htcondor2.JobAction.Remove, [f"{outcome.cluster()}.{outcome.first_proc() + i}"
                                                        for i in range(outcome.num_procs())],
                           reason=("harvester-cli: spooling the input files failed", REMOVE_CODE))
            except Exception as removal:   # held waiting for their files: poll sees them, sweep removes them
                log.warning("cannot remove the jobs of cluster %s after a failed spool: %s", outcome.cluster(),
                            removal)
            raise RuntimeError(f"spooling the input files failed: {exc}") from exc

    @staticmethod
    def _result(worker_id: int, batch_id: str, schedd_name: str, ce: str,
                names: build.LogNames = build.SHIPPED_NAMES) -> SubmitResult:
        return SubmitResult(worker_id, batch_id=batch_id, submission_host=schedd_name, computing_element=ce,
                            stdout=names.stdout, stderr=names.stderr, batch_log=names.log)

    # -- check -------------------------------------------------------------------------------

    def _constraint(self, worker_ids: list[int], exact: bool = False) -> str:
        import classad2

        # Our own jobs only: a condor-C CE that is this very schedd holds copies with the same tags.
        base = f"harvesterID == {classad2.quote(self.context.harvester_id)} && SubmitterGlobalJobId =?= undefined"
        low, high = min(worker_ids), max(worker_ids)
        # A long member() list costs the schedd its length for every job of its queue: a large page asks by id
        # range, and by queue, as the ids of one queue's page are spread among other queues' (one allocator).
        if exact or (high - low >= 4 * len(worker_ids) and len(worker_ids) <= 500):
            return f"{base} && member(harvesterWorkerID, {{{', '.join(str(i) for i in sorted(worker_ids))}}})"
        queue = classad2.quote(self.queue.name)
        return (f"{base} && harvesterWorkerID >= {low} && harvesterWorkerID <= {high}"
                f" && (harvesterQueue =?= {queue} || harvesterQueue =?= undefined)")

    def _by_schedd(self, workers: list[WorkerRef]) -> dict[str, list[WorkerRef]]:
        groups: dict[str, list[WorkerRef]] = defaultdict(list)
        for worker in workers:
            groups[worker.submission_host or self.schedd_name()].append(worker)
        return groups

    def _token_refusal(self, schedd_name: str) -> str:
        from harvester_cli.site import bearer

        try:
            token = self.options.schedd_token_file.read_text().strip()
        except OSError as exc:
            return f"cannot read it: {exc.strerror}"
        address = self.options.collector if self.options.schedd else schedd_name
        return bearer.refusal_reason(token, bearer.ce_audience(address or schedd_name, "htcondor-ce",
                                                               {"htcondor-ce": "{host}:{port}"}), scope="",
                                     peer="schedd")

    def _ads(self, schedd_name: str, workers: list[WorkerRef], *, exact: bool = False) -> dict[int, object]:
        with self.schedd_auth():
            return self._ads_of(schedd_name, workers, exact=exact)

    def _ads_of(self, schedd_name: str, workers: list[WorkerRef], *, exact: bool = False) -> dict[int, object]:
        """Job ads of these workers, queue first, then history (bounded in age) for those not in the queue."""
        schedd = self.schedd(schedd_name)
        ids = [w.worker_id for w in workers]
        wanted_batch = {w.worker_id: w.batch_id for w in workers}
        found: dict[int, object] = {}

        def take(ads):
            for ad in ads:
                worker_id = status_map.value(ad, "harvesterWorkerID")
                if worker_id not in wanted_batch or worker_id in found:
                    continue
                batch = wanted_batch[worker_id]
                if batch is None or batch == status_map.batch_id(ad):
                    found[worker_id] = ad

        take(schedd.query(self._constraint(ids, exact), status_map.ATTRIBUTES))
        missing = [i for i in ids if i not in found]
        if missing:
            cutoff = int(model.now() - self.options.history_window)
            for start in range(0, len(missing), 500):   # many ended at once (a schedd restart): lists of 500
                part = missing[start:start + 500]
                take(schedd.history(self._constraint(part, exact=True), status_map.ATTRIBUTES,
                                    match=len(part), since=f"EnteredCurrentStatus < {cutoff}"))
        return found

    def check(self, workers: list[WorkerRef]) -> list[Observation]:
        at = model.now()
        seen: dict[int, Observation] = {}
        unreachable: dict[str, float] = {}   # CE -> earliest GridResourceUnavailableTime seen now
        reachable: set[str] = set()          # CEs with a job running now
        for schedd_name, group in self._by_schedd(workers).items():
            ads = self._ads(schedd_name, group)
            self._force_out_removed(schedd_name, at)
            not_back = self._bring_back(schedd_name, ads) if self.options.spool else {}
            for worker in group:
                ad = ads.get(worker.worker_id)
                if ad is None:
                    seen[worker.worker_id] = Observation(
                        worker.worker_id, model.MISSING, "absent",
                        diag=f"job {worker.batch_id} is neither in the queue of schedd {schedd_name} nor in its "
                             f"history of the last {self.options.history_window} s")
                    continue
                observation = status_map.observe(worker.worker_id, ad, at, self.policy)
                problem = not_back.get(worker.worker_id)
                if problem is not None:
                    ended = status_map.value(ad, "CompletionDate") or at
                    if at - ended < OUTPUT_RETRY_SECONDS:   # ended, outputs still on the schedd: not yet
                        observation = Observation(worker.worker_id, worker.status, observation.native_status,
                                                  diag=f"ended; outputs not retrieved yet: {problem}")
                    else:
                        observation.diag = "; ".join(filter(None, [observation.diag, f"outputs lost: {problem}"]))
                seen[worker.worker_id] = observation
                ce = worker.computing_element
                unavailable = status_map.value(ad, "GridResourceUnavailableTime")
                if ce and unavailable:
                    unreachable[ce] = min(float(unavailable), unreachable.get(ce, float(unavailable)))
                elif ce and observation.status == model.RUNNING:
                    reachable.add(ce)
        if self.options.ces or self.options.cric_file:
            self._update_health(unreachable, reachable - set(unreachable), at)
        return [seen[w.worker_id] for w in workers]

    def _bring_back(self, schedd_name: str, ads: dict[int, object]) -> dict[int, str]:
        """Spooled jobs (a schedd that shares no file system with this host): those that completed get their
        outputs and logs transferred into their log directories (condor_transfer_data), then leave the queue
        (marked harvesterRetrieved, so that the history still reads completed). Returns the workers whose
        outputs could not be brought back, with why."""
        import htcondor2

        done = {w: status_map.batch_id(ad) for w, ad in ads.items()
                if status_map.value(ad, "JobStatus") == 4 and not status_map.value(ad, "harvesterRetrieved")}
        if not done:
            return {}
        try:
            with self.schedd_auth():
                schedd = self.schedd(schedd_name)
                schedd.retrieve(list(done.values()))
        except Exception as exc:
            log.warning("queue %s: cannot retrieve the outputs of %d jobs from %s: %s", self.queue.name, len(done),
                        schedd_name, exc)
            return {w: f"condor_transfer_data from {schedd_name}: {exc}" for w in done}
        try:   # the outputs are here: the schedd may forget the jobs (else sweep's clean removes them later)
            with self.schedd_auth():
                schedd.edit(list(done.values()), "harvesterRetrieved", "true")
                schedd.act(htcondor2.JobAction.Remove, list(done.values()),
                           reason=("harvester-cli: outputs retrieved", REMOVE_CODE))
        except Exception as exc:
            log.warning("queue %s: outputs retrieved, but %s keeps the jobs: %s", self.queue.name, schedd_name, exc)
        return {}

    def _force_out_removed(self, schedd_name: str, at: float) -> None:
        """Jobs of this harvester left in Removed longer than removed_timeout (a grid job whose CE never
        confirms the removal, a job kept by leave_in_queue) are forced out (condor_rm -forcex), at most once per
        schedd and removed_timeout in a process, so a process that polls for long still forces out the jobs
        that got stuck after its first round."""
        import classad2
        import htcondor2

        timeout = self.options.removed_timeout
        if not timeout or at - self._forced.get(schedd_name, -math.inf) < timeout:
            return
        self._forced[schedd_name] = at
        constraint = (f"harvesterID == {classad2.quote(self.context.harvester_id)} && SubmitterGlobalJobId =?= "
                      f"undefined && JobStatus == 3 && EnteredCurrentStatus < {int(at - self.options.removed_timeout)}")
        try:
            with self.schedd_auth():
                answer = self.schedd(schedd_name).act(
                    htcondor2.JobAction.RemoveX, constraint,
                    reason=(f"harvester-cli: in Removed longer than {self.options.removed_timeout} s", REMOVE_CODE))
        except Exception as exc:
            log.warning("queue %s: cannot force stuck removed jobs out of %s: %s", self.queue.name, schedd_name, exc)
            return
        forced = int(answer.get("TotalSuccess") or 0)
        if forced:
            log.info("queue %s: forced %d job(s) out of %s: in Removed longer than %d s", self.queue.name, forced,
                     schedd_name, self.options.removed_timeout)

    def _update_health(self, unreachable: dict[str, float], reachable: set[str], at: float) -> None:
        """Remember CEs jobs cannot reach (submit benches them), forget those that run jobs again."""
        if not unreachable and not reachable:
            return
        health = self.load_health()
        changed = False
        for ce, since in unreachable.items():
            changed |= ce_choice.mark_unreachable(health, ce, since, at)
        for ce in reachable:
            changed |= ce_choice.mark_reachable(health, ce)
        if changed:
            try:
                self.save_health(health)
            except OSError as exc:
                log.warning("queue %s: cannot save CE health: %s", self.queue.name, exc)

    # -- kill --------------------------------------------------------------------------------

    def kill(self, workers: list[WorkerRef], reason: str) -> list[KillResult]:
        import htcondor2

        results: dict[int, KillResult] = {}
        for schedd_name, group in self._by_schedd(workers).items():
            targets = [w for w in group if w.batch_id]
            for worker in group:
                if not worker.batch_id:
                    results[worker.worker_id] = KillResult(worker.worker_id, True)
            if not targets:
                continue
            try:
                with self.schedd_auth():
                    schedd = self.schedd(schedd_name)
                    answer = schedd.act(htcondor2.JobAction.Remove, [w.batch_id for w in targets],
                                        reason=(f"harvester-cli: {reason}", REMOVE_CODE))
                done = sum(int(answer.get(k) or 0) for k in ("TotalSuccess", "TotalNotFound", "TotalAlreadyDone"))
                if done >= len(targets):
                    results.update({w.worker_id: KillResult(w.worker_id, True) for w in targets})
                    continue
                # Some were refused: the ones still in the queue and not removed are the failures.
                counts = ", ".join(f"{k}={answer.get(k)}" for k in ("TotalSuccess", "TotalNotFound", "TotalAlreadyDone",
                                                                     "TotalBadStatus", "TotalPermissionDenied", "TotalError"))
                with self.schedd_auth():
                    ads = schedd.query(self._constraint([w.worker_id for w in targets], exact=True),
                                       ["ClusterId", "ProcId", "JobStatus"])
                still = {status_map.batch_id(ad): status_map.value(ad, "JobStatus")
                         for ad in ads}
                for worker in targets:
                    state = still.get(worker.batch_id)
                    if state is None or state == 3:
                        results[worker.worker_id] = KillResult(worker.worker_id, True)
                    else:
                        results[worker.worker_id] = KillResult(worker.worker_id, False,
                                                               f"schedd {schedd_name} did not remove {worker.batch_id} ({counts})")
            except Exception as exc:
                for worker in targets:
                    results[worker.worker_id] = KillResult(worker.worker_id, False, f"schedd {schedd_name}: {exc}")
        return [results[w.worker_id] for w in workers]

    # -- retire ------------------------------------------------------------------------------

    def retire(self, workers: list[WorkerRef], reason: str) -> list[RetireResult]:
        """Remove each job only while it is idle: one `Schedd.act(Remove, constraint)` per schedd whose
        constraint names the workers and `JobStatus == 1`, evaluated by the schedd as it removes, so a job that
        started meanwhile is not touched. The answer counts what was removed; the queue (and, when the count
        says some removed jobs left it, the history) tells which."""
        import htcondor2

        results: dict[int, RetireResult] = {}
        for schedd_name, group in self._by_schedd(workers).items():
            targets = [w for w in group if w.batch_id]
            results.update({w.worker_id: RetireResult(w.worker_id, RetireResult.GONE, "no batch id recorded")
                            for w in group if not w.batch_id})
            if not targets:
                continue
            ids = [w.worker_id for w in targets]
            text = f"harvester-cli: {reason}"
            try:
                with self.schedd_auth():
                    schedd = self.schedd(schedd_name)
                    answer = schedd.act(htcondor2.JobAction.Remove, f"{self._constraint(ids, exact=True)} && "
                                        "JobStatus == 1", reason=(text, REMOVE_CODE))
                    projection = ["ClusterId", "ProcId", "JobStatus", "harvesterWorkerID", "RemoveReason"]
                    ads = {status_map.batch_id(ad): ad for ad in schedd.query(self._constraint(ids, exact=True),
                                                                              projection)}
                    removed = int(answer.get("TotalSuccess") or 0)
                    left = [w for w in targets if w.batch_id not in ads]
                    ours = [w for w in targets if w.batch_id in ads and self._removed_by(ads[w.batch_id], text)]
                    if left and removed < len(ours) + len(left):   # some left the queue for another reason
                        history = {status_map.batch_id(ad): ad for ad in schedd.history(
                            self._constraint([w.worker_id for w in left], exact=True), projection, match=len(left))}
                    else:   # every job that left the queue is one this call removed
                        history = {w.batch_id: {"JobStatus": 3, "RemoveReason": text} for w in left}
            except Exception as exc:
                results.update({w.worker_id: RetireResult(w.worker_id, RetireResult.FAILED, f"schedd {schedd_name}: {exc}")
                                for w in targets})
                continue
            for worker in targets:
                ad = ads.get(worker.batch_id) or history.get(worker.batch_id)
                state = status_map.value(ad, "JobStatus") if ad is not None else None
                name = status_map.STATUS_NAMES.get(state, f"JobStatus {state}")
                if ad is None:
                    outcome = RetireResult(worker.worker_id, RetireResult.GONE, "neither in the queue nor the history")
                elif self._removed_by(ad, text):
                    outcome = RetireResult(worker.worker_id, RetireResult.RETIRED, "IDLE")
                elif state == 1:
                    outcome = RetireResult(worker.worker_id, RetireResult.FAILED,
                                           f"schedd {schedd_name} left {worker.batch_id} idle "
                                           f"(TotalSuccess={removed})")
                elif state in (3, 4):
                    outcome = RetireResult(worker.worker_id, RetireResult.GONE, name)
                else:   # running, transferring output, held or suspended: it is not waiting any more
                    outcome = RetireResult(worker.worker_id, RetireResult.STARTED, name)
                results[worker.worker_id] = outcome
            retired = sum(results[w.worker_id].outcome == RetireResult.RETIRED for w in targets)
            if retired != removed:
                log.warning("queue %s: schedd %s removed %d idle jobs, %d of them known to be ours", self.queue.name,
                            schedd_name, removed, retired)
        return [results[w.worker_id] for w in workers]

    @staticmethod
    def _removed_by(ad, text: str) -> bool:
        """Whether a job ad shows a removal with this reason (a retirement of ours: this call's, or an earlier
        one whose answer was lost). The schedd appends who removed it: "<reason> (by user NAME)"."""
        reason = status_map.value(ad, "RemoveReason")
        return status_map.value(ad, "JobStatus") == 3 and isinstance(reason, str) and reason.startswith(text)

    # -- crash repair ------------------------------------------------------------------------

    def find(self, workers: list[WorkerRef]) -> list[SubmitResult | None]:
        """Crash repair: each worker by its tags, in the schedd it went to when known, else in every schedd
        of the queue (the fanout may have picked any)."""
        if not workers:
            return []
        everywhere = [e.name for e in self.options.schedds] or [self.schedd_name()]
        places: dict[str, list[WorkerRef]] = defaultdict(list)
        for w in workers:
            for name in [w.submission_host] if w.submission_host in everywhere else everywhere:
                places[name].append(WorkerRef(w.worker_id, w.queue, None, name, None, w.status, w.log_dir))
        found: dict[int, SubmitResult] = {}
        for schedd_name, refs in places.items():
            missing = [r for r in refs if r.worker_id not in found]
            if not missing:
                continue
            for worker_id, ad in self._ads(schedd_name, missing, exact=True).items():
                ce = status_map.value(ad, "harvesterCE") or schedd_name
                found[worker_id] = self._result(worker_id, status_map.batch_id(ad), schedd_name, ce)
        return [found.get(w.worker_id) for w in workers]

    # -- outputs and cleaning ----------------------------------------------------------------

    def fetch_outputs(self, worker: WorkerRef, names: list[str]) -> dict[str, Path]:
        if worker.log_dir is None:
            return {}
        fetched = {}
        for name in names:
            brought = worker.log_dir / build.OUTPUTS_DIR / name
            target = worker.log_dir / name
            if brought.is_file():
                copy_into_place(brought, target)
            if target.is_file():
                fetched[name] = target
        return fetched

    def clean(self, workers: list[WorkerRef]) -> None:
        import htcondor2

        for worker in workers:
            shutil.rmtree(self.work_dir(worker.worker_id), ignore_errors=True)
        # Removed grid jobs whose CE never answered linger in the queue: force them out; spooled jobs whose
        # removal after their outputs came back failed leave now.
        for schedd_name, group in self._by_schedd(workers).items():
            constraint = f"{self._constraint([w.worker_id for w in group], exact=True)} && JobStatus == 3"
            try:
                with self.schedd_auth():
                    self.schedd(schedd_name).act(htcondor2.JobAction.RemoveX, constraint,
                                                 reason=("harvester-cli: worker forgotten", REMOVE_CODE))
                    if self.options.spool:
                        self.schedd(schedd_name).act(
                            htcondor2.JobAction.Remove, constraint.replace("JobStatus == 3", "JobStatus == 4"),
                            reason=("harvester-cli: worker forgotten", REMOVE_CODE))
            except Exception as exc:   # best effort: the rows are forgotten anyway
                log.warning("queue %s: cannot force removal at %s: %s", self.queue.name, schedd_name, exc)


BACKEND = HTCondorBackend
