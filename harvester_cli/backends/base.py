"""The one small interface every backend implements, and the typed results it returns per worker: submit
(SubmitResult), check (Observation), kill (KillResult), retire (RetireResult: removed only while still
queued), find; and, for backends that can say, what can start now (free_resources: FreeResources)."""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harvester_cli.panda.jobs import PandaJob


def part_file(target: Path) -> Path:
    """A temporary name beside `target`, this call's own: write there, then os.replace onto target."""
    return target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.part")


def copy_into_place(source: Path, target: Path) -> None:
    """Copy so that a reader of `target` sees the old file or the whole new one, never a part: two polls that
    overlap fetch the same worker's outputs at once, and one may read while the other writes."""
    part = part_file(target)
    try:
        shutil.copyfile(source, part)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


@dataclass(frozen=True)
class BackendContext:
    """What a backend needs from the instance, beyond its queue."""

    harvester_id: str
    work_root: Path
    # This host's name ([instance] host): the submission host of the workers a host-bound backend starts.
    host: str = ""
    panda_url: str | None = None
    proxy: Path | None = None
    ca: Path | None = None
    # ce_statistics(queue, since) -> {computing_element: {"started": n, "queued": n, "missed": n}} for
    # this queue's workers submitted since `since` (epoch): recent throughput for CE fanout; with
    # by="submission_host", the same per schedd (schedd fanout).
    ce_statistics: Callable[..., dict[str, dict[str, int]]] | None = None
    # How the backend authenticates to CEs: "proxy", "token" or "both" (the queue's ce_credentials).
    ce_credentials: str = "proxy"
    # ce_token(endpoint, flavour) -> CEToken: where the queue's per-CE token profile keeps that CE's token.
    ce_token: Callable[[str, str], CEToken] | None = None
    # Files every job carries into its working directory (the pilot's PanDA token and token key):
    # the name in the job's directory -> the file on this host.
    pilot_files: dict[str, Path] = field(default_factory=dict)
    # blocked_ces(queue, ces, walltime) -> {CE: why} for those of `ces` no new worker of the queue may go to now:
    # an announced OUTAGE under way, or one that starts within `walltime` (config.downtimes).
    blocked_ces: Callable[[str, list[str], float], dict[str, str]] | None = None


@dataclass(frozen=True)
class CEToken:
    """A CE's bearer token: the file renew-proxy keeps and the audience it was asked for."""

    file: Path
    audience: str

    def read(self) -> str:
        """The token; raises BackendError naming the CE's token file when there is none."""
        from harvester_cli.errors import BackendError

        try:
            token = self.file.read_text().strip()
        except FileNotFoundError:
            raise BackendError(f"no token for audience {self.audience}: {self.file} does not exist "
                               "(run harvester-cli renew-proxy)") from None
        except OSError as exc:
            raise BackendError(f"token {self.file}: {exc.strerror}") from None
        if not token:
            raise BackendError(f"token {self.file} is empty (run harvester-cli renew-proxy)")
        return token


def job_dir(panda_id: int) -> str:
    """Where one job of a many-job worker keeps its files, in the worker's work and log directories: a
    directory of its own named by its PandaID (its pandaJobData.out, its pilot's outputs)."""
    return str(panda_id)


@dataclass(frozen=True)
class Allocation:
    """The shape of a many-job worker (a queue's many_to_one): one batch allocation of `nodes` nodes, each
    running up to `jobs_per_node` jobs at once, each job in a step of `cores_per_job` cores and
    `memory_per_job` MB."""

    nodes: int
    jobs_per_node: int
    cores_per_job: int
    memory_per_job: int


