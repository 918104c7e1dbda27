"""Instance configuration: one TOML file, validated into frozen dataclasses.

Every section is a dataclass; `_build` checks keys and types against the dataclass fields, so a new
setting is one annotated field with a default, and every error names the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import string
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvester_cli.errors import ConfigError

REQUIRED = dataclasses.MISSING

# Placeholders a pilot command may use; filled per worker by the submitter.
PILOT_PLACEHOLDERS = frozenset(
    {
        "queue", "worker_id", "harvester_id", "resource_type", "n_core", "memory_mb", "walltime",
        "panda_url", "prod_source_label", "job_type", "python", "ca", "proxy",
    }
)


def xdg_dir(variable: str, fallback: str) -> Path:
    base = os.environ.get(variable) or str(Path.home() / fallback)
    return Path(base) / "harvester-cli"


def default_config_path() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "config.toml"


def default_state_dir() -> Path:
    return xdg_dir("XDG_STATE_HOME", ".local/state")


def display_url(url: str) -> str:
    """A database URL without its password, for output."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show it as given (it has no password to hide then)
        return url


def state_url_from(value: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as SQLite)."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


@dataclass(frozen=True)
class PandaConfig:
    url: str = REQUIRED
    # X.509: a proxy file (cert + key); or a bearer token file plus the VO as Origin.
    proxy: Path | None = None
    token_file: Path | None = None
    token_origin: str | None = None
    # Or a profile renew-proxy maintains: [proxies.NAME] (its file is the proxy) or [tokens.NAME].
    proxy_profile: str | None = None
    token_profile: str | None = None
    # CA directory (hashed, like /etc/grid-security/certificates) or a CA bundle file.
    ca: Path | None = None
    timeout: float = 60.0
    retries: int = 3
    # Calls in one bulk request (Harvester's default is 100).
    bulk_size: int = 100


@dataclass(frozen=True)
class QueueConfig:
    name: str
    mode: str = REQUIRED
    backend: str = REQUIRED
    backend_options: Any = None
    prod_source_label: str = "managed"
    job_type: str = "managed"
    resource_types: list[str] = field(default_factory=lambda: ["SCORE"])
    # Pilot command template; placeholders from PILOT_PLACEHOLDERS, e.g. "{python} -m mypilot --queue {queue}".
    pilot: str = "{python} -m harvester_cli.testpilot"
    # Worker size when the resource type does not say more.
    core_count: int = 1
    memory_mb_per_core: int = 2000
    walltime: int = 48 * 3600
    # Local gate: "online" submits, anything else ("offline", "test", "brokeroff") submits nothing.
    status: str = "online"
    # Limits (docs/domain.md "How many workers").
    n_queue_limit_worker: int = 10
    # Queued limit as a percentage of running workers instead (never below n_queue_limit_worker_min).
    n_queue_limit_worker_ratio: float | None = None
    n_queue_limit_worker_min: int = 1
    max_workers: int = 100
    max_new_workers_per_cycle: int = 10
    # Caps on what waits in the batch queue, in cores and in memory.
    max_queued_cores: int | None = None
    max_queued_memory_mb: int | None = None
    # Throttle: no new worker while more than this many were missed in the window (per queue and per CE).
    throttle_missed: int | None = None
    throttle_window: int = 3600
    # Pilot streaming ("slave" mode): PanDA's SET_N_WORKERS_JOBTYPE numbers decide, within the limits.
    pilot_streaming: bool = False
    # OneBox: several harvester queues may serve one PanDA queue (e.g. a background twin); default: the name.
    panda_queue: str | None = None
    # The twin's pilots and fetches ask PanDA for background jobs (acquire_jobs background=true).
    background: bool = False
    # Pull: queued pilots <= activated jobs x factor, and never below the floor (0 or 1).
    activated_factor: float = 1.0
    empty_pilot_floor: int = 1
    # Push: how many fetched jobs may wait for a worker; attempts before a job is failed.
    n_queue_limit_job: int | None = None
    max_submit_attempts: int = 3
    # Push: re-send "running" for a running job this often, so PanDA can answer "tobekilled" (0: never).
    job_heartbeat_seconds: int = 1800
    # Monitoring: kill workers queued longer than this; a worker the backend lost is failed after grace.
    max_queued_seconds: int = 48 * 3600
    lost_grace_seconds: int = 600
    # The [proxies.NAME] profile whose proxy this queue's workers get (default: the PanDA client's proxy).
    proxy_profile: str | None = None

    @property
    def site(self) -> str:
        """The PanDA queue (computingSite) this harvester queue serves."""
        return self.panda_queue or self.name

    def queued_job_limit(self) -> int:
        return self.n_queue_limit_job if self.n_queue_limit_job is not None else self.n_queue_limit_worker


