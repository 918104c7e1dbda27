"""Each backend's `backend_options` table: what a queue may tell its backend, with meaning and range, and
`BACKEND_OPTIONS`, the one list of backends (name -> options section).

They live with the rest of the configuration (not in the backends) so the whole file is described in one
place and validating it never imports a backend or its client library. Adding a backend: its options
section here and one entry in BACKEND_OPTIONS, its module backends/<name>.py defining BACKEND.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harvester_cli.config.ces import CE_FLAVOURS
from harvester_cli.config.schema import Section, section, setting

# ARC errors after which a push job gets a new worker instead of failing.
ARC_TRANSIENT_ERRORS = ("Job submission to LRMS failed", "Failed in data staging", "Job was lost", "Job disappeared")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A login node: a host name or an IPv4/IPv6 address, never anything ssh could read as an option.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?\Z")


@section
class LocalOptions(Section):
    """`local`: each worker is a process group on this host."""

    work_dir: Path | None = setting(None, doc="where worker work directories go (default: the instance's "
                                              "work_dir)")


@section
class CE(Section):
    """One computing element of an HTCondor queue (grid submission)."""

    endpoint: str = setting(doc="host:port of an HTCondor-CE (port 9619 if left out), or host[:port] / https URL "
                                "of an ARC-CE")
    flavour: str = setting("htcondor-ce", doc="picks the shipped template", choices=CE_FLAVOURS)
    queue: str | None = setting(None, doc="the CE's batch queue (CRIC ce_queue_name)")
    name: str | None = setting(None, doc="HTCondor-CE schedd name when it is not the endpoint's host name")
    state: str = setting("ACTIVE", doc="only ACTIVE CEs get workers")


@section
class Schedd(Section):
    """One of several schedds an HTCondor queue spreads its workers over (schedd fanout)."""

    name: str = setting(doc="the schedd's name, as its collector knows it")
    collector: str | None = setting(None, doc="the collector that locates it (default: the queue's collector)")
    state: str = setting("ACTIVE", doc="only ACTIVE schedds get workers")


@section
class HTCondorOptions(Section):
    """`htcondor`: a local or remote schedd, vanilla jobs or grid jobs to HTCondor-CEs and ARC-CEs."""

    schedd: str | None = setting(None, doc="the schedd to submit to, by name; none: this host's schedd")
    collector: str | None = setting(None, doc="the pool's collector that locates schedd (default: COLLECTOR_HOST)")
    schedds: list[Schedd] = setting(doc="several schedds (each located by its collector): new workers are spread "
                                        "over them as over CEs, by recent throughput with ce_fair_share, each "
                                        "queuing at most n_queue_limit_worker, one that keeps failing benched "
                                        "for ce_backoff_seconds; any host reaches them (not host-bound)",
                                    factory=list)
    ces: list[CE] = setting(doc="grid CEs; none (and no cric_file): vanilla jobs in the schedd's own pool",
                            factory=list)
    cric_file: Path | None = setting(None, doc="a CRIC pandaqueue JSON file whose ACTIVE queues[] are the CEs",
                                     must_exist="file")
    template: Path | None = setting(None, doc="your own submit description template for every CE",
                                    must_exist="file")
    max_at_once: int = setting(100, doc="jobs per Schedd.submit call", minimum=1)
    ce_fair_share: float = setting(0.5, doc="CE fanout: part of the weight split evenly (0..1)", maximum=1)
    ce_stats_window: int = setting(6 * 3600, doc="CE fanout: seconds of throughput history that weigh a CE",
                                   minimum=60)
    ce_backoff_seconds: int = setting(1800, doc="a CE that keeps failing is benched this long")
    ce_backoff_failures: int = setting(3, doc="failures in the back-off window that bench a CE", minimum=1)
    held_timeout: int = setting(3600, doc="remove workers held longer than this many seconds")
    kill_hold_reasons: list[str] = setting(doc="hold reasons (substring, or HoldReasonCode) that remove at once",
                                           factory=list)
    unavailable_timeout: int = setting(3600, doc="remove a grid worker whose CE is unreachable this long")
    removed_timeout: int = setting(3600, doc="force out (condor_rm -forcex) this harvester's jobs left in Removed "
                                             "longer than this (a grid job whose CE never confirms); 0: never")
    spool: bool = setting(False, doc="the schedd shares no file system with this host: input files are spooled "
                                     "with the submission, outputs and logs are transferred back into the log "
                                     "directory when the job ends (condor_transfer_data), then the job leaves "
                                     "the queue")
    history_window: int = setting(2 * 24 * 3600, doc="how far back poll and find look in the schedd's history",
                                  minimum=60)
    extra_attributes: dict[str, str] = setting(doc="submit commands added to every job, e.g. "
                                                   "{\"+HarvesterBackground\" = \"True\"}", factory=dict)
    input_files: list[str] = setting(doc="extra files every job carries (transfer_input_files)", factory=list)
    proxy: Path | None = setting(None, doc="X.509 proxy the jobs carry (default: the queue's proxy)",
                                 must_exist="file", secret=True)
    token_file: Path | None = setting(None, doc="token file the grid jobs carry (scitokens_file) when the queue has "
                                                "no ce_token_profile", must_exist="file", secret=True)
    schedd_token_file: Path | None = setting(None, doc="authenticate to the schedd with this bearer token (SCITOKENS "
                                                       "only), e.g. the file of a [tokens.NAME] whose audience is "
                                                       "the schedd's host:port", must_exist="file", secret=True)
    disk_mb_per_core: int = setting(2000, doc="disk (MB) requested per core")
    job_owner: str | None = setting(None, doc="the account jobs run as when harvester-cli runs as root")
    work_dir: Path | None = setting(None, doc="private per-worker files (default: the instance's work_dir)")

    def problems(self):
        if self.ces and self.cric_file:
            yield "", "set either ces or cric_file, not both"
        if self.schedds and self.schedd:
            yield "", "set either schedd or schedds, not both"
        names = [s.name for s in self.schedds]
        if len(set(names)) != len(names):
            yield "schedds", "a schedd is listed twice"


@section
class ArcOptions(Section):
    """`arc`: ARC CEs over the A-REX REST interface."""

    endpoints: list[str] = setting(doc="A-REX REST endpoints of this queue's CE(s), e.g. "
                                       "[\"https://arc.example.org:443/arex\"]", https=True)
    queue: str | None = setting(None, doc="the ARC queue (ADL QueueName); none: the CE's default")
    runtime_environments: list[str] = setting(doc="runtime environments every job asks for", factory=list)
    input_files: list[str] = setting(doc="files shipped with every job: paths are uploaded, URLs fetched by the CE",
                                     factory=list)
    stage_inputs: str | None = setting(None, doc="push: the job's input files are staged by the CE from this URL "
                                                 "template ({scope}, {lfn})")
    output_files: list[str] = setting(doc="pilot files kept besides stdout/stderr, heartbeat.json, jobReport.json",
                                      factory=lambda: ["pilotlog.txt"])
    environment: dict[str, str] = setting(doc="extra pilot environment, expanded by the CE's /bin/sh",
                                          factory=dict)
    python: str = setting("python3", doc="what {python} in the pilot command runs on the CE")
    transient_errors: list[str] = setting(doc="ARC errors (case-insensitive substrings) after which a push job "
                                              "gets a new worker", factory=lambda: list(ARC_TRANSIENT_ERRORS))
    ca: Path | None = setting(None, doc="CA file or directory that signs the CE's host certificate",
                              must_exist="any")
    timeout: float = setting(60.0, doc="seconds one REST call may take", above=0, maximum=3600)
    delegation_min_lifetime: int = setting(6 * 3600, doc="renew the delegation when it has less left than this")

    def problems(self):
        if not self.endpoints:
            yield "endpoints", "list at least one A-REX URL, e.g. \"https://arc.example.org:443/arex\""
        for name in self.environment:
            if not _ENV_NAME.match(name):
                yield "environment", f"{name!r} is not a shell variable name"
        if self.stage_inputs is not None and "{lfn}" not in self.stage_inputs:
            yield "stage_inputs", "the URL template needs {lfn} (and may use {scope})"


# sbatch options harvester-cli sets itself (or that have a key of their own): refused in sbatch_options.
SLURM_OWN_OPTIONS = {
    "-J": "--job-name", "--job-name": "--job-name", "--comment": "--comment", "-a": "--array", "--array": "--array",
    "--parsable": "--parsable", "-o": "--output", "--output": "--output", "-e": "--error", "--error": "--error",
    "-D": "--chdir", "--chdir": "--chdir", "-M": "--clusters", "--clusters": "--clusters", "-p": "--partition",
    "--partition": "--partition", "-A": "--account", "--account": "--account", "-q": "--qos", "--qos": "--qos",
    "--reservation": "--reservation", "-C": "--constraint", "--constraint": "--constraint", "--wrap": "--wrap",
}
# Pending reasons that do not clear by themselves (the job can never start as submitted).
SLURM_NEVER_STARTS = ("PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount",
                      "InvalidQOS", "QOSMaxWallDurationPerJobLimit", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob")
SLURM_TEMPLATES = ("default", "multinode")


@dataclass(frozen=True)
class SlurmPartition:
    """A partition as `partitions` writes it and a Slurm worker keeps it as its computing_element: "name", or
    "name@cluster" for a partition of another cluster (reached with --clusters)."""

    entry: str
    name: str
    cluster: str | None

    @classmethod
    def parse(cls, entry: str) -> SlurmPartition:
        name, _, cluster = entry.partition("@")
        return cls(entry, name, cluster or None)


@section
class SlurmOptions(Section):
    """`slurm`: a Slurm cluster through sbatch, squeue, sacct, scontrol and scancel on this host, or on a login node
    over SSH (login_nodes)."""

    partitions: list[str] = setting(doc="partitions: \"name\" or \"name@cluster\" (--clusters, needs slurmdbd); "
                                        "several: the CE fanout picks one per worker; none: the default partition",
                                    factory=list)
    account: str | None = setting(None, doc="--account of every job")
    host_bound: bool = setting(False, doc="only this host reaches the cluster (its own slurmctld, no shared login "
                                          "node): then only this host polls, kills and cleans the workers it made")
    qos: str | None = setting(None, doc="--qos of every job")
    reservation: str | None = setting(None, doc="--reservation of every job")
    constraint: str | None = setting(None, doc="--constraint (node features) of every job")
    nodes: int = setting(1, doc="nodes per worker (HPC): the worker's cores and memory are split over them",
                         minimum=1, maximum=100_000)
    sbatch_options: list[str] = setting(doc="further sbatch options of every job, e.g. [\"--gres=gpu:1\"]",
                                        factory=list)
    shipped_template: str = setting("default", doc="the shipped batch script: default (one pilot per worker) or "
                                                   "multinode (one pilot per node, through srun)",
                                    choices=SLURM_TEMPLATES)
    template: Path | None = setting(None, doc="your own batch script template instead (placeholders in "
                                              "backends/_slurm_script.py)", must_exist="file")
    max_array_size: int = setting(1000, doc="identical workers go as one job array of at most this many tasks "
                                            "(1: one sbatch per worker)", minimum=1, maximum=1_000_000)
    max_concurrent_sbatch: int = setting(8, doc="sbatch processes running at once", minimum=1, maximum=256)
    command_timeout: float = setting(60.0, doc="seconds any Slurm command may take", above=0, maximum=3600)
    squeue_cache_seconds: float = setting(5.0, doc="poll rounds reuse one squeue listing this long (0: each round "
                                                   "lists)", maximum=3600)
    history_window: int = setting(2 * 24 * 3600, doc="how far back crash repair looks in sacct", minimum=60)
    kill_pending_reasons: list[str] = setting(doc="pending reasons (prefixes) after which a job can never start: "
                                                  "sweep kills it", factory=lambda: list(SLURM_NEVER_STARTS))
    ce_fair_share: float = setting(0.5, doc="partition fanout: part of the weight split evenly (0..1)", maximum=1)
    ce_stats_window: int = setting(6 * 3600, doc="partition fanout: seconds of throughput history", minimum=60)
    ce_backoff_seconds: int = setting(1800, doc="a partition that keeps failing is benched this long")
    ce_backoff_failures: int = setting(3, doc="failures in the back-off window that bench a partition", minimum=1)
    proxy: Path | None = setting(None, doc="X.509 proxy the jobs get as X509_USER_PROXY (default: the queue's); "
                                           "readable on the compute nodes", must_exist="file", secret=True)
    token_file: Path | None = setting(None, doc="token file the jobs get as BEARER_TOKEN_FILE", must_exist="file",
                                      secret=True)
    slurm_conf: Path | None = setting(None, doc="SLURM_CONF for this queue's commands (default: the system's); "
                                                "with login_nodes, a file on the login node", must_exist="file")
    work_dir: Path | None = setting(None, doc="private per-worker files, on a file system the nodes share "
                                              "(default: the instance's work_dir); with login_nodes, a directory "
                                              "of the login node's shared file system (required)")
    # Through a login node over SSH (transport.py): the Slurm commands run there, the files go there.
    login_nodes: list[str] = setting(doc="submit through these login nodes over SSH (OpenSSH), tried in order "
                                         "each run; none: Slurm's commands run on this host", factory=list)
    ssh_user: str | None = setting(None, doc="the account on the login nodes (default: this account's name)")
    ssh_port: int = setting(22, doc="the login nodes' SSH port", minimum=1, maximum=65535)
    ssh_key: Path | None = setting(None, doc="the private key (mode 0600; a certificate beside it as <key>-cert.pub "
                                             "is used too) that logs in to the login nodes", must_exist="file",
                                   secret=True)
    known_hosts: Path | None = setting(None, doc="the login nodes' host keys, as the site publishes them: strict "
                                                 "checking, an unknown or changed key is refused (exit 2)",
                                       must_exist="file")
    ssh_config: Path | None = setting(None, doc="an ssh_config file for what a site needs beyond these keys "
                                                "(ProxyJump, ...); none: no ssh_config is read", must_exist="file")
    connect_timeout: float = setting(10.0, doc="seconds a login node may take to answer before the next is tried; "
                                               "also the keep-alive interval of the connection", above=0,
                                     maximum=600)
    control_persist: int = setting(30, doc="seconds the run's SSH connection outlives its last use (a run that "
                                           "ends closes it; this bounds one that was killed)", minimum=1,
                                   maximum=3600)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # `partitions` parsed once, when the configuration is read: entry -> SlurmPartition, in order. Not a
        # key of the file (not a field): the backend reads it instead of splitting the strings.
        object.__setattr__(self, "parsed_partitions", {e: SlurmPartition.parse(e) for e in self.partitions})

    @property
    def clusters(self) -> list[str]:
        """The other clusters the partitions name, sorted (none: only the cluster of this host's Slurm)."""
        return sorted({p.cluster for p in self.parsed_partitions.values() if p.cluster})

    def partition(self, entry: str) -> SlurmPartition:
        """A partition by its entry: one of `partitions`, or one a worker recorded as its computing_element
        (the configuration may have changed since), or Slurm's default partition."""
        return self.parsed_partitions.get(entry) or SlurmPartition.parse(entry)

    def remote_keys(self) -> frozenset[str]:
        """Keys that name paths on the login node, not on this host (config check does not look for them)."""
        return frozenset({"work_dir", "slurm_conf"}) if self.login_nodes else frozenset()

    def problems(self):
        if self.login_nodes:
            for node in self.login_nodes:
                if not _HOST.match(node):
                    yield "login_nodes", f"{node!r} is not a host name (a name or an address, no user, no port: " \
                                         "ssh_user and ssh_port say those)"
            if len(set(self.login_nodes)) != len(self.login_nodes):
                yield "login_nodes", "a login node is listed twice"
            for key in ("ssh_key", "known_hosts"):
                if getattr(self, key) is None:
                    yield key, f"login_nodes need {key} (" + ("the private key that logs in" if key == "ssh_key" else
                                                            "the file of the login nodes' host keys the site "
                                                            "publishes") + ")"
            if self.work_dir is None:
                yield "work_dir", "login_nodes need work_dir: the directory on the login node's shared file system " \
                                  "where the workers' files go (the compute nodes must see it)"
            if self.ssh_user is not None and not _USER.match(self.ssh_user):
                yield "ssh_user", f"{self.ssh_user!r} is not a user name"
            if self.host_bound:
                yield "host_bound", "with login_nodes any host with the key reaches the cluster: leave host_bound unset"
        for partition in self.parsed_partitions.values():
            entry = partition.entry
            if not partition.name or any(c in entry for c in " ,\t") or entry.count("@") > 1 or entry.endswith("@"):
                yield "partitions", f"{entry!r} is not a partition name (\"name\" or \"name@cluster\")"
        if len(set(self.partitions)) != len(self.partitions):
            yield "partitions", "a partition is listed twice"
        for option in self.sbatch_options:
            flag = option.split("=", 1)[0]
            if not option.startswith("-"):
                yield "sbatch_options", f"{option!r} is not an option; write each as one string, e.g. \"--gres=gpu:1\""
            elif flag in SLURM_OWN_OPTIONS:
                own = SLURM_OWN_OPTIONS[flag]
                hint = (f"use backend_options.{own.lstrip('-')}" if own in ("--account", "--qos", "--reservation",
                                                                           "--constraint") else
                        "use backend_options.partitions" if own in ("--partition", "--clusters") else
                        "harvester-cli sets it on every job")
                yield "sbatch_options", f"{option!r}: {hint}"


# The one list of backends: name -> the section of its backend_options table (in the order `config keys`
# shows them). A backend named here is the module harvester_cli/backends/<name>.py, whose BACKEND implements
# backends.base.Backend; the queue's `backend` key, the backends package and `config keys` derive from this
# list, and a test checks that every module of backends/ defining BACKEND is here and nothing else is.
BACKEND_OPTIONS = {"local": LocalOptions, "htcondor": HTCondorOptions, "arc": ArcOptions, "slurm": SlurmOptions}
# The backends that run many jobs in one worker (a queue's many_to_one): one allocation, a job step per job.
MANY_TO_ONE_BACKENDS = ("slurm",)

# The Python client library a backend needs, and the package extra that installs it: (module, extra, what).
CLIENT_LIBRARIES = {"htcondor": ("htcondor2", "htcondor", "HTCondor's Python bindings"),
                    "arc": ("pyarcrest", "arc", "pyarcrest, the ARC REST client")}
