"""ARC job descriptions for harvester-cli workers: ADL, built with ElementTree (pure, no I/O, no pyarcrest).

Why ADL and not xRSL: ADL is the REST interface's own format (`application/xml`), several jobs go in
one request as `<ActivityDescriptions>`, and an XML builder escapes every value correctly by
construction, where xRSL needs hand-written quoting of pilot arguments, environment values and URLs.
REST 1.0 ignores the queue and delegation arguments of job creation, so both are written into the
description (`QueueName`, `nordugrid-adl:DelegationID`).

One worker = one ARC job:
- executable: a small generated shell wrapper (`harvester-worker.sh`, uploaded) that exports the
  pilot's environment and runs the pilot command; its exit code is the job's exit code;
- inputs: the wrapper, `pandaJobData.out` (push), the queue's extra input files (local paths are
  uploaded, URLs are fetched by the CE), and in push mode the job's input files as CE-staged inputs
  when the queue gives a URL template;
- outputs kept in the session for download: the pilot's stdout/stderr, heartbeat.json, jobReport.json
  and the queue's extra output files (the pilot log); A-REX deletes every file not listed;
- size: cores as slots on one host, memory per core rounded up to 500 MB steps, walltime from the
  job's limits capped by the queue (pull: the queue's walltime), CPU time = walltime x cores;
- name: `<harvester id>:<worker id>`, the tag crash repair (`find`) looks for.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from harvester_cli.panda.jobs import PandaJob

ADL = "http://www.eu-emi.eu/es/2010/12/adl"
NORDUGRID_ADL = "http://www.nordugrid.org/es/2011/12/nordugrid-adl"
ET.register_namespace("", ADL)
ET.register_namespace("nordugrid-adl", NORDUGRID_ADL)

WRAPPER = "harvester-worker.sh"
STDOUT = "pilot.out"
STDERR = "pilot.err"
# The same stem (PanDA's monitor finds them from the stdout URL): A-REX's log of the job, and the ADL sent.
BATCH_LOG = "pilot.log"
DESCRIPTION = "pilot.jdl"
MEMORY_STEP_MB = 500

# Host paths the harvester passes to local pilots; on a CE the job gets its own (the delegated proxy
# in X509_USER_PROXY, the CE's CA directory in X509_CERT_DIR), so these are not exported.
HOST_ONLY_ENVIRONMENT = frozenset({"X509_USER_PROXY", "X509_CERT_DIR", "HARVESTER_PANDA_CA"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def job_name(harvester_id: str, worker_id: int) -> str:
    return f"{harvester_id}:{worker_id}"


def memory_per_core_mb(memory_mb: int, n_core: int) -> int:
    """Memory per core, rounded up to the next 500 MB step (at least one step)."""
    per_core = math.ceil(max(memory_mb, 1) / max(n_core, 1))
    return max(1, math.ceil(per_core / MEMORY_STEP_MB)) * MEMORY_STEP_MB


def walltime_seconds(job: PandaJob | None, cap: int) -> int:
    """The job's own limit (maxWalltime, else maxCpuCount, in seconds), never above the queue's cap.

    Pull workers (no job) and jobs that say nothing get the queue's walltime.
    """
    limit = job.walltime_limit if job is not None else None
    return min(limit, cap) if limit else cap


def staged_inputs(job: PandaJob | None, url_template: str | None) -> dict[str, str]:
    """Push mode: the job's input files -> {name in the session: URL the CE fetches}."""
    if job is None or not url_template:
        return {}
    return {name: url_template.format(lfn=name, scope=scope) for name, scope in job.inputs}


def input_file_name(source: str) -> str:
    """The session file name of an extra input: the last path component of a path or URL."""
    path = urlsplit(source).path if "://" in source else source
    return os.path.basename(path.rstrip("/"))


def _env_value(value: str) -> str:
    """Double-quoted for /bin/sh: $VARIABLES expand on the CE, nothing else is interpreted."""
    return '"' + re.sub(r'([\\"`])', r"\\\1", value) + '"'


