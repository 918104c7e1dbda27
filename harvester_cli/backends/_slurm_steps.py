"""Many PanDA jobs in one Slurm allocation (a queue's many_to_one, HPC): each job's files, the launcher that
starts one job step per job, and what those files say of each job afterwards (Harvester's shared-file
messenger: the nodes and this host see the same file system).

In the worker's work directory (private, mode 0700):

    jobs.list                  one line per job: PandaID, cores and memory (MB) of its step (every step of
                               an allocation is of one size: the largest its jobs ask for)
    harvester-jobs.sh          the launcher. The batch script runs it on the allocation's first node: it starts
                               every job as a job step of its own, at once (`srun -N1 -n1 --exact ... &`, the
                               step named by the PandaID, so `scancel JOB.STEP` stops that job alone) and waits
                               for them all; the allocation ends with its last step. Inside a step it is run
                               with `--job ID` and runs that job's pilot.
    <PandaID>/pandaJobData.out the job dict (mode 0600); the pilot writes heartbeat.json and jobReport.json here
    <PandaID>/started          "<node> <job id>.<step id> <epoch>": the step started (on that node)
    <PandaID>/ended            "<srun exit code> <epoch>": the step is over
    <PandaID>/step.log         srun's own words about the step: "srun: error: Node failure on NODE" when its
                               node died, "*** STEP ... CANCELLED ..." when it was cancelled
    <PandaID>/killed           why harvester-cli stopped the job: a step that has not started never runs it

and each pilot's stdout and stderr in <log dir>/<PandaID>/pilot.out and pilot.err.

srun answers 0 for a step whose node failed under it (Slurm 22.05), so a step's end is read from its files,
never from srun's exit code alone: the pilot's heartbeat.json says how the job went; without one, step.log
says why (a node failure, a cancel), and the job fails with that.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from harvester_cli import model
from harvester_cli.backends.base import JobObservation, Observation, WorkerSpec, job_dir
from harvester_cli.backends.transport import StagedFile
from harvester_cli.panda.pilot_outputs import JOB_DESCRIPTION
from harvester_cli.site.logs import make_dirs

JOBS_LIST = "jobs.list"
LAUNCHER_NAME = "harvester-jobs.sh"
STARTED, ENDED, STEP_LOG, KILLED = "started", "ended", "step.log", "killed"

LAUNCHER = """\
#!/bin/sh
# harvester-cli worker {worker_id} of harvester {harvester_id}, queue {queue}: {n_jobs} PanDA job(s) in one
# allocation, each run by its own pilot in a job step of its own named by its PandaID.
{exports}
work={work_dir}
logs={log_dir}
if [ "$1" = --job ]; then
  id=$2
  cd "$work/$id" || exit 1
  if [ -e {killed} ]; then echo "job $id was killed before its step started: $(cat {killed})" >&2; exit 143; fi
  echo "${{SLURMD_NODENAME:-$(hostname)}} ${{SLURM_JOB_ID}}.${{SLURM_STEP_ID}} $(date +%s)" > {started}.part
  mv {started}.part {started}
  ( {command} ) > "$logs/$id/pilot.out" 2> "$logs/$id/pilot.err" < /dev/null
  exit $?
fi
echo "harvester-cli: allocation $SLURM_JOB_ID on $SLURM_JOB_NODELIST starts {n_jobs} job step(s)"
while read -r id cores memory; do
  (
    srun --nodes=1 --ntasks=1 --exact --cpus-per-task="$cores" --mem="$memory" --job-name="$id" \\
      /bin/sh {launcher} --job "$id" > "$work/$id/{step_log}" 2>&1 < /dev/null
    echo "$? $(date +%s)" > "$work/$id/{ended}.part"
    mv "$work/$id/{ended}.part" "$work/$id/{ended}"
    echo "harvester-cli: job $id: step ended, srun exit code $(cut -d' ' -f1 "$work/$id/{ended}")"
  ) &
