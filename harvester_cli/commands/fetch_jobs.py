import click

from harvester_cli.commands import exit_code, pass_globals, queue_option, recorded, report


@click.command("fetch-jobs", epilog="Example: harvester-cli fetch-jobs --queue MY_PUSH_QUEUE")
@queue_option
@pass_globals
@recorded("fetch-jobs")
def command(g, queues):
    """Get jobs from PanDA for push-mode queues and store them (pull queues are skipped)."""
    from dataclasses import asdict

    from harvester_cli.steps.fetch_jobs import fetch_jobs

    result = fetch_jobs(g.instance(), g.selected(queues))
    g.items = sum(q.stored for q in result.queues)
    out = g.output()
    out.table("fetch-jobs", ["queue", "requested", "stored", "invalid", "duplicate", "note"],
              [(q.queue, q.requested, q.stored, q.invalid, q.duplicate, q.error or q.skipped) for q in result.queues])
    report(out, result.problems())
    out.emit({"queues": [asdict(q) for q in result.queues]})
    return exit_code(result.failed)
