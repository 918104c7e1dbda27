"""The status page serve-logs answers at /status: one self-contained HTML page (inline CSS, charts as
inline SVG drawn here, no script, nothing loaded from anywhere), from the plain data of
steps.monitor.summary and steps.monitor.charts. Every number sits in a cell with data-* attributes
naming what it counts, so a test (or a scraper) can read it without parsing the layout."""

from __future__ import annotations

import html
import time
from urllib.parse import quote

from harvester_cli.model import duration

STATES = ("pending", "submitted", "running", "idle", "finished", "failed", "cancelled", "missed")
# Colour-blind-safe (Okabe-Ito), one per state.
COLOURS = {"pending": "#999999", "submitted": "#56B4E9", "running": "#009E73", "idle": "#F0E442",
           "finished": "#0072B2", "failed": "#D55E00", "cancelled": "#CC79A7", "missed": "#E69F00"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#222;background:#fff}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0}
th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.t,th.t{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{border:1px solid #ddd;padding:.4rem}
.chart h3{font-size:.95rem;margin:0 0 .3rem}.bad{color:#b00020;font-weight:600}.none{color:#777}
svg text{font-size:10px;fill:#444}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: list[str], rows: list[str], css_id: str, empty: str = "none") -> str:
    head = "".join(f'<th class="{"t" if i < 3 else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(rows) or f'<tr><td class="t none" colspan="{len(headers)}">{_e(empty)}</td></tr>'
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _link(href: str | None, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else _e(text)


def chart(queue: str, points: list[tuple[int, dict[str, int]]], now: float, hours: float = 24,
          width: int = 560, height: int = 170) -> str:
    """Workers per state over the last `hours` as an SVG line chart (one polyline per state that was
    ever non-zero)."""
    left, right, top, bottom = 40, 8, 8, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    start = now - hours * 3600
    shown = [s for s in STATES if any(c.get(s) for _, c in points)]
    peak = max([c.get(s, 0) for _, c in points for s in shown] or [0]) or 1

    def x(t: float) -> float:
        return left + (t - start) / (hours * 3600) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / peak * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'data-queue="{_e(queue)}" viewBox="0 0 {width} {height}"><title>{_e(queue)}: workers per state, '
             f'last {hours:g} h</title>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for i in range(5):   # hour ticks
        t = start + i * hours * 3600 / 4
        label = "now" if i == 4 else f"-{hours - i * hours / 4:g}h"
        parts.append(f'<line x1="{x(t):.1f}" y1="{top + plot_h}" x2="{x(t):.1f}" y2="{top + plot_h + 4}" stroke="#999"/>'
                     f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>'
                 f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
    for state in shown:
        coords = " ".join(f"{x(t):.1f},{y(c.get(state, 0)):.1f}" for t, c in points)
        parts.append(f'<polyline class="series" data-state="{state}" fill="none" stroke="{COLOURS[state]}" '
                     f'stroke-width="1.5" points="{coords}"/>')
    if not points:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle">no snapshots yet '
                     '(poll takes one per run)</text>')
    parts.append("</svg>")
    legend = " ".join(f'<span style="color:{COLOURS[s]}">&#9632;</span> {s}' for s in shown)
    return "".join(parts) + (f'<div class="meta">{legend}</div>' if legend else "")


def render(data: dict, charts: dict[str, list], prefix: str, now: float | None = None,
           log_links: dict[str, str] | None = None) -> bytes:
    """The page. `prefix` is the log tree's URL path (worker log links are below it); `log_links` maps a
    queue to today's log directory of the queue (relative to the tree)."""
    now = time.time() if now is None else now
    log_links = log_links or {}

    def log_href(path: str | None) -> str | None:
        return prefix + quote(path) if path else None

    worker_rows = []
    for w in data["workers"]:
        cells = "".join(f'<td data-queue="{_e(w["queue"])}" data-ce="{_e(w["computing_element"])}" '
                        f'data-rt="{_e(w["resource_type"])}" data-state="{s}">{w["states"].get(s, 0)}</td>'
                        for s in STATES)
        worker_rows.append(f'<tr><td class="t">{_link(log_href(log_links.get(w["queue"])), w["queue"])}</td>'
                           f'<td class="t">{_e(w["computing_element"] or "-")}</td>'
                           f'<td class="t">{_e(w["resource_type"] or "-")}</td>{cells}<td>{w["total"]}</td></tr>')
    window_rows = []
    for w in data["window_stats"]:
        rates = "".join(f'<td data-queue="{_e(w["queue"])}" data-ce="{_e(w["computing_element"])}" '
                        f'data-rt="{_e(w["resource_type"])}" data-rate="{k}">{w["per_hour"][k]:g}</td>'
                        for k in ("submitted", "started", "finished", "failed"))
        window_rows.append(f'<tr><td class="t">{_e(w["queue"])}</td><td class="t">{_e(w["computing_element"] or "-")}'
                           f'</td><td class="t">{_e(w["resource_type"] or "-")}</td>{rates}'
                           f'<td>{duration(w["median_queued_seconds"])}</td>'
                           f'<td>{duration(w["median_running_seconds"])}</td></tr>')
    error_rows = []
    for e in data["errors"]:
        ex = e["example"]
        queues = ", ".join(f"{q}={n}" for q, n in e["queues"].items())
        error_rows.append(f'<tr><td class="t" data-code="{_e(e["code"])}">{_e(e["code"])}</td><td class="t">'
                          f'{_e(e["meaning"])}</td><td class="t">{_e(queues)}</td><td data-count="{_e(e["code"])}">'
                          f'{e["count"]}</td><td class="t">{_link(log_href(ex["log_path"]), str(ex["worker_id"]))}'
                          f'</td><td class="t">{_e(ex["diag"][:160])}</td></tr>')
    ce_error_rows = [f'<tr><td class="t">{_e(r["queue"])}</td><td class="t">{_e(r["computing_element"] or "-")}</td>'
                     f'<td class="t">{_e(r["code"])}</td><td class="t">{_e(r["meaning"])}</td><td class="t">'
                     f'{"yes" if r["transient"] else "no"}</td><td>{r["count"]}</td></tr>'
                     for r in data.get("ce_errors") or []]
    lost_rows = []
    for kind in ("lost", "missed"):
        for ex in data[kind]["latest"]:
            lost_rows.append(f'<tr><td class="t">{kind}</td><td class="t">{_e(ex["queue"])}</td><td class="t">'
                             f'{_e(ex["computing_element"] or "-")}</td><td>'
                             f'{_link(log_href(ex["log_path"]), str(ex["worker_id"]))}</td><td class="t">'
                             f'{_e(ex["ended"])}</td><td class="t">{_e(ex["diag"][:160])}</td></tr>')
    pending_rows = [f'<tr><td class="t">{kind}</td><td data-pending="{kind}">{p["count"]}</td>'
                    f'<td>{duration(p["oldest_age_seconds"])}</td></tr>' for kind, p in data["pending_updates"].items()]
    run_rows = []
    for r in data["commands"]:
        failing = ' class="bad"' if r["last_exit"] else ""
        run_rows.append(f'<tr><td class="t">{_e(r["command"])}</td><td class="t">{_e(r["host"])}</td>'
                        f'<td class="t">{_e(r["last_success"] or "never")}</td>'
                        f'<td>{duration(r["since_last_success_seconds"])}</td><td class="t">{_e(r["last_end"])}</td>'
                        f'<td{failing} data-exit="{_e(r["command"])}">{r["last_exit"]}</td>'
                        f'<td>{_e(r["last_items"])}</td><td>{r["last_seconds"]:.2f}</td></tr>')
    cred_rows = []
    for c in data["credentials"]:
        low = c["seconds_left"] is None or c["seconds_left"] < 86400
        cred_rows.append(f'<tr><td class="t">{_e(c["kind"])}</td><td class="t">{_e(c["profile"])}</td>'
                         f'<td class="t">{_e(c["file"])}</td><td{" class=bad" if low else ""}>'
                         f'{duration(c["seconds_left"])}</td><td class="t">{_e(c["problem"] or "")}</td></tr>')
    window = data["window"]
    chart_html = "".join(f'<div class="chart"><h3>{_e(q)}</h3>{chart(q, points, now)}</div>'
                         for q, points in charts.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex, nofollow">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>harvester-cli {_e(data["harvester_id"])}: status</title><style>{CSS}</style></head>
<body><h1>harvester-cli <span id="harvester-id">{_e(data["harvester_id"])}</span></h1>
<div class="meta">generated {_e(data["generated"])}; window from {_e(window["since"])} ({duration(window["seconds"])});
<a href="{_e(prefix)}">worker logs</a>; <a href="/metrics">metrics</a></div>
<h2>Workers per queue, CE and resource type</h2>
{_table(["queue", "CE", "type", *STATES, "total"], worker_rows, "workers", "no workers")}
<h2>Workers per state, last 24 hours</h2><div class="charts">{chart_html or '<p class="none">no queues</p>'}</div>
<h2>Window: per hour, and median times</h2>
{_table(["queue", "CE", "type", "submitted/h", "started/h", "finished/h", "failed/h", "median queued",
         "median running"], window_rows, "window", "nothing happened in the window")}
<h2>Most frequent errors</h2>
{_table(["code", "meaning", "queues", "workers", "example worker", "example diag"], error_rows, "errors",
        "no failed workers in the window")}
<h2>Errors per CE</h2>
{_table(["queue", "CE", "code", "meaning", "transient", "workers"], ce_error_rows, "ce-errors",
        "no failed workers in the window")}
<h2>Lost and missed workers ({data["lost"]["count"]} lost, {data["missed"]["count"]} missed; {data["retired"]["count"]}
queued pilots retired as no longer needed)</h2>
{_table(["kind", "queue", "CE", "worker", "ended", "diag"], lost_rows, "lost", "none in the window")}
<h2>Updates waiting for PanDA</h2>
{_table(["kind", "waiting", "oldest"], pending_rows, "pending")}
<h2>Command runs</h2>
{_table(["command", "host", "last success", "ago", "last run", "exit", "items", "seconds"], run_rows, "runs",
        "no run recorded yet")}
<h2>Credentials</h2>
{_table(["kind", "profile", "file", "time left", "problem"], cred_rows, "credentials", "none configured")}
</body></html>
"""
    return page.encode("utf-8")
