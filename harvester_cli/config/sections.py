"""Every section of the configuration file, every key with its type, default, range and meaning.

The README's configuration tables and `config example` are checked against these by a test. Sections are
frozen dataclasses; `schema.Validator` builds them from TOML and reports what is wrong.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

from harvester_cli.config.backend_options import BACKEND_OPTIONS, MANY_TO_ONE_BACKENDS
from harvester_cli.config.ces import AUDIENCE_FORMATS, CE_FLAVOURS, WLCG_COMPUTE_SCOPES
from harvester_cli.config.downtimes import SEVERITIES as DOWNTIME_SEVERITIES
from harvester_cli.config.downtimes import Downtime, parse_time
from harvester_cli.config.schema import Section, section, setting
from harvester_cli.config.state_url import state_url_from, state_url_problem

# Placeholders a pilot command may use; filled per worker by the submitter.
PILOT_PLACEHOLDERS = frozenset(
    {
        "queue", "worker_id", "harvester_id", "resource_type", "n_core", "memory_mb", "walltime",
        "panda_url", "prod_source_label", "job_type", "python", "ca", "proxy",
    }
)
# A PanDA queue's status as CRIC and PanDA write it; only "online" gets new workers here.
QUEUE_STATUSES = ("online", "offline", "test", "brokeroff", "paused")
BACKENDS = tuple(sorted(BACKEND_OPTIONS))   # the queue's `backend` choices, from the one list of backends
PROXY_TOOLS = ("voms-proxy-init", "arcproxy", "builtin")
CE_CREDENTIALS = ("proxy", "token", "both")
SUBMIT_FILE_PATTERNS = ["*.sub", "*.jdl", "*.xrsl", "*.adl", "*.sbatch", "submit*"]
DAY = 24 * 3600
# The simulator's test pilot: it runs each job's jobPars through /bin/sh. Against a real PanDA server that
# would take real jobs and fail them, so a queue may name it only where [panda] allow_test_pilot says the
# server is the simulator (the demo, the tests, the multihost harness).
TEST_PILOT = "{python} -m harvester_cli.panda.sim.pilot"
# What the production pilot line of a grid site looks like (PanDA's pilot wrapper, pilot 3).
PILOT_WRAPPER_EXAMPLE = ("/bin/bash /opt/pilot/runpilot2-wrapper.sh -s {queue} -r {queue} -q {queue} "
                         "-j {prod_source_label} -i PR --pythonversion 3 -w generic --pilot-user ATLAS "
                         "--url https://pandaserver.example.org -p 25443 --harvester-submit-mode PULL "
                         "--allow-same-user=False --job-type={job_type} --resource-type {resource_type} "
                         "--piloturl https://pilot.example.org/pilot3.tar.gz")


def is_test_pilot(template: str) -> bool:
    """Whether a pilot command runs the simulator's test pilot (as a module or as a file)."""
    return "harvester_cli.panda.sim" in template or "harvester_cli/panda/sim" in template


def xdg_dir(variable: str, fallback: str) -> Path:
    base = os.environ.get(variable) or str(Path.home() / fallback)
    return Path(base) / "harvester-cli"


def default_state_dir() -> Path:
    return xdg_dir("XDG_STATE_HOME", ".local/state")


@section
class PandaConfig(Section):
    """[panda]: the PanDA server and how to authenticate to it."""

    url: str = setting(doc="the PanDA server's v1 API, e.g. https://pandaserver.example.org:25443/api/v1",
                       https=True)
    proxy: Path | None = setting(None, doc="X.509 proxy file (certificate and key) for the TLS client "
                                           "certificate", must_exist="file", secret=True)
    token_file: Path | None = setting(None, doc="bearer token file, re-read when it changes",
                                      must_exist="file", secret=True)
    token_origin: str | None = setting(None, doc="the VO, sent as the Origin header with a token")
    proxy_profile: str | None = setting(None, doc="use the proxy a [proxies.NAME] profile maintains")
    token_profile: str | None = setting(None, doc="use the token a [tokens.NAME] profile maintains")
    ca: Path | None = setting(None, doc="CA directory (hashed, like /etc/grid-security/certificates) or bundle "
                                        "that signs the server's certificate", must_exist="any")
    timeout: float = setting(60.0, doc="seconds one call may take", above=0, maximum=3600)
    retries: int = setting(3, doc="tries of an idempotent call on network errors and 5xx, with backoff (0 or 1: "
                                  "once)", maximum=20)
    bulk_size: int = setting(100, doc="job or worker updates per bulk call", minimum=1, maximum=10000)
    stats_refresh: int = setting(60, doc="seconds between PanDA's refreshes of its activated-job counts (a view "
                                         "pg_cron refreshes on every full minute); pilots started since the last "
                                         "refresh are taken off those counts (0: the counts are live)",
                                 maximum=3600)
    allow_test_pilot: bool = setting(False, doc="this server is harvester-cli's PanDA simulator: queues may run its "
                                                "test pilot, which runs each job's jobPars with /bin/sh (the demo "
                                                "and the tests set it; never for a real PanDA server)")

    def problems(self):
        given = [k for k in ("proxy", "proxy_profile", "token_file", "token_profile") if getattr(self, k) is not None]
        if len(given) > 1:
            yield "", f"set one of proxy, proxy_profile, token_file, token_profile, not {' and '.join(given)}"
        if (self.token_file or self.token_profile) and not self.token_origin:
            yield "token_origin", "a token needs token_origin (the VO, sent as the Origin header)"


