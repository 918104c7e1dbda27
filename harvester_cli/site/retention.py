"""clean-logs: retention of the log directory, per class of files (worker logs, submit files, command
logs), by age and then by size, oldest first; never the files of a worker that is not final.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harvester_cli.site.logs import COMMANDS, WORKERS

CLASSES = ("workers", "submit_files", "commands")


@dataclass(slots=True)
class LogFile:
    path: str                 # a str, not a Path: a tree of 100k workers' logs holds 400k of them
    size: int
    mtime: float
    klass: str
    active: bool = False      # belongs to a worker that is not final: never deleted


@dataclass(slots=True)
class Deletion:
    path: str
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


def active_workers(rows) -> ActiveWorkers:
    """From (queue, worker id, log dir) of every worker that is not final (pending, submitted, running,
    idle): their log directories stay whatever their age or size."""
    dirs, ids = set(), set()
    for queue, worker_id, log_dir in rows:
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
            files.append(LogFile(path, st.st_size, st.st_mtime, klass, protected))
    for path, st in _walk_files(root / COMMANDS):
        if os.path.basename(path).startswith("."):
            continue   # lock files
        files.append(LogFile(path, st.st_size, st.st_mtime, "commands"))
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
                            key=lambda f: (f.mtime, f.path))
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
        deleted.add(d.path)
        run.deletions.append(d)
    if active is not None:
        run.removed_dirs = _remove_empty_dirs(root / WORKERS, active, now - dir_grace, dry_run, deleted,
                                             dir_mtimes)
    run.seconds = time.monotonic() - started
    return run
