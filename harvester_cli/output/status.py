"""How `status` reads: its tables in the narrow form a terminal of 80 columns holds (short CE and host
names, ages, short state headers, the least telling columns left out first), or whole (`--wide`). The data
is steps.monitor.summary's; nothing here reads the state database."""

from __future__ import annotations

from harvester_cli import model
from harvester_cli.output import Column, Output, exit_style, number, short_names

# A state's column: short on a terminal, the first to go when no worker is in it.
_SHORT = {"pending": "pend", "submitted": "subm", "running": "run", "idle": "idle", "finished": "fin",
          "failed": "fail", "cancelled": "canc", "missed": "miss"}
# Left out first on a narrow terminal (highest first): states that say least about what runs now.
_DROP = {"pending": 6, "submitted": 0, "running": 0, "idle": 7, "finished": 2, "failed": 0, "cancelled": 5,
         "missed": 3}
_STATE_COLOURS = {"running": "green", "failed": "red", "missed": "red", "cancelled": "yellow"}


def _coloured(state: str):
    colour = _STATE_COLOURS.get(state)
    return (lambda text: colour if text not in ("0", "-") else None) if colour else None


def workers_table(out: Output, data: dict, queues: list[str], states: tuple[str, ...], wide: bool) -> None:
    """Workers per queue, CE, resource type and state; a queue without any, as a row of zeros."""
    rows = data["workers"]
    rows = rows + [{"queue": q, "computing_element": "", "resource_type": "", "states": {}, "total": 0}
                   for q in queues if q not in {w["queue"] for w in rows}]
    ces = _names([w["computing_element"] for w in rows], wide)
    used = {s for w in rows for s, n in w["states"].items() if n}
    columns = [Column("queue", cut="middle", min=12), Column("CE", cut="middle", min=6, max=20, drop=1),
               Column("type", cut="never", drop=4)]
    columns += [number(s if wide else _SHORT[s], drop=_DROP[s] if s in used else 9, style=_coloured(s))
                for s in states]
    columns.append(number("total"))
    out.table("workers", columns, [(w["queue"], ces.get(w["computing_element"]) or "-", w["resource_type"] or "-",
                                    *(w["states"].get(s, 0) for s in states), w["total"]) for w in rows], fit=not wide)


# A push job's way through harvester-cli (its sub_status), and the jobs PanDA was told failed.
_STEPS = ("fetched", "retry", "submitted", "running", "reporting", "done")


def jobs_table(out: Output, counts: dict, wide: bool) -> None:
    """Push jobs per queue and step (fetched: waiting for a worker), and how many of them failed."""
    rows = []
    for queue, c in counts.items():
        if not c["jobs"]:
            continue
        steps = {s: 0 for s in _STEPS}
        failed = 0
        for key, n in c["jobs"].items():
            status, _, step = key.partition("/")
            steps[step] = steps.get(step, 0) + n
            failed += n if status == "failed" else 0
        rows.append((queue, *steps.values(), failed, sum(c["jobs"].values())))
    out.table("push jobs", [Column("queue", cut="middle", min=12), *(number(s) for s in _STEPS),
                            number("failed", style=lambda t: "red" if t != "0" else None), number("total")],
              rows, fit=not wide)


def window_table(out: Output, data: dict, window: str, wide: bool) -> None:
    rows = data["window_stats"]
    ces = _names([w["computing_element"] for w in rows], wide)
    span = model.duration if wide else model.age
    out.table(f"{window}: per hour, and median times", [
        Column("queue", cut="middle", min=12), Column("CE", cut="middle", min=6, max=20, drop=2),
        Column("type", cut="never", drop=3), number("submitted/h" if wide else "sub/h"),
        number("started/h" if wide else "start/h", drop=1), number("finished/h" if wide else "fin/h"),
        number("failed/h" if wide else "fail/h", style=lambda t: "red" if t not in ("0", "-") else None),
        number("median queued" if wide else "queued"), number("median running" if wide else "running"),
    ], [(w["queue"], ces.get(w["computing_element"]) or "-", w["resource_type"] or "-",
         *(w["per_hour"][k] for k in ("submitted", "started", "finished", "failed")),
         span(w["median_queued_seconds"]), span(w["median_running_seconds"])) for w in rows], fit=not wide)