@section
class ManyToOneConfig(Section):
    """[queues.NAME.many_to_one]: HPC, push mode. One worker is one batch allocation of several nodes running
    many PanDA jobs at once, one pilot per job in a job step of its own; the walltime, the jobs and the node
    count are chosen per worker from the jobs waiting."""

    nodes_min: int = setting(1, doc="nodes of the smallest allocation (one that goes half filled after "
                                    "fill_timeout still asks this many)", minimum=1, maximum=100_000)
    nodes_max: int = setting(1, doc="nodes of the largest allocation (a full one)", minimum=1, maximum=100_000)
    jobs_per_node: int = setting(1, doc="jobs (pilots, job steps) that run at once on one node", minimum=1,
                                 maximum=10_000)
    cores_per_job: int | None = setting(None, doc="cores each job's step gets (a job asking more is refused "
                                                  "when fetched); none: each job's own coreCount, and the "
                                                  "allocation asks for the largest of its jobs'", minimum=1,
                                        maximum=100_000)
    fill_timeout: int = setting(600, doc="seconds the oldest waiting job waits for an allocation to fill: then "
                                         "one goes with the jobs there are", maximum=7 * DAY)
    walltime_margin: int = setting(600, doc="seconds added to the longest maxWalltime of an allocation's jobs "
                                            "(its --time, within the queue's walltime; a job that cannot fit is "
                                            "refused when fetched)", maximum=7 * DAY)

    @property
    def jobs_min(self) -> int:
        return self.nodes_min * self.jobs_per_node

    @property
    def jobs_max(self) -> int:
        return self.nodes_max * self.jobs_per_node

    def problems(self):
        if self.nodes_min > self.nodes_max:
            yield "nodes_min", f"({self.nodes_min}) must not be more than nodes_max ({self.nodes_max})"


