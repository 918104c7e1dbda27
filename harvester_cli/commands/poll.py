import click

from harvester_cli.commands import pass_globals, queue_option, recorded, report


@click.command("poll", epilog="Example: harvester-cli poll --queue MY_QUEUE")
@queue_option
@pass_globals
@recorded("poll")
def command(g, queues):
    """Check active workers at their backend; record state changes and, in push mode, final job states."""
    from harvester_cli.steps.poll import poll

    out = g.output()
    with out.progress("polling") as advance:
        run = poll(g.instance(), g.selected(queues), advance)
    g.items = sum(q.checked for q in run.queues)
    out.table("poll", ["queue", "checked", "changes", "jobs final", "kill requested", "error"],
              [(q.queue, q.checked, ", ".join(f"{k}={v}" for k, v in sorted(q.changes.items())) or "-",
                q.jobs_final, q.kill_requested, q.error) for q in run.queues])
    report(out, run.problems())
    out.emit({"queues": [{"queue": q.queue, "checked": q.checked, "changes": dict(q.changes),
                          "jobs_final": q.jobs_final, "kill_requested": q.kill_requested, "error": q.error}
                         for q in run.queues]})
    return run.exit_code
