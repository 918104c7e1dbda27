"""Backends by name. Modules are imported only when a queue uses them, and import their heavy client
libraries (htcondor2, pyarcrest) only inside the calls that need them."""

from __future__ import annotations

import importlib

from harvester_cli.backends.base import Backend, BackendContext

_MODULES = {
    "local": "harvester_cli.backends.local",
}

NAMES = tuple(_MODULES)


def backend_class(name: str) -> type[Backend]:
    return importlib.import_module(_MODULES[name]).BACKEND


def create(name: str, queue, context: BackendContext) -> Backend:
    return backend_class(name)(queue, context)
