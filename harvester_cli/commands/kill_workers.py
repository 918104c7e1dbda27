import click

from harvester_cli.commands import ID, Duration, exit_code, pass_globals, queue_option
from harvester_cli.model import WORKER_ACTIVE


@click.command("kill-workers", epilog="""Examples:

  harvester-cli kill-workers --queue Q --ce ce2.example.org:9619 --dry-run   # what would be killed

  harvester-cli kill-workers --worker 1201 --worker 1202 --reason "bad node" --now

  harvester-cli kill-workers --queue Q --status submitted --older-than 12h""")
@queue_option
@click.option("--worker", "worker_ids", multiple=True, type=ID, metavar="ID",
              help="This worker (repeatable).")
@click.option("--ce", "ces", multiple=True, metavar="CE", help="Workers of this CE (repeatable).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(WORKER_ACTIVE),
              help="Workers in this state (repeatable). Default: submitted, running and idle.")
@click.option("--older-than", type=Duration(), metavar="DURATION", help="Workers created longer ago than this (6h, 2d).")
@click.option("--reason", default="requested by an operator", show_default=True,
              help="Why: kept in the worker's diag and sent to PanDA.")
@click.option("--dry-run", is_flag=True, help="List the workers that match; mark nothing.")
@click.option("--force", is_flag=True, help="Mark even more workers than sweep.max_kills_per_run.")
@click.option("--now", is_flag=True, help="Run sweep's kill for these queues right away instead of waiting for cron.")
@pass_globals
def command(g, queues, worker_ids, ces, statuses, older_than, reason, dry_run, force, now):
    """Mark workers for killing: the next `sweep` kills them at their backend and reports them (and their
    push jobs) to PanDA. Every filter given must match; at least one of --queue, --worker, --ce, --status
    or --older-than is needed.

    Exit codes: 0 marked (or listed), 1 refused by the cap, a kill failed or a --worker id matched nothing
    (no such worker, another queue's, not matching the other filters), 2 bad usage.
    """
    if not (queues or g.queues or worker_ids or ces or statuses or older_than is not None):
        raise click.UsageError("name the workers: --queue, --worker, --ce, --status or --older-than "
                               "(use --dry-run to see what matches)")
    from harvester_cli.steps.sweep import mark_for_kill, sweep

    instance = g.instance()
    selected = g.selected(queues)
    marks = mark_for_kill(instance, [q.name for q in selected], worker_ids=worker_ids, ces=ces, statuses=statuses,
                          older_than=older_than, reason=reason, force=force, dry_run=dry_run)
    out = g.output()
    out.table("kill-workers" + (" (dry run)" if dry_run else ""), ["worker", "queue", "status", "CE"],
              [(w["worker_id"], w["queue"], w["status"], w["computing_element"]) for w in marks.matched])
    for line in marks.unmatched:
        out.error(line)
    for done in marks.done:
        out.line(done)
    if marks.refused:
        out.error(marks.refused)
    elif not dry_run:
        out.line(f"{marks.marked} worker(s) marked for killing"
                 + ("" if now else "; `harvester-cli sweep` kills them (cron runs it)"))
    killed, code = None, 0
    if now and marks.marked:
        run = sweep(instance, [q for q in selected if q.name in {w["queue"] for w in marks.matched}],
                    force=force, retention=None)
        killed = sum(q.killed for q in run.queues)
        out.line(f"killed now: {killed}")
        for problem in run.problems():
            out.error(problem)
        code = run.exit_code
    out.emit({"dry_run": dry_run, "matched": marks.matched, "marked": marks.marked, "refused": marks.refused,
              "unmatched": marks.unmatched, "done": marks.done, "killed": killed})
    return max(code, exit_code(bool(out.errors)))

