"""The log directory's layout, each command's own rotating log, redaction of secrets from every log line, and
`make_dirs`, which makes the directories of the log and work trees so that no umask leaves them writable by
group or others.

Layout under `log_dir`:

    workers/<YYYY-MM-DD>/<queue>/<worker id>/   a worker's files, under one stem: pilot.out, pilot.err, pilot.log
                                                (the batch log), pilot.jdl (the submit description)
    commands/<command>.log[.N]                  each command's own log, rotated by size
    .state/                                     small state files (alert throttle); never served, never cleaned

Imported by the root command when a configuration is loaded: standard library only at module level.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import threading
from pathlib import Path

WORKERS = "workers"
COMMANDS = "commands"
STATE = ".state"

# -- secrets never reach a log line -------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_PATTERNS = (
    # PEM private keys and whole proxies (a proxy file holds a private key)
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
     "[private key redacted]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (re.compile(r'(?i)("?(?:access_token|refresh_token|id_token|client_secret|password|passphrase)"?\s*[:=]\s*"?)'
                r'[^"\s,&}]+'), r"\1[redacted]"),
    # the password of a URL (a state database named on the command line: postgresql://user:password@host/db)
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1***@"),
)


def register_secret(value: str | bytes | None) -> None:
    """Remember a secret (token, passphrase, client secret) so no log line shows it."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value and len(value.strip()) >= 4:
        with _SECRETS_LOCK:
            _SECRETS.add(value.strip())


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def command_line(args: list[str]) -> str:
    """A command line for a log's start line: bytes that are not UTF-8 (a shell's $'\\xff') written as \\xff,
    where they would stop the line (and a UTF-8 log) from being written."""
    return " ".join(os.fsencode(arg).decode("utf-8", "backslashreplace") for arg in args)


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacted; attached to every handler this program adds."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:   # a bad format string: let logging report it as usual
            return True
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            # the traceback text is formatted later from exc_info: redact it now and drop exc_info
            formatter = logging.Formatter()
            cleaned += "\n" + redact(formatter.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = cleaned, None
        return True


class ShortTracebackFormatter(logging.Formatter):
    """For the terminal: a record that carries a traceback (a library logging an exception it handled, such as
    SQLAlchemy's pool after a lost connection) is shown as its one line plus the exception's last line, unless
    `full` (-vv). The command log file keeps the whole traceback."""

    MARK = "\nTraceback (most recent call last):"

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.full = False

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.full or self.MARK not in text:
            return text
        head, _, trace = text.partition(self.MARK)
        lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
        return f"{head} ({lines[-1]}; -vv shows the traceback)" if lines else head


# -- memory use on every line (the seed's memory monitoring) -------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def memory_mb() -> float:
    """Resident set size of this process in MiB (from /proc; peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemoryFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rss = f" rss={memory_mb():.1f}MiB"
        return True


# -- directories whatever the umask ----------------------------------------------------------

# What a directory harvester-cli makes may allow: the owner writes, others may read and enter (serve-logs, a
# batch job's account) but never write: under umask 002 or 000 a group- or world-writable log or work tree
# would let any local user swap a script that runs as the account holding the proxy.
DIRECTORY_MODE = 0o755


def make_dirs(path: Path | str, leaf_mode: int = DIRECTORY_MODE) -> None:
    """Make `path` and its missing parents: the parents DIRECTORY_MODE, `path` itself `leaf_mode` (0o700 for
    secrets), each at most that whatever the umask (os.makedirs gives parents 0777 less the umask).
    Directories that exist are left as they are; one syscall when only the last level is new."""
    path = os.fspath(path)
    try:
        os.mkdir(path, leaf_mode)
        return
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise
    except FileNotFoundError:
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path:
            raise
    make_dirs(parent)
    try:
        os.mkdir(path, leaf_mode)
    except FileExistsError:   # made meanwhile by another run
        if not os.path.isdir(path):
            raise


# -- each command's own log -------------------------------------------------------------------

LINE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def command_log_path(log_dir: Path, command: str) -> Path:
    return log_dir / COMMANDS / f"{command}.log"


def _rotate(path: Path, backups: int) -> None:
    """path -> path.1 -> path.2 ...; the oldest beyond `backups` is dropped."""
    if backups <= 0:
        path.unlink(missing_ok=True)
        return
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


class _Locked:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        os.close(self.fd)


def rotate_if_full(path: Path, max_bytes: int, backups: int) -> None:
    """path -> path.1 ... when it has reached max_bytes."""
    try:
        if max_bytes and path.stat().st_size >= max_bytes:
            _rotate(path, backups)
    except FileNotFoundError:
        pass


class CommandLogHandler(logging.FileHandler):
    """Appends to one command's log. Rotation happens under an exclusive lock when a run starts, and
    while it runs once the file passes max_bytes (serve-logs runs for days): two processes never rotate
    the same file twice, and one that finds the file rotated by another simply reopens it."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.max_bytes, self.backups = max_bytes, backups
        self._failed = False
        self.lock_path = path.parent / f".{path.name.removesuffix('.log')}.lock"
        with _Locked(self.lock_path):
            rotate_if_full(path, max_bytes, backups)
            # A line holding bytes that are not UTF-8 is written with them escaped rather than lost.
            super().__init__(path, mode="a", encoding="utf-8", errors="backslashreplace")

    def emit(self, record: logging.LogRecord) -> None:
        if self.max_bytes and self.stream is not None:
            self._rotate_when_full(record)
        super().emit(record)

    def _rotate_when_full(self, record: logging.LogRecord) -> None:
        try:
            if self.stream.tell() < self.max_bytes:
                return
            with _Locked(self.lock_path):
                try:
                    same = os.stat(self.baseFilename).st_ino == os.fstat(self.stream.fileno()).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    rotate_if_full(Path(self.baseFilename), self.max_bytes, self.backups)
                self.stream.close()
                self.stream = self._open()
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord | None) -> None:
        """A log line that cannot be written (the volume full, the file gone read-only) costs that line,
        not the command: one line on stderr the first time, instead of logging's traceback for every line
        (its stderr is what cron mails)."""
        error = sys.exc_info()[1]
        if self._failed:
            return
        self._failed = True
        try:
            sys.stderr.write(f"harvester-cli: cannot write the command log {self.baseFilename}: "
                             f"{getattr(error, 'strerror', None) or error}; its lines are lost until that is "
                             "fixed\n")
        except Exception:   # noqa: BLE001 - stderr gone too: nothing left to tell
            pass

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            self.handleError(None)

    def close(self) -> None:
        try:
            super().close()
        except OSError:   # the lines still buffered could not be written either: said once already
            self.handleError(None)
            self.stream = None


def open_command_log(log_dir: Path, command: str, *, max_bytes: int, backups: int, memory: bool = False,
                     level: int = logging.INFO) -> logging.Handler:
    """A handler appending to <log_dir>/commands/<command>.log, rotated by size (see CommandLogHandler).
    Lines are appended with O_APPEND, so overlapping runs interleave whole lines."""
    path = command_log_path(log_dir, command)
    make_dirs(path.parent)
    handler = CommandLogHandler(path, max_bytes, backups)
    try:
        os.chmod(path, 0o640)
    except OSError:
        pass
    fmt = LINE_FORMAT + ("%(rss)s" if memory else "")
    handler.setFormatter(logging.Formatter(fmt))
    handler.setLevel(level)
    handler.addFilter(RedactingFilter())
    if memory:
        handler.addFilter(MemoryFilter())
    handler.name = "harvester-cli-command-log"
    return handler
