"""The package's shape: imports run down the layers written in harvester_cli's docstring, with no circle; the
steps hold no SQL; only panda/ speaks PanDA's wire format. Read from the source with `ast`, imports inside
functions included."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import harvester_cli

PACKAGE = Path(harvester_cli.__file__).parent


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every harvester_cli module `name` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("harvester_cli")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("harvester_cli"):
                continue
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}   # `from pkg import module`
    modules = _modules()
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layers() -> list[set[str]]:
    """The layer list of harvester_cli's docstring, top first."""
    block = harvester_cli.__doc__.split("list below):", 1)[1]
    layers = []
    for line in block.strip().splitlines():
        rooms = line.strip().split("  ", 1)[0]
        layers.append({r.strip() for r in rooms.split(",")})
    return layers


def test_every_room_of_the_package_has_a_layer():
    placed = set().union(*_layers()) | {"__init__"}
    rooms = {_room(m) for m in _modules()}
    assert rooms <= placed, f"rooms without a layer in harvester_cli's docstring: {sorted(rooms - placed)}"


def test_imports_run_down_the_layers():
    layer_of = {room: i for i, rooms in enumerate(_layers()) for room in rooms}
    layer_of["__init__"] = len(layer_of)   # the version: everyone may import it
    upward = []
    for module, imported in _graph().items():
        here = _room(module)
        for target in imported:
            there = _room(target)
            if there == here or target == "harvester_cli":
                continue
            if layer_of[there] <= layer_of[here]:
                upward.append(f"{module} -> {target} ({here} is not above {there})")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_circle_of_imports():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# The steps: the shared pieces below, the steps side by side (none imports another), cycle chaining them,
# and the demo driving the cycle. retire is shared by submit (the marks) and sweep (carrying them out), and
# stands on the planner's trace and the job transitions.
STEP_FLOORS = [{"demo"}, {"cycle"}, {"fetch_jobs", "submit", "poll", "propagate", "sweep", "monitor"},
               {"retire", "caps", "resources"}, {"planner", "registration", "transitions", "downtimes"},
               {"allocation"}]


def test_steps_stand_side_by_side():
    floor_of = {step: i for i, floor in enumerate(STEP_FLOORS) for step in floor}
    steps = {m: i for m, i in _graph().items() if m.startswith("harvester_cli.steps.")}
    assert {m.rsplit(".", 1)[1] for m in steps} == set(floor_of), "a step module without a floor here"
    wrong = []
    for module, imported in steps.items():
        for target in imported:
            if target.startswith("harvester_cli.steps.") and \
                    floor_of[target.rsplit(".", 1)[1]] <= floor_of[module.rsplit(".", 1)[1]]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "steps importing steps on their own floor or above:\n" + "\n".join(sorted(wrong))


SQL = re.compile(r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\b.*\bSET|DELETE\s+FROM)\b", re.S)


