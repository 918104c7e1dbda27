import click

from harvester_cli.commands import pass_globals, queue_option, recorded, report


@click.command("sweep", epilog="Example: harvester-cli sweep --queue MY_QUEUE --force")
@queue_option
@click.option("--force", is_flag=True, help="Kill even when more workers are marked than sweep.max_kills_per_run.")
@click.option("--retention", type=click.IntRange(min=0), metavar="SECONDS",
              help="Forget final workers and done jobs older than this (default: from the configuration).")
@pass_globals
@recorded("sweep")
def command(g, queues, force, retention):
    """Kill workers marked for killing (by PanDA, by poll's policies, or by an operator with kill-workers),
    retire queued pilots submit marked as no longer needed (removed only while still queued: one that started
    is left running); forget old final workers and done jobs."""
    from dataclasses import asdict

    from harvester_cli.steps.sweep import sweep

    run = sweep(g.instance(), g.selected(queues), force=force, retention=retention)
    g.items = sum(q.killed + q.retired + q.cleaned for q in run.queues)
    out = g.output()
    out.table("sweep", ["queue", "to kill", "killed", "retired", "left running", "kill failed", "cleaned workers",
                        "deleted jobs", "note"],
              [(q.queue, q.to_kill, q.killed, q.retired, q.retire_started, len(q.kill_failed), q.cleaned,
                q.jobs_deleted, q.refused or "; ".join(f"{w}: {e}" for w, e in q.kill_failed[:3]))
               for q in run.queues])
    out.line(f"history: {run.history_trimmed} snapshot rows older than the retention deleted")
    report(out, run.problems())
    out.emit({"queues": [asdict(q) for q in run.queues], "history_trimmed": run.history_trimmed})
    return run.exit_code