def errors_table(out: Output, data: dict, window: str, wide: bool) -> None:
    out.table(f"{window}: most frequent errors", [
        number("code"), Column("meaning", min=16, max=32), number("workers"), number("example"),
        Column("queue", cut="middle", min=8, drop=1), Column("diag of the example", fill=True, min=20),
    ], [(e["code"], e["meaning"], e["count"], e["example"]["worker_id"], e["example"]["queue"],
         e["example"]["diag"] or None) for e in data["errors"]], fit=not wide)


def ce_errors_table(out: Output, data: dict, window: str, wide: bool) -> None:
    """The workers that ended with an error, per queue, CE and error code (the CE's own error when its table
    knows it), and whether the error is transient (a push job then gets a new worker if it never started)."""
    rows = data.get("ce_errors") or []
    ces = _names([r["computing_element"] for r in rows], wide)
    out.table(f"{window}: errors per CE", [
        Column("queue", cut="middle", min=8), Column("CE", cut="middle", min=6, max=24, drop=1), number("code"),
        Column("meaning", fill=True, min=16), Column("transient", cut="never", drop=2), number("workers"),
    ], [(r["queue"], ces.get(r["computing_element"]) or "-", r["code"], r["meaning"], "yes" if r["transient"] else "no",
         r["count"]) for r in rows], fit=not wide)


def lost_and_missed(out: Output, data: dict, window: str) -> None:
    for kind in ("lost", "missed"):
        found = data[kind]
        latest = [str(w["worker_id"]) for w in found["latest"][:5]]
        out.line(f"{window}: {found['count']} {kind} worker(s)" + (f", latest {', '.join(latest)}" if latest else ""))
    retired = data["retired"]
    latest = [str(w["worker_id"]) for w in retired["latest"][:5]]
    out.line(f"{window}: {retired['count']} queued pilot(s) retired as no longer needed"
             + (f", latest {', '.join(latest)}" if latest else "")
             + f" (all counted: {retired['total']} retired, {retired['started_during_removal']} had started "
               "when sweep came and were left running)")
    pending = data["pending_updates"]
    out.line("updates waiting for PanDA: " + ", ".join(
        f"{kind}s={p['count']}" + (f" (oldest {model.duration(p['oldest_age_seconds'])})" if p["oldest_age_seconds"]
                                   else "") for kind, p in pending.items()))


def _ago(seconds: float | None, wide: bool) -> str | None:
    if seconds is None:
        return None
    return f"{model.duration(seconds) if wide else model.age(seconds)} ago"


def commands_table(out: Output, data: dict, wide: bool) -> None:
    """Each command's last run per host (a stale cron shows here), then the first line of each command's last
    failure, as prose (wrapped at words: it is what the operator came to read)."""
    runs = data["commands"]
    hosts = _names([r["host"] for r in runs], wide)
    out.table("command runs", [
        Column("command", cut="never"), Column("host", cut="middle", min=8, max=20, drop=2),
        Column("last run", align=">", cut="never"), number("took", drop=1),
        Column("exit", cut="never", style=exit_style),
        Column("last ok", align=">", cut="never", drop=3, style=lambda t: "red" if t == "never" else None),
        number("runs", drop=5), number("failed", drop=4),
    ], [(r["command"], hosts.get(r["host"]), _ago(r["since_last_run_seconds"], wide), f"{r['last_seconds']:.1f}s",
         r["last_exit"], _ago(r["since_last_success_seconds"], wide) or "never", r["runs"], r["failed_runs"])
        for r in runs], fit=not wide)
    failed = sorted((r for r in runs if r["last_failure_at"]), key=lambda r: r["since_last_failure_seconds"])
    if failed:
        out.line("last failure of each command:")
    for r in failed:
        out.line(f"  {r['command']} on {hosts.get(r['host'])}, {_ago(r['since_last_failure_seconds'], wide)}, exit "
                 f"{r['last_failure_exit']}: {r['last_failure'] or '(no error line recorded)'}")