@dataclass(frozen=True)
class SweepConfig:
    # Final workers and done jobs are deleted after this many seconds.
    worker_retention: int = 2 * 24 * 3600
    job_retention: int = 2 * 24 * 3600
    # A guard against mass accidents: more kills than this in one run need --force.
    max_kills_per_run: int = 500


# -- credentials (renew-proxy) ------------------------------------------------------------------

PROXY_TOOLS = ("voms-proxy-init", "arcproxy", "builtin")


@dataclass(frozen=True)
class CertificateConfig:
    cert: Path = REQUIRED
    key: Path = REQUIRED
    # A file holding the key's passphrase (mode 0600); none for an unencrypted key.
    passphrase_file: Path | None = None


@dataclass(frozen=True)
class ProxyProfile:
    """[proxies.NAME]: one proxy file, made from the first certificate that works (APF's authmanager)."""

    name: str
    file: Path = REQUIRED
    certificates: list[CertificateConfig] = REQUIRED
    # VOMS attribute, e.g. "atlas:/atlas/Role=production"; none: a plain RFC 3820 proxy.
    voms: str | None = None
    # voms-proxy-init, arcproxy, or builtin (no VOMS, no external tool).
    tool: str = "voms-proxy-init"
    lifetime: int = 96 * 3600
    # Renew when the proxy (or its VOMS attribute) has less than this left.
    min_lifetime: int = 72 * 3600
    # Trusted CA directory (default: $X509_CERT_DIR or /etc/grid-security/certificates); vomses file or
    # directory and vomsdir for VOMS servers.
    ca: Path | None = None
    vomses: Path | None = None
    vomsdir: Path | None = None
    bits: int = 2048
    # Seconds one tool run may take.
    timeout: float = 120.0


@dataclass(frozen=True)
class TokenProfile:
    """[tokens.NAME]: a bearer token file refreshed by an OAuth2 client-credentials request."""

    name: str
    file: Path = REQUIRED
    endpoint: str = REQUIRED
    client_id: str = REQUIRED
    # The client secret lives in a file of its own (mode 0600), never in this configuration.
    client_secret_file: Path = REQUIRED
    # Audience (the CE endpoint or PanDA) and scope asked for.
    audience: str | None = None
    scope: str | None = None
    min_lifetime: int = 1800
    # CA bundle or directory for the token endpoint's certificate (default: the system's).
    ca: Path | None = None
    timeout: float = 30.0
    retries: int = 3


@dataclass(frozen=True)
class SmtpConfig:
    """[smtp]: where renew-proxy sends alerts. No recipients: alerts are only logged."""

    host: str = "localhost"
    port: int = 25
    # none, starttls or ssl
    security: str = "none"
    username: str | None = None
    password_file: Path | None = None
    ca: Path | None = None
    sender: str = "harvester-cli@localhost"
    to: list[str] = field(default_factory=list)
    # The same problem is mailed at most once per this many seconds.
    throttle: int = 3600
    timeout: float = 30.0
    retries: int = 3


# -- logs (clean-logs, serve-logs, each command's own log) -----------------------------------------