@section
class QueueConfig(Section):
    """[queues.NAME] (and [queue_defaults]): one harvester queue, usually one PanDA queue."""

    name: str = setting(doc="the queue's name (the table's name)")
    mode: str = setting(doc="pull: pilots fetch their own jobs; push: harvester-cli fetches jobs, one per worker",
                        choices=("pull", "push"))
    backend: str = setting(doc="where workers run", choices=BACKENDS)
    backend_options: Any = setting(None, doc="the backend's own table (see the backend)")
    prod_source_label: str = setting("managed", doc="prodSourceLabel sent to PanDA")
    job_type: str = setting("managed", doc="job type sent to PanDA and in worker statistics")
    resource_types: list[str] = setting(doc="resource types this queue serves, the first gets empty pilots",
                                        factory=lambda: ["SCORE"])
    pilot: str = setting(doc="pilot command template (required; a grid site runs PanDA's pilot wrapper, see "
                             "`config example`); placeholders: " + " ".join(f"{{{p}}}" for p in
                                                                            sorted(PILOT_PLACEHOLDERS)))
    core_count: int = setting(1, doc="cores of a worker when the job or resource type says nothing", minimum=1,
                              maximum=100_000)
    memory_mb_per_core: int = setting(2000, doc="memory (MB) per core of a worker", minimum=1, maximum=10_000_000)
    walltime: int = setting(2 * DAY, doc="seconds a worker may run", minimum=60)
    status: str = setting("online", doc="the queue's status: only online submits (a local gate)",
                          choices=QUEUE_STATUSES)
    n_queue_limit_worker: int = setting(10, doc="workers that may wait in the batch queue")
    n_queue_limit_worker_ratio: float | None = setting(None, doc="queued limit as a percentage of running workers "
                                                                 "instead (never below the minimum)",
                                                       maximum=100_000)
    n_queue_limit_worker_min: int = setting(1, doc="floor of the percentage limit")
    max_workers: int = setting(100, doc="queued + running workers at most")
    max_new_workers_per_cycle: int = setting(10, doc="new workers per submit run (per [instance] "
                                                         "cycle_interval over all hosts when that is set)")
    max_queued_cores: int | None = setting(None, doc="cores that may wait in the batch queue")
    max_queued_memory_mb: int | None = setting(None, doc="memory (MB) that may wait in the batch queue")
    throttle_missed: int | None = setting(None, doc="no new worker while more than this many were missed in "
                                                    "throttle_window")
    throttle_window: int = setting(3600, doc="seconds over which missed workers count", minimum=1)
    pilot_streaming: bool = setting(False, doc="pull 'slave' mode: PanDA's SET_N_WORKERS_JOBTYPE numbers decide")
    panda_queue: str | None = setting(None, doc="the PanDA queue served (OneBox twins), default: the name")
    background: bool = setting(False, doc="OneBox background twin: asks PanDA for background jobs")
    activated_factor: float = setting(1.0, doc="pull: queued pilots <= activated jobs x this", maximum=1000)
    empty_pilot_floor: int = setting(1, doc="pull: queued pilots never below this (0 or 1)", maximum=1)
    n_queue_limit_job: int | None = setting(None, doc="push: fetched jobs that may wait for a worker "
                                                      "(default: n_queue_limit_worker, times the jobs of a full "
                                                      "allocation with many_to_one)")
    max_submit_attempts: int = setting(3, doc="push: submissions of a job before it is reported failed", minimum=1)
    job_heartbeat_seconds: int = setting(1800, doc="push: re-send 'running' this often so PanDA can answer "
                                                   "tobekilled (0: never)")
    max_queued_seconds: int = setting(2 * DAY, doc="kill workers queued longer", minimum=60)
    retire_max_per_run: int = setting(20, doc="queued pilots beyond the demand (pull: activated jobs x "
                                              "activated_factor, never below empty_pilot_floor; push: jobs that "
                                              "wait for them) marked per submit run for sweep to remove, youngest "
                                              "first and only while still queued at the backend; marks not yet "
                                              "carried out count against it (0: never retire)",
                                      maximum=100_000)
    retire_min_age: int = setting(600, doc="seconds a pilot must have waited in the batch queue before it may be "
                                           "retired (the demand's dips shorter than this keep their pilots)",
                                  minimum=60)
    lost_grace_seconds: int = setting(600, doc="fail workers the backend lost after this long")
    free_resources: bool = setting(False, doc="ask the batch system what can start now (Slurm: sinfo and sbatch "
                                              "--test-only per partition; ARC: the CE's free slots in its GLUE2 "
                                              "information) and plan by it: the workers that start at once, and "
                                              "those that wait for the next free slots (queued_when_full, or more "
                                              "for a busy queue), no more (n_queue_limit_worker holds back only "
                                              "those that wait); what waits is asked of the batch system right "
                                              "before the plan; many_to_one allocations are sized to the idle "
                                              "nodes when fewer than nodes_max stand idle")
    free_resources_max_age: int = setting(300, doc="seconds after which figures the batch system gave are not "
                                                   "used (when it cannot be asked again)", minimum=1)
    queued_when_full: int = setting(2, doc="with free_resources: pilots that wait in the batch queue for the next "
                                           "free slots beyond those that start at once, at least; more when more "
                                           "of the queue's workers ended within one cycle lately (the most within "
                                           "one cycle_interval, or 60 s, over the last 10)",
                                    maximum=100_000)
    min_walltime: int | None = setting(None, doc="with free_resources: a worker may get a shorter walltime, down to "
                                                 "this, to fit a backfill window where the full walltime cannot "
                                                 "start now (none: always walltime)", minimum=60)
    proxy_profile: str | None = setting(None, doc="the [proxies.NAME] whose proxy this queue's workers get")
    ce_credentials: str = setting("proxy", doc="how the backend authenticates to the CEs: proxy (X.509, delegated "
                                               "to the jobs), token (each CE's bearer token from ce_token_profile), "
                                               "or both (the token for submission, the proxy still delegated for "
                                               "data)", choices=CE_CREDENTIALS)
    ce_token_profile: str | None = setting(None, doc="the per-CE [tokens.NAME] (with directory) whose token each "
                                                     "CE of this queue gets")
    pilot_token_profile: str | None = setting(None, doc="the [tokens.NAME] (with file) whose token the pilots get "
                                                        "for PanDA instead of a proxy (PANDA_AUTH_TOKEN)")
    pilot_token_key: Path | None = setting(None, doc="a token key file the pilots get as PANDA_AUTH_TOKEN_KEY",
                                           must_exist="file", secret=True)
    pilot_token_origin: str | None = setting(None, doc="PANDA_AUTH_ORIGIN of the pilots (default: [panda] "
                                                       "token_origin)")
    many_to_one: ManyToOneConfig | None = setting(None, doc="push, HPC: many jobs per worker, one allocation of "
                                                            "several nodes (the [queues.NAME.many_to_one] table); "
                                                            "none: one job per worker")

    @property
    def site(self) -> str:
        """The PanDA queue (computingSite) this harvester queue serves."""
        return self.panda_queue or self.name

    def queued_job_limit(self) -> int:
        if self.n_queue_limit_job is not None:
            return self.n_queue_limit_job
        return self.n_queue_limit_worker * (self.many_to_one.jobs_max if self.many_to_one else 1)

    def problems(self):
        if not self.resource_types:
            yield "resource_types", "list at least one resource type, e.g. [\"SCORE\"]"
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(self.pilot) if name is not None}
        except ValueError as exc:
            yield "pilot", f"bad template ({exc}); write literal braces as {{{{ and }}}}"
            return
        unknown = sorted(fields - PILOT_PLACEHOLDERS)
        if unknown:
            yield "pilot", f"unknown placeholder {{{unknown[0]}}} (known: {', '.join(sorted(PILOT_PLACEHOLDERS))})"
        if self.ce_credentials != "proxy":
            if self.backend not in ("htcondor", "arc"):
                yield "ce_credentials", f"{self.backend} queues have no CE to give a token; use \"proxy\""
            elif self.ce_token_profile is None:
                yield "ce_credentials", (f"\"{self.ce_credentials}\" needs ce_token_profile, the per-CE "
                                         "[tokens.NAME] whose tokens the CEs get")
        if self.min_walltime is not None and self.min_walltime > self.walltime:
            yield "min_walltime", f"({self.min_walltime}) is longer than walltime ({self.walltime})"
        if self.pilot_token_key is not None and self.pilot_token_profile is None:
            yield "pilot_token_key", "goes with pilot_token_profile (the token the key refreshes)"
        if self.many_to_one is not None:
            if self.mode != "push":
                yield "many_to_one", ("many jobs per worker is push mode: harvester-cli fetches the jobs "
                                      "(mode = \"push\")")
            if self.backend not in MANY_TO_ONE_BACKENDS:
                yield "many_to_one", (f"the {self.backend} backend runs one job per worker; many jobs per worker "
                                      f"need {' or '.join(MANY_TO_ONE_BACKENDS)}")
            if self.many_to_one.walltime_margin >= self.walltime:
                yield "many_to_one", (f"walltime_margin ({self.many_to_one.walltime_margin}) leaves no time for "
                                      f"jobs within walltime ({self.walltime})")