def running_table(out: Output, data: dict, wide: bool) -> None:
    """The commands running now; one running longer than its interval (the time between its last two starts
    on that host: "every") is overdue, one whose process is gone (seen from its own host) gone."""
    running = data["running"]
    if not running:
        out.line("running now: no harvester-cli command")
        return
    hosts = _names([r["host"] for r in running], wide)

    def note(r: dict) -> str | None:
        if r["gone"]:
            return "gone" if wide else "gone (killed?)"
        return "overdue" if r["overdue"] else None

    out.table("running now", [
        Column("command", cut="never"), Column("host", cut="middle", min=8, max=20, drop=2), number("pid"),
        Column("since" if wide else "since UTC", cut="never"), number("for"), number("every", drop=1),
        Column("note", cut="never", style=lambda t: "red" if t == "overdue" else "yellow" if t != "-" else None),
    ], [(r["command"], hosts.get(r["host"]), r["pid"],
         r["started"].replace("T", " ").replace("Z", " UTC") if wide else r["started"][11:19],
         model.clock(r["seconds"]), model.duration(r["interval_seconds"]) if r["interval_seconds"] else None, note(r))
        for r in running], fit=not wide)


def login_nodes_table(out: Output, data: dict, wide: bool) -> None:
    """Queues that submit through login nodes: which node answered each host's runs, when each last
    answered, and why one did not the last time it was tried."""
    rows = data.get("login_nodes") or []
    if not rows:
        return
    hosts = _names([r["host"] for r in rows], wide)
    out.table("login nodes", [
        Column("queue", cut="middle", min=8), Column("login node", cut="middle", min=8),
        Column("host", cut="middle", min=8, max=20, drop=2), Column("answered", align=">", cut="never"),
        Column("in use", cut="never", drop=1),
        Column("problem", fill=True, min=16, style=lambda t: "red" if t != "-" else None),
    ], [(r["queue"], r["node"], hosts.get(r["host"]), _ago(r["since_last_answer_seconds"], wide) or "never",
         "yes" if r["answering"] else "",
         f"{r['problem']} ({_ago(r['since_last_try_seconds'], wide)})" if r["problem"] else None)
        for r in rows], fit=not wide)


def free_resources_table(out: Output, data: dict, wide: bool) -> None:
    """Queues with free_resources: what their batch system last said can start now, per CE, and how old that
    is (figures older than the queue's free_resources_max_age are no longer planned by: stale)."""
    rows = data.get("free_resources") or []
    if not rows:
        return

    def window(r: dict) -> str | None:
        return model.duration(r["window_seconds"]) if r["window_seconds"] else None

    out.table("free resources (what can start now)", [
        Column("queue", cut="middle", min=8), Column("CE", cut="middle", min=8), number("can start"),
        number("for"), number("idle nodes", drop=2), number("idle cores"), number("cores", drop=2),
        number("waiting", drop=1), Column("asked", align=">", cut="never"),
        Column("source", fill=True, min=12, drop=1),
    ], [(r["queue"], r["computing_element"], r["workers"], window(r), r["idle_nodes"], r["idle_cores"],
         r["total_cores"], r["waiting"], (_ago(r["age_seconds"], wide) or "") + (" (stale)" if r["stale"] else ""),
         r["source"]) for r in rows], fit=not wide)


def credentials_table(out: Output, data: dict, wide: bool) -> None:
    out.table("credentials", [
        Column("kind", cut="never"), Column("profile", cut="middle", min=8), Column("audience", cut="middle", min=8,
                                                                                     drop=2),
        Column("file", cut="middle", min=16, max=40, drop=1), number("time left"),
        Column("problem", fill=True, min=16, style=lambda t: "red" if t != "-" else None),
    ], [(c["kind"], c["profile"], c["audience"], c["file"], model.duration(c["seconds_left"]), c["problem"])
        for c in data["credentials"]], fit=not wide)


def report_problems_table(out: Output, problems: list[dict], wide: bool) -> None:
    out.table("updates PanDA has not accepted (retried every run)", [
        Column("kind", cut="never"), number("id"), Column("queue", cut="middle", min=8, drop=1), number("attempts"),
        Column("last error", fill=True, min=20),
    ], [(p["kind"], p["id"], p["queue"], p["attempts"], p["last_error"]) for p in problems], fit=not wide)


def _names(names: list[str | None], wide: bool) -> dict[str, str]:
    return {n: n for n in names if n} if wide else short_names(names)