SUBMIT_FILE_PATTERNS = ["*.sub", "*.jdl", "*.xrsl", "*.adl", "*.sbatch", "submit*"]


@dataclass(frozen=True)
class RetentionConfig:
    # Delete files older than this many seconds, then the oldest until the class fits in max_bytes.
    max_age: int | None = 14 * 24 * 3600
    max_bytes: int | None = None


@dataclass(frozen=True)
class LogRetentionConfig:
    """[log_retention]: per class of files in the log directory."""

    workers: RetentionConfig = field(default_factory=RetentionConfig)
    submit_files: RetentionConfig = field(default_factory=RetentionConfig)
    commands: RetentionConfig = field(default_factory=RetentionConfig)
    # Which files of a worker's log directory are submit files (glob patterns on the file name).
    submit_patterns: list[str] = field(default_factory=lambda: list(SUBMIT_FILE_PATTERNS))


@dataclass(frozen=True)
class CommandLogConfig:
    """[command_log]: each command appends to <log_dir>/commands/<command>.log, rotated by size."""

    enabled: bool = True
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5
    # Append the process's memory use (resident set size) to every line.
    memory: bool = False


@dataclass(frozen=True)
class LogServerConfig:
    """[log_server]: serve-logs defaults (bound to loopback unless told otherwise)."""

    host: str = "127.0.0.1"
    # Default: the port of log_url, else 8080.
    port: int | None = None


@dataclass(frozen=True)
class Config:
    harvester_id: str = REQUIRED
    panda: PandaConfig = REQUIRED
    state: str | None = None
    log_dir: Path | None = None
    log_url: str | None = None
    work_dir: Path | None = None
    # Seconds a claim on a row (job, worker, queue) stays valid before another run may take it over.
    lease_seconds: int = 600
    # Global cap on new workers per submit run over all queues.
    max_new_workers_per_run: int = 1000
    sweep: SweepConfig = field(default_factory=SweepConfig)
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    proxies: dict[str, ProxyProfile] = field(default_factory=dict)
    tokens: dict[str, TokenProfile] = field(default_factory=dict)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    log_retention: LogRetentionConfig = field(default_factory=LogRetentionConfig)
    command_log: CommandLogConfig = field(default_factory=CommandLogConfig)
    log_server: LogServerConfig = field(default_factory=LogServerConfig)
    path: Path | None = None

    @property
    def state_url(self) -> str:
        return state_url_from(self.state) if self.state else state_url_from(str(default_state_dir() / "state.db"))

    @property
    def logs(self) -> Path:
        return self.log_dir or default_state_dir() / "logs"

    @property
    def work_root(self) -> Path:
        return self.work_dir or default_state_dir() / "work"

    def panda_site(self, queue_name: str) -> str:
        queue = self.queues.get(queue_name)
        return queue.site if queue else queue_name

    def select_queues(self, names: tuple[str, ...] | list[str] = ()) -> list[QueueConfig]:
        unknown = [n for n in names if n not in self.queues]
        if unknown:
            known = ", ".join(sorted(self.queues)) or "none"
            raise ConfigError(f"unknown queue {unknown[0]!r} (configured: {known})")
        return [self.queues[n] for n in names] if names else list(self.queues.values())


# ---------------------------------------------------------------------------------------------
# Validation

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               Path: "a path string", list: "a list", dict: "a table"}


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict) else "a table"