@section
class SweepConfig(Section):
    """[sweep]: killing and forgetting."""

    worker_retention: int = setting(2 * DAY, doc="seconds final workers are kept before they are forgotten")
    job_retention: int = setting(2 * DAY, doc="seconds done jobs are kept before they are forgotten")
    max_kills_per_run: int = setting(500, doc="more kills than this in one run need --force (against mass "
                                              "accidents)")
    history_retention: int = setting(7 * DAY, doc="seconds the worker count snapshots poll takes (status, the "
                                                  "status page) are kept", minimum=3600)


# -- credentials (renew-proxy) ------------------------------------------------------------------


@section
class CertificateConfig(Section):
    cert: Path = setting(doc="user certificate (PEM)", must_exist="file")
    key: Path = setting(doc="its private key (PEM), mode 0600", must_exist="file", secret=True)
    passphrase_file: Path | None = setting(None, doc="file holding the key's passphrase, mode 0600",
                                           must_exist="file", secret=True)


@section
class ProxyProfile(Section):
    """[proxies.NAME]: one proxy file, made from the first certificate that works (APF's authmanager)."""

    name: str = setting(doc="the profile's name (the table's name)")
    file: Path = setting(doc="the proxy file this profile maintains (mode 0600, replaced atomically)")
    certificates: list[CertificateConfig] = setting(doc="ordered list of {cert, key, passphrase_file}; the first "
                                                        "that gives a good proxy wins")
    voms: str | None = setting(None, doc="VOMS attribute, e.g. atlas:/atlas/Role=production; none: a plain proxy")
    tool: str = setting("voms-proxy-init", doc="what makes the proxy", choices=PROXY_TOOLS)
    lifetime: int = setting(4 * DAY, doc="proxy (and VOMS attribute) lifetime asked for, seconds", minimum=600)
    min_lifetime: int = setting(3 * DAY, doc="renew when less than this many seconds are left")
    ca: Path | None = setting(None, doc="trusted CA directory (default: $X509_CERT_DIR or "
                                        "/etc/grid-security/certificates)", must_exist="dir")
    vomses: Path | None = setting(None, doc="VOMS server list (file or directory)", must_exist="any")
    vomsdir: Path | None = setting(None, doc="VOMS .lsc directory", must_exist="dir")
    bits: int = setting(2048, doc="key size: 1024, 2048, 3072 or 4096")
    timeout: float = setting(120.0, doc="seconds one tool run may take", above=0, maximum=3600)

    def problems(self):
        if self.bits not in (1024, 2048, 3072, 4096):
            yield "bits", f"expected 1024, 2048, 3072 or 4096, got {self.bits}"
        if not self.certificates:
            yield "certificates", "list at least one, e.g. [{cert = \"usercert.pem\", key = \"userkey.pem\"}]"
        if self.voms is not None:
            vo, _, fqan = self.voms.partition(":")
            if not vo or (fqan and not fqan.startswith("/")):
                yield "voms", f"expected 'vo' or 'vo:/vo/Role=...', got {self.voms!r}"
            if self.tool == "builtin":
                yield "voms", "the builtin tool makes proxies without VOMS; use voms-proxy-init or arcproxy"
        if self.min_lifetime >= self.lifetime:
            yield "min_lifetime", (f"({self.min_lifetime}) must be less than lifetime ({self.lifetime}), "
                                   "or every run renews")


