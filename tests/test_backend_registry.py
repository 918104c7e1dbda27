"""The one list of backends (config.backend_options.BACKEND_OPTIONS) and what a backend answers from its
queue's options alone. No daemon, no client library: the backend modules are read, and imported only to
compare their BACKEND with the list."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from harvester_cli import backends
from harvester_cli.backends.base import Backend, BackendContext
from harvester_cli.config import QueueConfig
from harvester_cli.config.backend_options import (
    BACKEND_OPTIONS,
    ArcOptions,
    HTCondorOptions,
    LocalOptions,
    Schedd,
    SlurmOptions,
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
