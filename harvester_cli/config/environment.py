"""What only this host can tell about a valid configuration (`config check` reports it; the loader does
not look): files the configuration names that do not exist or are of the wrong kind, secret files and the
SQLite state database (which holds job secrets) readable by others, SQLite on a network file system
(`/proc/mounts`), and configurations that cannot work (no queue, no credentials for PanDA).
"""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path
from typing import Any

from harvester_cli.config.ssh_certificate import certificate_of, validity
from harvester_cli.config.schema import rule_of
from harvester_cli.config.sections import Config


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


def environment_problems(config: Config, *, lifetimes: bool = False) -> list[str]:
    """What only this host can tell: files named in the configuration that do not exist, secrets that
    others can read, and configurations that cannot work (no queues, no credentials for PanDA). With
    `lifetimes` (config check), also credentials that are not valid now; not for the work commands, whose
    runs would stop whole: the queue that uses one says so (exit 2) and the other queues still run."""
    source = str(config.path or "<config>")
    problems = []
    sections: list[tuple[str, Any]] = [("panda", config.panda), ("smtp", config.smtp)]
    sections += [(f"proxies.{n}", p) for n, p in config.proxies.items()]
    sections += [(f"tokens.{n}", t) for n, t in config.tokens.items()]
    sections += [(f"queues.{n}.backend_options", q.backend_options) for n, q in config.queues.items()]
    for table, section in sections:
        remote = section.remote_keys() if hasattr(section, "remote_keys") else frozenset()
        for where, key, rule, value in _walk(section, table):
            if not rule.must_exist or not isinstance(value, Path) or (where == table and key in remote):
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
    problems += _login_nodes(config, source)
    if lifetimes:
        problems += _certificates(config, source)
    problems += _client_libraries(config, source)
    problems += _directories(config, source)
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


def _login_nodes(config: Config, source: str) -> list[str]:
    """Queues that reach their cluster through login nodes over SSH: the ssh client is there, and the site's
    known_hosts file has a key for every login node (harvester-cli never accepts an unknown one). The key's
    own mode is checked with the other secret files above."""
    import shutil
    import subprocess

    problems = []
    ssh_queues = [(n, q.backend_options) for n, q in config.queues.items()
                  if getattr(q.backend_options, "login_nodes", None)]
    if ssh_queues and shutil.which("ssh") is None:
        problems.append(f"{source}: [queues.{ssh_queues[0][0]}.backend_options] login_nodes: ssh is not installed "
                        "(Debian: apt install openssh-client; EL: dnf install openssh-clients)")
    keygen = shutil.which("ssh-keygen")
    for name, options in ssh_queues:
        known = options.known_hosts
        if keygen is None or known is None or not known.is_file():
            continue
        for node in options.login_nodes:
            entry = node if options.ssh_port == 22 else f"[{node}]:{options.ssh_port}"
            try:
                found = subprocess.run([keygen, "-F", entry, "-f", str(known)], capture_output=True, timeout=10,
                                       stdin=subprocess.DEVNULL).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                continue
            if not found:
                problems.append(f"{source}: [queues.{name}.backend_options] known_hosts: {known} has no key for "
                                f"login node {entry}: add the key the site publishes (ssh-keyscan only to compare "
                                "with it: an unchecked key is what strict checking is there to refuse)")
    return problems


def _certificates(config: Config, source: str) -> list[str]:
    """The certificate beside a login node key (<key>-cert.pub) that is not valid now: every login node refuses
    that key, and says only "Permission denied"."""
    problems = []
    for name, queue in config.queues.items():
        options = queue.backend_options
        if not getattr(options, "login_nodes", None) or options.ssh_key is None:
            continue
        certificate = certificate_of(options.ssh_key)
        found = validity(certificate)
        if found and (invalid := found.problem()):
            problems.append(f"{source}: [queues.{name}.backend_options] ssh_key: its certificate {certificate} "
                            f"{invalid}: the login nodes refuse it (the site issues a new one)")
    return problems


def _client_libraries(config: Config, source: str) -> list[str]:
    """A queue whose backend's client library is not installed could never submit, poll or repair a worker."""
    import importlib.util

    from harvester_cli.config.backend_options import CLIENT_LIBRARIES

    problems = []
    for name, queue in config.queues.items():
        if queue.backend not in CLIENT_LIBRARIES:
            continue
        module, extra, what = CLIENT_LIBRARIES[queue.backend]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(f"{source}: [queues.{name}] backend = \"{queue.backend}\": {what} (module {module}) is "
                            f"not installed: pip install 'harvester-cli[{extra}]' ('.[{extra}]' in a source checkout)")
    return problems


def directory_problem(path: Path) -> str | None:
    """Why harvester-cli could not make or write `path` as a directory, or None. A directory that does not
    exist yet is fine when its nearest existing parent is a directory this account may write."""
    import os

    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir():
        if os.access(existing, os.W_OK | os.X_OK):
            return None
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        return (f"{existing} is on a read-only file system" if read_only else
                f"{existing} is not writable by this account") + (f" (needed to create {path})" if existing != path else "")
    return f"{existing} is not a directory" + (f" (so {path} cannot be made)" if existing != path else "")


def _directories(config: Config, source: str) -> list[str]:
    """The directories every worker and run writes to: a wrong one would fail each worker, every minute."""
    places = [("", "log_dir", config.logs), ("", "work_dir", config.work_root)]
    places += [(f"[queues.{n}.backend_options] ", "work_dir", q.backend_options.work_dir)
               for n, q in config.queues.items() if getattr(q.backend_options, "work_dir", None)
               and "work_dir" not in getattr(q.backend_options, "remote_keys", frozenset)()]
    problems = [f"{source}: {table}{key}: {path}: {problem}: fix the path or the permissions"
                for table, key, path in places if (problem := directory_problem(path))]
    database = config.state_url
    if database.startswith("sqlite:///") and database != "sqlite:///:memory:":
        import os

        path = Path(database.removeprefix("sqlite:///"))
        problem = directory_problem(path.parent)
        if problem is None and path.exists() and not os.access(path, os.R_OK | os.W_OK):
            problem = ("the file is on a read-only file system" if os.statvfs(path).f_flag & os.ST_RDONLY else
                       "the file is not writable by this account")
        if problem:
            problems.append(f"{source}: state: {path}: {problem} (SQLite writes its journal beside the database): "
                            "fix the permissions or point `state` elsewhere")
    return problems


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
