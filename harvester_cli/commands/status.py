import click

from harvester_cli.commands import pass_globals, queue_option


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
@pass_globals
def command(g, queues, since):
    """What the workers do: workers per queue, CE, resource type and state; over the window submitted,
    started, finished and failed per hour and the median time queued and running; the most frequent error
    codes with one example each; lost and missed workers; updates waiting for PanDA and the oldest one's
    age; the last run of every command on every host (a stale cron shows here); time left on each proxy
    and token.
    """
    from harvester_cli.model import duration
    from harvester_cli.state import outbox
    from harvester_cli.state.schema import HISTORY_STATES
    from harvester_cli.state.views import report_problems, status_counts
    from harvester_cli.steps.monitor import summary

    instance = g.instance()
    names = [q.name for q in g.selected(queues)]
    data = summary(instance, names, since)
    out = g.output()
    out.table("workers", ["queue", "CE", "type", *HISTORY_STATES, "total"],
              [(w["queue"], w["computing_element"] or "-", w["resource_type"] or "-",
                *(w["states"].get(s, 0) for s in HISTORY_STATES), w["total"]) for w in data["workers"]])
    counts = status_counts(instance.store, names)
    out.table("jobs", ["queue", "jobs (status/step)"],
              [(q, ", ".join(f"{k}={v}" for k, v in sorted(c["jobs"].items())) or "-") for q, c in counts.items()])
    window = f"last {_window(since)}"
    out.table(f"{window}: per hour, and median times", ["queue", "CE", "type", "submitted/h", "started/h",
                                                        "finished/h", "failed/h", "median queued", "median running"],
              [(w["queue"], w["computing_element"] or "-", w["resource_type"] or "-",
                *(w["per_hour"][k] for k in ("submitted", "started", "finished", "failed")),
                duration(w["median_queued_seconds"]), duration(w["median_running_seconds"]))
               for w in data["window_stats"]])
    out.table(f"{window}: most frequent errors", ["code", "meaning", "workers", "example worker", "example diag"],
              [(e["code"], e["meaning"], e["count"], f'{e["example"]["worker_id"]} ({e["example"]["queue"]})',
                e["example"]["diag"][:80] or None) for e in data["errors"]])
    for kind in ("lost", "missed"):
        found = data[kind]
        latest = ", ".join(f'{w["worker_id"]} ({w["queue"]}, {w["computing_element"] or "no CE"})'
                           for w in found["latest"][:5])
        out.line(f"{window}: {found['count']} {kind} worker(s)" + (f", latest: {latest}" if latest else ""))
    pending = data["pending_updates"]
    out.line("updates waiting for PanDA: " + ", ".join(
        f"{kind}s={p['count']}" + (f" (oldest {duration(p['oldest_age_seconds'])})" if p["oldest_age_seconds"] else "")
        for kind, p in pending.items()))
    out.table("command runs", ["command", "host", "last success", "last run", "exit", "items", "seconds"],
              [(r["command"], r["host"],
                f'{duration(r["since_last_success_seconds"])} ago' if r["last_success"] else "never",
                f'{duration(r["since_last_run_seconds"])} ago', r["last_exit"], r["last_items"], r["last_seconds"])
               for r in data["commands"]])
    out.table("credentials", ["kind", "profile", "audience", "file", "time left", "problem"],
              [(c["kind"], c["profile"], c["audience"], c["file"], duration(c["seconds_left"]), c["problem"])
               for c in data["credentials"]])
    problems = report_problems(instance.store)
    if problems:
        out.table("updates PanDA has not accepted (retried every run)", ["kind", "id", "queue", "attempts", "last error"],
                  [(p["kind"], p["id"], p["queue"], p["attempts"], (p["last_error"] or "")[:100]) for p in problems])
    legacy = outbox.pending_counts(instance.store)
    tokens = [{"profile": c["profile"], "file": c["file"], "audience": c["audience"], "exists": c["problem"] is None,
               "seconds_left": c["seconds_left"]} for c in data["credentials"] if c["kind"] == "token"]
    out.emit({**data, "queues": counts, "pending_reports": legacy, "report_problems": problems, "tokens": tokens})
    return 0


def _window(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
