import click

from harvester_cli.commands import pass_globals, queue_option
from harvester_cli.model import WORKER_STATES


@click.command("workers", epilog="Example: harvester-cli workers --status failed --limit 20")
@queue_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(WORKER_STATES), help="Only this status (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@pass_globals
def command(g, queues, statuses, limit):
    """List workers, newest first: batch id, CE, times, diag and log URLs."""
    from harvester_cli.state.views import list_workers

    rows = list_workers(g.instance().store, [q.name for q in g.selected(queues)], statuses, limit)
    out = g.output()
    out.table("workers", ["id", "queue", "status", "type", "batch id", "CE", "submitted", "started", "ended", "diag",
                          "stdout"],
              [(w["worker_id"], w["queue"], w["status"], w["resource_type"], w["batch_id"], w["computing_element"],
                w["submit_time"], w["start_time"], w["end_time"], (w["diag"] or "")[:60] or None, w["stdout"])
               for w in rows])
    out.emit({"workers": rows})
    return 0
