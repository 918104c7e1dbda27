import click

from harvester_cli.commands import ID, Duration, one_at_a_time, pass_globals, queue_option, wide_option
from harvester_cli.model import WORKER_STATES


@click.command("workers", epilog="""Examples:

  harvester-cli workers --status failed --since 6h --ce ce1.example.org:9619

  harvester-cli workers 1042 1043            # every field of these workers, log URLs in full

  harvester-cli workers --batch-id 4711      # the workers of an HTCondor cluster (4711.0, 4711.1 ...)

  harvester-cli workers --wide | less -S     # every column, whole""")
@click.argument("worker_ids", nargs=-1, type=ID, metavar="[WORKER_ID]...")
@queue_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(WORKER_STATES), metavar="STATUS",
              help=f"Only this status (repeatable): {', '.join(WORKER_STATES)}.")
@click.option("--ce", "ces", multiple=True, metavar="CE", help="Only workers of this CE (repeatable).")
@click.option("--batch-id", "batch_ids", multiple=True, metavar="ID",
              help="Only the worker with this batch id (repeatable); an HTCondor cluster or a Slurm array job id "
                   "takes all of its workers.")
@click.option("--since", type=Duration(), metavar="DURATION", help="Only workers created within this time (90s, 15m, 6h, 2d).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@click.option("-l", "--long", "long_", is_flag=True,
              help="Every field of each worker, one block each (as WORKER_ID... does).")
@wide_option
@pass_globals
def command(g, worker_ids, queues, statuses, ces, batch_ids, since, limit, long_, wide):
    """List workers, newest first: state, CE, batch id, age, run time and diag, one line each (on a terminal,
    as wide as it is). With WORKER_ID...: every field of each, log URLs in full.

    Exit codes: 0 ok; 1 a WORKER_ID given is not in the state database (or not in the selected queues).
    """
    import time

    from harvester_cli.output.items import worker_blocks, worker_table
    from harvester_cli.state.views import list_workers

    rows = list_workers(g.instance().store, [q.name for q in g.selected(queues)], statuses,
                        max(limit, len(worker_ids)), ces=ces, since=time.time() - since if since is not None else None,
                        worker_ids=worker_ids, batch_ids=batch_ids)
    out = g.output()
    out.wide_hint = "--wide"
    if worker_ids:
        rows = one_at_a_time(out, "worker", rows, "worker_id", worker_ids, bool(queues or g.queues or statuses or ces))
    if worker_ids or long_:
        worker_blocks(out, rows)
    else:
        worker_table(out, "workers", rows, wide=wide)
    out.emit({"workers": rows})
    return 1 if out.errors else 0
