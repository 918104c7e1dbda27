import click

from harvester_cli.commands import exit_code, pass_globals, queue_option, recorded, report


@click.command("propagate", epilog="Example: harvester-cli propagate -v")
@queue_option
@pass_globals
@recorded("propagate")
def command(g, queues):
    """Heartbeat, job updates, worker updates and statistics to PanDA; take and apply PanDA's commands.

    Updates PanDA did not accept stay queued and are sent by the next run.
    """
    from dataclasses import asdict

    from harvester_cli.state import outbox
    from harvester_cli.steps.propagate import propagate

    instance = g.instance()
    out = g.output()
    with out.progress("propagating") as advance:
        run = propagate(instance, g.selected(queues), advance)
    g.items = run.jobs_sent + run.workers_sent
    pending = outbox.pending_counts(instance.store)
    out.table("propagate", ["item", "sent", "refused", "still pending"], [
        ("job updates", run.jobs_sent, run.jobs_refused, pending.get("job", 0)),
        ("worker updates", run.workers_sent, run.workers_refused, pending.get("worker", 0)),
        ("statistics (queues)", run.stats_queues, "-", "-"),
        ("commands", run.commands_applied, run.commands_received - run.commands_applied, "-"),
    ])
    out.line(f"heartbeat: {run.heartbeat}; workers to kill from PanDA: {run.kills_from_panda}; "
             f"service metrics: {run.service_metrics}")
    report(out, run.problems())
    out.emit({**asdict(run), "pending": pending})
    return exit_code(run.partial)
