import click

from harvester_cli.commands import Duration, pass_globals, queue_option
from harvester_cli.model import WORKER_STATES


@click.command("workers", epilog="Example: harvester-cli workers --status failed --since 6h --ce ce1.example.org:9619")
@queue_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(WORKER_STATES), help="Only this status (repeatable).")
@click.option("--ce", "ces", multiple=True, metavar="CE", help="Only workers of this CE (repeatable).")
@click.option("--since", type=Duration(), metavar="DURATION", help="Only workers created within this time (90s, 15m, 6h, 2d).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@pass_globals
def command(g, queues, statuses, ces, since, limit):
    """List workers, newest first: batch id, CE, times, diag and log URLs."""
    import time

    from harvester_cli.state.views import list_workers

    rows = list_workers(g.instance().store, [q.name for q in g.selected(queues)], statuses, limit, ces=ces,
                        since=time.time() - since if since is not None else None)
    out = g.output()
    out.table("workers", ["id", "queue", "status", "type", "batch id", "CE", "submitted", "started", "ended", "diag",
                          "stdout"],
              [(w["worker_id"], w["queue"], w["status"], w["resource_type"], w["batch_id"], w["computing_element"],
                w["submit_time"], w["start_time"], w["end_time"], (w["diag"] or "")[:60] or None, w["stdout"])
               for w in rows], no_wrap=("stdout",))
    out.emit({"workers": rows})
    return 0