@section
class TokenProfile(Section):
    """[tokens.NAME]: a bearer token file refreshed by an OAuth2 client-credentials request; with `directory`
    instead of `file`, one token per CE of the queues that name this profile (`ce_token_profile`)."""

    name: str = setting(doc="the profile's name (the table's name)")
    endpoint: str = setting(doc="the issuer's token endpoint", https=True)
    client_id: str = setting(doc="the OAuth2 client id")
    client_secret_file: Path = setting(doc="file holding the client secret, mode 0600", must_exist="file",
                                       secret=True)
    file: Path | None = setting(None, doc="the token file (mode 0600); or set directory for a token per CE")
    directory: Path | None = setting(None, doc="per CE: one token file per CE audience in this directory (mode "
                                               "0700, files 0600), for every CE of the queues whose "
                                               "ce_token_profile names this profile")
    audience: str | None = setting(None, doc="audience asked for (PanDA, or one CE); per CE: each CE's own")
    audience_formats: dict[str, str] = setting(doc="per CE: the audience of a CE by flavour, from its host and "
                                                   "port (the flavour's default port when the endpoint has none)",
                                               factory=lambda: dict(AUDIENCE_FORMATS))
    scope: str | None = setting(None, doc="scopes asked for, space separated (per CE default: "
                                          + WLCG_COMPUTE_SCOPES + ")")
    min_lifetime: int = setting(1800, doc="renew when less than this many seconds are left")
    ca: Path | None = setting(None, doc="CA bundle or directory for the endpoint (default: the system's)",
                              must_exist="any")
    timeout: float = setting(30.0, doc="seconds one request may take", above=0, maximum=3600)
    retries: int = setting(3, doc="retries on connection errors, timeouts, 429 and 5xx", maximum=20)

    @property
    def per_ce(self) -> bool:
        return self.directory is not None

    @property
    def scopes(self) -> str | None:
        return self.scope if self.scope is not None or not self.per_ce else WLCG_COMPUTE_SCOPES

    def problems(self):
        if (self.file is None) == (self.directory is None):
            yield "", ("set file (one token) or directory (a token per CE), not both" if self.file else
                       "set file (one token, e.g. for PanDA) or directory (a token per CE)")
        if self.directory is not None and self.audience is not None:
            yield "audience", "a per-CE profile (directory) asks each CE's own audience; remove audience"
        for flavour, template in self.audience_formats.items():
            if flavour not in CE_FLAVOURS:
                yield "audience_formats", f"{flavour!r} is not a CE flavour ({', '.join(CE_FLAVOURS)})"
                continue
            try:
                fields = {n for _, n, _, _ in string.Formatter().parse(template) if n is not None}
            except ValueError as exc:
                yield "audience_formats", f"{flavour}: bad template ({exc})"
                continue
            if not fields <= {"host", "port"} or "host" not in fields:
                yield "audience_formats", f"{flavour}: use {{host}} and {{port}} only, e.g. \"https://{{host}}:{{port}}\""


