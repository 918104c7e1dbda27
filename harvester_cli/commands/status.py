import click

from harvester_cli.commands import pass_globals, queue_option, wide_option


def _since(_ctx, _param, value: str) -> int:
    from harvester_cli.steps.monitor import parse_since

    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("status", epilog="""Examples:

  harvester-cli status                       # the last hour, every queue

  harvester-cli status --since 2d --queue Q  # two days of one queue

  harvester-cli status --json | jq '.errors[0]'""")
@queue_option
@click.option("--since", default="1h", show_default=True, callback=_since, metavar="DURATION",
              help="Window for rates, medians and errors: 30m, 1h, 6h, 2d (final workers are forgotten after "
                   "[sweep] worker_retention).")
@wide_option
@pass_globals
def command(g, queues, since, wide):
    """What the workers do: workers per queue, CE, resource type and state; over the window submitted,
    started, finished and failed per hour and the median time queued and running; the most frequent error
    codes with one example each; lost and missed workers; queued pilots retired as no longer needed (and
    those that had started when sweep came, left running); updates waiting for PanDA and the oldest one's
    age; the last run of every command on every host (a stale cron shows here) with its last failure's first
    line, and the commands running now (one running longer than its interval stands out); which login node
    answered each queue that submits through login nodes; what the batch system last said can start now per
    queue and CE (queues with free_resources); time left on each proxy and token; the downtimes under way or
    announced (what, until when, why) and the queues and CEs that get no new worker now.
    """
    from harvester_cli.output import status as show
    from harvester_cli.output.downtimes import down_lines, downtimes_table
    from harvester_cli.state import outbox
    from harvester_cli.state.schema import HISTORY_STATES
    from harvester_cli.state.views import report_problems, status_counts
    from harvester_cli.steps import downtimes
    from harvester_cli.steps.monitor import summary

    instance = g.instance()
    names = [q.name for q in g.selected(queues)]
    data = summary(instance, names, since)
    counts = status_counts(instance.store, names)
    problems = report_problems(instance.store)
    down = downtimes.summary(instance, g.selected(queues))
    window = f"last {_window(since)}"
    out = g.output()
    out.wide_hint = "--wide"
    show.workers_table(out, data, names, HISTORY_STATES, wide)
    show.jobs_table(out, counts, wide)
    if down["downtimes"]:
        downtimes_table(out, "downtimes (under way or announced)", down["downtimes"], wide)
    down_lines(out, down)
    show.window_table(out, data, window, wide)
    show.errors_table(out, data, window, wide)
    show.ce_errors_table(out, data, window, wide)
    show.lost_and_missed(out, data, window)
    show.running_table(out, data, wide)
    show.commands_table(out, data, wide)
    show.login_nodes_table(out, data, wide)
    show.free_resources_table(out, data, wide)
    show.credentials_table(out, data, wide)
    if problems:
        show.report_problems_table(out, problems, wide)
    legacy = outbox.pending_counts(instance.store)
    tokens = [{"profile": c["profile"], "file": c["file"], "audience": c["audience"], "exists": c["problem"] is None,
               "seconds_left": c["seconds_left"]} for c in data["credentials"] if c["kind"] == "token"]
    out.emit({**data, "queues": counts, "pending_reports": legacy, "report_problems": problems, "tokens": tokens,
              "downtimes": down})
    return 0


def _window(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
