"""The log directory: its layout, each command's own rotating log, and retention (clean-logs).

Layout under `log_dir`:

    workers/<YYYY-MM-DD>/<queue>/<worker id>/   a worker's files: pilot.out, pilot.err, batch.log, submit files
    commands/<command>.log[.N]                  each command's own log, rotated by size
    .state/                                     small state files (alert throttle); never served, never cleaned

Imported by the root command when a configuration is loaded: standard library only at module level.
"""

from __future__ import annotations

import fcntl
import fnmatch
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
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


def _rotate_if_full(path: Path, max_bytes: int, backups: int) -> None:
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
        self.lock_path = path.parent / f".{path.name.removesuffix('.log')}.lock"
        with _Locked(self.lock_path):
            _rotate_if_full(path, max_bytes, backups)
            super().__init__(path, mode="a", encoding="utf-8")

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
                    _rotate_if_full(Path(self.baseFilename), self.max_bytes, self.backups)
                self.stream.close()
                self.stream = self._open()
        except Exception:
            self.handleError(record)


def open_command_log(log_dir: Path, command: str, *, max_bytes: int, backups: int, memory: bool = False,
                     level: int = logging.INFO) -> logging.Handler:
    """A handler appending to <log_dir>/commands/<command>.log, rotated by size (see CommandLogHandler).
    Lines are appended with O_APPEND, so overlapping runs interleave whole lines."""
    path = command_log_path(log_dir, command)
    path.parent.mkdir(parents=True, exist_ok=True)
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


# -- retention (clean-logs) --------------------------------------------------------------------

CLASSES = ("workers", "submit_files", "commands")


@dataclass
class LogFile:
    path: Path
    size: int
    mtime: float
    klass: str
    active: bool = False      # belongs to a worker that is not final: never deleted


@dataclass
class Deletion:
    path: Path
    size: int
    mtime: float
    klass: str
    reason: str               # "age" or "size"


@dataclass
class ClassSummary:
    klass: str
    files: int = 0
    bytes: int = 0
    deleted_files: int = 0
    deleted_bytes: int = 0
    kept_active_files: int = 0
    kept_active_bytes: int = 0
    over_budget_bytes: int = 0   # still above max_bytes after deleting everything allowed


@dataclass
class CleanRun:
    root: Path
    dry_run: bool
    deletions: list[Deletion] = field(default_factory=list)
    classes: dict[str, ClassSummary] = field(default_factory=dict)
    removed_dirs: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # whole classes left alone, and why
    scanned: int = 0
    seconds: float = 0.0

    @property
    def partial(self) -> bool:
        return bool(self.errors)


@dataclass(frozen=True)
class ActiveWorkers:
    """Workers whose logs must stay: their log directories and (queue, worker id) pairs."""

    log_dirs: frozenset[str] = frozenset()
    ids: frozenset[tuple[str, str]] = frozenset()

    def covers(self, worker_dir: Path, queue: str, worker_id: str) -> bool:
        return str(worker_dir) in self.log_dirs or (queue, worker_id) in self.ids


def active_workers(store) -> ActiveWorkers:
    """Read, through the store and read-only, which workers are not final (pending, submitted, running,
    idle): their log directories stay whatever their age or size."""
    from sqlalchemy import select

    from harvester_cli import model
    from harvester_cli.store import workers

    dirs, ids = set(), set()
    with store.read() as conn:
        for queue, worker_id, log_dir in conn.execute(
                select(workers.c.queue, workers.c.worker_id, workers.c.log_dir)
                .where(workers.c.status.not_in(model.WORKER_FINAL))):
            ids.add((queue, str(worker_id)))
            if log_dir:
                dirs.add(os.path.normpath(os.path.abspath(log_dir)))
                try:
                    dirs.add(os.path.realpath(log_dir))
                except OSError:
                    pass
    return ActiveWorkers(frozenset(dirs), frozenset(ids))


def _walk_files(top: Path, dir_mtimes: dict[str, float] | None = None) -> Iterable[tuple[str, os.stat_result]]:
    """(path, lstat) of every regular file under top; symlinks are neither followed nor listed.
    `dir_mtimes` collects the modification time of every directory below top, as found."""
    stack = [str(top)]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    if dir_mtimes is not None:
                        dir_mtimes[entry.path] = entry.stat(follow_symlinks=False).st_mtime
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue


def scan(log_dir: Path, active: ActiveWorkers | None, submit_patterns: Iterable[str],
         dir_mtimes: dict[str, float] | None = None) -> list[LogFile]:
    """Every file of the worker tree and the command logs, with its class and whether it is protected.

    `active=None` means active workers are unknown: the worker tree is not scanned at all."""
    patterns = tuple(submit_patterns)
    files: list[LogFile] = []
    root = Path(os.path.abspath(log_dir))
    workers_root = root / WORKERS
    if active is not None:
        prefix = len(str(workers_root)) + 1
        for path, st in _walk_files(workers_root, dir_mtimes):
            parts = path[prefix:].split(os.sep)
            # workers/<day>/<queue>/<worker id>/...: protect by directory and by (queue, id)
            protected = False
            if len(parts) >= 4:
                worker_dir = os.path.join(str(workers_root), *parts[:3])
                protected = active.covers(Path(worker_dir), parts[1], parts[2])
            name = parts[-1]
            klass = "submit_files" if any(fnmatch.fnmatchcase(name, p) for p in patterns) else "workers"
            files.append(LogFile(Path(path), st.st_size, st.st_mtime, klass, protected))
    for path, st in _walk_files(root / COMMANDS):
        if os.path.basename(path).startswith("."):
            continue   # lock files
        files.append(LogFile(Path(path), st.st_size, st.st_mtime, "commands"))
    return files


