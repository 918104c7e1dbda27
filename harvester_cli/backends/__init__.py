"""Where workers run. `base` is the one small interface; each backend is one module (`local`, `htcondor`,
`arc`), with private helpers in `_<backend>_*` modules and the CE fanout every grid backend shares in
`ce_choice`. A backend's options are declared in config.backend_options.

A backend module is imported only when a queue uses it, and imports its heavy client library (htcondor2,
pyarcrest) only inside the calls that need it, so `config check` and `--help` stay light. Backends may
import config, model, errors, faults, panda.pilot_outputs and site.secretfiles; never each other, never
the steps or the state database.
"""

from __future__ import annotations

import importlib

from harvester_cli.backends.base import Backend, BackendContext
from harvester_cli.config.sections import BACKENDS

NAMES = BACKENDS


def backend_class(name: str) -> type[Backend]:
    return importlib.import_module(f"harvester_cli.backends.{name}").BACKEND


def create(name: str, queue, context: BackendContext) -> Backend:
    return backend_class(name)(queue, context)