def test_the_steps_build_no_sql():
    """Every statement lives in state/; a step passes a transaction down and never sees SQLAlchemy."""
    found = []
    for name, path in _modules().items():
        if not name.startswith(("harvester_cli.steps", "harvester_cli.commands", "harvester_cli.instance")):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.startswith("sqlalchemy") for a in node.names):
                found.append(f"{name}: imports sqlalchemy")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                found.append(f"{name}: imports {node.module}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                found.append(f"{name}:{node.lineno}: SQL text {node.value[:60]!r}")
    assert not found, "\n".join(found)


# PanDA's wire format: the field and argument names of docs/panda-api.md (the server's contract), minus
# plain words PanDA shares with everyone (status, node, data, ...).
WIRE_NAMES = {
    "GUID", "KILL_WORKERS", "PandaID", "REPORT_WORKER_STATS", "SYNC_WORKERS_ACTIVATE", "SYNC_WORKERS_KILL",
    "SET_N_WORKERS_JOBTYPE", "StatusCode", "ack_requested", "attemptNr", "attempt_nr", "avg_pss", "batchID",
    "batchLog", "batch_id", "cmtConfig", "command_ids", "computingElement", "computingSite",
    "computing_element", "container_name", "coreCount", "core_count", "cpu_consumption_time",
    "cpu_consumption_unit", "cpu_conversion_factor", "currentPriority", "ddmEndPointIn", "ddmEndPointOut",
    "destinationDBlockToken", "destinationDblock", "destinationSE", "diagMessage", "disk_space",
    "dispatchDBlockToken", "dispatchDBlockTokenForOut", "dispatchDblock", "endTime", "end_time", "errorCode",
    "eventService", "exe_error_code", "exe_error_diag", "fileDestinationSE", "harvesterHost", "harvester_id",
    "homepackage", "inFiles", "ioIntensity", "ioIntensityUnit", "jobDefinitionID", "jobName", "jobPars",
    "jobType", "job_id", "job_ids", "job_list", "job_metrics", "job_output_report", "job_status",
    "job_sub_status", "job_type", "jobsetID", "lastUpdate", "logFile", "logGUID", "maxCpuCount", "maxDiskCount",
    "maxWalltime", "max_rss", "meta_data", "minRamCount", "nCore", "nJobs", "nSent", "n_commands", "n_events",
    "n_input_files", "n_jobs", "nativeExitCode", "nativeStatus", "nodeID", "outFiles", "panda_queue",
    "pandaid_list", "pilotID", "pilotSecrets", "pilot_error_code", "pilot_error_diag", "pilot_id", "pilot_log",
    "pilot_timing", "processingType", "prodDBlockToken", "prodDBlocks", "prodSourceLabel", "prodUserID",
    "prod_source_label", "queueName", "rate_wbytes", "realDatasets", "realDatasetsIn", "remaining_time",
    "reqID", "resourceType", "resource_type", "scheduler_id", "scopeIn", "scopeLog", "scopeOut", "site_name",
    "sourceSite", "startTime", "start_time", "stdErr", "stdOut", "submissionHost", "submitTime", "swRelease",
    "taskID", "tobekilled", "tot_rchar", "trans_exit_code", "transferType", "workerID", "worker_id",
    "creation_date", "command_id", "panda_queue", "sw_version", "commit_stamp",
}


def _own_names() -> set[str]:
    """Names that are harvester-cli's own words too: the state database's columns, configuration keys and
    pilot placeholders (a `batch_id` column is not PanDA's batch_id)."""
    import dataclasses

    from harvester_cli.config import sections
    from harvester_cli.state.schema import metadata

    names = {c.name for table in metadata.tables.values() for c in table.columns}
    for value in vars(sections).values():
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            names |= {f.name for f in dataclasses.fields(value)}
    return names | set(sections.PILOT_PLACEHOLDERS)


def _keys_used(tree: ast.AST):
    """(line, name) of every string used as a key: d["x"], d.get("x"), {"x": ...}."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            yield node.lineno, node.slice.value
        elif isinstance(node, ast.Dict):
            yield from ((k.lineno, k.value) for k in node.keys if isinstance(k, ast.Constant))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args and \
                node.func.attr in ("get", "pop", "setdefault") and isinstance(node.args[0], ast.Constant):
            yield node.lineno, node.args[0].value


def _template_placeholders() -> set[str]:
    """Harvester's submit-template placeholders ({workerID}, {computingSite}, ...), which sites' own HTCondor
    and Slurm templates use: a deliberate interface of the backends that shares some of PanDA's names."""
    from harvester_cli.backends import _htcondor_submit, _slurm_script

    return set(_htcondor_submit.MACROS) | set(_slurm_script.PLACEHOLDERS)


def test_only_the_panda_package_speaks_pandas_wire_format():
    """Outside panda/, no code reads or writes a dict by one of PanDA's field names: the steps and backends
    see typed jobs, updates and answers."""
    wire = WIRE_NAMES - _own_names() - _template_placeholders()
    found = []
    for name, path in _modules().items():
        if name.startswith("harvester_cli.panda"):
            continue
        found += [f"{name}:{line}: {key!r}" for line, key in _keys_used(ast.parse(path.read_text())) if key in wire]
    assert not found, "PanDA's field names outside panda/:\n" + "\n".join(found)


def test_the_layer_list_names_only_rooms_that_exist():
    rooms = defaultdict(int)
    for module in _modules():
        rooms[_room(module)] += 1
    listed = set().union(*_layers())
    assert listed <= set(rooms), f"layers name rooms that do not exist: {sorted(listed - set(rooms))}"
