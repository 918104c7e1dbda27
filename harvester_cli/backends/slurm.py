"""Slurm backend: submitter, monitor and sweeper for Slurm clusters (HPC and grid sites), through Slurm's
own commands (sbatch, squeue, sacct, scontrol, scancel, sinfo) on a host that can submit to the cluster.

Submission: one batch script per worker from a template (templates/slurm/default.sbatch, or multinode,
or the queue's own file; placeholders in _slurm_script.py) and a per-worker wrapper in the worker's
private work directory that runs the pilot. Workers whose rendered `#SBATCH` lines are identical (same
size, same partition: the usual case within one resource type) go as one job array per sbatch call;
array task i runs worker <base> + i, so tasks stay tied to their workers with no lookup table. Other
workers go as one sbatch each, `max_concurrent_sbatch` at a time. Every job is tagged with the harvester
id and worker id: job name `<harvester id>:<worker id>` (an array: `<harvester id>:<base>+`) and a
`--comment` saying the same in words; `find` (crash repair) looks the names up in squeue, then in sacct.

Credentials and environment: the job inherits the submitting environment (Slurm's default --export=ALL,
minus SLURM_*/SBATCH_* variables of the calling process); the wrapper exports the pilot environment,
X509_USER_PROXY (the queue's proxy, or `proxy`) and BEARER_TOKEN_FILE (`token_file`), and the files
stay where they are: the work and log directories must be on a file system the compute nodes share.
Push mode: the job dict is pandaJobData.out (mode 0600) in the work directory, where the pilot runs;
its heartbeat.json and jobReport.json are copied into the log directory when the worker has ended.
Outputs: pilot.out, pilot.err (written by the wrapper) and pilot.log (Slurm's own output of the batch
script: "CANCELLED DUE TO TIME LIMIT" and the like) in the worker's log directory; pilot.jdl there is the
script that was submitted (batch.log and submit.sbatch for workers made before: the log server answers
either name).

Partitions as CEs: `partitions` lists one or more partitions ("name", or "name@cluster" for another
cluster through --clusters, which needs slurmdbd). With several, each worker's partition is picked by the
CE fanout (ce_choice.py: recent throughput mixed with a fair share, a partition queuing the queue's
n_queue_limit_worker gets nothing, one that keeps failing is benched for ce_backoff_seconds, one sinfo
does not show as up is skipped, and so is one in an announced downtime). The partition is the worker's
computing_element.

Monitoring: one `squeue -u <user> -t all -r` listing per poll (reused for `squeue_cache_seconds`, so the
monitor's rounds of 500 workers and the other queues on the same cluster share it), then `sacct` (slurmdbd, or the job-completion log with -c when
there is no accounting storage) for jobs that left squeue, then `scontrol show job` for what is left: a
job none of them knows is missing (the monitor fails it after the queue's lost_grace_seconds). States:
PENDING, CONFIGURING, REQUEUED -> submitted; RUNNING, COMPLETING -> running; SUSPENDED -> idle; held
(JobHeld*, REQUEUE_HOLD) -> held; COMPLETED -> finished; FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY,
BOOT_FAIL, DEADLINE, PREEMPTED -> failed with the state and exit code in the diag; CANCELLED -> cancelled.
A pending reason on `kill_pending_reasons` asks sweep to kill the worker. If Slurm cannot answer (slurmctld
down or slower than `command_timeout`), check raises: the poll records the error, nothing changes state.

Killing: one `scancel` for many jobs; a job Slurm no longer knows counts as killed. Retiring a queued pilot
(`retire`): `scontrol hold`, then the states, then `scancel --state=PENDING` of those held pending and
`scontrol release` of those that started: slurmctld decides under its lock, so a job that starts meanwhile
is never cancelled.

Without slurmdbd, array tasks that ended more than MinJobAge (300 s by default) ago are only in the
job-completion log, which Slurm 22.05 writes without the array task id: poll more often than that, or
set max_array_size = 1 on such a cluster.

Through a login node (`login_nodes`): the commands above run on the first login node that answers, over the
run's one SSH connection (transport.py), and `work_dir` is a directory of the login node's shared file
system. The workers' files are staged there in one stream per submit (the job description 0600, the jobs'
proxy and tokens copied under credentials/ at every submit); the pilot and batch logs are written beside them
(<work_dir>/<queue>/<worker id>/logs) and come back, with heartbeat.json and jobReport.json, into the
worker's log directory when poll sees it end, all ended workers of a check in one transfer. A login node
that is down is skipped; a changed host key or a refused key is a ConfigError (exit 2). squeue and sacct are
run as `ssh_user`. The README's "Slurm through a login node" has a worked configuration.

Example queue (TOML):

    [queues.SITE_SLURM]
    mode = "pull"
    backend = "slurm"
    resource_types = ["SCORE", "MCORE"]
    walltime = 172800
    pilot = "/bin/bash /opt/pilot/runpilot2-wrapper.sh -s {queue} -r {queue} -q {queue} -j {prod_source_label}"
    [queues.SITE_SLURM.backend_options]
    partitions = ["grid", "grid-long"]
    account = "atlas"
    qos = "normal"
    sbatch_options = ["--exclusive=user"]
    work_dir = "/shared/harvester/work"

An HPC queue whose worker is a 4-node job running one pilot per node: `nodes = 4`,
`shipped_template = "multinode"` and core_count = 4 x the cores of a node.

Many PanDA jobs in one allocation (push, the queue's many_to_one): each worker is one sbatch of the
`manyjobs` template, submitted with --no-kill, never an array; its launcher starts one job step per job
(`srun -N1 -n1 --exact`, the step named by the PandaID), each job in its own directory with its own
pandaJobData.out (_slurm_steps.py has the layout). check() adds each job's step to the worker's observation,
read from the shared file system; kill_jobs() cancels single steps (scancel JOB.STEP); the worker's
stdout is its batch log, each job's pilot writes <log dir>/<PandaID>/pilot.out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import random
import socket
import subprocess
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

from harvester_cli import model
from harvester_cli.backends import _slurm_script as script
from harvester_cli.backends import _slurm_status as status
from harvester_cli.backends import _slurm_steps as steps
from harvester_cli.backends import ce_choice, transport
from harvester_cli.backends.base import (
    Allocation,
    Backend,
    Contact,
    FreeResources,
    JobKillResult,
    KillResult,
    Observation,
    RetireResult,
    SubmitResult,
    WorkerRef,
    WorkerSpec,
    copy_into_place,
    job_dir,
)
from harvester_cli.backends.transport import StagedFile, Transport
from harvester_cli.config.backend_options import SlurmOptions
from harvester_cli.errors import BackendError, ConfigError
from harvester_cli.panda.pilot_outputs import JOB_DESCRIPTION, PILOT_OUTPUTS
from harvester_cli.site.logs import make_dirs

log = logging.getLogger(__name__)

ARRAYS_DIR = "arrays"
LOGS_DIR = "logs"               # through a login node: the worker's logs beside its files, fetched when it ends
CREDENTIALS_DIR = "credentials"  # through a login node: the jobs' proxy and tokens, staged at each submit
# The caller's own Slurm settings must not leak into our jobs or reshape our listings (a harvester started inside
# a Slurm job has SLURM_JOB_ID; SQUEUE_FORMAT, here or in a login node's profile, would change squeue's output).
SLURM_PREFIXES = ("SLURM_", "SBATCH_", "SQUEUE_", "SACCT_", "SINFO_", "SCANCEL_", "SCONTROL_", "SALLOC_", "SRUN_")
# Pilot variables that name a credential file: through a login node the file is staged and the variable follows.
CREDENTIAL_VARIABLES = ("X509_USER_PROXY", "BEARER_TOKEN_FILE", "PANDA_AUTH_TOKEN", "PANDA_AUTH_TOKEN_KEY")
# sbatch/scancel messages that mean slurmctld did not take the request (or we cannot tell whether it did).
UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Zero Bytes were transmitted",
               "backup controller in standby", "Communication connection failure", "Connection refused",
               "Transport endpoint is not connected")
# sbatch options harvester-cli sets itself: a queue must not override the tags or the bookkeeping.
# squeue listings by (SLURM_CONF, user, clusters): the queues of one cluster share one listing per poll.
_LISTINGS: dict[tuple, tuple[float, dict]] = {}
_LISTINGS_LOCK = threading.Lock()


class _Unreachable(BackendError):
    """slurmctld did not answer (refused, down, or slower than the timeout)."""


class SlurmBackend(Backend):
    name = "slurm"

    Options = SlurmOptions
    retires_queued = True

    @classmethod
    def is_host_bound(cls, options: SlurmOptions | None) -> bool:
        """From a shared login node any host reaches the cluster; the option says when only this one does."""
        return options is not None and options.host_bound

    def __init__(self, queue, context):
        super().__init__(queue, context)
        self._rng = random.Random()
        # free_resources of this run: workers that start at once per partition (the CE fanout's capacity)
        self._startable: dict[str, int] = {}
        if self.options.template is not None:   # a bad template fails the run at once, not each worker
            try:
                text = self.options.template.read_text()
            except OSError as exc:
                raise ConfigError(f"[queues.{queue.name}.backend_options] template: cannot read "
                                  f"{self.options.template}: {exc.strerror}") from None
            problem = script.check_template(text)
            if problem:
                raise ConfigError(f"[queues.{queue.name}.backend_options] template: {self.options.template} {problem}")

    # -- places and commands -----------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The queue's directory of worker files: on this host, or on the login node's shared file system."""
        return (self.options.work_dir or self.context.work_root) / self.queue.name

    def work_dir(self, worker_id: int) -> Path:
        return self.root / str(worker_id)

    @property
    def proxy(self) -> Path | None:
        return self.options.proxy or self.context.proxy

    @property
    def user(self) -> str:
        """Whose jobs these are: the account on the login node, or this account."""
        if self.options.login_nodes and self.options.ssh_user:
            return self.options.ssh_user
        return pwd.getpwuid(os.geteuid()).pw_name

    @cached_property
    def transport(self) -> Transport:
        """Where the Slurm commands run and the worker files live (transport.py): this host, or the first login
        node that answers, over the run's one SSH connection (shared with the queues that reach it the same way)."""
        o = self.options
        if not o.login_nodes:
            return transport.LocalTransport()
        return transport.ssh(transport.SSHSettings(
            nodes=tuple(o.login_nodes), user=self.user, key=o.ssh_key, known_hosts=o.known_hosts, port=o.ssh_port,
            config_file=o.ssh_config, connect_timeout=o.connect_timeout, control_persist=o.control_persist))

    def contacts(self) -> list[Contact]:
        """The login nodes this run tried, and which answered (`status` shows them)."""
        return self.transport.contacts() if "transport" in self.__dict__ else []

    def close(self) -> None:
        if "transport" in self.__dict__:
            self.transport.close()

    def _run(self, args: list[str], env: dict[str, str] | None = None,
             input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run one Slurm command where Slurm is; raises _Unreachable when it (or the login node) does not answer
        within command_timeout, SSHConfigError (exit 2) for a host key or key the login node refuses."""
        conf = {"SLURM_CONF": str(self.options.slurm_conf)} if self.options.slurm_conf else {}
        try:
            result = self.transport.run(args, timeout=self.options.command_timeout, set_env={**conf, **(env or {})},
                                        drop_env=SLURM_PREFIXES, keep_env=("SLURM_CONF",), input=input)
        except transport.CommandTimeout as exc:
            raise _Unreachable(f"{exc} (slurmctld down or overloaded?)") from None
        except transport.TransportError as exc:
            raise _Unreachable(str(exc)) from None
        except FileNotFoundError:
            raise BackendError(f"{args[0]}: command not found: install Slurm's client commands (Debian: "
                               "slurm-client) on this host or put them on PATH") from None
        if result.returncode == 127 and not self.transport.shares_files:
            raise BackendError(f"{args[0]}: command not found on login node {self.transport.where()} "
                               f"({self._message(result)}): Slurm's client commands must be on its PATH")
        return result

    @staticmethod
    def _message(result: subprocess.CompletedProcess) -> str:
        lines = [l.strip() for l in (result.stderr or result.stdout or "").splitlines() if l.strip()]
        return lines[-1] if lines else f"exit code {result.returncode}, no message"

    @staticmethod
    def _unreachable(text: str) -> bool:
        return any(marker.lower() in text.lower() for marker in UNREACHABLE)

    # -- partitions (CE fanout) --------------------------------------------------------------

    def _sinfo(self) -> tuple[dict[str, str], str | None]:
        """Availability per partition ("name" or "name@cluster") and this cluster's default partition."""
        clusters = self.options.clusters
        partitions = self.options.parsed_partitions.values()
        calls = [[]] if not partitions or any(p.cluster is None for p in partitions) else []
        if clusters:
            calls.append(["-M", ",".join(clusters)])
        states, default = {}, None
        for extra in calls:
            result = self._run(["sinfo", "-h", *extra, "-o", f"%P{status.SEP}%a"])
            if result.returncode != 0:
                raise BackendError(f"{' '.join(['sinfo', *extra])} failed: {self._message(result)}")
            found, found_default = status.parse_sinfo(result.stdout)
            states.update(found)
            if not extra:
                default = found_default
        return states, default

    def assign(self, specs: list[WorkerSpec]) -> tuple[list[tuple[WorkerSpec, str | None]], list[SubmitResult]]:
        """A partition per worker (None: Slurm's default), and an error result for workers none can take."""
        states, default = self._sinfo()
        if not self.options.partitions:
            return [(s, default) for s in specs], []
        names = list(self.options.partitions)
        at = model.now()
        stats_of = self.context.ce_statistics or (lambda queue, since: {})
        stats = stats_of(self.queue.name, at - self.options.ce_stats_window)
        recent = stats_of(self.queue.name, at - self.options.ce_backoff_seconds)
        benched = ce_choice.bench_reasons(names, health={}, recent=recent, at=at,
                                          backoff_seconds=self.options.ce_backoff_seconds,
                                          max_failures=self.options.ce_backoff_failures)
        for name in names:
            if name not in states:
                benched.setdefault(name, "sinfo does not list this partition")
            elif not states[name].startswith("up"):
                benched.setdefault(name, f"partition is {states[name]} (sinfo)")
        benched.update(self.ces_in_downtime(names))
        usable = [n for n in names if n not in benched]
        limit = self.queue.n_queue_limit_worker
        capacity = {n: max(0, self._partition_limit(n, limit) - stats.get(n, {}).get("queued", 0)) for n in usable}
        picks = ce_choice.choose(ce_choice.weights(usable, stats, self.options.ce_fair_share), len(specs),
                                 capacity, self._rng)
        assigned = list(zip(specs, picks))
        if len(picks) < len(specs):
            taken = {p: picks.count(p) for p in capacity}
            why = [f"{p}: {reason}" for p, reason in benched.items()]
            why += [f"{p}: reaches the queue limit of {limit} (n_queue_limit_worker)" for p, room in capacity.items()
                    if taken[p] >= room]
            error = "no partition can take this worker (" + ("; ".join(why) or "none usable") + ")"
            only = names[0] if len(names) == 1 else None   # counted against it (errors per CE)
            return assigned, [SubmitResult(s.worker_id, error=error, computing_element=only)
                              for s in specs[len(picks):]]
        return assigned, []

    # -- what can start now (free_resources) ------------------------------------------------------

    def free_resources(self, cores: int, memory_mb: int) -> list[FreeResources]:
        """Per partition of the queue (or the default one): idle nodes and CPUs (sinfo), and how many workers of
        `cores` and `memory_mb` would start now and for how long (sbatch --test-only, _slurm_resources.py)."""
        from harvester_cli.backends import _slurm_resources as free

        calls = [[]] if not self.options.partitions or any(
            p.cluster is None for p in self.options.parsed_partitions.values()) else []
        calls += [["-M", cluster] for cluster in self.options.clusters]
        loads, default = {}, None
        waiting: dict[str, int] | None = {}
        for extra in calls:
            result = self._run(["sinfo", "-h", *extra, "-o", free.SINFO_FORMAT])
            if result.returncode != 0:
                raise BackendError(f"{' '.join(['sinfo', *extra])} failed: {self._message(result)}")
            found, found_default = free.parse_sinfo(result.stdout)
            loads.update(found)
            default = default if extra else found_default
            # every user's jobs waiting there: shown beside the figures (status, metrics), not planned by. An
            # array's waiting tasks are one line (-r would list a 100k-task array over SSH every cycle).
            pending = self._run(["squeue", "-h", "-a", "-t", "PENDING", *extra, "-o", "%P"])
            if pending.returncode != 0:
                log.info("queue %s: squeue of the waiting jobs failed: %s", self.queue.name, self._message(pending))
                waiting = None
            elif waiting is not None:
                waiting.update(free.parse_pending(pending.stdout))
        names = list(self.options.partitions) or ([default] if default else [])
        at = model.now()
        header = self._probe_script(cores, memory_mb)
        many = self.queue.many_to_one
        # many_to_one: the smallest allocation (nodes_min) is what may start; the planner sizes allocations to the
        # idle nodes per partition
        nodes = many.nodes_min if many is not None else max(1, self.options.nodes)
        out = []
        for name in names:
            load = loads.get(name)
            if load is None:
                out.append(FreeResources(name, "sinfo does not list this partition", at, workers=0, window=0))
                continue
            source = "sinfo, sbatch --test-only"
            if not load.available.startswith("up"):
                out.append(FreeResources(name, f"sinfo: partition {load.available}", at, workers=0, window=0,
                                         idle_nodes=load.idle_nodes, idle_cores=load.idle_cores,
                                         total_cores=load.total_cores, pool=load.nodes))
                continue
            refused: list[str] = []

            def fits(minutes: int, name=name, refused=refused) -> bool:
                result = self._run(["sbatch", "--test-only", *self._common(name), f"--time={minutes}"],
                                   env={"TZ": "UTC"}, input=header)
                start = free.parse_test_only(result.stderr + result.stdout)
                if start is None:
                    refused.append(self._message(result))
                    return False
                return start <= model.now() + free.STARTS_NOW_SLACK

            span = free.window(fits, self.queue.walltime, self.queue.min_walltime)
            if refused:   # slurmctld would not take such a job there: it cannot say what would start
                out.append(FreeResources(name, f"sbatch --test-only: {refused[0]}", at, idle_nodes=load.idle_nodes,
                                         idle_cores=load.idle_cores, total_cores=load.total_cores, pool=load.nodes))
                continue
            count = load.idle_nodes // nodes if nodes > 1 or many is not None else load.idle_cores // max(1, cores)
            self._startable[name] = count if span else 0
            out.append(FreeResources(name, source, at, workers=count if span else 0, window=span,
                                     idle_nodes=load.idle_nodes, idle_cores=load.idle_cores,
                                     total_cores=load.total_cores, pool=load.nodes,
                                     waiting=None if waiting is None else waiting.get(name, 0)))
        return out

    def _probe_script(self, cores: int, memory_mb: int) -> bytes:
        """A batch script with the #SBATCH lines a worker of this size gets (many_to_one: its smallest
        allocation), for sbatch --test-only to weigh."""
        many, shape = self.queue.many_to_one, None
        if many is not None:
            shape = Allocation(many.nodes_min, many.jobs_per_node, many.cores_per_job or cores, memory_mb)
            cores = shape.nodes * shape.jobs_per_node * shape.cores_per_job
            memory_mb = shape.nodes * shape.jobs_per_node * memory_mb
        probe = WorkerSpec(0, self.queue.name, self.queue.resource_types[0], cores, memory_mb, self.queue.walltime,
                           self.root / "probe", "true", allocation=shape)
        text = script.render(self._template(many=many is not None), script.values(
            probe, harvester_id=self.context.harvester_id, queue=self.queue, nodes=self.options.nodes,
            work_dir=self.root / "probe", partition=None, options=self.options, proxy=None, token=None))
        lines = text.splitlines()
        return "\n".join([lines[0], *script.header(text), "true", ""]).encode()

    def _partition_limit(self, name: str, limit: int) -> int:
        """Workers a partition may have queued: n_queue_limit_worker, or with free_resources figures of this run,
        what starts there at once and queued_when_full more (within the limit), as the planner counts them."""
        startable = self._startable.get(name)
        if startable is None:
            return limit
        return startable + min(limit, self.queue.queued_when_full)

    # -- submit ------------------------------------------------------------------------------

    def _template(self, many: bool = False) -> str:
        return script.template_text(script.MANY_JOBS_TEMPLATE if many else self.options.shipped_template,
                                    self.options.template)

    def _logs(self, spec: WorkerSpec) -> Path:
        """Where the worker's pilot and batch logs are written: its log directory on a shared file system, or
        beside its files on the login node's (brought back when it ends)."""
        return spec.log_dir if self.transport.shares_files else self.work_dir(spec.worker_id) / LOGS_DIR

    def _credentials(self, environment: dict[str, str]) -> tuple[dict[str, str], list[StagedFile]]:
        """Through a login node: the credential files the jobs use (proxy, tokens) are staged under the queue's
        directory at each submit (renewals reach the running jobs there too), 0600, replaced whole; the
        variables naming them point at the copies. On a shared file system they stay where they are."""
        if self.transport.shares_files:
            return environment, []
        files, out = [], dict(environment)
        for variable in CREDENTIAL_VARIABLES:
            local = environment.get(variable)
            if not local or not os.path.isabs(local):
                continue
            try:
                data = Path(local).read_bytes()
            except OSError as exc:
                raise OSError(f"cannot read {local} ({variable}) to stage it on the login node: {exc.strerror}") from None
            name = f"{CREDENTIALS_DIR}/{variable.lower()}"
            files.append(StagedFile(name, data, 0o600, replace=True))
            out[variable] = str(self.root / name)
        return out, files

    def _environment(self) -> dict[str, str]:
        environment = {}
        if self.proxy:
            environment["X509_USER_PROXY"] = str(self.proxy)
        if self.options.token_file:
            environment["BEARER_TOKEN_FILE"] = str(self.options.token_file)
        return environment

    def _prepare(self, spec: WorkerSpec, partition: str | None, template: str,
                 environment: dict[str, str]) -> tuple[str, list[StagedFile]]:
        """The worker's rendered batch script and the files to stage for it (under the queue's root)."""
        make_dirs(spec.log_dir)   # on this host: the submitted script's copy, and the outputs
        work = self.work_dir(spec.worker_id)
        there = dataclasses.replace(spec, log_dir=self._logs(spec))
        prefix = str(spec.worker_id)
        files = [StagedFile(prefix, directory=True)]
        if not self.transport.shares_files:
            files.append(StagedFile(f"{prefix}/{LOGS_DIR}", directory=True))
        if spec.job is not None:   # the job dict may carry secrets (pilotSecrets): 0600 in a 0700 directory
            files.append(StagedFile(f"{prefix}/{JOB_DESCRIPTION}", spec.job.description.encode(), 0o600))
        environment = {**spec.environment, **environment}
        if spec.jobs:   # many jobs: the launcher starts a step per job, each job in its own directory
            executable, job_files = steps.prepare(work, prefix, there, self.context.harvester_id, environment)
            files += job_files
            steps.job_log_dirs(spec.log_dir, spec)
        else:
            executable = work / script.WRAPPER_NAME
            wrapper = script.wrapper(there, self.context.harvester_id, work, environment)
            files.append(StagedFile(f"{prefix}/{script.WRAPPER_NAME}", wrapper.encode(), 0o700))
        name = self.options.partition(partition).name if partition else None
        values = script.values(there, harvester_id=self.context.harvester_id, queue=self.queue,
                               nodes=self.options.nodes, work_dir=work, partition=name, options=self.options,
                               proxy=Path(environment["X509_USER_PROXY"]) if "X509_USER_PROXY" in environment else None,
                               token=Path(environment["BEARER_TOKEN_FILE"]) if "BEARER_TOKEN_FILE" in environment
                               else None, executable=executable)
        text = script.render(template, values)
        files.append(StagedFile(f"{prefix}/{script.SCRIPT_NAME}", text.encode(), 0o700))
        (spec.log_dir / script.SUBMIT_COPY.format(stem=self.stem)).write_text(text)
        return text, files

    def _common(self, partition: str | None) -> list[str]:
        """sbatch options every job of this queue and partition gets."""
        options = []
        if partition:
            target = self.options.partition(partition)
            options.append(f"--partition={target.name}")
            if target.cluster:
                options.append(f"--clusters={target.cluster}")
        for flag, value in (("--account", self.options.account), ("--qos", self.options.qos),
                            ("--reservation", self.options.reservation), ("--constraint", self.options.constraint)):
            if value:
                options.append(f"{flag}={value}")
        return options + list(self.options.sbatch_options)

    def _single(self, spec: WorkerSpec, partition: str | None) -> list[str]:
        batch_log = self._logs(spec) / script.BATCH_LOG.format(stem=self.stem)
        hid = self.context.harvester_id
        what = f"worker {spec.worker_id}" + (f", {len(spec.jobs)} PanDA jobs" if spec.jobs else "")
        # Many jobs: a node that fails takes its own jobs' steps down, not the allocation (--no-kill).
        return ["sbatch", "--parsable", f"--job-name={status.job_name(hid, spec.worker_id)}",
                f"--comment=harvester-cli harvester {hid} queue {self.queue.name} {what}",
                *(["--no-kill"] if spec.jobs else []),
                f"--output={batch_log}", f"--error={batch_log}", f"--chdir={self.work_dir(spec.worker_id)}",
                *self._common(partition), str(self.work_dir(spec.worker_id) / script.SCRIPT_NAME)]

    def _array(self, members: list[tuple[WorkerSpec, str]], partition: str | None) -> tuple[list[str], list[StagedFile]]:
        """The array's sbatch command, and its files: a link per task to the task's log directory (Slurm writes
        pilot.log through it) and the dispatcher."""
        base = members[0][0].worker_id
        links = self.root / ARRAYS_DIR / str(base)
        relative = f"{ARRAYS_DIR}/{base}"
        files = [StagedFile(f"{relative}/{spec.worker_id - base}", link=str(self._logs(spec))) for spec, _ in members]
        dispatcher = script.dispatcher(members[0][1], queue=self.queue.name, base=base, root=self.root, links=links)
        files.append(StagedFile(f"{relative}/array.sbatch", dispatcher.encode(), 0o700))
        hid = self.context.harvester_id
        ids = [s.worker_id for s, _ in members]
        batch_log = links / "%a" / script.BATCH_LOG.format(stem=self.stem)
        return ["sbatch", "--parsable", f"--job-name={status.array_name(hid, base)}",
                (f"--comment=harvester-cli harvester {hid} queue {self.queue.name} workers {base} + array task id "
                 f"({status.compress(ids)})"),
                f"--array={status.compress([i - base for i in ids])}", f"--output={batch_log}", f"--error={batch_log}",
                f"--chdir={self.root}", *self._common(partition), str(links / "array.sbatch")], files

    def _groups(self, prepared: list[tuple[WorkerSpec, str | None, str]]) -> list[tuple[list, str | None, bool]]:
        """Submissions: (members, partition, as array). Identical #SBATCH lines and partition -> arrays of
        at most max_array_size tasks whose task ids (worker id - first worker id) stay below it."""
        out = []
        by_key: dict[tuple, list[tuple[WorkerSpec, str]]] = defaultdict(list)
        for spec, partition, text in prepared:
            if spec.jobs or self.options.max_array_size <= 1:   # a many-job worker is never an array task
                out.append(([(spec, text)], partition, False))
            else:
                by_key[(partition, text.splitlines()[0], tuple(script.header(text)))].append((spec, text))
        for (partition, _, _), members in by_key.items():
            members.sort(key=lambda m: m[0].worker_id)
            chunk: list[tuple[WorkerSpec, str]] = []
            for member in members:
                if chunk and member[0].worker_id - chunk[0][0].worker_id >= self.options.max_array_size:
                    out.append((chunk, partition, len(chunk) > 1))
                    chunk = []
                chunk.append(member)
            if chunk:
                out.append((chunk, partition, len(chunk) > 1))
        return out

    def _sbatch(self, args: list[str]):
        """One sbatch: ("ok", job id, cluster) | ("refused", message) | ("unsure", message)."""
        try:
            result = self._run(args)
        except _Unreachable as exc:
            return "unsure", str(exc)
        except BackendError as exc:
            return "refused", str(exc)
        parsed = status.parse_sbatch(result.stdout) if result.returncode == 0 else None
        if parsed:
            return "ok", parsed[0], parsed[1]
        message = self._message(result)
        return ("unsure" if self._unreachable(message) else "refused"), message

    def submit(self, specs: list[WorkerSpec]) -> list[SubmitResult]:
        if not specs:
            return []
        order = {s.worker_id: i for i, s in enumerate(specs)}
        assigned, results = self.assign(specs)
        template = self._template()
        many_template = self._template(many=True) if any(s.jobs for s in specs) else template
        try:
            environment, staged = self._credentials(self._environment())
        except OSError as exc:
            results += [SubmitResult(spec.worker_id, error=str(exc)) for spec, _ in assigned]
            return sorted(results, key=lambda r: order[r.worker_id])
        prepared = []
        for spec, partition in assigned:
            try:
                text, files = self._prepare(spec, partition, many_template if spec.jobs else template, environment)
            except (OSError, ValueError) as exc:
                results.append(SubmitResult(spec.worker_id, error=f"cannot prepare the worker's files: {exc}"))
                continue
            prepared.append((spec, partition, text))
            staged += files
        groups, commands = [], []
        for members, partition, array in self._groups(prepared):
            if array:
                args, files = self._array(members, partition)
                staged += files
            else:
                args = self._single(members[0][0], partition)
            groups.append((members, partition, array))
            commands.append(args)
        try:   # every file of this call in one go (through a login node: one stream), before any sbatch
            self.transport.put(str(self.root), staged, timeout=self.options.command_timeout)
        except ConfigError:
            raise
        except (OSError, BackendError) as exc:   # no sbatch ran: these workers were not submitted
            error = f"cannot write the workers' files ({exc})"
            results += [SubmitResult(spec.worker_id, error=error) for members, _, _ in groups for spec, _ in members]
            groups, commands = [], []

        def sbatch(index: int):
            outcome = self._sbatch(commands[index])
            self.submitted(len(groups[index][0]))
            return outcome

        with ThreadPoolExecutor(max_workers=self.options.max_concurrent_sbatch) as pool:
            outcomes = list(pool.map(sbatch, range(len(groups))))
        self.forget_listing()
        unsure = [o[1] for o in outcomes if o[0] == "unsure"]
        if unsure:
            # Some may exist in Slurm (a timeout after slurmctld took the job, a connection lost after sbatch
            # started): leave every worker of this call pending; the next submit's repair adopts what Slurm has
            # and misses the rest (find).
            raise BackendError(f"sbatch could not complete {len(unsure)} of {len(groups)} submissions "
                               f"({unsure[0]}); the workers stay pending and the next submit looks them up")
        host = socket.gethostname()
        refused_arrays = []
        for (members, partition, array), outcome in zip(groups, outcomes):
            if outcome[0] == "ok":
                job_id = outcome[1]
                base = members[0][0].worker_id
                for spec, _ in members:
                    batch_id = f"{job_id}_{spec.worker_id - base}" if array else job_id
                    results.append(self._result(spec.worker_id, batch_id, host, partition))
            else:
                where = f" to partition {partition}" if partition else ""
                results += [SubmitResult(spec.worker_id, error=f"sbatch refused the worker{where}: {outcome[1]}",
                                         computing_element=partition) for spec, _ in members]
                if array:
                    refused_arrays.append(f"{ARRAYS_DIR}/{members[0][0].worker_id}")
        if refused_arrays:   # their links would never be cleaned: no task of theirs has a batch id
            try:
                self.transport.remove(str(self.root), refused_arrays, timeout=self.options.command_timeout)
            except (OSError, BackendError) as exc:
                log.warning("queue %s: cannot remove the files of refused job arrays: %s", self.queue.name, exc)
        return sorted(results, key=lambda r: order[r.worker_id])

    def _result(self, worker_id: int, batch_id: str, host: str, ce: str | None) -> SubmitResult:
        if self.queue.many_to_one is not None and steps.is_many(self.work_dir(worker_id)):
            # Each job's pilot writes <PandaID>/pilot.out; the allocation's own story is its batch log.
            batch_log = script.BATCH_LOG.format(stem=self.stem)
            return SubmitResult(worker_id, batch_id=batch_id, submission_host=host, computing_element=ce,
                                stdout=batch_log, batch_log=batch_log)
        return SubmitResult(worker_id, batch_id=batch_id, submission_host=host, computing_element=ce,
                            stdout=f"{self.stem}.out", stderr=f"{self.stem}.err",
                            batch_log=script.BATCH_LOG.format(stem=self.stem))

    @property
    def stem(self) -> str:
        """The name a worker's files share in its log directory: the first pilot's (pilot-0 of a multinode
        worker), so that its stdout URL leads to the others (.err, .log, .jdl)."""
        return "pilot-0" if self.options.shipped_template == "multinode" and not self.options.template else "pilot"

    # -- listings ----------------------------------------------------------------------------

    def _cluster_of(self, worker: WorkerRef) -> str | None:
        """The cluster a worker was submitted to (None: this host's), from its partition."""
        return self.options.partition(worker.computing_element).cluster if worker.computing_element else None

    def _clusters(self, workers: list[WorkerRef] = ()) -> frozenset:
        """The clusters to ask: None (this one) and those of the configured partitions and the workers."""
        return frozenset({None, *self.options.clusters, *map(self._cluster_of, workers)})

    def _listing_key(self, clusters: frozenset) -> tuple:
        """The queues that see the same cluster share a listing: same place (this host, or the same login
        nodes), Slurm configuration and user."""
        o = self.options
        place = ("ssh", tuple(o.login_nodes), o.ssh_port) if o.login_nodes else ("local",)
        return (place, str(o.slurm_conf or ("" if o.login_nodes else os.environ.get("SLURM_CONF", ""))), self.user,
                clusters)

    def forget_listing(self) -> None:
        """After a submit or a kill the listing is stale: the next check asks squeue again."""
        with _LISTINGS_LOCK:
            for key in [k for k in _LISTINGS if k[:3] == self._listing_key(frozenset())[:3]]:
                del _LISTINGS[key]

    def _squeue(self, clusters: frozenset, *, fresh: bool = False) -> dict[tuple[str | None, str], status.JobRecord]:
        """Every job of our user that slurmctld still holds, by (cluster, job id). One squeue per cluster set,
        reused for squeue_cache_seconds by every queue of this cluster, so a poll costs one listing."""
        key = self._listing_key(clusters)
        with _LISTINGS_LOCK:
            cached = _LISTINGS.get(key)
        if not fresh and cached and time.monotonic() - cached[0] < self.options.squeue_cache_seconds:
            return cached[1]
        records: dict[tuple[str | None, str], status.JobRecord] = {}
        others = sorted(c for c in clusters if c)
        for extra in ([[]] if None in clusters else []) + ([["-M", ",".join(others)]] if others else []):
            result = self._run(["squeue", "-h", "-a", "-r", "-t", "all", "-u", self.user, *extra,
                                "-O", status.SQUEUE_FORMAT])
            if result.returncode != 0:
                raise _Unreachable(f"squeue failed: {self._message(result)}")
            for record in status.parse_squeue(result.stdout):
                records[(record.cluster if extra else None, record.job_id)] = record
        with _LISTINGS_LOCK:
            _LISTINGS[key] = (time.monotonic(), records)
        return records

    def _sacct(self, extra: list[str], cluster: str | None) -> list[status.JobRecord]:
        """Jobs from accounting (slurmdbd), or from the job-completion log when there is no accounting."""
        args = ["sacct", "-X", "-n", "-P", f"--delimiter={status.SEP}", "-o", status.SACCT_FORMAT, *extra]
        if cluster:
            args += ["-M", cluster]
        result = self._run(args)
        if result.returncode == 0:
            return status.parse_sacct(result.stdout)
        message = (result.stderr + result.stdout).strip()
        if "accounting storage is disabled" not in message:
            raise BackendError(f"sacct failed: {self._message(result)}")
        completed = self._run(args[:1] + ["-c"] + args[1:])
        if completed.returncode != 0:   # no job-completion log either: there is no history to ask
            log.debug("queue %s: no accounting and no job-completion log: %s", self.queue.name, self._message(completed))
            return []
        return status.parse_sacct(completed.stdout, source="jobcomp")

    def _scontrol(self, job_ids: list[str], cluster: str | None) -> dict[str, status.JobRecord]:
        """`scontrol show job` of each id, in one command (one shell running them in turn: through a login node,
        one round trip however many jobs are left to ask about)."""
        extra = ' -M "$0"' if cluster else ""
        loop = f'for id do scontrol -o show job "$id"{extra} || echo "$id: exit $?" >&2; done'
        result = self._run(["/bin/sh", "-c", loop, cluster or "sh", *job_ids])
        problems = [line for line in result.stderr.splitlines()
                    if line.strip() and "Invalid job id" not in line and ": exit " not in line]
        if problems or (result.returncode != 0 and not result.stderr.strip()):
            raise _Unreachable(f"scontrol show job failed: {problems[-1] if problems else self._message(result)}")
        records = (status.parse_scontrol(line) for line in result.stdout.splitlines() if line.startswith("JobId="))
        return {r.job_id: r for r in records if r is not None}

    # -- check -------------------------------------------------------------------------------

    def check(self, workers: list[WorkerRef]) -> list[Observation]:
        listing = self._squeue(self._clusters(workers))
        found: dict[int, status.JobRecord] = {}
        missing: dict[str | None, list[WorkerRef]] = defaultdict(list)
        for worker in workers:
            cluster = self._cluster_of(worker)
            record = listing.get((cluster, worker.batch_id)) if worker.batch_id else None
            if record is not None:
                found[worker.worker_id] = record
            elif worker.batch_id:
                missing[cluster].append(worker)
        for cluster, group in missing.items():
            history = {r.job_id: r for r in self._sacct(["-j", ",".join(w.batch_id for w in group)], cluster)}
            left = [w for w in group if w.batch_id not in history]
            controller = self._scontrol([w.batch_id for w in left], cluster) if left else {}
            for worker in group:
                record = history.get(worker.batch_id) or controller.get(worker.batch_id)
                if record is not None:
                    found[worker.worker_id] = record
        reasons = tuple(self.options.kill_pending_reasons)
        out = []
        for worker in workers:
            record = found.get(worker.worker_id)
            if record is None:
                what = f"job {worker.batch_id}" if worker.batch_id else "no batch id recorded"
                out.append(Observation(worker.worker_id, model.MISSING, "unknown",
                                       diag=f"Slurm has no trace of {what} (squeue, sacct and scontrol)"))
            else:
                out.append(status.observe(worker.worker_id, worker.status, record, reasons))
            if self.queue.many_to_one is not None and out[-1].status != model.MISSING:
                work = self.work_dir(worker.worker_id)
                if steps.is_many(work):   # each job's step, from the files the nodes share
                    out[-1].jobs = steps.observe(work, out[-1])
        if not self.transport.shares_files:
            self._bring_back([w for w, o in zip(workers, out) if o.status in model.WORKER_FINAL])
        return out

    def kill_jobs(self, worker: WorkerRef, panda_ids: list[int], reason: str) -> list[JobKillResult]:
        """Cancel these jobs' steps (scancel JOB.STEP, the step found by its name, the PandaID). The kill is
        written into each job's directory first: a step that starts after the lookup runs nothing."""
        try:
            steps.mark_killed(self.work_dir(worker.worker_id), panda_ids, reason)
        except OSError as exc:
            return [JobKillResult(p, False, f"cannot mark the job killed: {exc}") for p in panda_ids]
        if not worker.batch_id:
            return [JobKillResult(p, True) for p in panda_ids]
        cluster = ["-M", c] if (c := self._cluster_of(worker)) else []
        try:
            listed = self._run(["squeue", "-h", "-s", "-j", worker.batch_id, *cluster, "-o", status.STEPS_FORMAT])
            if listed.returncode != 0 and "Invalid job id" not in listed.stderr:
                raise BackendError(f"squeue -s failed: {self._message(listed)}")
            found = status.parse_steps(listed.stdout) if listed.returncode == 0 else {}
            targets = {p: found[str(p)] for p in panda_ids if str(p) in found}
            if not targets:   # no step yet (the mark stops it) or none left (ended): nothing to cancel
                return [JobKillResult(p, True) for p in panda_ids]
            result = self._run(["scancel", *cluster, *targets.values()])
        except BackendError as exc:
            return [JobKillResult(p, False, str(exc)) for p in panda_ids]
        errors = status.scancel_errors(result.stderr) if result.returncode != 0 else {}
        if result.returncode != 0 and (not errors or self._unreachable(result.stderr)):
            return [JobKillResult(p, False, f"scancel failed: {self._message(result)}") for p in panda_ids]
        out = []
        for panda_id in panda_ids:
            error = errors.get(targets.get(panda_id, ""))
            out.append(JobKillResult(panda_id, False, f"scancel {targets[panda_id]}: {error}")
                       if error and not status.nothing_to_kill(error) else JobKillResult(panda_id, True))
        return out

    def _bring_back(self, ended: list[WorkerRef]) -> None:
        """Through a login node: the logs and pilot outputs of workers that ended come back into their log
        directories, all in one transfer, as poll sees them end. A transfer that fails is tried again by
        fetch_outputs (push) and leaves the logs on the login node (pull)."""
        items = []
        for worker in ended:
            if worker.log_dir is not None:
                items.append((f"{worker.worker_id}/{LOGS_DIR}", worker.log_dir))
                items += [(f"{worker.worker_id}/{name}", worker.log_dir / name) for name in PILOT_OUTPUTS]
        if not items:
            return
        try:
            self.transport.get(str(self.root), items, timeout=self.options.command_timeout)
        except (OSError, BackendError) as exc:
            log.warning("queue %s: cannot bring back the logs of %d ended workers from login node %s: %s",
                        self.queue.name, len(ended), self.transport.where(), exc)

    # -- kill --------------------------------------------------------------------------------

    def kill(self, workers: list[WorkerRef], reason: str) -> list[KillResult]:
        results = {w.worker_id: KillResult(w.worker_id, True) for w in workers if not w.batch_id}
        by_cluster: dict[str | None, list[WorkerRef]] = defaultdict(list)
        for worker in workers:
            if worker.batch_id:
                by_cluster[self._cluster_of(worker)].append(worker)
        for cluster, group in by_cluster.items():
            for start in range(0, len(group), 500):
                chunk = group[start:start + 500]
                args = ["scancel", *(["-M", cluster] if cluster else []), *[w.batch_id for w in chunk]]
                try:
                    result = self._run(args)
                except BackendError as exc:
                    results.update({w.worker_id: KillResult(w.worker_id, False, str(exc)) for w in chunk})
                    continue
                errors = status.scancel_errors(result.stderr) if result.returncode != 0 else {}
                whole = result.returncode != 0 and (not errors or self._unreachable(result.stderr))
                for worker in chunk:
                    error = errors.get(worker.batch_id)
                    if whole:
                        results[worker.worker_id] = KillResult(worker.worker_id, False,
                                                               f"scancel failed: {self._message(result)}")
                    elif error and not status.nothing_to_kill(error):
                        results[worker.worker_id] = KillResult(worker.worker_id, False,
                                                               f"scancel {worker.batch_id}: {error}")
                    else:
                        results[worker.worker_id] = KillResult(worker.worker_id, True)
        self.forget_listing()
        if any(not r.ok for r in results.values()):
            log.warning("queue %s: scancel failed for %d workers (%s)", self.queue.name,
                        sum(not r.ok for r in results.values()), reason)
        return [results[w.worker_id] for w in workers]

    # -- retire ------------------------------------------------------------------------------

    def _hold_or_release(self, op: str, job_ids: list[str], cluster: str | None) -> dict[str, str]:
        """`scontrol hold|release` of these jobs; Slurm's complaints per job id."""
        result = self._run(["scontrol", *(["-M", cluster] if cluster else []), op, ",".join(job_ids)])
        if result.returncode != 0 and self._unreachable(result.stderr + result.stdout):
            raise _Unreachable(f"scontrol {op} failed: {self._message(result)}")
        complaints = {}
        for line in (result.stderr or "").splitlines():   # "<message> for job <id>" or "<id>: <message>"
            line = line.strip()
            if " for job " in line:
                message, _, job = line.rpartition(" for job ")
                complaints[job.strip()] = message
            elif ": " in line:
                job, _, message = line.partition(": ")
                complaints[job.strip()] = message
        return complaints

    def retire(self, workers: list[WorkerRef], reason: str) -> list[RetireResult]:
        """Cancel each job only while it is still pending, decided by slurmctld: hold the jobs first (a held job
        never starts; a running job does not mind), then read their states, cancel those that are pending and
        now held, and release the others. `scancel --state=PENDING` alone filters in the client on Slurm before
        24.05 (its --ctld applies the filter in slurmctld): a job starting between its listing and its kill
        would be killed."""
        results: dict[int, RetireResult] = {w.worker_id: RetireResult(w.worker_id, RetireResult.GONE,
                                                                      "no batch id recorded")
                                             for w in workers if not w.batch_id}
        by_cluster: dict[str | None, list[WorkerRef]] = defaultdict(list)
        for worker in workers:
            if worker.batch_id:
                by_cluster[self._cluster_of(worker)].append(worker)
        for cluster, group in by_cluster.items():
            for start in range(0, len(group), 500):
                chunk = group[start:start + 500]
                try:
                    results.update(self._retire_chunk(chunk, cluster))
                except BackendError as exc:
                    results.update({w.worker_id: RetireResult(w.worker_id, RetireResult.FAILED, str(exc))
                                    for w in chunk if w.worker_id not in results})
        self.forget_listing()
        return [results[w.worker_id] for w in workers]

    def _retire_chunk(self, chunk: list[WorkerRef], cluster: str | None) -> dict[int, RetireResult]:
        out: dict[int, RetireResult] = {}
        held = []
        try:
            self._hold_or_release("hold", [w.batch_id for w in chunk], cluster)
            listing = self._squeue(frozenset({cluster}), fresh=True)
            started = []
            for worker in chunk:
                record = listing.get((cluster, worker.batch_id))
                if record is None or record.state in status.ENDED_STATES:
                    out[worker.worker_id] = RetireResult(worker.worker_id, RetireResult.GONE,
                                                         record.state if record else "not in squeue")
                elif record.state == "PENDING":
                    held.append(worker)
                else:   # running, completing, suspended, configuring: it started, and it keeps running
                    started.append(worker)
                    out[worker.worker_id] = RetireResult(worker.worker_id, RetireResult.STARTED, record.state)
            if started:   # a hold on a running job would keep it held if it were ever requeued
                self._hold_or_release("release", [w.batch_id for w in started], cluster)
            if not held:
                return out
            # Held and pending: it cannot start now. Cancel what is still pending.
            result = self._run(["scancel", *(["-M", cluster] if cluster else []), "--state=PENDING",
                                *[w.batch_id for w in held]])
            if result.returncode != 0 and self._unreachable(result.stderr):
                raise _Unreachable(f"scancel failed: {self._message(result)}")
            after = self._squeue(frozenset({cluster}), fresh=True)
        except BackendError:
            # Never leave a pilot held behind (the next sweep, or the demand coming back, decides): release
            # every job of the chunk; on one that was not held this changes nothing.
            try:
                self._hold_or_release("release", [w.batch_id for w in chunk], cluster)
            except BackendError as exc:
                log.warning("queue %s: cannot release %d jobs after a failed retirement: %s", self.queue.name,
                            len(chunk), exc)
            raise
        still = [w for w in held if (after.get((cluster, w.batch_id)) or status.JobRecord("", "")).state == "PENDING"]
        for worker in held:
            record = after.get((cluster, worker.batch_id))
            if worker in still:
                out[worker.worker_id] = RetireResult(worker.worker_id, RetireResult.FAILED,
                                                     f"scancel left {worker.batch_id} pending: {self._message(result)}")
            elif record is not None and record.state in status.CANCELLED_STATES:
                out[worker.worker_id] = RetireResult(worker.worker_id, RetireResult.RETIRED, "PENDING")
            else:
                out[worker.worker_id] = RetireResult(worker.worker_id, RetireResult.GONE,
                                                     record.state if record else "not in squeue")
        if still:
            self._hold_or_release("release", [w.batch_id for w in still], cluster)
        return out

    # -- crash repair ------------------------------------------------------------------------

    def find(self, workers: list[WorkerRef]) -> list[SubmitResult | None]:
        if not workers:
            return []
        wanted = {w.worker_id for w in workers}
        hid = self.context.harvester_id
        found: dict[int, tuple[str, str | None]] = {}

        def take(record: status.JobRecord, cluster: str | None) -> None:
            worker_id = status.worker_of(record.name, record.job_id, hid)
            if worker_id in wanted and worker_id not in found:
                partition = record.partition
                found[worker_id] = (record.job_id, f"{partition}@{cluster}" if cluster and partition else partition)

        for (cluster, _), record in self._squeue(self._clusters(), fresh=True).items():
            take(record, cluster)
        if wanted - set(found):
            for cluster in sorted(self._clusters(), key=lambda c: c or ""):
                window = ["-u", self.user, "-S", f"now-{self.options.history_window}"]
                for record in self._sacct(window, cluster):
                    take(record, cluster)
        host = socket.gethostname()
        return [self._result(w.worker_id, found[w.worker_id][0], host, found[w.worker_id][1])
                if w.worker_id in found else None for w in workers]

    # -- outputs and cleaning ----------------------------------------------------------------

    def fetch_outputs(self, worker: WorkerRef, names: list[str]) -> dict[str, Path]:
        if worker.log_dir is None:
            return {}
        wanted = [n for n in names if self.transport.shares_files or not (worker.log_dir / n).is_file()]
        if wanted:   # through a login node, poll brought them back when it saw the worker end: ask only for the rest
            self.transport.get(str(self.root), [(f"{worker.worker_id}/{n}", worker.log_dir / n) for n in wanted],
                               timeout=self.options.command_timeout)
        return {n: worker.log_dir / n for n in names if (worker.log_dir / n).is_file()}

    def fetch_job_outputs(self, worker: WorkerRef, panda_id: int, names: list[str]) -> dict[str, Path]:
        if worker.log_dir is None:
            return {}
        source = self.work_dir(worker.worker_id) / job_dir(panda_id)
        target = worker.log_dir / job_dir(panda_id)
        fetched = {}
        for name in names:
            if (source / name).is_file():
                make_dirs(target)
                copy_into_place(source / name, target / name)
            if (target / name).is_file():
                fetched[name] = target / name
        return fetched

    def clean(self, workers: list[WorkerRef]) -> None:
        paths, arrays = [str(w.worker_id) for w in workers], set()
        for worker in workers:
            task = (worker.batch_id or "").partition("_")[2]
            if task.isdigit():
                arrays.add(f"{ARRAYS_DIR}/{worker.worker_id - int(task)}")
                paths.append(f"{ARRAYS_DIR}/{worker.worker_id - int(task)}/{task}")
        # an array's directory goes with the link of its last task
        self.transport.remove(str(self.root), paths, prune=sorted(arrays), timeout=self.options.command_timeout)

BACKEND = SlurmBackend