def wrapper_script(worker_id: int, harvester_id: str, queue: str, command: str, environment: dict[str, str],
                   ce_environment: dict[str, str]) -> str:
    """The job's executable: export the pilot's environment, run the pilot, exit with its exit code.

    `environment` values are literal; `ce_environment` (the queue's backend_options.environment) values
    are expanded by the CE's shell, e.g. "$PWD/pilot.zip".
    """
    lines = [
        "#!/bin/sh",
        f"# harvester-cli ARC worker {worker_id} of harvester {harvester_id}, queue {queue}",
    ]
    for name, value in sorted(environment.items()):
        if name not in HOST_ONLY_ENVIRONMENT and _ENV_NAME.match(name):
            lines.append(f"export {name}={shlex.quote(value)}")
    for name, value in ce_environment.items():
        lines.append(f"export {name}={_env_value(value)}")
    lines += [
        # The pilot verifies PanDA's certificate with the CE's CA directory unless told otherwise.
        ': "${HARVESTER_PANDA_CA:=${X509_CERT_DIR:-/etc/grid-security/certificates}}"',
        "export HARVESTER_PANDA_CA",
        f'echo "harvester-cli worker {worker_id}: start $(date -u +%FT%TZ) on $(hostname)" >&2',
        f"( {command} ) < /dev/null",
        "rc=$?",
        f'echo "harvester-cli worker {worker_id}: end $(date -u +%FT%TZ) exit $rc" >&2',
        "exit $rc",
        "",
    ]
    return "\n".join(lines)


@dataclass
class Activity:
    """One job description and the local files to upload into its session once it is created."""

    name: str
    element: ET.Element
    uploads: dict[str, str] = field(default_factory=dict)   # session name -> local path


def _sub(parent: ET.Element, tag: str, text=None, ns: str = ADL) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        element.text = str(text)
    return element


def activity(*, name: str, n_core: int, memory_mb: int, walltime: int, queue: str | None,
             runtime_environments: list[str], delegation_id: str | None, uploads: dict[str, str],
             remote_inputs: dict[str, str], outputs: list[str], annotations: list[str] = ()) -> Activity:
    """An ADL ActivityDescription. `uploads`: session name -> local path (uploaded by the client);
    `remote_inputs`: session name -> URL (fetched by the CE)."""
    root = ET.Element(f"{{{ADL}}}ActivityDescription")
    ident = _sub(root, "ActivityIdentification")
    _sub(ident, "Name", name)
    for note in annotations:
        _sub(ident, "Annotation", note)
    app = _sub(root, "Application")
    exe = _sub(app, "Executable")
    _sub(exe, "Path", WRAPPER)
    _sub(app, "Output", STDOUT)
    _sub(app, "Error", STDERR)
    res = _sub(root, "Resources")
    for rte in runtime_environments:
        _sub(_sub(res, "RuntimeEnvironment"), "Name", rte)
    _sub(res, "IndividualPhysicalMemory", memory_per_core_mb(memory_mb, n_core) * 1024 * 1024)
    slots = _sub(res, "SlotRequirement")
    _sub(slots, "NumberOfSlots", n_core)
    _sub(slots, "SlotsPerHost", n_core)
    if queue:
        _sub(res, "QueueName", queue)
    _sub(res, "TotalCPUTime", walltime * n_core)
    _sub(res, "WallTime", walltime)
    staging = _sub(root, "DataStaging")
    for input_name in uploads:
        infile = _sub(staging, "InputFile")
        _sub(infile, "Name", input_name)
        if input_name == WRAPPER:
            _sub(infile, "IsExecutable", "true")
    for input_name, url in remote_inputs.items():
        infile = _sub(staging, "InputFile")
        _sub(infile, "Name", input_name)
        _sub(_sub(infile, "Source"), "URI", url)
    for output in dict.fromkeys([STDOUT, STDERR, *outputs]):
        _sub(_sub(staging, "OutputFile"), "Name", output)
    if delegation_id:
        _sub(staging, "DelegationID", delegation_id, ns=NORDUGRID_ADL)
    return Activity(name, root, dict(uploads))


def bulk(activities: list[Activity]) -> str:
    """One request body for several jobs (a single job is sent as is, as REST 1.0 expects)."""
    texts = [ET.tostring(a.element, encoding="unicode") for a in activities]
    if len(texts) == 1:
        return texts[0]
    return "<ActivityDescriptions>" + "".join(texts) + "</ActivityDescriptions>"
