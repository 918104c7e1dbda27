"""Reading a configuration: the TOML file (`load`) or its parsed tables (`parse`) into a `sections.Config`.

Every problem of a file is reported at once, one line each with the file, the table, the key and the fix
(`schema.Validator`): each table is built against its section, each queue's backend_options against its
backend's section (`backend_options.BACKEND_OPTIONS`), then the rules across tables run (`references`).
Relative paths are taken from the file's directory.
"""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
from pathlib import Path

from harvester_cli.config.backend_options import BACKEND_OPTIONS
from harvester_cli.config.references import check_references
from harvester_cli.config.schema import Validator, describe
from harvester_cli.config.sections import CapConfig, Config, ProxyProfile, QueueConfig, TokenProfile, xdg_dir
from harvester_cli.config.state_url import is_file_path
from harvester_cli.errors import ConfigError


def default_config_path() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "config.toml"


def _profiles(validator: Validator, data: dict, key: str, cls: type) -> dict:
    raw = data.pop(key, {})
    if not isinstance(raw, dict):
        validator.problem("", f"{key}: must be a table of profiles, e.g. [{key}.NAME]")
        return {}
    profiles = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            validator.problem(f"{key}.{name}", f"expected a table, got {describe(table)}")
            continue
        profile = validator.build(cls, table, f"{key}.{name}", name=name)
        if profile is not None:
            profiles[name] = profile
    return profiles


def _checked_defaults(validator: Validator, defaults: dict) -> dict:
    """[queue_defaults] with each key checked once, under its own table: a mistake there is one line, not one
    per queue; a key it gets wrong is left out of the queues (which then say nothing more of it)."""
    return {key: value for key, value in defaults.items()
            if key == "backend_options" or validator.key_of(QueueConfig, key, value, "queue_defaults")}


def _queues(validator: Validator, raw: dict, defaults: dict) -> dict[str, QueueConfig]:
    queues = {}
    defaults = _checked_defaults(validator, defaults)
    for name, table in raw.items():
        where = f"queues.{name}"
        if not isinstance(table, dict):
            validator.problem(where, f"expected a table, got {describe(table)}")
            continue
        merged = {**defaults, **table}
        raw_options = merged.pop("backend_options", None) or {}
        before = len(validator.problems)
        queue = validator.build(QueueConfig, merged, where, name=name)
        inherited = {key for key in defaults if key not in table}
        for i in range(before, len(validator.problems)):   # a default's mistake belongs to [queue_defaults]
            key = validator.problems[i].partition(f"[{where}] ")[2].partition(":")[0]
            if key in inherited:
                validator.problems[i] = validator.problems[i].replace(f"[{where}]", "[queue_defaults]", 1)
        if not isinstance(raw_options, dict):
            validator.problem(where, f"backend_options: expected a table, got {describe(raw_options)}")
            continue
        if queue is None:
            continue
        options = validator.build(BACKEND_OPTIONS[queue.backend], raw_options, f"{where}.backend_options")
        if options is not None and queue.many_to_one is not None and getattr(options, "login_nodes", None):
            # The steps' files (started, ended, the pilots' heartbeats) are read where this host runs; through
            # a login node they stay on the cluster's side until the whole worker ends.
            validator.problem(where, "many_to_one: many jobs per worker need the cluster's file system on this "
                                     "host; through login_nodes it is not (yet) supported: submit from a host "
                                     "that mounts work_dir and log_dir, or drop login_nodes")
        elif options is not None:
            queues[name] = dataclasses.replace(queue, backend_options=options)
    return queues


def _downtime_times(data: dict) -> None:
    """TOML datetimes of [[downtimes.scheduled]] as the ISO text the section holds (a local one, without an
    offset, stays so and is read as UTC)."""
    downtimes = data.get("downtimes")
    if not isinstance(downtimes, dict) or not isinstance(downtimes.get("scheduled"), list):
        return
    entries = []
    for entry in downtimes["scheduled"]:
        if isinstance(entry, dict):
            entry = {k: v.isoformat() if isinstance(v, (datetime.date, datetime.time)) and k in ("start", "end")
                     else v for k, v in entry.items()}
        entries.append(entry)
    data["downtimes"] = {**downtimes, "scheduled": entries}


def parse(data: dict, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """The configuration from parsed TOML; raises ConfigError listing every problem, one per line."""
    validator = Validator(source, base_dir or Path.cwd())
    data = dict(data)
    raw_queues = data.pop("queues", {})
    defaults = data.pop("queue_defaults", {})
    for key, value in (("queues", raw_queues), ("queue_defaults", defaults)):
        if not isinstance(value, dict):
            validator.problem("", f"{key}: must be a table, e.g. [queues.MY_QUEUE], got {describe(value)}")
    proxies = _profiles(validator, data, "proxies", ProxyProfile)
    tokens = _profiles(validator, data, "tokens", TokenProfile)
    caps = _profiles(validator, data, "caps", CapConfig)
    _downtime_times(data)
    queues = _queues(validator, raw_queues, defaults) if isinstance(raw_queues, dict) and isinstance(defaults, dict) \
        else {}
    config = validator.build(Config, data, "")
    if config is None:
        validator.raise_problems()
    config = dataclasses.replace(config, proxies=proxies, tokens=tokens, queues=queues, caps=caps)
    check_references(validator, config)
    validator.raise_problems()
    state = config.state
    if state and is_file_path(state) and not Path(state).expanduser().is_absolute():
        state = str(validator.base_dir / state)   # like every other path: relative to the config file
    return dataclasses.replace(config, state=state)


def load(path: Path | None) -> Config:
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such configuration file")
        raise ConfigError(
            f"no configuration at {path}: create it (`mkdir -p {path.parent} && harvester-cli config example > {path}`) "
            "or pass --config"
        )
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text: save it as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    config = parse(data, str(path), path.parent.resolve())
    return dataclasses.replace(config, path=path)
