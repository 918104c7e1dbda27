"""Instance configuration: one TOML file, validated into frozen dataclasses.

`sections` describes every key (type, default, range, meaning), `backend_options` each backend's table,
`schema` the rules every key follows. `load` reports every problem of a file at once, one line each with
the file, the table, the key and the fix; `environment_problems` adds what only the host can tell (files
that do not exist, secrets readable by others), which `config check` reports too.

This package is the bottom layer with errors and model: it imports nothing else of harvester_cli.
"""

from __future__ import annotations

import dataclasses
import stat
import tomllib
from pathlib import Path
from typing import Any

from harvester_cli.config.backend_options import BACKEND_OPTIONS
from harvester_cli.config.schema import Validator, describe, rule_of
from harvester_cli.config.sections import (
    PILOT_PLACEHOLDERS,
    PROXY_TOOLS,
    QUEUE_STATUSES,
    SUBMIT_FILE_PATTERNS,
    CertificateConfig,
    CommandLogConfig,
    Config,
    LogRetentionConfig,
    LogServerConfig,
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
    xdg_dir,
)
from harvester_cli.errors import ConfigError

__all__ = [
    "PILOT_PLACEHOLDERS", "PROXY_TOOLS", "QUEUE_STATUSES", "SUBMIT_FILE_PATTERNS", "CertificateConfig",
    "CommandLogConfig", "Config", "LogRetentionConfig", "LogServerConfig", "MetricsConfig", "PandaConfig", "ProxyProfile",
    "QueueConfig", "RetentionConfig", "SmtpConfig", "SweepConfig", "TokenProfile", "default_state_dir",
    "state_url_from", "EXAMPLE", "load", "parse", "as_dict", "display_url", "default_config_path",
    "environment_problems",
]

EXAMPLE_FILE = Path(__file__).with_name("example.toml")




def __getattr__(name: str) -> Any:
    # Read on use: the test pilot imports this package from a zip of .py files without the example.
    if name == "EXAMPLE":
        return EXAMPLE_FILE.read_text()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_config_path() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "config.toml"


def display_url(url: str) -> str:
    """A database URL without its password, for output."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show it as given (it has no password to hide then)
        return url


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


def _queues(validator: Validator, raw: dict, defaults: dict) -> dict[str, QueueConfig]:
    queues = {}
    for name, table in raw.items():
        where = f"queues.{name}"
        if not isinstance(table, dict):
            validator.problem(where, f"expected a table, got {describe(table)}")
            continue
        merged = {**defaults, **table}
        raw_options = merged.pop("backend_options", None) or {}
        queue = validator.build(QueueConfig, merged, where, name=name)
        if not isinstance(raw_options, dict):
            validator.problem(where, f"backend_options: expected a table, got {describe(raw_options)}")
            continue
        if queue is None:
            continue
        options = validator.build(BACKEND_OPTIONS[queue.backend], raw_options, f"{where}.backend_options")
        if options is not None:
            queues[name] = dataclasses.replace(queue, backend_options=options)
    return queues


def _references(validator: Validator, config: Config) -> None:
    """Names that must point at another table."""
    for key, names in (("proxy_profile", config.proxies), ("token_profile", config.tokens)):
        wanted = getattr(config.panda, key)
        if wanted is not None and wanted not in names:
            table = "proxies" if key == "proxy_profile" else "tokens"
            validator.problem("panda", f"{key}: no [{table}.{wanted}] (configured: {', '.join(names) or 'none'})")
    for queue in config.queues.values():
        if queue.proxy_profile is not None and queue.proxy_profile not in config.proxies:
            validator.problem(f"queues.{queue.name}", f"proxy_profile: no [proxies.{queue.proxy_profile}] "
                                                      f"(configured: {', '.join(config.proxies) or 'none'})")
    tokens = config.tokens
    known = ", ".join(tokens) or "none"
    if config.panda.token_profile in tokens and tokens[config.panda.token_profile].per_ce:
        validator.problem("panda", f"token_profile: [tokens.{config.panda.token_profile}] keeps a token per CE "
                                   "(directory); PanDA needs a profile with file")
    for queue in config.queues.values():
        where = f"queues.{queue.name}"
        for key, per_ce in (("ce_token_profile", True), ("pilot_token_profile", False)):
            wanted = getattr(queue, key)
            if wanted is None:
                continue
            if wanted not in tokens:
                validator.problem(where, f"{key}: no [tokens.{wanted}] (configured: {known})")
            elif tokens[wanted].per_ce != per_ce:
                validator.problem(where, f"{key}: [tokens.{wanted}] " + (
                    "keeps one token (file); the CEs need a per-CE profile with directory" if per_ce else
                    "keeps a token per CE (directory); the pilots need one token for PanDA (file)"))
        if queue.pilot_token_profile in tokens and queue.pilot_token_key is not None and \
                tokens[queue.pilot_token_profile].file and \
                tokens[queue.pilot_token_profile].file.name == queue.pilot_token_key.name:
            validator.problem(where, "pilot_token_key: has the same file name as the pilot token; both travel "
                                     "with the job into one directory: rename one")
    files: dict[Path, str] = {}
    for kind, profiles in (("proxies", config.proxies), ("tokens", config.tokens)):
        for profile in profiles.values():
            path = profile.file if profile.file is not None else profile.directory
            other = files.setdefault(path, f"{kind}.{profile.name}")
            if other != f"{kind}.{profile.name}":
                key = "file" if profile.file is not None else "directory"
                validator.problem(f"{kind}.{profile.name}", f"{key}: {path} is also written by [{other}]")
    for queue in config.queues.values():
        if is_test_pilot(queue.pilot) and not config.panda.allow_test_pilot:
            validator.problem(f"queues.{queue.name}", "pilot: the simulator's test pilot runs every job's jobPars with "
                                                      "/bin/sh: name PanDA's pilot wrapper (see `harvester-cli config "
                                                      "example`), or set [panda] allow_test_pilot = true against "
                                                      "the simulator")
    if not config.harvester_id.strip():
        validator.problem("", "harvester_id: must not be empty")


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
    queues = _queues(validator, raw_queues, defaults) if isinstance(raw_queues, dict) and isinstance(defaults, dict) \
        else {}
    config = validator.build(Config, data, "")
    if config is None:
        validator.raise_problems()
    config = dataclasses.replace(config, proxies=proxies, tokens=tokens, queues=queues)
    _references(validator, config)
    validator.raise_problems()
    state = config.state
    if state and "://" not in state and not Path(state).expanduser().is_absolute():
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


def _walk(section: Any, where: str):
    """(where, key, rule, value) of every set value in a section and its sub-sections."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from _walk(value, f"{where}.{f.name}" if where else f.name)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                yield from _walk(item, f"{where}.{f.name}[{i}]")
        elif rule_of(f) is not None and value is not None:
            yield where, f.name, rule_of(f), value


