"""Where workers run. `base` is the one small interface (submit, check, kill, find: typed results per
worker) with what a backend says from a queue's options alone (`Backend.is_host_bound`); each backend is
one module (`local`, `htcondor`, `arc`, `slurm`) defining BACKEND, with private helpers in
`_<backend>_*` modules and the CE fanout every grid backend shares in `ce_choice`. Which backends exist,
and each one's options, is config.backend_options.BACKEND_OPTIONS, the one list: `NAMES` and
`backend_class` here and the queue's `backend` key derive from it.

A backend module is imported only when a queue uses it, and imports its heavy client library (htcondor2,
pyarcrest) only inside the calls that need it, so `config check` and `--help` stay light.

Layer: imported by the instance, the steps and the commands (and by scripts and tests). Backends import
config, model, errors, faults, panda (jobs: the typed push job; pilot_outputs: the files a pilot reads and
writes) and site (secretfiles: private files; logs: directories that no umask makes writable by others;
bearer: why a CE refuses a token); never each other, never
the instance, the steps, the state database or a command.
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
