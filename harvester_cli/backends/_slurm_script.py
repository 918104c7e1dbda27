"""Building Slurm batch scripts: the template, its placeholders, the per-worker wrapper, job arrays.

A queue's batch script is one template (shipped: harvester_cli/templates/slurm/default.sbatch and
multinode.sbatch; or the queue's own `template` file). Placeholders are `{name}` with Harvester's names
(the HTCondor templates' macro names where they mean the same); only these names are replaced, so shell
text such as `${HOME}`, `{a,b}` or awk's `{print $1}` passes through untouched. An unknown `{name}` is an
error (a typo would otherwise reach sbatch as a literal option value):

    workerID harvesterID queueName computingSite resourceType jobType prodSourceLabel
    nCoreTotal nCorePerNode nNode requestRam requestRamPerNode requestRamPerCore requestRamBytes
    requestWalltime (s) requestWalltimeMinute logDir workDir executableFile
    partition account qos reservation constraint proxyPath tokenPath
    jobsPerNode nCorePerJob requestRamPerJob nJobs    (many jobs per worker: each job's step, and how many)

Worker size: `nCoreTotal` and `requestRam` are the worker's cores and memory (what PanDA counts); a worker
of `nodes` nodes gets nCorePerNode = ceil(cores / nodes) and requestRamPerNode = ceil(memory / nodes)
(`--mem` is per node). Walltime goes to `--time` in whole minutes, rounded up (Slurm counts minutes). A
many-job worker (a queue's many_to_one) is an allocation of nNode nodes running jobsPerNode job steps per
node of nCorePerJob cores and requestRamPerJob MB each: templates/slurm/manyjobs.sbatch, whose
executableFile is the launcher of _slurm_steps.py (a queue's own `template` may replace it).

What harvester-cli adds on the sbatch command line, never in the template: --parsable, --job-name and
--comment (the tags), --output/--error (pilot.log in the worker's log directory), --chdir, --array, and
the queue's partition, account, qos, reservation, constraint and sbatch_options. Values in the command
line win over `#SBATCH` lines, so a site template cannot lose the tags by accident.

The batch script runs `executableFile`, a per-worker wrapper (in the worker's private work directory)
that exports the pilot environment and runs the pilot command in the work directory with its stdout and
stderr in the log directory (pilot.out, pilot.err). Called as `executableFile --per-task` (the multinode
template does, once per node through srun) each task runs in its own subdirectory pilot-<task> with
pilot-<task>.out/.err, so several pilots of one job do not write over each other.
"""

from __future__ import annotations

import difflib
import re
import shlex
from importlib import resources
from pathlib import Path

from harvester_cli.backends.base import WorkerSpec
from harvester_cli.config.backend_options import SLURM_TEMPLATES
from harvester_cli.panda.pilot_outputs import JOB_DESCRIPTION

TEMPLATES = SLURM_TEMPLATES
WRAPPER_NAME = "harvester-worker.sh"
SCRIPT_NAME = "job.sbatch"          # the rendered template, in the work directory (arrays exec it)
# In the log directory, under the first pilot's stdout stem (pilot, or pilot-0 of a multinode worker), so that
# PanDA's monitor finds them from the stdout URL (.out -> .log, .jdl): Slurm's own output of the batch script,
# and the rendered script for people (batch.log and submit.sbatch before).
BATCH_LOG = "{stem}.log"
SUBMIT_COPY = "{stem}.jdl"

PLACEHOLDERS = (
    "workerID", "harvesterID", "queueName", "computingSite", "resourceType", "jobType", "prodSourceLabel",
    "nCoreTotal", "nCorePerNode", "nNode", "requestRam", "requestRamPerNode", "requestRamPerCore",
    "requestRamBytes", "requestWalltime", "requestWalltimeMinute", "logDir", "workDir", "executableFile",
    "partition", "account", "qos", "reservation", "constraint", "proxyPath", "tokenPath",
    "jobsPerNode", "nCorePerJob", "requestRamPerJob", "nJobs",
)
# The batch script of a many-job worker (not one of SLURM_TEMPLATES: it runs only the launcher).
MANY_JOBS_TEMPLATE = "manyjobs"
# A placeholder: {name} not preceded by "$" (shell's ${name} is the shell's).
_TOKEN = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Paths go into the script unquoted (a template decides how to use them) and into sbatch's --output, where
# % is a pattern: keep them to characters neither shell nor Slurm read specially.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+,:@=-]*$")

WRAPPER = """\
#!/bin/sh
# harvester-cli worker {worker_id} of harvester {harvester_id}, queue {queue}: run the pilot in the work directory.
{exports}
work={work_dir}
logs={log_dir}
if [ "$1" = --per-task ]; then
  task=${{SLURM_PROCID:-0}}
  work="$work/pilot-$task"
  out="$logs/pilot-$task.out"; err="$logs/pilot-$task.err"
  mkdir -p "$work"
  if [ -f {work_dir}/{job_file} ]; then cp -p {work_dir}/{job_file} "$work/"; fi
else
  out="$logs/pilot.out"; err="$logs/pilot.err"
fi
cd "$work" || exit 1
( {command} ) > "$out" 2> "$err" < /dev/null
exit $?
"""