def environment_problems(config: Config) -> list[str]:
    """What only this host can tell: files named in the configuration that do not exist, secrets that
    others can read, and configurations that cannot work (no queues, no credentials for PanDA)."""
    source = str(config.path or "<config>")
    problems = []
    sections: list[tuple[str, Any]] = [("panda", config.panda), ("smtp", config.smtp)]
    sections += [(f"proxies.{n}", p) for n, p in config.proxies.items()]
    sections += [(f"tokens.{n}", t) for n, t in config.tokens.items()]
    sections += [(f"queues.{n}.backend_options", q.backend_options) for n, q in config.queues.items()]
    for table, section in sections:
        for where, key, rule, value in _walk(section, table):
            if not rule.must_exist or not isinstance(value, Path):
                continue
            kind = {"file": "file", "dir": "directory", "any": "file or directory"}[rule.must_exist]
            try:
                info = value.stat()
            except OSError as exc:
                problems.append(f"{source}: [{where}] {key}: {value}: {exc.strerror}; create it or fix the path")
                continue
            wrong = (rule.must_exist == "file" and not stat.S_ISREG(info.st_mode)) or \
                    (rule.must_exist == "dir" and not stat.S_ISDIR(info.st_mode))
            if wrong:
                problems.append(f"{source}: [{where}] {key}: {value} is not a {kind}")
            elif rule.secret and info.st_mode & 0o077:
                problems.append(f"{source}: [{where}] {key}: {value} is readable by others "
                                f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {value}")
    problems += _loose_state_files(config, source)
    problems += _sqlite_on_network(config, source)
    if not config.queues:
        problems.append(f"{source}: no queues: add one, e.g. [queues.MY_QUEUE] with mode and backend "
                        "(`harvester-cli config example` shows one)")
    panda = config.panda
    if not any((panda.proxy, panda.proxy_profile, panda.token_file, panda.token_profile)):
        problems.append(f"{source}: [panda] no credentials: PanDA needs a client certificate or a token; set proxy "
                        "(or proxy_profile), or token_file (or token_profile) with token_origin")
    return problems


# File systems that serve one directory to several hosts: SQLite's locks (POSIX locks, and the shared memory
# of WAL mode) do not hold across hosts there, and two hosts writing one file corrupt it.
NETWORK_FILE_SYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
                                  "lustre", "gpfs", "beegfs", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs",
                                  "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.juicefs", "ocfs2", "gfs2"})


def mount_of(path: Path, mounts: str = "/proc/mounts") -> tuple[str, str] | None:
    """(mount point, file system type) of the mount holding `path`: the longest mount point above it."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    target = str(path)
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fields[2])
    return best


def _sqlite_on_network(config: Config, source: str, mounts: str = "/proc/mounts") -> list[str]:
    """SQLite on a network file system: refused, it is the one set-up that corrupts the state database."""
    url = config.state_url
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return []
    database = Path(url.removeprefix("sqlite:///"))
    where = database if database.exists() else database.parent
    found = mount_of(where.resolve() if where.exists() else where, mounts)
    if found is None or found[1] not in NETWORK_FILE_SYSTEMS:
        return []
    return [f"{source}: state: {database} is on {found[1]} ({found[0]}): SQLite on a network file system loses "
            "its locks between hosts and corrupts the database; keep SQLite on a local disk of one host, or give "
            "several hosts one PostgreSQL or MariaDB server (state = \"postgresql://...\" or \"mariadb://...\")"]


def _loose_state_files(config: Config, source: str) -> list[str]:
    """A SQLite state database holds the job dicts verbatim, secrets included: it and its journals are 0600."""
    url = config.state_url
    if not url.startswith("sqlite:///"):
        return []
    database = Path(url.removeprefix("sqlite:///"))
    loose = []
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            loose.append(f"{path} (mode {mode:04o})")
    if not loose:
        return []
    return [f"{source}: state: {', '.join(loose)} readable by others, and the state database holds job secrets: "
            f"chmod 600 {' '.join(p.split(' (')[0] for p in loose)}"]


def as_dict(config: Config) -> dict:
    """The resolved configuration as plain JSON-able data (for `config check`)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    data = plain(config)
    data["state"] = display_url(config.state_url)
    data["log_dir"] = str(config.logs)
    data["work_dir"] = str(config.work_root)
    return data
