"""Where a backend's commands run and its files live: this host (`LocalTransport`), or a login node reached
with OpenSSH (`SSHTransport`), behind one small interface. A backend asks a transport to run a command, to
put files under a directory, to get files back and to remove them; it never opens a remote path itself.

    run(args)         one command, its arguments passed through as they are (quoted for the remote shell)
    put(root, files)  files (mode, contents, or a symbolic link) under root: one stream, secrets never on a
                      command line, everything made under umask 077
    get(root, items)  regular files (not links) of a directory or by name, back into local files, whole
    remove(root, ...) directories and files under root, and directories left without links (job arrays)

SSH, for sites whose batch system only a login node reaches (PanDA Harvester's SSH "herder", BOSCO):

- The `ssh` binary of OpenSSH, with only the site's key (IdentitiesOnly, no agent, no password, BatchMode)
  and `StrictHostKeyChecking=yes` against the known_hosts file the site provides: an unknown or changed host
  key is refused, never accepted and never written to the file (UpdateHostKeys=no). `-F none` unless
  `ssh_config` names a file (ProxyJump and the like); the options here come first on the command line, so a
  file cannot weaken them.
- One connection per run: a master (ControlMaster) whose socket, `%C` (a hash: socket paths are limited to
  108 bytes), lives in a private directory of this run; every command is a session of that connection.
  ControlPersist is short, so a run that is killed leaves no connection behind for long; the run closes it
  at its end (`ssh -O exit`, also at interpreter exit). A master that went idle past ControlPersist
  within a run is opened again.
- Login nodes are tried in order, each for `connect_timeout` seconds; the first that answers serves the
  whole run. One that is down (refused, timed out, no route, unknown name) is skipped; when none answers,
  `LoginNodesDown` (exit 1: the next run tries again). A changed or unknown host key, a refused key or an
  expired certificate (ssh uses `<key>-cert.pub` when it is beside the key; its validity is read from it,
  the node does not say why it refused) is `SSHConfigError` (exit 2): a configuration problem that trying
  other nodes would only hide.
- A connection lost during a command (the master gone) raises `ConnectionLost`: what the command did is
  unknown (an sbatch may have been taken); the rest of the run's calls fail at once with the same reason.
- Every command has a timeout (the caller's); the connection keeps alive and notices a dead peer with
  ServerAlive probes every `connect_timeout` seconds.

Imported by backends; imports base (copy_into_place), config.ssh_certificate and errors only.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harvester_cli.backends.base import Contact, copy_into_place
from harvester_cli.config import ssh_certificate
from harvester_cli.errors import BackendError, ConfigError

# -- results and errors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedFile:
    """A file to put under a transport's root: `path` relative to it ('/'-separated), its bytes and mode, or a
    symbolic link to `link`, or an empty directory (mode 0700). `replace`: others may read it meanwhile (a
    proxy renewed under running jobs), so it appears whole, by rename."""

    path: str
    data: bytes = b""
    mode: int = 0o600
    link: str | None = None
    replace: bool = False
    directory: bool = False


class TransportError(BackendError):
    """The place the commands run could not be reached or did not answer (exit 1: the next run tries again)."""


class LoginNodesDown(TransportError):
    """No login node answered."""


class ConnectionLost(TransportError):
    """The connection went away during a command: what the command did is unknown."""


class CommandTimeout(TransportError):
    """A command did not finish within its timeout."""


class SSHConfigError(ConfigError):
    """A host key that does not match known_hosts, a key the login node refuses: fix the configuration (exit 2)."""


def _safe_relative(path: str) -> str:
    """A path under the root: relative, no '..', no empty part."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("..", "") for p in parts):
        raise ValueError(f"not a path under the transport's root: {path!r}")
    return PurePosixPath(*parts).as_posix()


# -- the interface ------------------------------------------------------------------------------------