@section
class SmtpConfig(Section):
    """[smtp]: where renew-proxy sends alerts. No recipients: alerts are only logged."""

    host: str = setting("localhost", doc="SMTP server")
    port: int = setting(25, doc="SMTP port", minimum=1, maximum=65535)
    security: str = setting("none", doc="none, starttls or ssl", choices=("none", "starttls", "ssl"))
    username: str | None = setting(None, doc="login name")
    password_file: Path | None = setting(None, doc="file holding the password, mode 0600", must_exist="file",
                                         secret=True)
    ca: Path | None = setting(None, doc="CA to verify the server with", must_exist="any")
    sender: str = setting("harvester-cli@localhost", doc="From address")
    to: list[str] = setting(doc="recipients", factory=list)
    throttle: int = setting(3600, doc="the same problem is mailed at most once per this many seconds")
    timeout: float = setting(30.0, doc="seconds a mail may take", above=0, maximum=3600)
    retries: int = setting(3, doc="retries of a mail", maximum=20)


# -- logs (clean-logs, serve-logs, each command's own log) -----------------------------------------


@section
class RetentionConfig(Section):
    max_age: int | None = setting(14 * DAY, doc="delete files older than this many seconds")
    max_bytes: int | None = setting(None, doc="then the oldest until the class fits in this many bytes",
                                    maximum=None)


@section
class LogRetentionConfig(Section):
    """[log_retention]: per class of files in the log directory."""

    workers: RetentionConfig = setting(doc="worker logs", factory=RetentionConfig)
    submit_files: RetentionConfig = setting(doc="submit files", factory=RetentionConfig)
    commands: RetentionConfig = setting(doc="command logs", factory=RetentionConfig)
    submit_patterns: list[str] = setting(doc="which files of a worker's log directory are submit files (globs)",
                                         factory=lambda: list(SUBMIT_FILE_PATTERNS))


@section
class CommandLogConfig(Section):
    """[command_log]: each command appends to <log_dir>/commands/<command>.log, rotated by size."""

    enabled: bool = setting(True, doc="write the command logs")
    max_bytes: int = setting(10 * 1024 * 1024, doc="rotate a command log at this size", above=0, maximum=None)
    backups: int = setting(5, doc="rotated files kept", maximum=1000)
    memory: bool = setting(False, doc="append the process's memory use to every line")


@section
class CronConfig(Section):
    """[cron]: harvester-cli-cron, the wrapper cron runs each command through."""

    alert_after: int = setting(3600, doc="seconds a command may keep failing with the same exit code (every run "
                                         "in between, e.g. exit 1 while PanDA or the batch system is down) before "
                                         "harvester-cli-cron says so once on stderr, which cron mails (0: never)",
                               maximum=7 * DAY)


@section
class LogServerConfig(Section):
    """[log_server]: serve-logs defaults (bound to loopback unless told otherwise)."""

    host: str = setting("127.0.0.1", doc="address to listen on")
    port: int | None = setting(None, doc="port (default: the port of log_url, else 8080)", maximum=65535)
    max_connections: int = setting(512, doc="open client connections at most; past it the one that has waited "
                                            "longest for its request headers is closed", minimum=8, maximum=100_000)
    threads: int = setting(8, doc="threads answering requests; a connection holds one only while its answer is "
                                  "written", minimum=1, maximum=256)
    header_timeout: float = setting(10.0, doc="seconds a client has to send a whole request head (slow clients "
                                              "get 408)", above=0, maximum=3600)
    idle_timeout: float = setting(30.0, doc="seconds an idle keep-alive connection stays open, and that one write "
                                            "to a client may block", above=0, maximum=3600)


@section
class MetricsConfig(Section):
    """[metrics]: Prometheus metrics after every command, and service metrics for PanDA's monitor."""

    textfile: Path | None = setting(None, doc="a .prom file in node_exporter's textfile directory, rewritten "
                                              "(atomically) after every command; none: no file")
    panda_interval: int = setting(300, doc="propagate sends this host's service metrics (memory, CPU, disk, proxy "
                                           "lifetimes) to PanDA at most this often, seconds (0: never)",
                                  maximum=86400)

    def problems(self):
        if self.textfile is not None and self.textfile.suffix != ".prom":
            yield "textfile", (f"{self.textfile}: node_exporter reads only files ending in .prom; "
                               f"name it e.g. {self.textfile.with_suffix('.prom').name}")
        if 0 < self.panda_interval < 300:
            yield "panda_interval", f"PanDA takes service metrics at most every 300 s, got {self.panda_interval}"


