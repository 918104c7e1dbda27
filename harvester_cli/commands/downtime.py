import click

from harvester_cli.commands import Duration, exit_code, pass_globals, queue_option, wide_option

SEVERITIES = ("OUTAGE", "AT_RISK")   # config.downtimes.SEVERITIES, without importing it for --help


class UtcTime(click.ParamType):
    """A moment in UTC: 2026-03-01T08:00Z, '2026-03-01 08:00' (no offset: UTC), or with an offset."""

    name = "time"

    def convert(self, value, param, ctx) -> float:
        from harvester_cli.config.downtimes import parse_time

        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group("downtime", epilog="""Examples:

  harvester-cli downtime add --ce ce01.example.org --for 6h --reason "kernel update"

  harvester-cli downtime add --queue SITE_A --start 2026-03-01T08:00Z --end 2026-03-01T18:00Z --reason "power"

  harvester-cli downtime list

  harvester-cli downtime remove 3""")
def command():
    """Announce, list and withdraw downtimes of queues and CEs, kept in the state database: every host that
    shares it stops sending new workers there. Times are UTC, and every downtime has an end.

    During an OUTAGE no new worker goes to the queue or CE, nor one whose walltime would run into it; the CE
    fanout sends the workers to the queue's other CEs, a push queue down everywhere fetches no jobs, and
    running workers are left alone. AT_RISK is shown and blocks nothing. [[downtimes.scheduled]] in the
    configuration and a GOCDB feed ([downtimes] gocdb_file) add theirs.
    """


@command.command("add", epilog="""Examples:

  harvester-cli downtime add --ce ce01.example.org --for 6h --reason "kernel update"

  harvester-cli downtime add --queue SITE_A --ce ce02.example.org:9619 --end "2026-03-01 18:00" --reason "disk"

  harvester-cli downtime add --ce grid --severity AT_RISK --for 2h --reason "network work"   # a partition""")
@click.option("--queue", metavar="NAME", help="The queue (without --ce: the whole queue; with it: that CE of it).")
@click.option("--ce", metavar="CE", help="The CE: an HTCondor-CE host[:port] (a host alone: any port), an A-REX URL, "
                                         "a Slurm partition. Without --queue: for every queue that has it.")
@click.option("--start", type=UtcTime(), metavar="TIME", help="When it starts, UTC (default: now).")
@click.option("--end", type=UtcTime(), metavar="TIME", help="When it ends, UTC, e.g. 2026-03-01T18:00Z.")
@click.option("--for", "length", type=Duration(), metavar="DURATION", help="Or how long from the start: 6h, 2d.")
@click.option("--severity", type=click.Choice(SEVERITIES), default="OUTAGE", show_default=True,
              help="OUTAGE blocks new workers; AT_RISK is shown only.")
@click.option("--reason", required=True, help="Why: status, plan and the metrics show it.")
@pass_globals
def add(g, queue, ce, start, end, length, severity, reason):
    """Announce a downtime of a queue, a CE, or one CE of one queue (in the state database: every host sees it)."""
    from harvester_cli.errors import UsageError
    from harvester_cli.steps import downtimes

    if (end is None) == (length is None):
        raise UsageError("give when it ends: --end TIME or --for DURATION (one of them)")
    instance = g.instance()
    if end is None:
        import time

        end = (start if start is not None else time.time()) + length
    added = downtimes.add(instance, queue=queue, ce=ce, start=start, end=end, severity=severity, reason=reason)
    out = g.output()
    row = {**added.as_dict(added.start), "queues": downtimes.affected(added, list(instance.config.queues.values()))}
    out.line(f"downtime {added.id} added: {added.scope} {added.severity} from {row['start']} until {row['end']}: "
             f"{reason}")
    if queue is not None and queue not in instance.config.queues:
        out.line(f"(queue {queue} is not in this host's configuration: the hosts that run it see the downtime)")
    elif not row["queues"]:
        out.line(f"(no queue of this host's configuration has CE {ce}: the hosts whose queues have it see it)")
    out.emit({"downtime": row})
    return 0


@command.command("list", epilog="""Examples:

  harvester-cli downtime list                 # the selected queues' downtimes, under way or announced

  harvester-cli downtime list --all --ended   # every one, and the state database's that ended""")
@queue_option
@click.option("--all", "every", is_flag=True, help="Also those concerning no queue of this configuration.")
@click.option("--ended", is_flag=True, help="Also the state database's downtimes that have ended.")
@wide_option
@pass_globals
def list_(g, queues, every, ended, wide):
    """List the downtimes not over yet, from the state database (with their id), the configuration and the
    GOCDB feed: what, severity, from and until (UTC), the queues they concern, why; then each queue that gets
    no new worker now, and each CE the fanout leaves out."""
    from harvester_cli.output.downtimes import down_lines, downtimes_table
    from harvester_cli.steps import downtimes

    instance = g.instance()
    selected = g.selected(queues)
    rows = downtimes.listing(instance, selected, every=every, ended=ended)
    summary = downtimes.summary(instance, selected)
    out = g.output()
    out.wide_hint = "--wide"
    downtimes_table(out, "downtimes", rows, wide, ids=True)
    down_lines(out, summary)
    out.emit({"downtimes": rows, "queues_down": summary["queues_down"], "ces_down": summary["ces_down"],
              "problems": summary["problems"]})
    return 0




@command.command("remove", epilog="""Examples:

  harvester-cli downtime remove 3 4

  harvester-cli downtime remove --ended   # forget those that are over""")
@click.argument("ids", nargs=-1, type=click.IntRange(1), metavar="[ID]...")
@click.option("--ended", is_flag=True, help="Remove every downtime of the state database that has ended.")
@pass_globals
def remove(g, ids, ended):
    """Withdraw downtimes of the state database by id (`downtime list` shows them): new workers go there again
    at the next submit. The configuration's and the GOCDB feed's stay until their source drops them.

    Exit codes: 0 ok; 1 an ID is not in the state database.
    """
    from harvester_cli.errors import UsageError
    from harvester_cli.steps import downtimes

    if not ids and not ended:
        raise UsageError("name the downtimes to remove (ID..., see `harvester-cli downtime list`) or give --ended")
    instance = g.instance()
    out = g.output()
    removed, missing = downtimes.remove(instance, list(ids)) if ids else ([], [])
    forgotten = downtimes.remove_ended(instance) if ended else 0
    for downtime_id in missing:
        out.error(f"downtime {downtime_id}: not in the state database")
    if removed:
        out.line("removed: " + ", ".join(str(i) for i in removed))
    if ended:
        out.line(f"{forgotten} ended downtime(s) forgotten")
    out.emit({"removed": removed, "missing": missing, "ended_removed": forgotten})
    return exit_code(bool(missing))
