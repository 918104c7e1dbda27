import click

from harvester_cli.commands import exit_code, pass_globals, queue_option


@click.command("submit", epilog="""Examples:

  harvester-cli submit                      # as cron runs it: plan and submit for every queue

  harvester-cli submit --dry-run --queue Q  # why (no) pilots? print the plan and its trace

  harvester-cli submit --queue Q --count 3  # exactly 3 workers to a test queue""")
@queue_option
@click.option("--dry-run", is_flag=True, help="Print the plan and its trace; submit nothing.")
@click.option("--count", type=click.IntRange(min=1), help="Submit exactly this many workers (one-off).")
@click.option("--resource-type", help="Resource type for --count (default: the queue's first).")
@click.option("--force", is_flag=True, help="With --count: ignore max_workers.")
@pass_globals
def command(g, queues, dry_run, count, resource_type, force):
    """Decide how many workers each queue needs, record them, and submit them to the backend."""
    from harvester_cli.submission import submit

    selected = g.selected(queues)
    if count is not None and len(selected) != 1:
        raise click.UsageError("--count needs exactly one --queue")
    out = g.output()
    with out.progress("submitting") as advance:
        run = submit(g.instance(), selected, dry_run=dry_run, count=count, resource_type=resource_type,
                     force=force, progress=advance)
    rows, data = [], []
    for q in run.queues:
        plan = q.plan.per_resource_type if q.plan else {}
        note = q.error or q.skipped or ("; ".join(f"{w}: {e}" for w, e in q.failed[:3]) if q.failed else "")
        rows.append((q.queue, ", ".join(f"{k}={v}" for k, v in plan.items()) or "-", len(q.submitted),
                     len(q.failed), q.adopted, q.missed, note))
        data.append({"queue": q.queue, "plan": plan, "trace": [str(s) for s in q.plan.trace] if q.plan else [],
                     "submitted": q.submitted, "failed": [{"worker_id": w, "error": e} for w, e in q.failed],
                     "adopted": q.adopted, "missed": q.missed, "skipped": q.skipped, "error": q.error})
    out.table("submit" + (" (dry run)" if dry_run else ""),
              ["queue", "plan", "submitted", "failed", "adopted", "missed", "note"], rows)
    if dry_run or g.verbosity > 0:
        for q in run.queues:
            if q.plan:
                out.line(f"{q.queue}:")
                out.lines.extend(f"  {step}" for step in q.plan.trace)
    out.emit({"dry_run": dry_run, "queues": data})
    return exit_code(run.partial)
