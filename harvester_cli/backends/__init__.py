"""Backends by name: every module in this package except `base` is one backend (its module name).

A module is imported only when a queue uses it, and imports its heavy client library (htcondor2,
pyarcrest) only inside the calls that need it, so `config check` and `--help` stay light.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from harvester_cli.backends.base import Backend, BackendContext

NAMES = tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                     if m.name != "base" and not m.name.startswith("_")))


def backend_class(name: str) -> type[Backend]:
    return importlib.import_module(f"harvester_cli.backends.{name}").BACKEND


def create(name: str, queue, context: BackendContext) -> Backend:
    return backend_class(name)(queue, context)