class Transport(ABC):
    """Where a backend's commands run and its files live."""

    # Whether the jobs see this host's files (log directories written in place) or files must be fetched.
    shares_files: bool = True

    @abstractmethod
    def where(self) -> str:
        """The place that answers: "this host", or the login node of this run."""

    @abstractmethod
    def run(self, args: Sequence[str], *, timeout: float, set_env: Mapping[str, str] | None = None,
            drop_env: tuple[str, ...] = (), keep_env: tuple[str, ...] = (),
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run one command (text output). The environment is the place's own, less the variables whose names
        start with a `drop_env` prefix (but those in `keep_env`), plus `set_env`. Raises CommandTimeout
        after `timeout` seconds, FileNotFoundError when the command is not there (this host)."""

    @abstractmethod
    def put(self, root: str, files: Sequence[StagedFile], *, timeout: float) -> None:
        """Make the files under `root` (made if missing), parents 0700, under umask 077."""

    @abstractmethod
    def get(self, root: str, items: Sequence[tuple[str, Path]], *, timeout: float,
            max_bytes: int = 100 * 2**20) -> list[Path]:
        """Bring back regular files (never links): each item is (relative path, local target); a directory's
        files go into the target directory, a file to the target path; missing ones are skipped, and files
        larger than max_bytes. Returns the local files written."""

    @abstractmethod
    def remove(self, root: str, paths: Sequence[str], *, prune: Sequence[str] = (), timeout: float) -> None:
        """Remove `paths` under root (whole trees), then each `prune` directory that holds no symbolic link."""

    def contacts(self) -> list[Contact]:
        """The attempts of this run to reach the place (none for this host)."""
        return []

    def close(self) -> None:
        """End what this run opened."""


class LocalTransport(Transport):
    """Commands on this host, files in this host's file system (shared with the compute nodes)."""

    shares_files = True

    def where(self) -> str:
        return "this host"

    def run(self, args, *, timeout, set_env=None, drop_env=(), keep_env=(), input=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop_env) or k in keep_env}
        env.update(set_env or {})
        try:
            return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL if input is None else None,
                                  input=None if input is None else input.decode())
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"{args[0]} did not answer within {timeout:g} s") from None

    def put(self, root, files, *, timeout):
        from harvester_cli.site.logs import make_dirs
        from harvester_cli.site.secretfiles import write_private

        base = Path(root)
        for f in files:
            target = base / _safe_relative(f.path)
            make_dirs(target.parent, 0o700)
            if f.directory:
                make_dirs(target, 0o700)
            elif f.link is not None:
                target.unlink(missing_ok=True)
                target.symlink_to(f.link)
            elif f.mode & 0o077 == 0 and f.mode & 0o100 == 0:
                write_private(target, f.data)   # a secret: 0600 from the first byte, replaced whole
            else:
                part = target.with_name(f".{target.name}.{os.getpid()}.part")
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(f.data)
                os.chmod(part, f.mode)
                os.replace(part, target)

    def get(self, root, items, *, timeout, max_bytes=100 * 2**20):
        from harvester_cli.site.logs import make_dirs

        written = []
        base = Path(root)
        for relative, target in items:
            source = base / _safe_relative(relative)
            if source.is_symlink():
                continue
            pairs = ([(p, target / p.name) for p in sorted(source.iterdir())] if source.is_dir()
                     else [(source, target)] if source.exists() else [])
            for path, local in pairs:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > max_bytes:
                    continue
                if path.resolve() != local.resolve():   # written in place already (the log directory)
                    make_dirs(local.parent)
                    copy_into_place(path, local)
                written.append(local)
        return written

    def remove(self, root, paths, *, prune=(), timeout):
        base = Path(root)
        for path in paths:
            target = base / _safe_relative(path)
            if target.is_symlink() or target.is_file():
                target.unlink(missing_ok=True)
            else:
                shutil.rmtree(target, ignore_errors=True)
        for path in prune:
            target = base / _safe_relative(path)
            if target.is_dir() and not any(p.is_symlink() for p in target.iterdir()):
                shutil.rmtree(target, ignore_errors=True)