@dataclass
class WorkerSpec:
    """One worker to submit. `job` is the push-mode PanDA job: its typed fields for the backend to read, its
    description (the verbatim dict as JSON) for the backend to ship as pandaJobData.out, unread. A many-job
    worker has `jobs` and its `allocation` instead (and no `job`): each job gets its own directory
    (job_dir), its own pandaJobData.out and its own pilot."""

    worker_id: int
    queue: str
    resource_type: str
    n_core: int
    memory_mb: int
    walltime: int
    log_dir: Path
    pilot_command: str
    environment: dict[str, str] = field(default_factory=dict)
    job: PandaJob | None = None
    jobs: list[PandaJob] = field(default_factory=list)
    allocation: Allocation | None = None


class WorkerRef:
    """A worker as the store knows it, for monitoring, killing, adopting and cleaning. Poll makes one per
    active worker (hundreds of thousands), straight from the state database's row, so it is a slotted class
    and log_dir becomes a Path only when a backend asks for it. The fields after kill_reason are what poll
    compares an observation with; backends need not read them."""

    __slots__ = ("worker_id", "queue", "batch_id", "submission_host", "computing_element", "status", "_log_dir",
                 "submit_time", "kill_reason", "diag", "native_status", "native_exit_code", "start_time", "created",
                 "modified")

    def __init__(self, worker_id: int, queue: str, batch_id: str | None, submission_host: str | None,
                 computing_element: str | None, status: str, log_dir: Path | str | None,
                 submit_time: float | None = None, kill_reason: str | None = None, diag: str | None = None,
                 native_status: str | None = None, native_exit_code: int | None = None,
                 start_time: float | None = None, created: float | None = None, modified: float | None = None):
        self.worker_id, self.queue, self.batch_id = worker_id, queue, batch_id
        self.submission_host, self.computing_element, self.status = submission_host, computing_element, status
        self._log_dir, self.submit_time, self.kill_reason = log_dir, submit_time, kill_reason
        self.diag, self.native_status, self.native_exit_code = diag, native_status, native_exit_code
        self.start_time, self.created, self.modified = start_time, created, modified

    @property
    def log_dir(self) -> Path | None:
        if isinstance(self._log_dir, str):
            self._log_dir = Path(self._log_dir)
        return self._log_dir

    def replace(self, **changes) -> "WorkerRef":
        """A copy with some fields changed (what dataclasses.replace does for a dataclass)."""
        fields = {name.lstrip("_"): getattr(self, name) for name in self.__slots__}
        return WorkerRef(**{**fields, **changes})

    def __repr__(self) -> str:
        return f"WorkerRef({self.worker_id}, {self.queue!r}, batch_id={self.batch_id!r}, status={self.status!r})"


@dataclass
class SubmitResult:
    worker_id: int
    batch_id: str | None = None
    error: str | None = None
    submission_host: str | None = None
    computing_element: str | None = None
    # Where PanDA users find the worker's output, relative to the log tree or absolute URLs.
    stdout: str | None = None
    stderr: str | None = None
    batch_log: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.batch_id is not None


@dataclass
class JobObservation:
    """What the backend saw of one job of a many-job worker: whether its step has ended (its pilot's outputs
    then say how the job went), where it ran, and the backend's word when there is no pilot's word (a node
    that failed, a step cancelled, the allocation ended first)."""

    panda_id: int
    ended: bool = False
    started: bool = False
    node: str | None = None
    exit_code: int | None = None
    diag: str | None = None


@dataclass(slots=True)   # a poll makes one per active worker: slotted, it is made in half the time
class Observation:
    """What the backend saw of one worker. `status` is a worker state, or HELD / MISSING (model.py). A
    many-job worker's jobs are in `jobs`, by PandaID: each ends on its own, the worker when all have."""

    worker_id: int
    status: str
    native_status: str | None = None
    exit_code: int | None = None
    diag: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    # The backend's own policy (held too long, CE unreachable too long): sweep kills the worker.
    kill_reason: str | None = None
    # An error the queue's own list calls transient (ARC's transient_errors), beyond panda.ce_errors' table.
    resubmit: bool = False
    jobs: dict[int, JobObservation] | None = None
    # The batch system's word on whether the job's executable ever started: False only when it proves it
    # did not (never matched or run, failed before the CE's batch system took it, never handed to a CE);
    # None when it cannot tell. A push job gets a new worker after a transient CE error only on False.
    started: bool | None = None


