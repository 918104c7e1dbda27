import os

import click

from harvester_cli.commands import exit_code, pass_globals, recorded


@click.command("clean-logs", epilog="Example: harvester-cli clean-logs --dry-run   # what would go, with sizes")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, with sizes; delete nothing.")
@pass_globals
@recorded("clean-logs")
def command(g, dry_run):
    """Delete old worker logs, submit files and command logs: per class by age, then the oldest until the
    class fits its size budget ([log_retention]). Logs of workers that are not final are never deleted;
    empty directories go too.
    """
    from dataclasses import asdict

    from harvester_cli.site.retention import active_workers, clean
    from harvester_cli.state.views import active_worker_logs

    instance = g.instance()
    config = instance.config
    active = None
    if instance.store_exists():
        active = active_workers(active_worker_logs(instance.store))
    keep = [g.command_log_file] if g.command_log_file else []
    run = clean(config.logs, config.log_retention, active, dry_run=dry_run, keep=keep)
    g.items = sum(c.deleted_files for c in run.classes.values())
    out = g.output()
    if dry_run:
        out.table("would delete", ["file", "class", "bytes", "age (days)", "why"],
                  [(os.path.relpath(d.path, run.root), d.klass, d.size, f"{age_days(d.mtime):.1f}", d.reason)
                   for d in run.deletions])
    out.table("clean-logs" + (" (dry run)" if dry_run else ""),
              ["class", "files", "bytes", "deleted files", "deleted bytes", "kept (active workers)", "over budget"],
              [(c.klass, c.files, c.bytes, c.deleted_files, c.deleted_bytes, c.kept_active_files,
                c.over_budget_bytes or None) for c in run.classes.values()])
    out.line(f"{run.scanned} files scanned in {run.seconds:.2f} s; "
             f"{len(run.removed_dirs)} empty director{'y' if len(run.removed_dirs) == 1 else 'ies'} "
             f"{'would be ' if dry_run else ''}removed")
    for note in run.skipped + run.errors:
        out.line(note)
    out.emit({"dry_run": dry_run, "root": str(run.root), "scanned": run.scanned, "seconds": run.seconds,
              "classes": {k: asdict(c) for k, c in run.classes.items()},
              "deletions": [{"path": str(d.path), "class": d.klass, "bytes": d.size, "mtime": d.mtime,
                             "reason": d.reason} for d in run.deletions],
              "removed_dirs": [str(p) for p in run.removed_dirs], "skipped": run.skipped, "errors": run.errors})
    return exit_code(run.partial)


def age_days(mtime: float) -> float:
    import time

    return (time.time() - mtime) / 86400