DISPATCHER = """\
{shebang}
{header}
# harvester-cli job array of queue {queue}: task i runs worker {base} + i, whose script is
# {root}/<worker id>/{script} (its batch log is reached through {links}/i).
exec {root}/$(({base} + SLURM_ARRAY_TASK_ID))/{script}
"""


def template_text(name: str, override: Path | None) -> str:
    if override is not None:
        return override.read_text()
    return (resources.files("harvester_cli") / "templates" / "slurm" / f"{name}.sbatch").read_text()


def check_template(text: str) -> str | None:
    """The first problem of a template (an unknown placeholder), or None."""
    for number, line in enumerate(text.splitlines(), 1):
        for match in _TOKEN.finditer(line):
            name = match.group(1)
            if name not in PLACEHOLDERS:
                close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
                hint = f"did you mean {{{close[0]}}}?" if close else "known: " + " ".join(PLACEHOLDERS)
                return f"line {number}: unknown placeholder {{{name}}} ({hint}; write ${{{name}}} for a shell variable)"
    if not text.startswith("#!"):
        return "line 1: a batch script must start with #! (e.g. #!/bin/sh)"
    return None


def render(text: str, values: dict[str, str]) -> str:
    return _TOKEN.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), text)


def header(script: str) -> list[str]:
    """The #SBATCH lines sbatch reads: those before the first line that is neither a comment nor blank."""
    lines = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            lines.append(stripped)
        elif stripped and not stripped.startswith("#"):
            break
    return lines


def ceil_div(a: int, b: int) -> int:
    return -(-a // max(1, b))


def values(spec: WorkerSpec, *, harvester_id: str, queue, nodes: int, work_dir: Path, partition: str | None,
           options, proxy: Path | None, token: Path | None, executable: Path | None = None) -> dict[str, str]:
    """The per-worker placeholder values (strings); raises ValueError for values a script cannot carry."""
    cores, memory = max(1, spec.n_core), max(1, spec.memory_mb)
    shape = spec.allocation
    if shape is not None:   # many jobs: the allocation's own node count, steps of one size
        nodes = shape.nodes
    out = {
        "workerID": spec.worker_id, "harvesterID": harvester_id, "queueName": spec.queue,
        "computingSite": queue.site, "resourceType": spec.resource_type, "jobType": queue.job_type,
        "prodSourceLabel": queue.prod_source_label, "nCoreTotal": cores, "nCorePerNode": ceil_div(cores, nodes),
        "nNode": nodes, "requestRam": memory, "requestRamPerNode": ceil_div(memory, nodes),
        "requestRamPerCore": max(1, memory // cores), "requestRamBytes": memory * 1024 * 1024,
        "requestWalltime": spec.walltime, "requestWalltimeMinute": max(1, ceil_div(spec.walltime, 60)),
        "logDir": spec.log_dir, "workDir": work_dir, "executableFile": executable or work_dir / WRAPPER_NAME,
        "partition": partition or "", "account": options.account or "", "qos": options.qos or "",
        "reservation": options.reservation or "", "constraint": options.constraint or "",
        "proxyPath": proxy or "", "tokenPath": token or "",
        "jobsPerNode": shape.jobs_per_node if shape else 1, "nCorePerJob": shape.cores_per_job if shape else cores,
        "requestRamPerJob": shape.memory_per_job if shape else memory, "nJobs": len(spec.jobs) or 1,
    }
    text = {k: str(v) for k, v in out.items()}
    for key in ("logDir", "workDir", "executableFile", "proxyPath", "tokenPath"):
        if not _SAFE_PATH.match(text[key]):
            raise ValueError(f"{key} {text[key]!r} has characters a batch script cannot carry unquoted "
                             "(spaces, quotes, $, %, ...): choose a log_dir/work_dir without them")
    bad = [k for k, v in text.items() if "\n" in v or "\r" in v]
    if bad:
        raise ValueError(f"{bad[0]} contains a line break")
    return text


def wrapper(spec: WorkerSpec, harvester_id: str, work_dir: Path, environment: dict[str, str]) -> str:
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(environment.items())
                        if k.replace("_", "").isalnum() and not k[0].isdigit())
    return WRAPPER.format(worker_id=spec.worker_id, harvester_id=harvester_id, queue=spec.queue, exports=exports,
                          work_dir=shlex.quote(str(work_dir)), log_dir=shlex.quote(str(spec.log_dir)),
                          job_file=JOB_DESCRIPTION, command=spec.pilot_command)


def dispatcher(script: str, *, queue: str, base: int, root: Path, links: Path) -> str:
    """The script of a job array: the members' common #SBATCH lines, then exec the task's own script."""
    first = script.splitlines()[0]
    return DISPATCHER.format(shebang=first, header="\n".join(header(script)), queue=queue, base=base,
                             root=shlex.quote(str(root)), links=links, script=SCRIPT_NAME)