@section
class InstanceConfig(Section):
    """[instance]: this host among several sharing one state database."""

    host: str | None = setting(None, doc="this host's name: the submission host of workers it starts on "
                                         "host-bound backends, harvesterHost in PanDA updates, the owner of its "
                                         "claims (default: the host name)")
    cycle_interval: int = setting(0, doc="seconds between a host's cycle runs (its cron rhythm); when set, a "
                                         "queue's max_new_workers_per_cycle counts the workers every host made "
                                         "for it in the last cycle_interval seconds (set it when several hosts "
                                         "share the database; 0: per submit run, right for one host); queues "
                                         "with free_resources count their recent turnover in cycles of this "
                                         "length (0: of 60 s)",
                                  maximum=DAY)
    db_timeout: int = setting(60, doc="PostgreSQL/MariaDB: seconds a statement, a lock wait or a silent "
                                      "connection may take before the server (and the client) give up, so a "
                                      "stuck host cannot hang the others", minimum=1, maximum=DAY)
    db_reconnect_seconds: int = setting(60, doc="PostgreSQL/MariaDB: seconds a command keeps trying to reach a server "
                                                "that takes writes after losing the one it used (a standby being "
                                                "promoted, a restart), or while the one it finds does not take "
                                                "writes yet; then it stops with one line, exit 1, and the next run "
                                                "tries again (0: stop at once). A server that never answered this "
                                                "command is an outage at once", maximum=DAY)

    def problems(self):
        if self.host is not None and (not self.host.strip() or ":" in self.host):
            yield "host", f"{self.host!r}: a host name, not empty and without ':'"


# -- downtimes and caps over several queues ----------------------------------------------------


@section
class DowntimeEntry(Section):
    """[[downtimes.scheduled]]: one announced downtime of a queue, of a CE (for every queue that submits to
    it), or of one CE of one queue."""

    queue: str | None = setting(None, doc="the queue (none: every queue whose fanout has `ce`)")
    ce: str | None = setting(None, doc="the CE: an HTCondor-CE host[:port], an A-REX URL, a Slurm partition; a "
                                       "host alone matches it on any port (none: the whole queue)")
    start: str | None = setting(None, doc="when it starts, UTC (ISO 8601 text or a TOML datetime, e.g. "
                                          "2026-03-01T08:00:00Z; none: already under way)")
    end: str = setting(doc="when it ends, UTC (required: every downtime has an end)")
    severity: str = setting("OUTAGE", doc="OUTAGE: no new worker goes there, nor one whose walltime would run "
                                          "into it; AT_RISK: shown, blocks nothing", choices=DOWNTIME_SEVERITIES)
    reason: str = setting("", doc="why, as status and plan show it")

    def problems(self):
        if self.queue is None and self.ce is None:
            yield "", "name a queue, a ce or both"
        times = {}
        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None:
                try:
                    times[key] = parse_time(value)
                except ValueError as exc:
                    yield key, str(exc)
        if len(times) == 2 and times["end"] <= times["start"]:
            yield "end", f"({self.end}) must be after start ({self.start})"

    def downtime(self) -> Downtime:
        start = parse_time(self.start) if self.start is not None else 0.0
        return Downtime(start, parse_time(self.end), self.severity, self.reason, self.queue, self.ce, "config")


@section
class DowntimesConfig(Section):
    """[downtimes]: announced downtimes beyond those `harvester-cli downtime add` keeps in the state
    database."""

    scheduled: list[DowntimeEntry] = setting(doc="[[downtimes.scheduled]] entries", factory=list)
    gocdb_file: Path | None = setting(None, doc="a GOCDB downtime feed: the XML its programmatic interface "
                                                "answers to method=get_downtime (kept fresh by e.g. a cron "
                                                "curl); its HOSTNAMEs are matched against the queues' CEs")


