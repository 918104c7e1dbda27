import click

from harvester_cli.commands import exit_code, pass_globals, queue_option


@click.command("poll", epilog="Example: harvester-cli poll --queue MY_QUEUE")
@queue_option
@pass_globals
def command(g, queues):
    """Check active workers at their backend; record state changes and, in push mode, final job states."""
    from harvester_cli.steps.poll import poll

    out = g.output()
    with out.progress("polling") as advance:
        run = poll(g.instance(), g.selected(queues), advance)
    out.table("poll", ["queue", "checked", "changes", "jobs final", "kill requested", "error"],
              [(q.queue, q.checked, ", ".join(f"{k}={v}" for k, v in sorted(q.changes.items())) or "-",
                q.jobs_final, q.kill_requested, q.error) for q in run.queues])
    for problem in run.problems():
        out.error(problem)
    out.emit({"queues": [{"queue": q.queue, "checked": q.checked, "changes": dict(q.changes),
                          "jobs_final": q.jobs_final, "kill_requested": q.kill_requested, "error": q.error}
                         for q in run.queues]})
    return exit_code(run.partial)
