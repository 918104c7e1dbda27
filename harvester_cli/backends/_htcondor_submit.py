"""Building HTCondor submissions: templates, the per-worker wrapper, the per-worker macros (itemdata).

The submit description of a queue and CE is one template (shipped per CE flavour under
harvester_cli/templates/htcondor/, or the queue's own `template` file). It is plain HTCondor submit
language; what differs per worker is given as HTCondor macros through `itemdata`, so all workers of one
queue and CE go to the schedd in one `Schedd.submit` call. Macros (Harvester's placeholder names; HTCondor
macro names are case-insensitive, so none of them may equal a submit command such as `executable`):

    workerID harvesterID queueName computingSite resourceType jobType prodSourceLabel
    nCorePerNode requestRam requestRamPerCore requestRamPerCoreBytes requestDisk (KiB)
    requestWalltime (s) requestWalltimeMinute logDir workDir executableFile inputFiles
    ceEndpoint ceHostname cePort ceName ceQueueName ceFlavour proxyPath tokenPath
    pilotExecutable pilotArguments

The shipped templates run `executableFile`, a per-worker wrapper around the queue's pilot command. A
template that runs the pilot itself may use `executable = $(pilotExecutable)` and
`arguments = "$(pilotArguments)"`: the pilot command's first word and the rest, quoted for HTCondor's
argument syntax (plain commands only: no pipes, redirections or variable assignments).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from harvester_cli.backends.base import WorkerSpec
from harvester_cli.config.ces import CE_FLAVOURS, DEFAULT_PORTS

FLAVOURS = ("vanilla", *CE_FLAVOURS)   # a shipped template each: vanilla jobs, and one per CE flavour
OUTPUTS_DIR = "harvester-outputs"
WRAPPER_NAME = "harvester-worker.sh"

MACROS = (
    "workerID", "harvesterID", "queueName", "computingSite", "resourceType", "jobType", "prodSourceLabel",
    "nCorePerNode", "requestRam", "requestRamPerCore", "requestRamPerCoreBytes", "requestDisk",
    "requestWalltime", "requestWalltimeMinute", "logDir", "workDir", "executableFile", "inputFiles",
    "ceEndpoint", "ceHostname", "cePort", "ceName", "ceQueueName", "ceFlavour", "proxyPath", "tokenPath",
    "pilotExecutable", "pilotArguments",
)

WRAPPER = """\
#!/bin/sh
# harvester-cli worker {worker_id} of harvester {harvester_id}, queue {queue}: run the pilot, keep its outputs.
{exports}
mkdir -p {outputs}
( {command} ) < /dev/null
rc=$?
for f in {names}; do
  if [ -f "$f" ]; then cp -p "$f" {outputs}/; fi
done
exit $rc
"""


@dataclass(frozen=True)
class LogNames:
    """A worker's files in its log directory, under one stem: PanDA's monitor finds stderr, the batch log
    and the submit description by replacing the stdout URL's .out with .err, .log and .jdl."""

    stdout: str | None   # None: a template that writes it outside the log directory (no URL then)
    stderr: str | None
    log: str | None
    jdl: str


SHIPPED_NAMES = LogNames("pilot.out", "pilot.err", "pilot.log", "pilot.jdl")


def log_names(submit) -> LogNames:
    """The names a submit description gives stdout, stderr and the job event log in $(logDir) (a site's own
    template may name them otherwise: its URLs then say what it wrote); the submit description goes beside
    them under stdout's stem."""

    def name(key: str) -> str | None:
        head, _, tail = str(submit.get(key) or "").strip().rpartition("/")
        return tail if head.lower() == "$(logdir)" and tail and "$(" not in tail else None

    stdout = name("output")
    stem = (stdout or SHIPPED_NAMES.stdout).removesuffix(".out")
    return LogNames(stdout, name("error"), name("log"), f"{stem}.jdl")


def template_text(flavour: str, override: Path | None) -> str:
    if override is not None:
        return override.read_text()
    return (resources.files("harvester_cli") / "templates" / "htcondor" / f"{flavour}.sub").read_text()


def split_endpoint(endpoint: str, flavour: str) -> tuple[str, int | None]:
    """host and port of a CE endpoint ("host:port", "host", or "https://host:port/path")."""
    rest = endpoint.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if port.isdigit():
        return host, int(port)
    return rest, DEFAULT_PORTS.get(flavour)