@dataclass(frozen=True)
class Contact:
    """One attempt of this run to reach the remote place a backend works through (a login node): whether it
    answered, and if not, why (ssh's own line)."""

    endpoint: str
    answered: bool
    problem: str | None
    at: float


@dataclass
class KillResult:
    worker_id: int
    ok: bool
    error: str | None = None


@dataclass
class RetireResult:
    """What became of one queued pilot asked to retire (`Backend.retire`): `outcome` is one of

    - RETIRED: removed while it still waited in the batch queue;
    - STARTED: it no longer waits there (it started, or was held or suspended meanwhile): left alone;
    - GONE: the backend no longer has it as a live job (it ended, or someone else removed it): poll says how;
    - FAILED: the backend could not be asked, or refused (`detail` says why): nothing changed, try again.
    `detail` is the backend's own word for what it saw (a job status, a state, an error)."""

    RETIRED: ClassVar[str] = "retired"
    STARTED: ClassVar[str] = "started"
    GONE: ClassVar[str] = "gone"
    FAILED: ClassVar[str] = "failed"

    worker_id: int
    outcome: str
    detail: str | None = None


@dataclass
class JobKillResult:
    """Killing one job of a many-job worker (its step), not the worker."""

    panda_id: int
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class FreeResources:
    """What one CE (a Slurm partition, an ARC CE's share) said can start now, for workers of the queue's shape.

    `workers` is how many such workers would start at once (0: none would; None: it could not tell), for a
    walltime of at most `window` seconds (the queue's walltime when the whole of it fits; less when only a
    backfill window does: idle nodes until a reservation or a running job's end; 0 when not even the queue's
    min_walltime fits). CEs that draw on the same nodes name the same `pool`: a planner counts a pool once.
    `source` says how it was learnt (the batch system's commands, or the CE's published information)."""

    computing_element: str
    source: str
    at: float
    workers: int | None = None
    window: int | None = None
    idle_nodes: int | None = None
    idle_cores: int | None = None
    total_cores: int | None = None
    waiting: int | None = None      # jobs of every user waiting in the batch queue there, when it says
    pool: str | None = None


