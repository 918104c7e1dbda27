"""clean-logs: retention of the log directory, per class of files (worker logs, submit files, command
logs), by age and then by size, oldest first; never the files of a worker that is not final.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harvester_cli.site.logs import COMMANDS, WORKERS

CLASSES = ("workers", "submit_files", "commands")


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
    """Workers whose logs must stay: "queue/worker id" of each, and the log directories that are not at their
    usual place (workers/<day>/<queue>/<worker id>). Kept small: a site has 100k of them."""

    ids: frozenset[str] = frozenset()
    log_dirs: frozenset[str] = frozenset()

    def covers(self, worker_dir: str, queue: str, worker_id: str) -> bool:
        return f"{queue}/{worker_id}" in self.ids or worker_dir in self.log_dirs


def active_workers(rows) -> ActiveWorkers:
    """From (queue, worker id, log dir) of every worker that is not final (pending, submitted, running,
    idle): their log directories stay whatever their age or size."""
    ids, dirs = set(), set()
    for queue, worker_id, log_dir in rows:
        ids.add(f"{queue}/{worker_id}")
        if log_dir and not os.path.normpath(log_dir).endswith(f"{os.sep}{queue}{os.sep}{worker_id}"):
            dirs.add(os.path.normpath(os.path.abspath(log_dir)))
            try:
                dirs.add(os.path.realpath(log_dir))
            except OSError:
                pass
    return ActiveWorkers(frozenset(ids), frozenset(dirs))


def _walk(top: str) -> Iterator[tuple[str, os.stat_result | None]]:
    """(path, lstat) of every regular file under top, and (path, None) of every directory below it as it is
    entered; symlinks are neither followed nor listed."""
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    yield entry.path, None
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue


@dataclass
class Survey:
    """What the log tree holds, per class: the totals, and the files that may go (mtime, path, size). Files
    of active workers are counted, never listed: on a busy site they are most of the tree."""

    summaries: dict[str, ClassSummary]
    candidates: dict[str, list[tuple[float, str, int]]]
    dir_mtimes: dict[str, float]   # directories that may be removed once empty (not an active worker's)
    scanned: int = 0


def survey(log_dir: Path, active: ActiveWorkers | None, submit_patterns: Iterable[str],
           keep: Iterable[Path] = ()) -> Survey:
    """Every file of the worker tree and the command logs, by class; the files of active workers and those
    in `keep` (this process's own log) are counted and kept. `active=None` means active workers are unknown:
    the worker tree is not scanned at all."""
    patterns = tuple(submit_patterns)
    keep = {os.path.abspath(p) for p in keep}
    result = Survey({k: ClassSummary(k) for k in CLASSES}, {k: [] for k in CLASSES}, {})
    root = os.path.abspath(log_dir)

    def add(klass: str, path: str, st: os.stat_result, protected: bool) -> None:
        summary = result.summaries[klass]
        summary.files += 1
        summary.bytes += st.st_size
        if protected:
            summary.kept_active_files += 1
            summary.kept_active_bytes += st.st_size
        elif path not in keep:
            result.candidates[klass].append((st.st_mtime, path, st.st_size))

    if active is not None:
        workers_root = os.path.join(root, WORKERS)
        prefix = len(workers_root) + 1
        last: tuple[str, bool] = ("", False)   # a worker's files come one after the other
        for path, st in _walk(workers_root):
            parts = path[prefix:].split(os.sep)
            # workers/<day>/<queue>/<worker id>/...: protect by (queue, id) and by directory
            protected = False
            if len(parts) >= 3:
                worker_dir = os.path.join(workers_root, *parts[:3])
                if worker_dir != last[0]:
                    last = (worker_dir, active.covers(worker_dir, parts[1], parts[2]))
                protected = last[1]
            if st is None:
                if not protected:
                    try:
                        result.dir_mtimes[path] = os.lstat(path).st_mtime
                    except FileNotFoundError:
                        pass
                continue
            if len(parts) < 4:
                protected = False   # a file beside the worker directories belongs to no worker
            result.scanned += 1
            klass = "submit_files" if any(fnmatch.fnmatchcase(parts[-1], p) for p in patterns) else "workers"
            add(klass, path, st, protected)
    for path, st in _walk(os.path.join(root, COMMANDS)):
        if st is None or os.path.basename(path).startswith("."):
            continue   # lock files
        result.scanned += 1
        add("commands", path, st, False)
    return result


def plan_deletions(found: Survey, retention: dict[str, object], now: float) -> list[Deletion]:
    """Per class: everything older than max_age, then the oldest until the class fits in max_bytes."""
    deletions: list[Deletion] = []
    for klass, candidates in found.candidates.items():
        rule = retention.get(klass)
        summary = found.summaries[klass]
        if rule is None:
            continue
        candidates.sort()   # oldest first
        max_age = getattr(rule, "max_age", None)
        max_bytes = getattr(rule, "max_bytes", None)
        remaining = summary.bytes
        first_survivor = 0
        if max_age is not None:
            for mtime, path, size in candidates:
                if now - mtime <= max_age:
                    break
                deletions.append(Deletion(path, size, mtime, klass, "age"))
                remaining -= size
                first_survivor += 1
        if max_bytes is not None:
            for mtime, path, size in candidates[first_survivor:]:
                if remaining <= max_bytes:
                    break
                deletions.append(Deletion(path, size, mtime, klass, "size"))
                remaining -= size
            if remaining > max_bytes:
                summary.over_budget_bytes = remaining - max_bytes
        candidates.clear()
    for d in deletions:
        found.summaries[d.klass].deleted_files += 1
        found.summaries[d.klass].deleted_bytes += d.size
    return deletions


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
        if len(parts) >= 3 and active.covers(os.path.join(str(top), *parts[:3]), parts[1], parts[2]):
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
    found = survey(root, active, retention.submit_patterns, keep)
    run.scanned, run.classes = found.scanned, found.summaries
    deletions = plan_deletions(found, {k: getattr(retention, k) for k in CLASSES}, now)
    deleted: set[str] = set()   # what the empty-directory pass must count as gone (a dry run deletes nothing)
    for d in deletions:
        if not dry_run:
            try:
                os.unlink(d.path)
            except FileNotFoundError:
                pass   # another clean-logs got there first
            except OSError as exc:
                run.errors.append(f"{d.path}: {exc.strerror}")
                continue
        else:
            deleted.add(d.path)
        run.deletions.append(d)
    if active is not None:
        run.removed_dirs = _remove_empty_dirs(root / WORKERS, active, now - dir_grace, dry_run, deleted,
                                             found.dir_mtimes)
    run.seconds = time.monotonic() - started
    return run