class _Builder:
    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    def fail(self, where: str, message: str) -> typing.NoReturn:
        location = f"{self.source}: [{where}]" if where else self.source
        raise ConfigError(f"{location} {message}")

    def value(self, annotation: Any, value: Any, where: str, key: str) -> Any:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if value is None:
                return None
            return self.value(options[0], value, where, key)
        if annotation is Any:
            return value
        if origin is list:
            (item,) = typing.get_args(annotation)
            if not isinstance(value, list):
                self.fail(where, f"{key}: expected a list, got {_describe(value)}")
            return [self.value(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            _, item = typing.get_args(annotation)
            if not isinstance(value, dict):
                self.fail(where, f"{key}: expected a table, got {_describe(value)}")
            return {k: self.value(item, v, where, f"{key}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                self.fail(where, f"{key}: expected a table, got {_describe(value)}")
            return self.build(annotation, value, f"{where}.{key}" if where else key)
        if annotation is Path:
            if not isinstance(value, str) or not value:
                self.fail(where, f"{key}: expected a path string, got {_describe(value)}")
            path = Path(value).expanduser()
            return path if path.is_absolute() else (self.base_dir / path)
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if annotation is int and isinstance(value, bool) or not isinstance(value, annotation):
            self.fail(where, f"{key}: expected {_TYPE_NAMES.get(annotation, annotation.__name__)}, got {_describe(value)}")
        if annotation in (int, float) and value < 0:   # limits, sizes, times: none of them can be negative
            self.fail(where, f"{key}: must not be negative, got {value}")
        return value

    def build(self, cls: type, table: dict, where: str, **given: Any) -> Any:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.name not in given and f.name != "path"]
        for key in table:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(names)})"
                self.fail(where, f"unknown key {key!r}{hint}")
        kwargs = dict(given)
        for f in dataclasses.fields(cls):
            if f.name in given or f.name == "path":
                continue
            if f.name in table:
                kwargs[f.name] = self.value(hints[f.name], table[f.name], where, f.name)
            elif f.default is REQUIRED and f.default_factory is REQUIRED:
                self.fail(where, f"missing required key {f.name!r}")
        try:
            return cls(**kwargs)
        except (ConfigError, ValueError) as exc:   # a section's own checks (__post_init__): add file and table
            self.fail(where, str(exc).removeprefix("backend_options").lstrip(": ."))


def _check_queue(builder: _Builder, queue: QueueConfig) -> None:
    where = f"queues.{queue.name}"
    if queue.mode not in ("pull", "push"):
        builder.fail(where, f"mode: expected 'pull' or 'push', got {queue.mode!r}")
    from harvester_cli import backends

    if queue.backend not in backends.NAMES:
        builder.fail(where, f"backend: unknown backend {queue.backend!r} (known: {', '.join(backends.NAMES)})")
    if queue.empty_pilot_floor not in (0, 1):
        builder.fail(where, f"empty_pilot_floor: expected 0 or 1, got {queue.empty_pilot_floor}")
    if not queue.resource_types:
        builder.fail(where, "resource_types: list at least one resource type, e.g. [\"SCORE\"]")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(queue.pilot) if name is not None}
    except ValueError as exc:
        builder.fail(where, f"pilot: bad template ({exc}); write literal braces as {{{{ and }}}}")
    unknown = sorted(fields - PILOT_PLACEHOLDERS)
    if unknown:
        builder.fail(where, f"pilot: unknown placeholder {{{unknown[0]}}} (known: {', '.join(sorted(PILOT_PLACEHOLDERS))})")


def _check_proxy_profile(builder: _Builder, profile: ProxyProfile) -> None:
    where = f"proxies.{profile.name}"
    if profile.tool not in PROXY_TOOLS:
        builder.fail(where, f"tool: expected one of {', '.join(PROXY_TOOLS)}, got {profile.tool!r}")
    if not profile.certificates:
        builder.fail(where, "certificates: list at least one, e.g. [{cert = \"usercert.pem\", key = \"userkey.pem\"}]")
    if profile.voms is not None:
        vo, _, fqan = profile.voms.partition(":")
        if not vo or (fqan and not fqan.startswith("/")):
            builder.fail(where, f"voms: expected 'vo' or 'vo:/vo/Role=...', got {profile.voms!r}")
        if profile.tool == "builtin":
            builder.fail(where, "voms: the builtin tool makes proxies without VOMS; use voms-proxy-init or arcproxy")
    if profile.min_lifetime >= profile.lifetime:
        builder.fail(where, f"min_lifetime ({profile.min_lifetime}) must be less than lifetime ({profile.lifetime}),"
                            " or every run renews")
    if profile.bits not in (1024, 2048, 3072, 4096):
        builder.fail(where, f"bits: expected 1024, 2048, 3072 or 4096, got {profile.bits}")


