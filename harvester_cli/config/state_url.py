"""The `state` key as an operator writes it, made into the URL SQLAlchemy opens.

- a plain file path: SQLite;
- a server URL (`postgresql://`, `postgres://`, `mariadb://`, `mysql://`): the driver harvester-cli installs
  for a bare scheme, an explicit `+driver` kept as written;
- PostgreSQL with several hosts, as libpq takes them (a standby that a failover manager promotes):
  `postgresql://user:pw@db1:5432,db2:5432/harvester?target_session_attrs=read-write`, the hosts in the
  query (`?host=db1,db2&port=5432,5433`), or libpq's keyword/value form (`host=db1,db2 port=5432
  dbname=harvester user=harvester target_session_attrs=read-write`). SQLAlchemy's psycopg dialect takes
  them as repeated `host=` query parameters (`postgresql+psycopg://user:pw@/harvester?host=db1:5432&
  host=db2:5432&target_session_attrs=read-write`), and psycopg tries each in turn, as libpq does.

Several hosts need `target_session_attrs=read-write` (or `primary`): harvester-cli writes, and libpq's
default takes the first host that answers, a standby included. MariaDB takes one server.

Pure string work (no SQLAlchemy, no driver): the configuration is validated without them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

from harvester_cli.errors import ConfigError

# The drivers harvester-cli installs (extras `postgres` and `mariadb`), for URLs that name none.
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
                   "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}
# The PostgreSQL drivers whose SQLAlchemy dialect takes several hosts.
_MULTI_HOST_DRIVERS = ("postgresql+psycopg", "postgresql+psycopg2")
# What lets libpq pick, among several hosts, the one that takes writes.
WRITABLE_TARGETS = ("read-write", "primary")

# libpq's connection keywords (PostgreSQL 17's list): what tells its keyword/value form from a file path.
LIBPQ_KEYWORDS = frozenset("""
host hostaddr port dbname user password passfile require_auth channel_binding connect_timeout client_encoding
options application_name fallback_application_name keepalives keepalives_idle keepalives_interval
keepalives_count tcp_user_timeout replication gssencmode sslmode sslnegotiation requiressl sslcompression sslcert
sslkey sslcertmode sslpassword sslrootcert sslcrl sslcrldir sslsni requirepeer ssl_min_protocol_version
ssl_max_protocol_version min_protocol_version max_protocol_version krbsrvname gsslib gssdelegation service
target_session_attrs load_balance_hosts
""".split())
_KEYWORD_START = re.compile(r"\s*([A-Za-z_]+)\s*=")


# The state databases harvester-cli can open: a URL's scheme, before any +driver.
STATE_SCHEMES = ("sqlite", "postgresql", "postgres", "mariadb", "mysql")


def state_url_problem(value: str) -> str | None:
    """What is wrong with a `state` (the key or --state) before anything opens it, or None. Names the scheme,
    never the URL (it may hold a password)."""
    if not value.strip():
        return "empty: a SQLite file path or a database URL"
    if "://" in value:
        scheme = value.partition("://")[0]
        if scheme.partition("+")[0].lower() not in STATE_SCHEMES:
            return (f"unknown database scheme {scheme}://: a SQLite file path, or a postgresql://, mariadb://, "
                    "mysql:// or sqlite:/// URL")
    try:
        state_url_from(value)
    except ConfigError as exc:
        return str(exc).removeprefix("state: ")
    return None


def is_file_path(value: str) -> bool:
    """Whether `state` names a SQLite file (neither a URL nor libpq's keyword/value form)."""
    start = _KEYWORD_START.match(value)
    return "://" not in value and not (start and start.group(1) in LIBPQ_KEYWORDS)


def state_url_from(value: str) -> str:
    """A SQLAlchemy URL from what an operator writes (see the module's text); ConfigError when it is a
    server URL harvester-cli cannot use as written (several hosts without a writable target, MariaDB with
    several hosts, hosts and ports that do not pair up)."""
    start = _KEYWORD_START.match(value)
    if start and start.group(1) in LIBPQ_KEYWORDS:
        return _from_keywords(value)
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    scheme, _, rest = value.partition("://")
    driver = DEFAULT_DRIVERS.get(scheme.lower(), scheme)
    netloc, path, query = _split(rest)
    hosts_in_netloc = netloc.rpartition("@")[2]
    if driver.startswith(("mysql", "mariadb")) and "," in hosts_in_netloc:
        raise ConfigError(f"state: {_hidden(value)}: MariaDB/MySQL takes one server (several hosts are libpq's, "
                          "PostgreSQL's): see the README's 'Several hosts' for what MariaDB supports")
    params = parse_qsl(query, keep_blank_values=True)
    query_hosts = [v for k, v in params if k == "host"]
    several = "," in hosts_in_netloc or any("," in h for h in query_hosts) or len(query_hosts) > 1
    if not several or driver not in _MULTI_HOST_DRIVERS:
        return f"{driver}://{rest}"
    userinfo, at, hostlist = netloc.rpartition("@")
    if hostlist and query_hosts:
        raise ConfigError(f"state: {_hidden(value)}: hosts both before the database name and in ?host=: "
                          "give them once")
    if hostlist:
        hosts = [_host_port(item, value) for item in hostlist.split(",")]
    else:
        hosts = _paired(",".join(query_hosts), ",".join(v for k, v in params if k == "port"), value)
    others = [(k, v) for k, v in params if k not in ("host", "port")]
    return _build(driver, userinfo + at, path, hosts, others, value)


def _split(rest: str) -> tuple[str, str, str]:
    """netloc, path (with its leading /, or empty), query of what follows `scheme://`."""
    before_query, _, query = rest.partition("?")
    netloc, slash, path = before_query.partition("/")
    return netloc, slash + path, query


def _host_port(item: str, value: str) -> tuple[str, str]:
    """`db1:5432`, `db1`, `[::1]:5432` -> (host, port or "")."""
    item = item.strip()
    if item.startswith("["):
        host, _, after = item[1:].partition("]")
        port = after.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host or (port and not port.isdigit()):
        raise ConfigError(f"state: {_hidden(value)}: {item!r} is not a host[:port]")
    return unquote(host), port


def _paired(hosts: str, ports: str, value: str) -> list[tuple[str, str]]:
    """libpq's host=a,b with port=p (one for all) or port=p,q (one each)."""
    names = hosts.split(",")
    numbers = ports.split(",") if ports else [""]
    if len(numbers) == 1:
        numbers *= len(names)
    if len(numbers) != len(names):
        raise ConfigError(f"state: {_hidden(value)}: {len(names)} hosts and {len(numbers)} ports: give one port, "
                          "or one per host")
    if any(not n or (p and not p.isdigit()) for n, p in zip(names, numbers)):
        raise ConfigError(f"state: {_hidden(value)}: host={hosts} port={ports}: an empty host or a port that is "
                          "not a number")
    return list(zip(names, numbers))


def _build(driver: str, userinfo: str, path: str, hosts: list[tuple[str, str]], others: list[tuple[str, str]],
           value: str) -> str:
    targets = [v for k, v in others if k == "target_session_attrs"]
    if len(hosts) > 1 and (not targets or targets[-1] not in WRITABLE_TARGETS):
        raise ConfigError(
            f"state: {_hidden(value)}: several hosts need target_session_attrs=read-write (or primary): "
            "harvester-cli writes, and libpq otherwise takes the first host that answers, a standby included")
    if any(":" in h for h, _ in hosts):   # IPv6: SQLAlchemy's repeated host=h:p cannot tell its colons apart
        pairs = [("host", ",".join(h for h, _ in hosts)), ("port", ",".join(p for _, p in hosts))]
    else:
        pairs = [("host", f"{h}:{p}" if p else h) for h, p in hosts]
    query = "&".join(f"{k}={quote(v, safe=':/,')}" for k, v in pairs + others)
    return f"{driver}://{userinfo}{path or '/'}?{query}"


def _from_keywords(value: str) -> str:
    """libpq's keyword/value form (`host=db1,db2 port=5432 dbname=h user=u ...`) as a URL."""
    params = _parse_keywords(value)
    unknown = [k for k in params if k not in LIBPQ_KEYWORDS]
    if unknown:
        raise ConfigError(f"state: {_hidden(value)}: {unknown[0]!r} is not a libpq connection keyword")
    user, password, dbname = params.pop("user", ""), params.pop("password", None), params.pop("dbname", "")
    hosts = _paired(params.pop("host", ""), params.pop("port", ""), value) if "host" in params else []
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
    userinfo += "@" if userinfo else ""
    others = list(params.items())
    if len(hosts) == 1 and ":" not in hosts[0][0] and not hosts[0][0].startswith("/"):
        host, port = hosts[0]
        query = "&".join(f"{k}={quote(v, safe=':/,')}" for k, v in others)
        return (f"{DEFAULT_DRIVERS['postgresql']}://{userinfo}{host}{':' + port if port else ''}/{quote(dbname)}"
                + (f"?{query}" if query else ""))
    return _build(DEFAULT_DRIVERS["postgresql"], userinfo, "/" + quote(dbname), hosts, others, value)


def _parse_keywords(text: str) -> dict[str, str]:
    """libpq's conninfo grammar: keyword = value, whitespace between pairs, a value single-quoted (with \\'
    and \\\\ inside) or ending at whitespace."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return params
        match = _KEYWORD_START.match(text, i)
        if not match:
            raise ConfigError(f"state: {_hidden(text)}: expected keyword=value at {text[i:i + 20]!r}")
        i = match.end()
        while i < n and text[i] in " \t":
            i += 1
        chars = []
        if i < n and text[i] == "'":
            i += 1
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                raise ConfigError(f"state: {_hidden(text)}: unterminated quoted value")
            i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
        params[match.group(1)] = "".join(chars)


def _hidden(value: str) -> str:
    """What the operator wrote, its password replaced, for a message."""
    value = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+?)(?=[\s&]|$)", r"\1***", value)
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)


def servers(url: str) -> list[str]:
    """The servers of a translated server URL as `host:port` (port left out where libpq's default applies):
    what `config check` shows. Empty for SQLite."""
    if url.startswith("sqlite") or "://" not in url:
        return []
    netloc, _, query = _split(url.partition("://")[2])
    params = parse_qsl(query, keep_blank_values=True)
    hosts = [v for k, v in params if k == "host"]
    if len(hosts) > 1:
        return hosts
    if len(hosts) == 1:
        ports = [v for k, v in params if k == "port"]
        port = ports[0] if ports else ""
        pairs = _paired(hosts[0], port, url) if "," in hosts[0] else [(hosts[0], port)]
        return [f"[{h}]:{p}" if ":" in h and p else f"{h}:{p}" if p else h for h, p in pairs]
    host = netloc.rpartition("@")[2]
    return [host] if host else []