def wrapper(spec: WorkerSpec, harvester_id: str, outputs: tuple[str, ...], environment: dict[str, str]) -> str:
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(environment.items())
                        if k.replace("_", "").isalnum() and not k[0].isdigit())
    return WRAPPER.format(worker_id=spec.worker_id, harvester_id=harvester_id, queue=spec.queue, exports=exports,
                          outputs=OUTPUTS_DIR, command=spec.pilot_command,
                          names=" ".join(shlex.quote(n) for n in outputs))


def pilot_parts(command: str) -> tuple[str, str]:
    """(executable, arguments in HTCondor's quoted syntax) of a plain pilot command; empty if it is not one."""
    try:
        words = shlex.split(command)
    except ValueError:
        return "", ""
    if not words:
        return "", ""
    # HTCondor's new argument syntax: single quotes group, a doubled quote is a literal one.
    quoted = [w if w and not any(c in w for c in " \t'\"") else "'" + w.replace("'", "''") + "'" for w in words[1:]]
    return words[0], " ".join(quoted).replace('"', '""')


def macros(spec: WorkerSpec, *, harvester_id: str, queue, work_dir: Path, input_files: list[str],
           ce_endpoint: str, ce_flavour: str, ce_name: str | None, ce_queue: str | None,
           proxy: Path | None, token: Path | None, disk_mb_per_core: int) -> dict[str, str]:
    """The per-worker HTCondor macros (all strings; itemdata values cannot hold newlines)."""
    host, port = split_endpoint(ce_endpoint, ce_flavour)
    per_core = max(1, spec.memory_mb // max(1, spec.n_core))
    values = {
        "workerID": spec.worker_id, "harvesterID": harvester_id, "queueName": spec.queue,
        "computingSite": queue.site, "resourceType": spec.resource_type, "jobType": queue.job_type,
        "prodSourceLabel": queue.prod_source_label, "nCorePerNode": spec.n_core, "requestRam": spec.memory_mb,
        "requestRamPerCore": per_core, "requestRamPerCoreBytes": per_core * 1024 * 1024,
        "requestDisk": disk_mb_per_core * spec.n_core * 1024, "requestWalltime": spec.walltime,
        "requestWalltimeMinute": max(1, (spec.walltime + 59) // 60), "logDir": spec.log_dir, "workDir": work_dir,
        "executableFile": work_dir / WRAPPER_NAME, "inputFiles": ",".join(input_files),
        "ceEndpoint": ce_endpoint, "ceHostname": host, "cePort": port or "", "ceName": ce_name or host,
        "ceQueueName": ce_queue or "", "ceFlavour": ce_flavour, "proxyPath": proxy or "", "tokenPath": token or "",
    }
    values["pilotExecutable"], values["pilotArguments"] = pilot_parts(spec.pilot_command)
    out = {k: str(v) for k, v in values.items()}
    bad = [k for k, v in out.items() if "\n" in v]
    if bad:
        raise ValueError(f"worker {spec.worker_id}: {bad[0]} contains a newline")
    return out


def description(text: str, *, harvester_id: str, queue_name: str, ce: str, extra: dict[str, str]):
    """The htcondor2.Submit for one queue and CE: the template, harvester-cli's tags, the extra attributes."""
    import classad2
    import htcondor2

    submit = htcondor2.Submit(text)
    if submit.getQArgs():
        submit.setQArgs("")   # one job per worker comes from itemdata
    submit["+harvesterID"] = classad2.quote(harvester_id)
    submit["+harvesterWorkerID"] = "$(workerID)"
    submit["+harvesterQueue"] = classad2.quote(queue_name)
    submit["+harvesterCE"] = classad2.quote(ce)
    for key, value in extra.items():
        submit[key] = value
    return submit


def rendered(submit, item: dict[str, str]) -> str:
    """What a human needs to reproduce one worker's submission: the description plus its macros."""
    lines = [str(submit).rstrip("\n").removesuffix("queue").rstrip("\n"), "", "# this worker's macros (itemdata)"]
    lines += [f"{k} = {v}" for k, v in item.items()]
    return "\n".join(lines) + "\nqueue\n"
