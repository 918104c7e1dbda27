"""Local backend: each worker is a detached process group on this host, in its own work directory.

A small shell wrapper (one for all queues) runs the pilot in a subshell, so an `exit` in the command ends only
the pilot, and writes the exit code to `.exitcode` when it ends, so a later `poll` (a different process
than the one that submitted) can tell finished from failed from vanished.
The process carries HARVESTER_ID and HARVESTER_WORKER_ID in its environment: that is the tag `find`
uses to adopt a worker whose submission was interrupted before the store recorded it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from harvester_cli import model
from harvester_cli.backends.base import (
    Backend,
    KillResult,
    Observation,
    SubmitResult,
    WorkerRef,
    WorkerSpec,
    copy_into_place,
)
from harvester_cli.config.backend_options import LocalOptions
from harvester_cli.panda.pilot_outputs import JOB_DESCRIPTION
from harvester_cli.site.logs import make_dirs
from harvester_cli.site.secretfiles import write_private

log = logging.getLogger(__name__)

EXIT_FILE = ".exitcode"
PID_FILE = ".pid"
KILLED_FILE = ".killed"
# A killed worker that ignores SIGTERM this long gets SIGKILL at the next kill request.
KILL_ESCALATION_SECONDS = 30

WRAPPER_NAME = ".harvester-worker.sh"
# One wrapper for all the workers (each runs it in its own directory; what differs comes in the
# environment): starting a worker writes no script. It records its own pid and start time (clock ticks,
# field 22 of /proc/PID/stat) first, so a reused pid is never taken for it, then runs the pilot in a
# subshell (an `exit` in the command ends only the pilot) and leaves the exit code in .exitcode.
WRAPPER = """\
#!/bin/sh
# harvester-cli local worker wrapper (HARVESTER_ID and HARVESTER_WORKER_ID name the worker)
read -r _hc_stat < /proc/$$/stat
set -- ${_hc_stat##*") "}
shift 19
echo "$$ $1" > .pid.tmp && mv .pid.tmp .pid
_hc_command=$HARVESTER_PILOT_COMMAND _hc_out=$HARVESTER_PILOT_STDOUT _hc_err=$HARVESTER_PILOT_STDERR
_hc_log=$HARVESTER_BATCH_LOG
unset HARVESTER_PILOT_COMMAND HARVESTER_PILOT_STDOUT HARVESTER_PILOT_STDERR HARVESTER_BATCH_LOG _hc_stat
echo "start $(date -u +%FT%TZ) pid $$" >> "$_hc_log"
( eval "$_hc_command" ) > "$_hc_out" 2> "$_hc_err" < /dev/null
rc=$?
echo $rc > .exitcode.tmp && mv .exitcode.tmp .exitcode
echo "end $(date -u +%FT%TZ) exit $rc" >> "$_hc_log"
exit $rc
"""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _worker_umask() -> int:
    """This process's umask with group and others' write taken away: what the pilot writes (its logs in the
    log tree) is never writable by other accounts, whatever umask cron or a shell gave harvester-cli."""
    try:
        with open("/proc/self/status") as f:
            current = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        current = 0o022
    return current | 0o022


def _reap(pid: int) -> None:
    """Collect the exit status if the worker is our own child (tests and `cycle` submit in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _process_tag(pid: int) -> tuple[str | None, str | None]:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None, None
    values = dict(item.split(b"=", 1) for item in env if b"=" in item)
    harvester = values.get(b"HARVESTER_ID")
    worker = values.get(b"HARVESTER_WORKER_ID")
    return (harvester.decode() if harvester else None, worker.decode() if worker else None)


class LocalBackend(Backend):
    name = "local"

    Options = LocalOptions

    @classmethod
    def is_host_bound(cls, options: LocalOptions | None) -> bool:
        return True   # processes of this host: no other host can see, kill or clean them

    @property
    def root(self) -> Path:
        return (self.options.work_dir or self.context.work_root) / self.queue.name

    def work_dir(self, worker_id: int) -> Path:
        return self.root / str(worker_id)

    # -- submit ------------------------------------------------------------------------------

    def submit(self, specs: list[WorkerSpec]) -> list[SubmitResult]:
        try:
            make_dirs(self.root)
            wrapper = self._wrapper()
        except OSError as exc:
            return [SubmitResult(s.worker_id, error=f"cannot prepare {self.root} and its worker wrapper: {exc}")
                    for s in specs]
        environment = dict(os.environ)   # read once: a submission starts hundreds of workers
        umask = _worker_umask()
        results = []
        for spec in specs:
            results.append(self._start(spec, wrapper, environment, umask))
            self.submitted(1)
        return results

    def _wrapper(self) -> str:
        """The wrapper script, (re)written when missing, different, not ours or writable by others (every
        worker runs it: whoever can change it runs code as this account). It lives beside the queues' work
        directories, not in one, so a swept queue directory ends up empty."""
        path = self.root.parent / WRAPPER_NAME
        try:
            with open(path, "rb") as f:
                info = os.fstat(f.fileno())
                if info.st_uid == os.geteuid() and not info.st_mode & 0o022 and f.read() == WRAPPER.encode():
                    return str(path)
        except OSError:
            pass
        temporary = path.with_name(f"{WRAPPER_NAME}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o700)   # whatever the umask, and a leftover temporary's mode
            f.write(WRAPPER)
        temporary.replace(path)
        return str(path)

    def _start(self, spec: WorkerSpec, wrapper: str, environment: dict[str, str], umask: int) -> SubmitResult:
        work = f"{self.root}/{spec.worker_id}"
        log_dir = str(spec.log_dir)
        try:
            try:
                os.mkdir(work, 0o700)   # the job dict and its secrets live here
            except FileExistsError:
                pass
            make_dirs(log_dir)
            if spec.job is not None:

                # The job dict may carry secrets (pilotSecrets): readable by the worker's user only.
                write_private(Path(work) / JOB_DESCRIPTION, spec.job.description.encode())
            env = {**environment, **spec.environment,
                   "HARVESTER_ID": self.context.harvester_id, "HARVESTER_WORKER_ID": str(spec.worker_id),
                   "HARVESTER_PILOT_COMMAND": spec.pilot_command, "HARVESTER_PILOT_STDOUT": f"{log_dir}/pilot.out",
                   "HARVESTER_PILOT_STDERR": f"{log_dir}/pilot.err", "HARVESTER_BATCH_LOG": f"{log_dir}/pilot.log"}
            # What was started, for people: under the stdout's stem, where PanDA's monitor looks (.jdl).
            fd = os.open(f"{log_dir}/pilot.jdl", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w") as f:
                os.fchmod(fd, 0o644)   # whatever the umask: readable, never writable by others
                f.write(f"# harvester-cli local worker {spec.worker_id} of queue {spec.queue}\n"
                        f"work directory: {work}\ncommand: {spec.pilot_command}\n")
            process = subprocess.Popen(
                ["/bin/sh", wrapper], cwd=work, env=env, start_new_session=True, umask=umask,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            return SubmitResult(spec.worker_id, error=f"cannot start local worker: {exc}")
        return self._result(spec.worker_id, process.pid)

    def _record_pid(self, work: Path, pid: int) -> None:
        stat = _proc_stat(pid)
        (work / PID_FILE).write_text(f"{pid} {stat[1] if stat else 0}\n")

    def _result(self, worker_id: int, pid: int) -> SubmitResult:
        return SubmitResult(worker_id, batch_id=str(pid), submission_host=self.context.host or socket.gethostname(),
                            computing_element="localhost", stdout="pilot.out", stderr="pilot.err",
                            batch_log="pilot.log")

    # -- check -------------------------------------------------------------------------------

    def _pid(self, work: Path | str) -> tuple[int, int] | None:
        try:
            with open(os.path.join(work, PID_FILE)) as f:
                pid, ticks = f.read().split()
            return int(pid), int(ticks)
        except (OSError, ValueError):
            return None

    def _alive(self, pid: int, ticks: int) -> bool:
        stat = _proc_stat(pid)
        if stat is None:
            return False
        state, started = stat
        if state == "Z":
            _reap(pid)
            return False
        return ticks == 0 or started == ticks

    def check(self, workers: list[WorkerRef]) -> list[Observation]:
        root = str(self.root)
        return [self._observe(w.worker_id, f"{root}/{w.worker_id}", w.batch_id) for w in workers]

    def _starting(self, worker_id: int, batch_id: str | None) -> int | None:
        """The pid of a worker whose wrapper has not written its pid file yet: the batch id, if that
        process carries this worker's tag (a reused pid does not)."""
        if not batch_id or not batch_id.isdigit():
            return None
        pid = int(batch_id)
        return pid if _process_tag(pid) == (self.context.harvester_id, str(worker_id)) else None

    def _observe(self, worker_id: int, work: str, batch_id: str | None = None) -> Observation:
        # Plain os calls on string paths: poll runs this for every active worker, often 100k and more.
        try:
            names = os.listdir(work)   # one look tells what the wrapper left behind
        except (FileNotFoundError, NotADirectoryError):
            return Observation(worker_id, model.MISSING, "gone", diag=f"work directory {work} ended without an "
                               "exit code (killed outside harvester-cli or host rebooted)")
        if EXIT_FILE in names:
            exit_file = os.path.join(work, EXIT_FILE)
            try:
                with open(exit_file) as f:
                    code = int(f.read().strip())
            except ValueError:
                code = -1
            end = os.stat(exit_file).st_mtime
            start = os.stat(os.path.join(work, PID_FILE)).st_mtime if PID_FILE in names else None
            if code == 0:
                return Observation(worker_id, model.FINISHED, "exited", 0, None, start, end)
            return Observation(worker_id, model.FAILED, "exited", code, f"pilot exited with code {code}", start, end)
        pid = self._pid(work) if PID_FILE in names else None
        if pid and self._alive(*pid):
            return Observation(worker_id, model.RUNNING, "running", start_time=os.stat(os.path.join(work, PID_FILE)).st_mtime)
        if PID_FILE not in names and self._starting(worker_id, batch_id):
            return Observation(worker_id, model.RUNNING, "starting")
        if KILLED_FILE in names:
            killed = os.path.join(work, KILLED_FILE)
            with open(killed) as f:
                reason = f.read().strip()
            return Observation(worker_id, model.CANCELLED, "killed", diag=f"killed: {reason}",
                               end_time=os.stat(killed).st_mtime)
        where = f"process {pid[0]}" if pid else f"work directory {work}"
        return Observation(worker_id, model.MISSING, "gone",
                           diag=f"{where} ended without an exit code (killed outside harvester-cli or host rebooted)")

    # -- kill --------------------------------------------------------------------------------

    def kill(self, workers: list[WorkerRef], reason: str) -> list[KillResult]:
        return [self._kill(w, reason) for w in workers]

    def _kill(self, worker: WorkerRef, reason: str) -> KillResult:
        work = self.work_dir(worker.worker_id)
        marker = work / KILLED_FILE
        pid = self._pid(work)
        if pid is None and self._starting(worker.worker_id, worker.batch_id):
            pid = (int(worker.batch_id), 0)
        if not pid or not self._alive(*pid):
            return KillResult(worker.worker_id, True)
        try:
            escalate = marker.exists() and model.now() - marker.stat().st_mtime > KILL_ESCALATION_SECONDS
            if not marker.exists():
                marker.write_text(reason + "\n")
            os.killpg(pid[0], signal.SIGKILL if escalate else signal.SIGTERM)
        except ProcessLookupError:
            pass
        except OSError as exc:
            return KillResult(worker.worker_id, False, f"cannot signal process group {pid[0]}: {exc}")
        return KillResult(worker.worker_id, True)

    # -- crash repair ------------------------------------------------------------------------

    def find(self, workers: list[WorkerRef]) -> list[SubmitResult | None]:
        wanted = {w.worker_id for w in workers}
        found: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                harvester, worker = _process_tag(int(entry.name))
                if harvester == self.context.harvester_id and worker and int(worker) in wanted:
                    # The wrapper shell is the group leader; its children carry the same tag.
                    pid = int(entry.name)
                    try:
                        if os.getpgid(pid) == pid:
                            found[int(worker)] = pid
                    except ProcessLookupError:
                        pass
        results: list[SubmitResult | None] = []
        for worker in workers:
            work = self.work_dir(worker.worker_id)
            if worker.worker_id in found:
                if self._pid(work) is None:
                    self._record_pid(work, found[worker.worker_id])
                results.append(self._result(worker.worker_id, found[worker.worker_id]))
            elif (work / EXIT_FILE).exists() and self._pid(work):
                results.append(self._result(worker.worker_id, self._pid(work)[0]))
            else:
                results.append(None)
        return results

    # -- outputs and cleaning ----------------------------------------------------------------

    def fetch_outputs(self, worker: WorkerRef, names: list[str]) -> dict[str, Path]:
        work = self.work_dir(worker.worker_id)
        if worker.log_dir is None:
            return {}
        make_dirs(worker.log_dir)
        fetched = {}
        for name in names:
            if (work / name).is_file():
                copy_into_place(work / name, worker.log_dir / name)
                fetched[name] = worker.log_dir / name
        return fetched

    def clean(self, workers: list[WorkerRef]) -> None:
        for worker in workers:
            shutil.rmtree(self.work_dir(worker.worker_id), ignore_errors=True)


BACKEND = LocalBackend
