import click

from harvester_cli.commands import ID, one_at_a_time, pass_globals, queue_option, wide_option
from harvester_cli.model import JOB_STATES, JOB_SUB_STATES


@click.command("jobs", epilog="""Examples:

  harvester-cli jobs --status failed --json

  harvester-cli jobs 6400123456        # every field of this job and each of its workers""")
@click.argument("panda_ids", nargs=-1, type=ID, metavar="[PANDAID]...")
@queue_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(JOB_STATES + JOB_SUB_STATES), metavar="STATUS",
              help=f"Only this status or sub-status (repeatable): {', '.join(JOB_STATES + JOB_SUB_STATES)}.")
@click.option("--panda-id", "panda_id_filter", multiple=True, type=ID, metavar="PANDAID",
              help="Only this job (repeatable), one row each.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@click.option("-l", "--long", "long_", is_flag=True,
              help="Every field of each job, one block each (as PANDAID... does).")
@wide_option
@pass_globals
def command(g, panda_ids, queues, statuses, panda_id_filter, limit, long_, wide):
    """List push-mode jobs, newest first: status, step, worker, CE, attempt, age and diag, one line each (on a
    terminal, as wide as it is). With PANDAID...: every field of each job and its workers, log URLs in full.

    Exit codes: 0 ok; 1 a PANDAID given is not in the state database (or not in the selected queues).
    """
    from harvester_cli.output.items import job_blocks, job_table
    from harvester_cli.panda.jobs import PandaJob
    from harvester_cli.state.views import list_jobs

    blocks = bool(panda_ids) or long_
    wanted = tuple(dict.fromkeys(panda_ids + panda_id_filter))
    rows = list_jobs(g.instance().store, [q.name for q in g.selected(queues)], statuses, max(limit, len(wanted)),
                     panda_ids=wanted, description=blocks)
    out = g.output()
    out.wide_hint = "--wide"
    if panda_ids:
        rows = one_at_a_time(out, "job", rows, "panda_id", panda_ids, bool(queues or g.queues or statuses))
    if blocks:
        for row in rows:   # what the operator reads of the job dict; the dict itself may hold secrets
            job = PandaJob.from_json(row.pop("job_json"))
            row["description"] = {"name": job.name, "task_id": job.task_id}
        job_blocks(out, rows)
    else:
        job_table(out, "jobs", rows, wide=wide)
    out.emit({"jobs": rows})
    return 1 if out.errors else 0
