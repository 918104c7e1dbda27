import click

from harvester_cli.commands import pass_globals, queue_option


@click.command("status", epilog="Example: harvester-cli status --json | jq '.queues.MY_QUEUE.workers'")
@queue_option
@pass_globals
def command(g, queues):
    """Jobs and workers by state, per queue; every token file with its time left."""
    from harvester_cli.state.views import report_problems, status_counts

    instance = g.instance()
    names = [q.name for q in g.selected(queues)]
    counts = status_counts(instance.store, names)
    pending = instance.store.count_pending_reports()
    out = g.output()
    out.table("status", ["queue", "workers", "jobs"], [
        (q, ", ".join(f"{k}={v}" for k, v in sorted(c["workers"].items())) or "-",
         ", ".join(f"{k}={v}" for k, v in sorted(c["jobs"].items())) or "-") for q, c in counts.items()])
    out.line(f"updates waiting for PanDA: jobs={pending.get('job', 0)}, workers={pending.get('worker', 0)}")
    problems = report_problems(instance.store)
    if problems:
        out.table("updates PanDA has not accepted (retried every run)", ["kind", "id", "queue", "attempts", "last error"],
                  [(p["kind"], p["id"], p["queue"], p["attempts"], (p["last_error"] or "")[:100]) for p in problems])
    from harvester_cli.site.credentials import duration
    from harvester_cli.site.tokens import list_tokens

    tokens = list_tokens(g.config())
    if tokens:
        out.table("tokens", ["profile", "audience", "time left", "file"], [
            (t["profile"], t["audience"] or "-",
             duration(t["seconds_left"]) if t["exists"] else "missing", t["file"]) for t in tokens])
    out.emit({"queues": counts, "pending_reports": pending, "report_problems": problems, "tokens": tokens})
    return 0