def plan_deletions(files: list[LogFile], retention: dict[str, object], now: float,
                   keep: Iterable[Path] = ()) -> tuple[list[Deletion], dict[str, ClassSummary]]:
    """Per class: everything older than max_age, then the oldest until the class fits in max_bytes.
    Files of active workers and the files in `keep` (this process's own open log) are never chosen."""
    keep = {os.path.abspath(p) for p in keep}
    deletions: list[Deletion] = []
    summaries: dict[str, ClassSummary] = {}
    by_class: dict[str, list[LogFile]] = {k: [] for k in CLASSES}
    for f in files:
        by_class.setdefault(f.klass, []).append(f)
    for klass, members in by_class.items():
        rule = retention.get(klass)
        summary = summaries[klass] = ClassSummary(klass)
        summary.files = len(members)
        summary.bytes = sum(f.size for f in members)
        summary.kept_active_files = sum(1 for f in members if f.active)
        summary.kept_active_bytes = sum(f.size for f in members if f.active)
        candidates = sorted((f for f in members if not (f.active or os.path.abspath(f.path) in keep)),
                            key=lambda f: (f.mtime, str(f.path)))
        if rule is None:
            continue
        max_age = getattr(rule, "max_age", None)
        max_bytes = getattr(rule, "max_bytes", None)
        remaining = summary.bytes
        survivors = []
        for f in candidates:
            if max_age is not None and now - f.mtime > max_age:
                deletions.append(Deletion(f.path, f.size, f.mtime, klass, "age"))
                remaining -= f.size
            else:
                survivors.append(f)
        if max_bytes is not None:
            for f in survivors:   # oldest first
                if remaining <= max_bytes:
                    break
                deletions.append(Deletion(f.path, f.size, f.mtime, klass, "size"))
                remaining -= f.size
            if remaining > max_bytes:
                summary.over_budget_bytes = remaining - max_bytes
    for d in deletions:
        summaries[d.klass].deleted_files += 1
        summaries[d.klass].deleted_bytes += d.size
    return deletions, summaries


now_inf = float("inf")


def _remove_empty_dirs(top: Path, active: ActiveWorkers, older_than: float, dry_run: bool,
                       deleted: set[str], dir_mtimes: dict[str, float]) -> list[Path]:
    """Empty directories under top (not top itself), deepest first. A directory is removed only when it
    was old when scanned (changed before `older_than`: today's tree, where submit creates new worker
    directories, stays) and does not belong to an active worker."""
    removed: list[Path] = []
    prefix = len(str(top)) + 1
    for directory, subdirs, names in os.walk(top, topdown=False):
        if directory == str(top):
            continue
        parts = directory[prefix:].split(os.sep)
        if len(parts) >= 3 and active.covers(Path(os.path.join(str(top), *parts[:3])), parts[1], parts[2]):
            continue
        left = [n for n in names if os.path.join(directory, n) not in deleted]
        left_dirs = [d for d in subdirs if os.path.join(directory, d) not in deleted]
        if left or left_dirs:
            continue
        if dir_mtimes.get(directory, now_inf) > older_than:
            continue   # new since the scan, or changed recently
        if not dry_run:
            try:
                os.rmdir(directory)
            except OSError:   # not empty any more (a new file), or gone
                continue
        deleted.add(directory)
        removed.append(Path(directory))
    return removed


def clean(log_dir: Path, retention, active: ActiveWorkers | None, *, dry_run: bool = False,
          now: float | None = None, keep: Iterable[Path] = (), dir_grace: float = 3600.0) -> CleanRun:
    """Apply the retention rules of `retention` (a LogRetentionConfig) to the log tree.

    `active=None`: active workers are unknown, so the worker tree is left alone entirely."""
    started = time.monotonic()
    now = time.time() if now is None else now
    root = Path(os.path.abspath(log_dir))
    run = CleanRun(root, dry_run)
    if active is None:
        run.skipped.append("workers and submit_files: active workers unknown (no state database); nothing deleted")
    dir_mtimes: dict[str, float] = {}
    files = scan(root, active, retention.submit_patterns, dir_mtimes)
    run.scanned = len(files)
    rules = {k: getattr(retention, k) for k in CLASSES}
    deletions, run.classes = plan_deletions(files, rules, now, keep)
    deleted: set[str] = set()
    for d in deletions:
        if not dry_run:
            try:
                os.unlink(d.path)
            except FileNotFoundError:
                pass   # another clean-logs got there first
            except OSError as exc:
                run.errors.append(f"{d.path}: {exc.strerror}")
                continue
        deleted.add(str(d.path))
        run.deletions.append(d)
    if active is not None:
        run.removed_dirs = _remove_empty_dirs(root / WORKERS, active, now - dir_grace, dry_run, deleted,
                                             dir_mtimes)
    run.seconds = time.monotonic() - started
    return run
