"""Instance configuration: one TOML file, validated into frozen dataclasses.

What lives here, one thing per module:
- `sections`: every section and key of the file (type, default, range, meaning);
- `backend_options`: each backend's own table, and `BACKEND_OPTIONS`, the one list of backends (name ->
  its options section) that the backends and the queue's `backend` key derive from;
- `ces`: a queue's computing elements (listed, or from a CRIC file) and what a CE flavour implies (default
  port, token audience);
- `downtimes`: announced downtimes of queues and CEs (from the file, the state database or a GOCDB feed)
  and the rules that read them: which CE, or the whole queue, a new worker may not go to now;
- `schema`: the rules every key follows, and `Validator`, which collects every problem at once;
- `loader`: `load` (a file) and `parse` (its tables) into a `Config`, one line per problem;
- `references`: the rules across tables (profile names, files two profiles would share, the test pilot);
- `environment`: `environment_problems`, what only this host can tell (missing files, secrets readable by
  others, SQLite on a network file system), which `config check` reports;
- `display`: the configuration as `config check` shows it (`as_dict`, `display_url`);
- `reference`: every key as a table (`config keys`, docs/configuration.md); `example.toml`.

This package re-exports what the rest of the code uses, so `from harvester_cli.config import load,
Config, QueueConfig, environment_problems` keeps working whichever module holds it.

Layer: the bottom, with model and errors. Every other package may import it; it imports nothing of
harvester_cli but errors (no backend, no site, no state: validating a file never imports a backend or
its client library).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harvester_cli.config.display import as_dict, display_url
from harvester_cli.config.environment import environment_problems
from harvester_cli.config.loader import default_config_path, load, parse
from harvester_cli.config.sections import (
    PILOT_PLACEHOLDERS,
    PROXY_TOOLS,
    QUEUE_STATUSES,
    SUBMIT_FILE_PATTERNS,
    CapConfig,
    CertificateConfig,
    CommandLogConfig,
    Config,
    LogRetentionConfig,
    LogServerConfig,
    ManyToOneConfig,
    MetricsConfig,
    PandaConfig,
    ProxyProfile,
    QueueConfig,
    RetentionConfig,
    SmtpConfig,
    SweepConfig,
    TokenProfile,
    default_state_dir,
    is_test_pilot,
    state_url_from,
    state_url_problem,
    xdg_dir,
)
from harvester_cli.errors import ConfigError  # noqa: F401  (callers catch config.ConfigError)

__all__ = [
    "PILOT_PLACEHOLDERS", "PROXY_TOOLS", "QUEUE_STATUSES", "SUBMIT_FILE_PATTERNS", "CapConfig", "CertificateConfig",
    "CommandLogConfig", "Config", "LogRetentionConfig", "LogServerConfig", "ManyToOneConfig", "MetricsConfig",
    "PandaConfig", "ProxyProfile",
    "QueueConfig", "RetentionConfig", "SmtpConfig", "SweepConfig", "TokenProfile", "default_state_dir",
    "state_url_from", "state_url_problem", "EXAMPLE", "load", "parse", "as_dict", "display_url", "default_config_path",
    "environment_problems", "is_test_pilot", "xdg_dir",
]

EXAMPLE_FILE = Path(__file__).with_name("example.toml")


def __getattr__(name: str) -> Any:
    # Read on use: the test pilot imports this package from a zip of .py files without the example.
    if name == "EXAMPLE":
        return EXAMPLE_FILE.read_text()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