def _check_token_profile(builder: _Builder, profile: TokenProfile) -> None:
    if not profile.endpoint.startswith("https://"):
        builder.fail(f"tokens.{profile.name}", f"endpoint: expected an https:// URL, got {profile.endpoint!r}")


def _profiles(builder: _Builder, data: dict, key: str, cls: type, check) -> dict:
    raw = data.pop(key, {})
    if not isinstance(raw, dict):
        builder.fail("", f"'{key}' must be a table of profiles, e.g. [{key}.NAME]")
    profiles = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            builder.fail(f"{key}.{name}", f"expected a table, got {_describe(table)}")
        profiles[name] = builder.build(cls, table, f"{key}.{name}", name=name)
        check(builder, profiles[name])
    return profiles


def _check_credentials(builder: _Builder, config: Config, queues: dict[str, QueueConfig]) -> None:
    panda = config.panda
    if panda.proxy_profile is not None and panda.proxy_profile not in config.proxies:
        builder.fail("panda", f"proxy_profile: no [proxies.{panda.proxy_profile}] "
                              f"(configured: {', '.join(config.proxies) or 'none'})")
    if panda.token_profile is not None and panda.token_profile not in config.tokens:
        builder.fail("panda", f"token_profile: no [tokens.{panda.token_profile}] "
                              f"(configured: {', '.join(config.tokens) or 'none'})")
    given = [k for k in ("proxy", "proxy_profile", "token_file", "token_profile") if getattr(panda, k) is not None]
    if len(given) > 1:
        builder.fail("panda", f"set one of proxy, proxy_profile, token_file, token_profile, not {' and '.join(given)}")
    if panda.token_profile and not panda.token_origin:
        builder.fail("panda", "token_profile needs token_origin (the VO, sent as the Origin header)")
    for queue in queues.values():
        if queue.proxy_profile is not None and queue.proxy_profile not in config.proxies:
            builder.fail(f"queues.{queue.name}", f"proxy_profile: no [proxies.{queue.proxy_profile}] "
                                                 f"(configured: {', '.join(config.proxies) or 'none'})")
    files: dict[Path, str] = {}
    for kind, profiles in (("proxies", config.proxies), ("tokens", config.tokens)):
        for profile in profiles.values():
            other = files.setdefault(profile.file, f"{kind}.{profile.name}")
            if other != f"{kind}.{profile.name}":
                builder.fail(f"{kind}.{profile.name}", f"file: {profile.file} is also written by [{other}]")
    if config.smtp.security not in ("none", "starttls", "ssl"):
        builder.fail("smtp", f"security: expected 'none', 'starttls' or 'ssl', got {config.smtp.security!r}")