done < "$work/{jobs_list}"
wait
echo "harvester-cli: every job step of allocation $SLURM_JOB_ID has ended"
"""


def prepare(work: Path, prefix: str, spec: WorkerSpec, harvester_id: str,
            environment: dict[str, str]) -> tuple[Path, list[StagedFile]]:
    """The jobs' directories, job dicts, the job list and the launcher, as files to stage under the worker's
    `prefix` (its work directory `work` where the jobs run); returns the launcher's path there and the files.
    `spec.log_dir` is where the pilots' outputs go on the cluster's side: a directory per job is made there
    when this host shares it, staged otherwise (the caller stages the log directory itself)."""
    shape = spec.allocation
    lines, files = [], []
    for job in spec.jobs:
        here = f"{prefix}/{job_dir(job.panda_id)}"
        files += [StagedFile(here, directory=True),
                  StagedFile(f"{here}/{JOB_DESCRIPTION}", job.description.encode(), 0o600)]   # pilotSecrets
        lines.append(f"{job.panda_id} {shape.cores_per_job} {shape.memory_per_job}\n")
    files.append(StagedFile(f"{prefix}/{JOBS_LIST}", "".join(lines).encode(), 0o600))
    launcher = work / LAUNCHER_NAME
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(environment.items())
                        if k.replace("_", "").isalnum() and not k[0].isdigit())
    text = LAUNCHER.format(
        worker_id=spec.worker_id, harvester_id=harvester_id, queue=spec.queue, n_jobs=len(spec.jobs), exports=exports,
        work_dir=shlex.quote(str(work)), log_dir=shlex.quote(str(spec.log_dir)), command=spec.pilot_command,
        launcher=shlex.quote(str(launcher)), killed=KILLED, started=STARTED, ended=ENDED, step_log=STEP_LOG,
        jobs_list=JOBS_LIST)
    files.append(StagedFile(f"{prefix}/{LAUNCHER_NAME}", text.encode(), 0o700))
    return launcher, files


def job_log_dirs(log_dir: Path, spec: WorkerSpec) -> None:
    """Each job's pilot output directory, on this host (a file system the nodes share)."""
    for job in spec.jobs:
        make_dirs(log_dir / job_dir(job.panda_id))


def is_many(work: Path) -> bool:
    """Whether the worker whose work directory this is runs many jobs (the file that lists them is there)."""
    return (work / JOBS_LIST).is_file()


def panda_ids(work: Path) -> list[int]:
    try:
        text = (work / JOBS_LIST).read_text()
    except OSError:
        return []
    return [int(line.split()[0]) for line in text.splitlines() if line.split() and line.split()[0].isdigit()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


_NODE_FAILURE = re.compile(r"Node failure on (\S+)")


def explain(exit_code: int | None, step_log: str, node: str | None, killed: str | None) -> str | None:
    """Why a step ended, in the words the job's diag carries when its pilot left no final word (None: no
    reason to think anything went wrong)."""
    where = f" on node {node}" if node else ""
    failed_node = _NODE_FAILURE.search(step_log)
    if failed_node:
        return (f"slurm NODE_FAIL: node {failed_node.group(1)} failed while the job's step ran on it "
                f"(the allocation runs on without it: --no-kill)")
    if killed is not None:
        return f"killed: {killed.strip()} (its step was cancelled{where})"
    if "CANCELLED" in step_log:
        return f"slurm CANCELLED: the job's step was cancelled{where}"
    if exit_code:
        last = [line.strip() for line in step_log.splitlines() if line.strip()]
        return f"the job's step ended with exit code {exit_code}{where}" + (f": {last[-1][:200]}" if last else "")
    return None


def observe(work: Path, worker: Observation) -> dict[int, JobObservation]:
    """Each job of a many-job worker as its files show it; when the allocation itself has ended, a job whose
    step never said it ended has ended with it."""
    out = {}
    for panda_id in panda_ids(work):
        here = work / job_dir(panda_id)
        started, ended, killed = _read(here / STARTED), _read(here / ENDED), _read(here / KILLED)
        node = started.split()[0] if started and started.split() else None
        seen = JobObservation(panda_id, started=started is not None, node=node)
        if ended is not None:
            fields = ended.split()
            seen.ended = True
            seen.exit_code = int(fields[0]) if fields and fields[0].lstrip("-").isdigit() else None
            seen.diag = explain(seen.exit_code, _read(here / STEP_LOG) or "", node, killed)
        elif worker.status in model.WORKER_FINAL:
            seen.ended = True
            why = worker.diag or (f"slurm {worker.native_status}" if worker.native_status else worker.status)
            seen.diag = f"the allocation ended before the job's step did: {why}"
        out[panda_id] = seen
    return out


def mark_killed(work: Path, panda_ids_: list[int], reason: str) -> None:
    """Written before the steps are looked up: a step that starts after the lookup finds it and runs nothing."""
    for panda_id in panda_ids_:
        here = work / job_dir(panda_id)
        if here.is_dir():
            (here / KILLED).write_text(reason + "\n")