# -- SSH -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SSHSettings:
    """How to reach the login nodes. Frozen: the transports of one run are shared by their settings."""

    nodes: tuple[str, ...]
    user: str
    key: Path
    known_hosts: Path
    port: int = 22
    config_file: Path | None = None
    connect_timeout: float = 10.0
    control_persist: int = 30


# What ssh prints when the configuration is wrong (exit 2), as opposed to a node that is down (try the next).
_HOST_KEY_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed", re.IGNORECASE)
_HOST_KEY_UNKNOWN = re.compile(r"No \S+ host key is known for|Host key verification failed", re.IGNORECASE)
_KEY_REFUSED = re.compile(r"Permission denied \(|Too many authentication failures|"
                          r"no mutual signature algorithm|Identity file .* not accessible|Load key .*:", re.IGNORECASE)


def classify(stderr: str) -> tuple[str, str]:
    """What a failed ssh connection means, from its stderr: ("host key changed" | "host key unknown" |
    "key refused" | "down", the line that says it)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("@@@")]
    last = lines[-1] if lines else "ssh exited 255 without a message"
    if _HOST_KEY_CHANGED.search(stderr):
        return "host key changed", last
    if _HOST_KEY_UNKNOWN.search(stderr):
        return "host key unknown", last
    if _KEY_REFUSED.search(stderr):
        found = next((line for line in lines if _KEY_REFUSED.search(line)), last)
        return "key refused", found
    return "down", last


def remote_command(args: Sequence[str], set_env: Mapping[str, str] | None = None, drop_env: tuple[str, ...] = (),
                   keep_env: tuple[str, ...] = ()) -> str:
    """The command line the login node's shell gets: every argument quoted, run by `env` with `set_env`; with
    `drop_env`, through /bin/sh, which first unsets the variables of those prefixes (a site's SQUEUE_FORMAT
    in the login profile must not reshape our listings). Works under sh, bash, zsh and csh alike."""
    words = ["env", *[f"{k}={v}" for k, v in (set_env or {}).items()], *args]
    if not drop_env:
        return " ".join(shlex.quote(w) for w in words)
    names = "|".join(re.escape(p.rstrip("_")) for p in drop_env)
    keep = "|".join(keep_env) or "-"
    script = (f'for v in $(env | sed -n -E "s/^(({names})_[A-Za-z0-9_]*)=.*/\\\\1/p"); do '
              f'case "$v" in {keep}) ;; *) unset "$v" ;; esac; done; exec "$@"')
    return " ".join(shlex.quote(w) for w in ["/bin/sh", "-c", script, "sh", *words])


# put: umask 077, make the root, unpack the stream, then rename the files that must appear whole.
_PUT = ('umask 077 && mkdir -p -- "$1" && cd -- "$1" && tar -x -m --no-same-owner -f - && shift && '
        'while [ $# -gt 1 ]; do mv -f -- "$1" "$2" || exit 1; shift 2; done')
# get: the regular files (not links) asked for, those of a directory one level deep, at most $2 bytes each.
_GET = ('cd -- "$1" 2>/dev/null || exit 0; max=$(($2 + 1)); shift 2; '
        'find "$@" -maxdepth 1 -type f -size "-${max}c" -print0 2>/dev/null | tar -c -f - --null --no-recursion -T -')
# remove: the first $2 paths whole, then each further directory that holds no symbolic link.
_REMOVE = ('cd -- "$1" 2>/dev/null || exit 0; n=$2; shift 2; i=0; for p do i=$((i + 1)); '
           'if [ "$i" -le "$n" ]; then rm -rf -- "$p"; '
           'elif [ -d "$p" ] && [ -z "$(find "$p" -maxdepth 1 -type l | head -n 1)" ]; then rm -rf -- "$p"; fi; done')


class SSHTransport(Transport):
    """Commands and files on a login node over one multiplexed OpenSSH connection per run."""

    shares_files = False

    def __init__(self, settings: SSHSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._node: str | None = None
        self._control: str | None = None
        self._lost: str | None = None
        self._down: dict[str, str] = {}          # login node -> why it did not answer in this run
        self._contacts: list[Contact] = []
        self._registered = False

    # -- the connection ------------------------------------------------------------------------------

    def _options(self) -> list[str]:
        s = self.settings
        alive = max(1, int(s.connect_timeout))
        options = {
            "BatchMode": "yes", "IdentitiesOnly": "yes", "IdentityFile": str(s.key), "IdentityAgent": "none",
            "PreferredAuthentications": "publickey", "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no", "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(s.known_hosts), "GlobalKnownHostsFile": "/dev/null", "UpdateHostKeys": "no",
            "CheckHostIP": "no", "ConnectTimeout": str(max(1, int(round(s.connect_timeout)))),
            "ServerAliveInterval": str(alive), "ServerAliveCountMax": "3", "ForwardAgent": "no",
            "ForwardX11": "no", "ClearAllForwardings": "yes", "RequestTTY": "no", "LogLevel": "ERROR",
            "ControlPath": f"{self._control}/%C", "Port": str(s.port), "User": s.user,
        }
        out = ["ssh", "-F", str(s.config_file) if s.config_file else "none"]
        for key, value in options.items():
            out += ["-o", f"{key}={value}"]
        return out

    def _master_alive(self) -> bool:
        return bool(self._control and os.path.isdir(self._control) and os.listdir(self._control))

    def _connect(self) -> str:
        """The login node of this run, its master connection open (opened now if needed)."""
        with self._lock:
            if self._lost:
                raise ConnectionLost(f"skipped: {self._lost}")
            if self._node and self._master_alive():
                return self._node
            if self._control is None or not os.path.isdir(self._control):
                # /tmp, not a long $TMPDIR: the socket path must stay well under 108 bytes.
                self._control = tempfile.mkdtemp(prefix="hcli-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
            if not self._registered:
                atexit.register(self.close)
                self._registered = True
            # the node of this run first (its master went idle past ControlPersist), then the others in order
            nodes = sorted(self.settings.nodes, key=lambda n: n != self._node)
            problems = []
            for node in nodes:
                if node in self._down:
                    problems.append(f"{node}: {self._down[node]}")
                    continue
                problem = self._open(node)
                if problem is None:
                    self._node = node
                    return node
                self._down[node] = problem
                problems.append(f"{node}: {problem}")
            self._node = None
            raise LoginNodesDown("no login node answered (" + "; ".join(problems) + "); the next run tries again")

    def _open(self, node: str) -> str | None:
        """Open the master connection to `node`: None when it answered, why not when it is down. A host key or
        key problem raises SSHConfigError."""
        s = self.settings
        budget = 3 * s.connect_timeout + 5   # connect, key exchange and authentication, each bounded by ssh
        at = time.time()
        try:
            result = subprocess.run(self._options() + ["-o", "ControlMaster=yes",
                                                       "-o", f"ControlPersist={s.control_persist}",
                                                       "-N", "-f", "--", node],
                                    capture_output=True, text=True, timeout=budget, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            problem = f"no SSH handshake within {budget:g} s"
            self._contacts.append(Contact(node, False, problem, at))
            return problem
        except FileNotFoundError:
            raise SSHConfigError("ssh: command not found: install OpenSSH's client (Debian: openssh-client, "
                                 "EL: openssh-clients) to reach the login nodes") from None
        if result.returncode == 0:
            self._contacts.append(Contact(node, True, None, at))
            return None
        kind, line = classify(result.stderr)
        self._contacts.append(Contact(node, False, line, at))
        where = f"login node {node}" + (f" port {s.port}" if s.port != 22 else "")
        if kind == "host key changed":
            raise SSHConfigError(f"{where}: its host key does not match the one in {s.known_hosts} (ssh: {line}); "
                                 "if the site changed it, put the new key there; nothing was sent")
        if kind == "host key unknown":
            raise SSHConfigError(f"{where}: no host key for it in {s.known_hosts} (ssh: {line}); add the key the "
                                 "site publishes (harvester-cli never accepts an unknown key)")
        if kind == "key refused":
            # The node says only "Permission denied": the certificate beside the key tells whether it expired.
            certificate = ssh_certificate.certificate_of(s.key)
            found = ssh_certificate.validity(certificate)
            invalid = found.problem() if found else None
            if invalid:
                raise SSHConfigError(f"{where} refused the key {s.key} for user {s.user} (ssh: {line}): its "
                                     f"certificate {certificate} {invalid}: the site issues a new one")
            raise SSHConfigError(f"{where} refused the key {s.key} for user {s.user} (ssh: {line}): not in its "
                                 "authorized_keys" + (" (nor its certificate's CA or principal trusted there)"
                                                      if found else "") + ", or the wrong user")
        return line

    def _ssh(self, command: str, *, timeout: float, input: bytes | None, what: str) -> subprocess.CompletedProcess:
        node = self._connect()
        try:
            result = subprocess.run(self._options() + ["-o", "ControlMaster=no", "-T", "--", node, command],
                                    capture_output=True, timeout=timeout, input=input,
                                    stdin=subprocess.DEVNULL if input is None else None)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"{what} on login node {node} did not answer within {timeout:g} s") from None
        if result.returncode == 255 and not self._check(node):
            with self._lock:
                self._lost = (f"the connection to login node {node} was lost during {what} "
                              f"({_last_line(result.stderr) or 'no message'})")
                self._node = None
            raise ConnectionLost(self._lost + "; its outcome is unknown, the next run looks again")
        return result

    def _check(self, node: str) -> bool:
        """Whether the master connection to `node` is still there."""
        try:
            return subprocess.run(self._options() + ["-O", "check", "--", node], capture_output=True,
                                  timeout=10, stdin=subprocess.DEVNULL).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    # -- the interface ---------------------------------------------------------------------------------

    def where(self) -> str:
        return self._node or ", ".join(self.settings.nodes)

    def run(self, args, *, timeout, set_env=None, drop_env=(), keep_env=(), input=None):
        result = self._ssh(remote_command(args, set_env, drop_env, keep_env), timeout=timeout, input=input,
                           what=args[0])
        return subprocess.CompletedProcess(list(args), result.returncode, result.stdout.decode("utf-8", "replace"),
                                           result.stderr.decode("utf-8", "replace"))

    def put(self, root, files, *, timeout):
        if not files:
            return
        buffer = io.BytesIO()
        renames: list[str] = []
        made: set[str] = set()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for f in files:
                path = PurePosixPath(_safe_relative(f.path))
                for parent in reversed(path.parents[:-1]):
                    if parent.as_posix() not in made:
                        made.add(parent.as_posix())
                        archive.addfile(_member(parent.as_posix(), tarfile.DIRTYPE, 0o700))
                if f.directory:
                    if path.as_posix() not in made:
                        made.add(path.as_posix())
                        archive.addfile(_member(path.as_posix(), tarfile.DIRTYPE, 0o700))
                    continue
                if f.link is not None:
                    member = _member(path.as_posix(), tarfile.SYMTYPE, 0o777)
                    member.linkname = f.link
                    archive.addfile(member)
                    continue
                name = path.as_posix()
                if f.replace:
                    name = (path.parent / f".{path.name}.{os.getpid()}.part").as_posix()
                    renames += [name, path.as_posix()]
                member = _member(name, tarfile.REGTYPE, f.mode)
                member.size = len(f.data)
                archive.addfile(member, io.BytesIO(f.data))
        result = self._ssh(remote_command(["/bin/sh", "-c", _PUT, "sh", root, *renames]), timeout=timeout,
                           input=buffer.getvalue(), what="staging files")
        if result.returncode != 0:
            raise BackendError(f"cannot write under {root} on login node {self._node}: "
                               f"{_last_line(result.stderr) or f'exit code {result.returncode}'}")

    def get(self, root, items, *, timeout, max_bytes=100 * 2**20):
        if not items:
            return []
        wanted = {_safe_relative(relative): target for relative, target in items}
        result = self._ssh(remote_command(["/bin/sh", "-c", _GET, "sh", root, str(max_bytes), *wanted]),
                           timeout=timeout, input=None, what="fetching files")
        if result.returncode not in (0, 2) or not result.stdout:   # tar: 2 when a file vanished meanwhile
            if result.returncode not in (0, 2):
                raise BackendError(f"cannot read under {root} on login node {self._node}: "
                                   f"{_last_line(result.stderr) or f'exit code {result.returncode}'}")
            return []
        from harvester_cli.site.logs import make_dirs

        written = []
        with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:") as archive:
            for member in archive:
                if not member.isreg() or member.size > max_bytes:
                    continue
                name = member.name.removeprefix("./")
                parent, _, base = name.rpartition("/")
                if name in wanted:
                    local = wanted[name]
                elif parent in wanted and base and base not in (".", ".."):
                    local = wanted[parent] / base
                else:
                    continue   # not asked for: never written anywhere
                data = archive.extractfile(member).read()
                make_dirs(local.parent)
                part = local.with_name(f".{local.name}.{os.getpid()}.part")
                try:
                    part.write_bytes(data)
                    os.replace(part, local)
                finally:
                    part.unlink(missing_ok=True)
                written.append(local)
        return written

    def remove(self, root, paths, *, prune=(), timeout):
        if not paths and not prune:
            return
        relative = [_safe_relative(p) for p in paths] + [_safe_relative(p) for p in prune]
        result = self._ssh(remote_command(["/bin/sh", "-c", _REMOVE, "sh", root, str(len(paths)), *relative]),
                           timeout=timeout, input=None, what="cleaning")
        if result.returncode != 0:
            raise BackendError(f"cannot remove under {root} on login node {self._node}: "
                               f"{_last_line(result.stderr) or f'exit code {result.returncode}'}")

    def contacts(self) -> list[Contact]:
        return list(self._contacts)

    def close(self) -> None:
        with self._lock:
            control, node = self._control, self._node
            self._control, self._node = None, None
        if control is None:
            return
        if node and os.path.isdir(control) and os.listdir(control):
            try:
                subprocess.run(self._options_for(control) + ["-O", "exit", "--", node], capture_output=True,
                               timeout=10, stdin=subprocess.DEVNULL)
            except (subprocess.TimeoutExpired, OSError):
                pass
        shutil.rmtree(control, ignore_errors=True)

    def _options_for(self, control: str) -> list[str]:
        saved, self._control = self._control, control
        try:
            return self._options()
        finally:
            self._control = saved


def _member(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.mtime = kind, mode, int(time.time())
    return member


def _last_line(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- one connection per run ------------------------------------------------------------------------

_SHARED: dict[SSHSettings, SSHTransport] = {}
_SHARED_LOCK = threading.Lock()


def ssh(settings: SSHSettings) -> SSHTransport:
    """The run's transport to these login nodes: the queues that reach the same nodes the same way share
    one connection (and one listing cache)."""
    with _SHARED_LOCK:
        if settings not in _SHARED:
            _SHARED[settings] = SSHTransport(settings)
        return _SHARED[settings]


def close_all() -> None:
    """End every connection this process opened (tests; the interpreter's exit does it too)."""
    with _SHARED_LOCK:
        transports = list(_SHARED.values())
        _SHARED.clear()
    for transport in transports:
        transport.close()


__all__ = ["CommandTimeout", "ConnectionLost", "Contact", "LocalTransport", "LoginNodesDown", "SSHConfigError",
           "SSHSettings", "SSHTransport", "StagedFile", "Transport", "TransportError", "classify", "close_all",
           "remote_command", "ssh"]
