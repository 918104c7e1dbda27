import click

from harvester_cli.commands import exit_code, pass_globals, queue_option, recorded, report


@click.command("submit", epilog="""Examples:

  harvester-cli submit                      # as cron runs it: plan and submit for every queue

  harvester-cli submit --dry-run --queue Q  # why (no) pilots? print the plan and its trace

  harvester-cli submit --queue Q --count 3  # exactly 3 workers to a test queue

  harvester-cli submit --queue Q --count 1 --wait --json   # and follow it to the end (scripts)""")
@queue_option
@click.option("--dry-run", is_flag=True, help="Print the plan and its trace; submit nothing.")
@click.option("--count", type=click.IntRange(1, 100_000), help="Submit exactly this many workers (one-off); when "
              "fewer can be (max_workers, push jobs, registration), say which cap and exit 1.")
@click.option("--resource-type", help="Resource type for --count (default: the queue's first).")
@click.option("--force", is_flag=True, help="With --count: ignore max_workers.")
@click.option("--wait", is_flag=True, help="Follow the new workers (poll + propagate) until they end; exit 1 if any "
                                           "did not finish.")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, show_default=True, metavar="SECONDS",
              help="With --wait: give up after this long.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="With --wait: seconds between rounds.")
@pass_globals
@recorded("submit")
def command(g, queues, dry_run, count, resource_type, force, wait, timeout, interval):
    """Decide how many workers each queue needs, record them, and submit them to the backend."""
    from harvester_cli.output import Column, number
    from harvester_cli.steps.submit import submit

    selected = g.selected(queues)
    if count is not None and len(selected) != 1:
        raise click.UsageError("--count needs exactly one --queue")
    out = g.output()
    with out.progress("submitting") as advance:
        run = submit(g.instance(), selected, dry_run=dry_run, count=count, resource_type=resource_type,
                     force=force, progress=advance)
    g.items = sum(len(q.submitted) for q in run.queues)
    if run.interrupted:
        g.output().error(str(run.interrupted))
        return 130
    rows, data = [], []
    for q in run.queues:
        plan = q.plan.per_resource_type if q.plan else {}
        note = q.error or q.skipped or ("; ".join(f"{w}: {e}" for w, e in q.failed[:3]) if q.failed else "") \
            or q.shortfall or q.retry_problem or ""
        if q.retried or q.abandoned:   # push jobs back after a transient CE error, asked at PanDA first
            note = f"{note + '; ' if note else ''}{q.retried} job(s) to resubmit, {q.abandoned} no longer ours at PanDA"
        rows.append((q.queue, ", ".join(f"{k}={v}" for k, v in plan.items()) or "-", len(q.submitted),
                     len(q.failed), q.adopted, q.missed, note))
        data.append({"queue": q.queue, "plan": plan, "trace": [str(s) for s in q.plan.trace] if q.plan else [],
                     "submitted": q.submitted, "failed": [{"worker_id": w, "error": e} for w, e in q.failed],
                     "adopted": q.adopted, "missed": q.missed, "skipped": q.skipped, "error": q.error,
                     "shortfall": q.shortfall, "retried": q.retried, "abandoned": q.abandoned,
                     "retry_problem": q.retry_problem})
    out.table("submit" + (" (dry run)" if dry_run else ""),
              [Column("queue", cut="middle", min=12), Column("plan", min=8), number("submitted"), number("failed"),
               number("adopted", drop=2), number("missed", drop=1), Column("note", fill=True, min=16)], rows)
    if dry_run or g.verbosity > 0:
        for q in run.queues:
            if q.plan:
                out.line(f"{q.queue}:")
                for step in q.plan.trace:
                    out.line(f"  {step}")
    final = None
    if wait and not dry_run:
        from harvester_cli.steps.cycle import follow

        from harvester_cli.output import LiveLine
        from harvester_cli.output.items import wait_summary, worker_table
        from harvester_cli.state.views import list_workers

        ids = [w for q in run.queues for w in q.submitted]
        if ids:
            # one line on stderr, rewritten in place on a terminal: 30 workers: 6 running, 24 finished, 0 failed
            line = LiveLine() if not g.json and g.verbosity >= 0 else None
            try:
                final = follow(g.instance(), selected, ids, timeout=timeout, interval=interval,
                               on_round=(lambda seen: line.show(wait_summary(seen))) if line else None)
            finally:
                if line:
                    line.keep()
            worker_table(out, "workers after --wait", list_workers(g.instance().store, [q.name for q in selected],
                                                                   limit=len(ids), worker_ids=tuple(ids))[::-1])
            for w, (s, d) in sorted(final.items()):
                if s != "finished":
                    out.error(f"worker {w} ended {s}" + (f": {d}" if d else ""))
    report(out, run.problems())
    out.emit({"dry_run": dry_run, "queues": data,
              **({"workers": [{"worker_id": w, "status": s, "diag": d} for w, (s, d) in sorted(final.items())]}
                 if final else {})})
    failed = bool(final) and any(s != "finished" for s, _ in final.values())
    return max(run.exit_code, exit_code(failed))
