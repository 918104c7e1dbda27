"""The one list of backends (config.backend_options.BACKEND_OPTIONS), and what a backend reads from its
queue's options alone. No daemon, no client library: the backend modules are read, and imported only to
compare their BACKEND with the list."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from harvester_cli import backends
from harvester_cli.backends.base import Backend, BackendContext, WorkerRef
from harvester_cli.config import QueueConfig
from harvester_cli.config.backend_options import (
    BACKEND_OPTIONS,
    ArcOptions,
    HTCondorOptions,
    LocalOptions,
    Schedd,
    SlurmOptions,
    SlurmPartition,
)
from harvester_cli.config.schema import rule_of

BACKENDS_DIR = Path(backends.__file__).parent


def _defines_backend(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "BACKEND" for t in node.targets)
               for node in tree.body)


def test_every_backend_module_is_in_the_one_list_and_the_list_has_nothing_else():
    modules = {p.stem for p in BACKENDS_DIR.glob("*.py") if _defines_backend(p)}
    assert modules == set(BACKEND_OPTIONS)
    for name, options in BACKEND_OPTIONS.items():
        backend = importlib.import_module(f"harvester_cli.backends.{name}").BACKEND
        assert issubclass(backend, Backend) and backend.name == name and backend.Options is options
        assert backends.backend_class(name) is backend


def test_the_queue_key_and_the_backends_package_derive_from_the_list():
    backend_key = next(f for f in QueueConfig.__dataclass_fields__.values() if f.name == "backend")
    assert rule_of(backend_key).choices == tuple(sorted(BACKEND_OPTIONS))
    assert set(backends.NAMES) == set(BACKEND_OPTIONS)


@pytest.mark.parametrize("name, options, bound", [
    ("local", None, True),
    ("local", LocalOptions(), True),
    ("htcondor", None, True),                                    # this host's own schedd
    ("htcondor", HTCondorOptions(), True),
    ("htcondor", HTCondorOptions(schedd="schedd@pool"), False),  # a named schedd any host reaches
    ("htcondor", HTCondorOptions(schedds=[Schedd(name="a@pool"), Schedd(name="b@pool")]), False),
    ("slurm", None, False),                                      # a shared login node by default
    ("slurm", SlurmOptions(), False),
    ("slurm", SlurmOptions(host_bound=True), True),
    ("arc", ArcOptions(endpoints=["https://arc.example.org/arex"]), False),
])
def test_host_bound_is_known_from_the_options_alone(name, options, bound, tmp_path):
    backend = backends.backend_class(name)
    assert backend.is_host_bound(options) is bound
    # The instance attribute (what steps ask today) gives the same answer.
    queue = QueueConfig(name="Q", mode="pull", backend=name, pilot="true", backend_options=options)
    assert backends.create(name, queue, BackendContext("h", tmp_path)).host_bound is bound


def test_slurm_partitions_are_parsed_once_when_the_configuration_is_read(tmp_path):
    options = SlurmOptions(partitions=["grid", "gpu@hpc2", "big@hpc3", "long@hpc2"])
    assert list(options.parsed_partitions.values()) == [
        SlurmPartition("grid", "grid", None), SlurmPartition("gpu@hpc2", "gpu", "hpc2"),
        SlurmPartition("big@hpc3", "big", "hpc3"), SlurmPartition("long@hpc2", "long", "hpc2")]
    assert options.clusters == ["hpc2", "hpc3"]
    assert options.partition("gpu@hpc2") is options.parsed_partitions["gpu@hpc2"]
    # A worker's partition that is no longer configured, and Slurm's default partition, parse alike.
    assert options.partition("old@hpc9") == SlurmPartition("old@hpc9", "old", "hpc9")
    assert options.partition("debug") == SlurmPartition("debug", "debug", None)
    assert "parsed_partitions" not in {f for f in SlurmOptions.__dataclass_fields__}   # not a key of the file
    queue = QueueConfig(name="Q", mode="pull", backend="slurm", pilot="true", backend_options=options)
    slurm = backends.create("slurm", queue, BackendContext("h", tmp_path))
    workers = [WorkerRef(1, "Q", "5", None, "old@hpc9", "submitted", None),
               WorkerRef(2, "Q", "6", None, "grid", "submitted", None),
               WorkerRef(3, "Q", "7", None, None, "pending", None)]
    assert [slurm._cluster_of(w) for w in workers] == ["hpc9", None, None]
    assert slurm._clusters(workers) == frozenset({None, "hpc2", "hpc3", "hpc9"})


def test_a_slurm_queue_through_login_nodes_is_told_every_key_it_lacks_or_has_wrong():
    options = SlurmOptions(login_nodes=["login1", "login1", "-oProxyCommand=x"], ssh_user="bad user", host_bound=True)
    assert list(options.problems()) == [
        ("login_nodes", "'-oProxyCommand=x' is not a host name (a name or an address, no user, no port: ssh_user and "
                        "ssh_port say those)"),
        ("login_nodes", "a login node is listed twice"),
        ("ssh_key", "login_nodes need ssh_key (the private key that logs in)"),
        ("known_hosts", "login_nodes need known_hosts (the file of the login nodes' host keys the site publishes)"),
        ("work_dir", "login_nodes need work_dir: the directory on the login node's shared file system where the "
                     "workers' files go (the compute nodes must see it)"),
        ("ssh_user", "'bad user' is not a user name"),
        ("host_bound", "with login_nodes any host with the key reaches the cluster: leave host_bound unset"),
    ]


def test_a_slurm_queue_through_login_nodes_with_its_keys_is_accepted():
    options = SlurmOptions(login_nodes=["login1.example.org", "10.0.0.2", "fe80::2"], ssh_user="svc.atlas$",
                           ssh_key=Path("/k"), known_hosts=Path("/kh"), work_dir=Path("/shared/w"))
    assert list(options.problems()) == []
    assert options.remote_keys() == frozenset({"work_dir", "slurm_conf"})
    assert SlurmOptions(work_dir=Path("/w")).remote_keys() == frozenset()


@pytest.mark.parametrize("entry", ["a@b@c", "x@", "@c", "a b", "a,b", "a\tb"])
def test_a_partition_that_is_not_name_or_name_at_cluster_is_refused(entry):
    assert list(SlurmOptions(partitions=[entry]).problems()) == [
        ("partitions", f"{entry!r} is not a partition name (\"name\" or \"name@cluster\")")]


def test_partitions_of_this_cluster_and_others_are_accepted_once_each():
    assert list(SlurmOptions(partitions=["Xeon", "gpu@hpcX", "long@hpc2"]).problems()) == []
    assert list(SlurmOptions(partitions=["gpu", "gpu"]).problems()) == [("partitions", "a partition is listed twice")]


@pytest.mark.parametrize("option,hint", [
    ("-A=atlas", "use backend_options.account"),
    ("--account=atlas", "use backend_options.account"),
    ("--qos=high", "use backend_options.qos"),
    ("--reservation=r", "use backend_options.reservation"),
    ("-C=haswell", "use backend_options.constraint"),
    ("--partition=z", "use backend_options.partitions"),
    ("-M=hpc2", "use backend_options.partitions"),
    ("--clusters=hpc2", "use backend_options.partitions"),
    ("-J", "harvester-cli sets it on every job"),
    ("--comment=a=b", "harvester-cli sets it on every job"),
])
def test_an_sbatch_option_harvester_cli_sets_itself_says_which_key_to_use(option, hint):
    assert list(SlurmOptions(sbatch_options=[option]).problems()) == [("sbatch_options", f"{option!r}: {hint}")]


def test_sbatch_options_are_whole_options():
    assert list(SlurmOptions(sbatch_options=["--gres=gpu:1", "--exclusive"]).problems()) == []
    assert list(SlurmOptions(sbatch_options=["gres=gpu:1"]).problems()) == [
        ("sbatch_options", "'gres=gpu:1' is not an option; write each as one string, e.g. \"--gres=gpu:1\"")]


def test_an_arc_queue_is_told_what_its_options_lack():
    options = ArcOptions(endpoints=[], environment={"GOOD_NAME": "1", "1BAD": "x", "A-B": "y"},
                         stage_inputs="https://se.example.org/{scope}/{LFN}")
    assert list(options.problems()) == [
        ("endpoints", "list at least one A-REX URL, e.g. \"https://arc.example.org:443/arex\""),
        ("environment", "'1BAD' is not a shell variable name"),
        ("environment", "'A-B' is not a shell variable name"),
        ("stage_inputs", "the URL template needs {lfn} (and may use {scope})"),
    ]
    assert list(ArcOptions(endpoints=["https://arc.example.org/arex"], environment={"_X1": "1"},
                           stage_inputs="https://se.example.org/{scope}/{lfn}").problems()) == []


def test_an_htcondor_queue_names_its_ces_or_schedds_one_way():
    from harvester_cli.config.backend_options import CE

    options = HTCondorOptions(ces=[CE(endpoint="ce1.example.org")], cric_file=Path("/cric.json"), schedd="s@pool",
                              schedds=[Schedd(name="a@pool"), Schedd(name="a@pool")])
    assert list(options.problems()) == [("", "set either ces or cric_file, not both"),
                                        ("", "set either schedd or schedds, not both"),
                                        ("schedds", "a schedd is listed twice")]
    assert list(HTCondorOptions(schedds=[Schedd(name="a@pool"), Schedd(name="b@pool")]).problems()) == []


def _grid_queue(backend: str, options, **settings) -> QueueConfig:
    return QueueConfig(**{"name": "Q", "mode": "pull", "backend": backend, "pilot": "true",
                          "backend_options": options, **settings})


def test_the_ces_of_a_queue_are_its_active_ces_as_configured():
    from harvester_cli.config.backend_options import CE
    from harvester_cli.config.ces import CEEntry, queue_ces

    options = HTCondorOptions(ces=[CE(endpoint="ce1.example.org:9619", queue="grid"),
                                   CE(endpoint="https://arc1.example.org/arex", flavour="arc-ce", state="active"),
                                   CE(endpoint="ce3.example.org", state="DRAINING")])
    assert queue_ces(_grid_queue("htcondor", options)) == [
        CEEntry("ce1.example.org:9619", "htcondor-ce", "grid", "ACTIVE"),
        CEEntry("https://arc1.example.org/arex", "arc-ce", None, "active")]
    assert queue_ces(_grid_queue("arc", ArcOptions(endpoints=["https://arc2.example.org/arex"]))) == [
        CEEntry("https://arc2.example.org/arex", "arc-ce")]
    assert queue_ces(_grid_queue("arc", None)) == []
    assert queue_ces(_grid_queue("htcondor", None)) == []
    assert queue_ces(_grid_queue("slurm", SlurmOptions(partitions=["grid"]))) == []
    assert queue_ces(_grid_queue("local", LocalOptions())) == []


def test_the_ces_of_a_queue_from_a_cric_file_are_those_of_its_panda_queue(tmp_path):
    import json

    from harvester_cli.config.ces import CEEntry, queue_ces

    cric = tmp_path / "cric.json"
    cric.write_text(json.dumps({"OTHER": {"queues": []}, "SITE_PQ": {"queues": [
        {"ce_endpoint": "ce1.example.org:9619", "ce_queue_name": "grid"},
        {"ce_endpoint": "arc1.example.org", "ce_flavour": "ARC-CE", "ce_state": "ACTIVE"},
        {"ce_endpoint": "ce3.example.org", "ce_state": "DISABLED"}]}}))
    queue = _grid_queue("htcondor", HTCondorOptions(cric_file=cric), panda_queue="SITE_PQ")
    assert queue_ces(queue) == [CEEntry("ce1.example.org:9619", "htcondor-ce", "grid", "ACTIVE"),
                                CEEntry("arc1.example.org", "arc-ce", None, "ACTIVE")]


@pytest.mark.parametrize("content,says", [
    ({"OTHER": {"queues": []}, "ANOTHER": {}}, "no pandaqueue 'SITE_PQ' in the CRIC description (has: ANOTHER, "
                                               "OTHER)"),
    ({}, "no pandaqueue 'SITE_PQ' in the CRIC description (has: none)"),
    ({"queues": {"ce_endpoint": "x"}}, "the CRIC pandaqueue has no 'queues' list"),
    ({"queues": [{"ce_endpoint": "x"}, {"ce_queue_name": "grid"}]}, "queues[1] has no ce_endpoint"),
    (None, "No such file or directory"),
    ("{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
])
def test_a_cric_file_that_cannot_give_the_ces_says_which_file_and_why(tmp_path, content, says):
    import json

    from harvester_cli.config.ces import queue_ces

    cric = tmp_path / "cric.json"
    if content is not None:
        cric.write_text(content if isinstance(content, str) else json.dumps(content))
    queue = _grid_queue("htcondor", HTCondorOptions(cric_file=cric), panda_queue="SITE_PQ")
    with pytest.raises(ValueError) as info:
        queue_ces(queue)
    message = str(info.value)
    assert message.startswith(f"cannot read the CEs of SITE_PQ from {cric}: ")
    assert message.endswith(says) if content is not None else says in message
