import click

from harvester_cli.commands import pass_globals, queue_option
from harvester_cli.model import JOB_STATES, JOB_SUB_STATES


@click.command("jobs", epilog="Example: harvester-cli jobs --status failed --json")
@queue_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(JOB_STATES + JOB_SUB_STATES),
              help="Only this status or sub-status (repeatable).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@pass_globals
def command(g, queues, statuses, limit):
    """List push-mode jobs, newest first: state, worker, batch id, CE, times, diag and log URL."""
    from harvester_cli.state.views import list_jobs

    rows = list_jobs(g.instance().store, [q.name for q in g.selected(queues)], statuses, limit)
    out = g.output()
    out.table("jobs", ["PandaID", "queue", "status", "step", "worker", "batch id", "CE", "modified", "diag", "log"],
              [(j["panda_id"], j["queue"], j["status"], j["sub_status"], j["worker_id"], j["batch_id"],
                j["computing_element"], j["modified"], (j["diag"] or "")[:60] or None, j["log"]) for j in rows],
              no_wrap=("log",))
    out.emit({"jobs": rows})
    return 0
