"""Local backend: each worker is a detached process group on this host, in its own work directory.

A small shell wrapper runs the pilot (in a subshell, so an `exit` in the command ends only the pilot) and writes the exit code to `.exitcode` when it ends, so a later
`poll` (a different process than the one that submitted) can tell finished from failed from vanished.
The process carries HARVESTER_ID and HARVESTER_WORKER_ID in its environment: that is the tag `find`
uses to adopt a worker whose submission was interrupted before the store recorded it.
"""

from __future__ import annotations

import logging
import os
import shlex
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
)
from harvester_cli.config.backend_options import LocalOptions

log = logging.getLogger(__name__)

EXIT_FILE = ".exitcode"
PID_FILE = ".pid"
KILLED_FILE = ".killed"
# A killed worker that ignores SIGTERM this long gets SIGKILL at the next kill request.
KILL_ESCALATION_SECONDS = 30

WRAPPER = """\
#!/bin/sh
# harvester-cli local worker {worker_id} of harvester {harvester_id}
cd {work_dir}
echo "start $(date -u +%FT%TZ) pid $$" >> {batch_log}
( {command} ) > {stdout} 2> {stderr} < /dev/null
rc=$?
echo $rc > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}
echo "end $(date -u +%FT%TZ) exit $rc" >> {batch_log}
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

    @property
    def root(self) -> Path:
        return (self.options.work_dir or self.context.work_root) / self.queue.name

    def work_dir(self, worker_id: int) -> Path:
        return self.root / str(worker_id)

    # -- submit ------------------------------------------------------------------------------

    def submit(self, specs: list[WorkerSpec]) -> list[SubmitResult]:
        return [self._start(spec) for spec in specs]

    def _start(self, spec: WorkerSpec) -> SubmitResult:
        work = self.work_dir(spec.worker_id)
        try:
            work.mkdir(parents=True, exist_ok=True, mode=0o700)   # the job dict and its secrets live here
            spec.log_dir.mkdir(parents=True, exist_ok=True)
            if spec.job is not None:
                import json

                # The job dict may carry secrets (pilotSecrets): readable by the worker's user only.
                fd = os.open(work / "pandaJobData.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump(spec.job, f)
            script = work / "run.sh"
            script.write_text(WRAPPER.format(
                worker_id=spec.worker_id, harvester_id=self.context.harvester_id,
                work_dir=shlex.quote(str(work)), command=spec.pilot_command,
                stdout=shlex.quote(str(spec.log_dir / "pilot.out")),
                stderr=shlex.quote(str(spec.log_dir / "pilot.err")),
                batch_log=shlex.quote(str(spec.log_dir / "batch.log")),
                exit_file=EXIT_FILE,
            ))
            env = {**os.environ, **spec.environment,
                   "HARVESTER_ID": self.context.harvester_id, "HARVESTER_WORKER_ID": str(spec.worker_id)}
            process = subprocess.Popen(
                ["/bin/sh", str(script)], cwd=work, env=env, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            return SubmitResult(spec.worker_id, error=f"cannot start local worker: {exc}")
        try:
            self._record_pid(work, process.pid)
        except OSError as exc:   # it runs: report it started; find() and the wrapper's files still work
            log.warning("worker %s: cannot record pid %s: %s", spec.worker_id, process.pid, exc)
        return self._result(spec.worker_id, process.pid)

    def _record_pid(self, work: Path, pid: int) -> None:
        stat = _proc_stat(pid)
        (work / PID_FILE).write_text(f"{pid} {stat[1] if stat else 0}\n")

    def _result(self, worker_id: int, pid: int) -> SubmitResult:
        return SubmitResult(worker_id, batch_id=str(pid), submission_host=socket.gethostname(),
                            computing_element="localhost", stdout="pilot.out", stderr="pilot.err",
                            batch_log="batch.log")

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
        return [self._observe(w.worker_id, f"{root}/{w.worker_id}") for w in workers]

    def _observe(self, worker_id: int, work: str) -> Observation:
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
        worker.log_dir.mkdir(parents=True, exist_ok=True)
        fetched = {}
        for name in names:
            if (work / name).is_file():
                shutil.copyfile(work / name, worker.log_dir / name)
                fetched[name] = worker.log_dir / name
        return fetched

    def clean(self, workers: list[WorkerRef]) -> None:
        for worker in workers:
            shutil.rmtree(self.work_dir(worker.worker_id), ignore_errors=True)


BACKEND = LocalBackend