def parse(data: dict, source: str = "<config>", base_dir: Path | None = None) -> Config:
    builder = _Builder(source, base_dir or Path.cwd())
    data = dict(data)
    raw_queues = data.pop("queues", {})
    defaults = data.pop("queue_defaults", {})
    if not isinstance(raw_queues, dict) or not isinstance(defaults, dict):
        builder.fail("", "'queues' and 'queue_defaults' must be tables, e.g. [queues.MY_QUEUE]")
    proxies = _profiles(builder, data, "proxies", ProxyProfile, _check_proxy_profile)
    tokens = _profiles(builder, data, "tokens", TokenProfile, _check_token_profile)
    config = builder.build(Config, data, "")
    config = dataclasses.replace(config, proxies=proxies, tokens=tokens)
    queues = {}
    for name, table in raw_queues.items():
        if not isinstance(table, dict):
            builder.fail(f"queues.{name}", f"expected a table, got {_describe(table)}")
        merged = {**defaults, **table}
        queue = builder.build(QueueConfig, merged, f"queues.{name}", name=name)
        _check_queue(builder, queue)
        from harvester_cli import backends

        raw_options = merged.get("backend_options") or {}
        if not isinstance(raw_options, dict):
            builder.fail(f"queues.{name}", f"backend_options: expected a table, got {_describe(raw_options)}")
        options_class = backends.backend_class(queue.backend).Options
        options = builder.build(options_class, raw_options, f"queues.{name}.backend_options")
        queues[name] = dataclasses.replace(queue, backend_options=options)
    if not config.harvester_id.strip():
        builder.fail("", "harvester_id: must not be empty")
    if config.panda.proxy and config.panda.token_file:
        builder.fail("panda", "set either proxy or token_file, not both")
    if config.panda.token_file and not config.panda.token_origin:
        builder.fail("panda", "token_file needs token_origin (the VO, sent as the Origin header)")
    _check_credentials(builder, config, queues)
    state = config.state
    if state and "://" not in state and not Path(state).expanduser().is_absolute():
        state = str(builder.base_dir / state)   # like every other path: relative to the config file
    return dataclasses.replace(config, queues=queues, state=state)


def load(path: Path | None) -> Config:
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such configuration file")
        raise ConfigError(
            f"no configuration at {path}: create it (`harvester-cli config example > {path}`) or pass --config"
        )
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    config = parse(data, str(path), path.parent.resolve())
    return dataclasses.replace(config, path=path)


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


EXAMPLE = """\
# harvester-cli instance configuration
harvester_id = "my-site-harvester"
# state = "postgresql://harvester@dbhost/harvester"   # default: SQLite under $XDG_STATE_HOME
log_dir = "/var/log/harvester-cli"
log_url = "https://my-host.example.org:8080"           # public base URL of log_dir (serve-logs)

[panda]
url = "https://pandaserver.example.org:25443/api/v1"
proxy = "/var/lib/harvester-cli/proxy.pem"
ca = "/etc/grid-security/certificates"

[sweep]
worker_retention = 172800

# renew-proxy keeps this proxy alive (then use proxy_profile = "production" in [panda] instead of proxy):
# [proxies.production]
# file = "/var/lib/harvester-cli/proxy.pem"
# voms = "atlas:/atlas/Role=production"
# certificates = [{cert = "/etc/harvester-cli/usercert.pem", key = "/etc/harvester-cli/userkey.pem"},
#                 {cert = "/etc/harvester-cli/backup-cert.pem", key = "/etc/harvester-cli/backup-key.pem"}]

# [smtp]                                   # where renew-proxy mails problems (once per hour each)
# to = ["harvester-admins@example.org"]

# [log_retention.workers]                  # clean-logs: by age, then by size (oldest first)
# max_age = 1209600
# max_bytes = 50_000_000_000

[queue_defaults]
max_workers = 200
n_queue_limit_worker = 20

[queues.MY_SITE_PULL]
mode = "pull"
backend = "local"
resource_types = ["SCORE"]
pilot = "{python} -m harvester_cli.testpilot"

# A Slurm cluster (sbatch/squeue/scancel on this host; work_dir and log_dir on a file system the nodes
# share). Options and placeholders: harvester_cli/backends/slurm.py and _slurm_script.py.
# [queues.MY_SLURM_SITE]
# mode = "pull"
# backend = "slurm"
# resource_types = ["SCORE", "MCORE"]
# core_count = 8
# walltime = 172800
# pilot = "/bin/bash /opt/pilot/runpilot2-wrapper.sh -s {queue} -r {queue} -q {queue} -j {prod_source_label}"
# [queues.MY_SLURM_SITE.backend_options]
# partitions = ["grid", "grid-long"]          # several: the CE fanout picks one per worker
# account = "atlas"
# qos = "normal"
# sbatch_options = ["--exclusive=user"]
# work_dir = "/shared/harvester-cli/work"
"""