@section
class CapConfig(Section):
    """[caps.NAME]: limits several queues share over every host (PanDA queues on one site or CE). When one
    binds, it is split between its queues in proportion to their demand (pull: activated jobs; pilot
    streaming: PanDA's numbers; push: fetched jobs waiting)."""

    name: str = setting(doc="the cap's name (the table's name)")
    queues: list[str] = setting(doc="the queues sharing it (also those only other hosts run)", factory=list)
    max_queued: int | None = setting(None, doc="workers waiting in the batch queues, over all its queues")
    max_running: int | None = setting(None, doc="workers running or queued to run, over all its queues")
    max_cores: int | None = setting(None, doc="cores of the queued and running workers, over all its queues")

    def problems(self):
        if not self.queues:
            yield "queues", "list the queues that share this cap, e.g. [\"SITE_A\", \"SITE_B\"]"
        elif len(set(self.queues)) != len(self.queues):
            yield "queues", "a queue is listed twice"
        if self.max_queued is None and self.max_running is None and self.max_cores is None:
            yield "", "set max_queued, max_running or max_cores"

    def limits(self) -> dict[str, int]:
        """{kind: limit} of the limits it sets: queued, running, cores."""
        return {kind: value for kind, value in (("queued", self.max_queued), ("running", self.max_running),
                                                 ("cores", self.max_cores)) if value is not None}


@section
class Config(Section):
    harvester_id: str = setting(doc="this instance's id at PanDA")
    panda: PandaConfig = setting(doc="[panda]")
    state: str | None = setting(None, doc="state database: SQLite file path, or a server URL (postgresql://, "
                                          "mariadb://); PostgreSQL may list several hosts as libpq does "
                                          "(postgresql://u@db1:5432,db2:5432/harvester?target_session_attrs="
                                          "read-write, or host=db1,db2 ... keywords) "
                                          "(default: $XDG_STATE_HOME/harvester-cli/state.db)")
    log_dir: Path | None = setting(None, doc="the log tree (default: $XDG_STATE_HOME/harvester-cli/logs)")
    log_url: str | None = setting(None, doc="the public base URL of log_dir, sent to PanDA in log URLs",
                                  web=True)
    work_dir: Path | None = setting(None, doc="work directories of local workers "
                                              "(default: $XDG_STATE_HOME/harvester-cli/work)")
    lease_seconds: int = setting(600, doc="how long a claim on a row holds before another run may take it over",
                                 minimum=10)
    max_new_workers_per_run: int = setting(1000, doc="cap on new workers per submit run over all queues")
    instance: InstanceConfig = setting(doc="[instance]", factory=InstanceConfig)
    sweep: SweepConfig = setting(doc="[sweep]", factory=SweepConfig)
    queues: dict[str, QueueConfig] = setting(doc="[queues.NAME]", factory=dict)
    proxies: dict[str, ProxyProfile] = setting(doc="[proxies.NAME]", factory=dict)
    tokens: dict[str, TokenProfile] = setting(doc="[tokens.NAME]", factory=dict)
    smtp: SmtpConfig = setting(doc="[smtp]", factory=SmtpConfig)
    log_retention: LogRetentionConfig = setting(doc="[log_retention]", factory=LogRetentionConfig)
    command_log: CommandLogConfig = setting(doc="[command_log]", factory=CommandLogConfig)
    cron: CronConfig = setting(doc="[cron]", factory=CronConfig)
    log_server: LogServerConfig = setting(doc="[log_server]", factory=LogServerConfig)
    metrics: MetricsConfig = setting(doc="[metrics]", factory=MetricsConfig)
    downtimes: DowntimesConfig = setting(doc="[downtimes]", factory=DowntimesConfig)
    caps: dict[str, CapConfig] = setting(doc="[caps.NAME]", factory=dict)
    path: Path | None = None

    def problems(self):
        if self.state is not None and (problem := state_url_problem(self.state)):
            yield "state", problem

    @property
    def state_url(self) -> str:
        return state_url_from(self.state) if self.state else state_url_from(str(default_state_dir() / "state.db"))

    @property
    def host(self) -> str:
        """This host's identity among the hosts sharing the state database."""
        import socket

        return self.instance.host or socket.gethostname()

    @property
    def logs(self) -> Path:
        return self.log_dir or default_state_dir() / "logs"

    @property
    def work_root(self) -> Path:
        return self.work_dir or default_state_dir() / "work"

    def panda_site(self, queue_name: str) -> str:
        queue = self.queues.get(queue_name)
        return queue.site if queue else queue_name

    def caps_of(self, queue_name: str) -> list[CapConfig]:
        """The shared caps a queue is in, by name."""
        return [cap for _, cap in sorted(self.caps.items()) if queue_name in cap.queues]

    def select_queues(self, names: tuple[str, ...] | list[str] = ()) -> list[QueueConfig]:
        from harvester_cli.errors import ConfigError

        unknown = [n for n in names if n not in self.queues]
        if unknown:
            known = ", ".join(sorted(self.queues)) or "none"
            raise ConfigError(f"unknown queue {unknown[0]!r} (configured: {known})")
        return [self.queues[n] for n in names] if names else list(self.queues.values())

