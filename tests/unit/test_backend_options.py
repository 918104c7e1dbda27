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
