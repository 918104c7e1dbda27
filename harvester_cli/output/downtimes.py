"""How downtimes and shared caps read (`downtime list`, `status`, `plan`): a table that holds in 80 columns
(short times, the reason filling what is left, the source and the queues left out first), whole with
--wide or piped. The data is steps.downtimes' and the plans'; nothing here reads the state database."""

from __future__ import annotations

from harvester_cli.output import Column, Output, number


def _when(text: str, wide: bool) -> str:
    """2026-03-01T08:00:00Z as 2026-03-01 08:00Z, or 03-01 08:00Z in a narrow table (UTC either way)."""
    short = text[:16].replace("T", " ") + "Z"
    return short if wide else short[5:]


def _what(row: dict) -> str:
    if row["computing_element"] is None:
        return f"queue {row['queue']}"
    return f"CE {row['computing_element']}" + (f" of {row['queue']}" if row["queue"] else "")


def _severity(row: dict) -> str:
    if row.get("ended"):
        return "ended"
    return row["severity"] + ("" if row["active"] else " (soon)" if row["blocks"] else "")


def downtimes_table(out: Output, title: str, rows: list[dict], wide: bool, ids: bool = False) -> None:
    """One row per downtime: what, severity (and whether it is under way), from and until (UTC), where it
    comes from, the queues it concerns, why."""
    columns = [Column("what", cut="middle", min=12, max=36), Column("severity", cut="never"),
               Column("from (UTC)" if wide else "from", cut="never"),
               Column("until (UTC)" if wide else "until", cut="never"),
               Column("source", cut="never", drop=2), Column("queues", cut="middle", min=8, drop=1),
               Column("reason", fill=True, min=12)]
    if ids:
        columns.insert(0, number("id"))
    table = []
    for row in rows:
        values = [_what(row), _severity(row), _when(row["start"], wide), _when(row["end"], wide), row["source"],
                  ",".join(row["queues"]) or None, row["reason"] or None]
        table.append(([row["id"] if row["source"] == "database" else None] if ids else []) + values)
    out.table(title, columns, table, fit=not wide)


def down_lines(out: Output, summary: dict) -> None:
    """Each queue no new worker goes to now, and each CE the fanout leaves out, one line each with why."""
    for row in summary["queues_down"]:
        out.line(f"queue {row['queue']}: no new worker: {row['why']}")
    for row in summary["ces_down"]:
        out.line(f"queue {row['queue']}: CE {row['computing_element']} gets no new worker: {row['why']}")
    for problem in summary["problems"]:
        out.line(problem)


def caps_table(out: Output, plans: list, wide: bool) -> None:
    """Each shared cap a plan met: its limit, what its queues use now over every host, and each queue's
    demand and share (a row per cap and queue)."""
    rows, seen = [], set()
    for plan in plans:
        for cap in plan.caps if plan is not None else []:
            if (cap["cap"], cap["kind"]) in seen:
                continue
            seen.add((cap["cap"], cap["kind"]))
            for queue, q in cap["queues"].items():
                rows.append((cap["cap"], cap["kind"], cap["limit"], cap["used"], queue, q["used"], f"{q['demand']:g}",
                             q["share"] if cap["binding"] else "-"))
    if rows:
        out.table("shared caps (over every host)", [
            Column("cap", cut="middle", min=8), Column("kind", cut="never"), number("limit"), number("used"),
            Column("queue", cut="middle", min=8), number("queue used" if wide else "q.used"), number("demand"),
            number("share")], rows, fit=not wide)