class Backend(ABC):
    """Submit many workers, check many workers, kill many workers: per-worker results, never None."""

    name: ClassVar[str]
    # Whether jobs run in a directory of their own on another host (files travel with the job) or see this
    # host's files (local processes, a shared file system).
    delivers_files: ClassVar[bool] = False
    # The queue's `backend_options` table (its section in config.backend_options.BACKEND_OPTIONS).
    Options: ClassVar[type]
    # Whether workers wait in a batch queue the backend can remove them from only while they still wait there
    # (`retire`). A backend without one (local processes start at once) is never asked to retire a pilot.
    retires_queued: ClassVar[bool] = False
    # How many workers poll hands to one check(): a backend whose every query costs a scan of its whole queue
    # (a schedd) takes larger pages.
    check_page: ClassVar[int] = 500

    def __init__(self, queue: Any, context: BackendContext):
        self.queue = queue
        self.context = context
        self.options = queue.backend_options if queue.backend_options is not None else self.Options()
        # Set by the caller of submit() that shows progress: called with a count as workers reach the backend
        # (one by one, a cluster or an array at a time), before submit() returns with all of them.
        self.on_submitted: Callable[[int], None] | None = None

    def submitted(self, n: int) -> None:
        """`n` more workers of the current submit() have reached the backend (or failed to)."""
        if self.on_submitted is not None and n:
            self.on_submitted(n)

    def ces_in_downtime(self, ces: list[str]) -> dict[str, str]:
        """{CE: why} for those of `ces` (the fanout's) no new worker of this queue may go to now: in an announced
        downtime, or one its walltime would run into. The fanout leaves them out; the others take the workers."""
        if self.context.blocked_ces is None or not ces:
            return {}
        return self.context.blocked_ces(self.queue.name, ces, self.queue.walltime)

    @classmethod
    def is_host_bound(cls, options: Any) -> bool:
        """Whether the workers of a queue with these backend_options (None: the defaults) live on the host that
        submitted them (local processes, a schedd only that host reaches): then only that host polls, kills
        and cleans them, the one named in their submission_host. Backends any host reaches (a remote schedd,
        ARC REST, Slurm from a shared login node) answer False, and whichever host claims the rows works them.
        Decided from the options alone: asking needs no backend, client or credential."""
        return False

    @property
    def host_bound(self) -> bool:
        """is_host_bound of this backend's queue."""
        return self.is_host_bound(self.options)

    @abstractmethod
    def submit(self, specs: list[WorkerSpec]) -> list[SubmitResult]:
        """Start the workers; one result per spec, same order. Tag each batch job with harvester and worker id."""

    @abstractmethod
    def check(self, workers: list[WorkerRef]) -> list[Observation]:
        """Current state of each worker, same order."""

    @abstractmethod
    def kill(self, workers: list[WorkerRef], reason: str) -> list[KillResult]:
        """Ask the backend to stop each worker; a worker it no longer knows counts as killed."""

    def retire(self, workers: list[WorkerRef], reason: str) -> list[RetireResult]:
        """Remove each worker only if it still waits in the batch queue, decided by the backend itself at the
        moment of removal (a pilot that starts between poll and this call is never killed); one result per
        worker, same order. Backends with `retires_queued` override this."""
        return [RetireResult(w.worker_id, RetireResult.FAILED, f"the {self.name} backend cannot remove a worker "
                                                               "only while it is queued") for w in workers]

    @abstractmethod
    def find(self, workers: list[WorkerRef]) -> list[SubmitResult | None]:
        """Crash repair: look each (pending) worker up by its tag; a result if it exists, else None."""

    def free_resources(self, cores: int, memory_mb: int) -> list[FreeResources] | None:
        """What can start now on each CE of the queue, for workers of `cores` and `memory_mb`, asked of the batch
        system (or the CE's own published information) at this call; None: this backend cannot say (the planner
        then plans without it). Raises BackendError when the batch system could not be asked. Slurm and ARC
        override this."""
        return None

    def contacts(self) -> list[Contact]:
        """The login nodes (or other remote places) this run tried, in order: `status` shows which answered.
        Backends that reach their batch system directly have none."""
        return []

    def fetch_outputs(self, worker: WorkerRef, names: list[str]) -> dict[str, Path]:
        """Push mode: bring the pilot's named output files into the worker's log directory.

        Returns the files that are there. Backends whose workers write into the log directory need no override.
        """
        if worker.log_dir is None:
            return {}
        return {n: worker.log_dir / n for n in names if (worker.log_dir / n).is_file()}

    def kill_jobs(self, worker: WorkerRef, panda_ids: list[int], reason: str) -> list[JobKillResult]:
        """A many-job worker: stop these of its jobs (their steps), not the others; one result per job, same
        order. A job whose step has not started yet must never start."""
        from harvester_cli.errors import BackendError

        raise BackendError(f"the {self.name} backend runs one job per worker: it cannot stop one job of a worker")

    def fetch_job_outputs(self, worker: WorkerRef, panda_id: int, names: list[str]) -> dict[str, Path]:
        """A many-job worker: bring one job's named pilot outputs into its directory of the worker's log
        directory (job_dir); returns the files that are there."""
        if worker.log_dir is None:
            return {}
        where = worker.log_dir / job_dir(panda_id)
        return {n: where / n for n in names if (where / n).is_file()}

    def clean(self, workers: list[WorkerRef]) -> None:
        """Remove what the backend keeps for final workers (work directories, CE sessions)."""
