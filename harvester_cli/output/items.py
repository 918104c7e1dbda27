"""How a worker and a job read: a row of a narrow table (what an operator scans), a row of the long form
(`--wide`: every field whole), and a block (`workers ID`, `jobs PANDAID`: every field, as condor_q -l or
scontrol show job). The data is what state.views lists; nothing here reads the state database."""

from __future__ import annotations

from typing import Any

from harvester_cli import model
from harvester_cli.output import Column, Output, exit_style, number, short_names, state, state_style

# -- workers -------------------------------------------------------------------------------------------

WORKER_COLUMNS = [
    number("id"), Column("queue", cut="middle", min=12), state("state"),
    Column("CE", cut="middle", min=6, max=20, drop=1), Column("batch id", cut="middle", min=8, max=16, drop=3),
    Column("type", cut="never", drop=5), Column("age", align=">", cut="never", drop=2),
    Column("run", align=">", cut="never", drop=4), Column("diag", fill=True, min=24),
    Column("stdout", cut="never", drop=6),   # whole, as text a terminal makes clickable, or not at all
]

WORKER_WIDE_COLUMNS = [
    number("id"), Column("queue"), state("state"), Column("native", style=state_style),
    Column("exit", style=exit_style),
    Column("type"), number("cores"), Column("batch id"), Column("CE"), Column("submission host"),
    Column("submitted"), Column("started"), Column("ended"), Column("PanDA ids"), Column("kill reason"),
    Column("diag"), Column("stdout"), Column("stderr"), Column("batch log"),
]


def _age(epoch: float | None, now: float) -> str | None:
    return model.age(now - epoch) if epoch else None


def run_time(started: float | None, ended: float | None, now: float) -> str | None:
    return model.clock((ended or now) - started) if started else None


def worker_table(out: Output, title: str, workers: list[dict], *, wide: bool = False, now: float | None = None) -> None:
    """Workers one row each: the narrow table, or every field whole with `wide`."""
    now = model.now() if now is None else now
    if wide:
        out.table(title, WORKER_WIDE_COLUMNS, [
            (w["worker_id"], w["queue"], w["status"], w["native_status"], w["exit_code"], w["resource_type"],
             w["n_core"], w["batch_id"], w["computing_element"], w["submission_host"], w["submit_time"],
             w["start_time"], w["end_time"], ",".join(map(str, w["panda_ids"])) or None, w["kill_reason"], w["diag"],
             w["stdout"], w["stderr"], w["batch_log"]) for w in workers], fit=False)
        return
    ces = short_names([w["computing_element"] for w in workers])
    out.table(title, WORKER_COLUMNS, [
        (w["worker_id"], w["queue"], w["status"], ces.get(w["computing_element"]), w["batch_id"], w["resource_type"],
         _age(w["epoch"]["submitted"] or w["epoch"]["created"], now),
         run_time(w["epoch"]["started"], w["epoch"]["ended"], now), w["diag"], w["stdout"]) for w in workers])


def _moment(epoch: float | None, now: float) -> str | None:
    if not epoch:
        return None
    return f"{model.utc_time(epoch)} ({model.duration(now - epoch)} ago)"


def worker_blocks(out: Output, workers: list[dict], now: float | None = None) -> None:
    """Every field of each worker, one block each."""
    now = model.now() if now is None else now
    for w in workers:
        e = w["epoch"]
        cores = w["n_core"]
        size = ", ".join(x for x in (w["resource_type"], f"{cores} core{'s' if cores != 1 else ''}" if cores else None,
                                     f"{w['memory_mb']} MB" if w["memory_mb"] else None) if x)
        code = f"exit code {w['exit_code']}" if w["exit_code"] is not None else None
        native = f"{w['native_status']} ({code})" if w["native_status"] and code else w["native_status"] or code
        out.block(f"worker {w['worker_id']}  {w['queue']}  {w['status']}", _set([
            ("state", w["status"]), ("native status", native or None),
            ("queue", f"{w['queue']} ({w['mode']}, {w['backend']} backend)"), ("resource type", size or None),
            ("batch id", w["batch_id"]), ("CE", w["computing_element"]), ("submission host", w["submission_host"]),
            ("harvester host", w["harvester_host"]), ("PanDA ids", ", ".join(map(str, w["panda_ids"])) or None),
            ("created", _moment(e["created"], now)), ("submitted", _moment(e["submitted"], now)),
            ("started", _moment(e["started"], now)), ("ended", _moment(e["ended"], now)),
            ("run time", run_time(e["started"], e["ended"], now)), ("kill reason", w["kill_reason"]),
            ("error code", w["error_code"]), ("diag", w["diag"]), ("log dir", w["log_dir"]),
            ("stdout", w["stdout"]), ("stderr", w["stderr"]), ("batch log", w["batch_log"]),
        ]), style=_title_style(w["status"]))


def _set(fields: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The fields that have a value (as condor_q -l leaves out what a job does not define)."""
    return [(label, value) for label, value in fields if value not in (None, "", [])]


def _title_style(status: str) -> str:
    return "red bold" if state_style(status) == "red" else "bold"


# -- jobs ----------------------------------------------------------------------------------------------

JOB_COLUMNS = [
    number("PandaID"), Column("queue", cut="middle", min=12), state("status"), Column("step", cut="never", drop=3),
    number("worker", drop=2), Column("CE", cut="middle", min=6, max=20, drop=4), number("try", drop=5),
    Column("age", align=">", cut="never", drop=1), Column("diag", fill=True, min=24),
]

JOB_WIDE_COLUMNS = [
    number("PandaID"), Column("queue"), state("status"), Column("step"), Column("type"), number("cores"),
    number("attempt"), number("worker"), Column("batch id"), Column("CE"), Column("created"), Column("modified"),
    Column("diag"), Column("log"),
]


def job_table(out: Output, title: str, jobs: list[dict], *, wide: bool = False, now: float | None = None) -> None:
    now = model.now() if now is None else now
    if wide:
        out.table(title, JOB_WIDE_COLUMNS, [
            (j["panda_id"], j["queue"], j["status"], j["sub_status"], j["resource_type"], j["core_count"],
             j["attempt_nr"], j["worker_id"], j["batch_id"], j["computing_element"], j["created"], j["modified"],
             j["diag"], j["log"]) for j in jobs], fit=False)
        return
    ces = short_names([j["computing_element"] for j in jobs])
    out.table(title, JOB_COLUMNS, [
        (j["panda_id"], j["queue"], j["status"], j["sub_status"], j["worker_id"], ces.get(j["computing_element"]),
         j["attempt_nr"], _age(j["epoch"]["created"], now), j["diag"]) for j in jobs])


def job_blocks(out: Output, jobs: list[dict], now: float | None = None) -> None:
    now = model.now() if now is None else now
    for j in jobs:
        described = j.get("description") or {}
        workers: list[Any] = [", ".join(x for x in (
            f"{w['worker_id']} {w['status']}", f"batch id {w['batch_id']}" if w["batch_id"] else None,
            f"CE {w['computing_element']}" if w["computing_element"] else None) if x) for w in j["workers"]]
        latest = j["workers"][0] if j["workers"] else {}
        out.block(f"job {j['panda_id']}  {j['queue']}  {j['status']}/{j['sub_status']}", _set([
            ("status", j["status"]), ("step", j["sub_status"]), ("queue", j["queue"]),
            ("job name", described.get("name")), ("task", described.get("task_id")),
            ("resource type", ", ".join(x for x in (j["resource_type"], f"{j['core_count']} cores"
                                                      if j["core_count"] else None) if x) or None),
            ("attempt", j["attempt_nr"]), ("submit attempts", j["submit_attempts"]),
            ("workers", workers or None), ("created", _moment(j["epoch"]["created"], now)),
            ("modified", _moment(j["epoch"]["modified"], now)), ("pilot log sent", "yes" if j["pilot_log_sent"] else "no"),
            ("diag", j["diag"]), ("stdout", latest.get("stdout")), ("stderr", latest.get("stderr")),
            ("batch log", latest.get("batch_log")),
        ]), style=_title_style(j["status"]))


def wait_summary(statuses: dict[int, str]) -> str:
    """`submit --wait`'s line: 30 workers: 6 running, 24 finished, 0 failed (and the queued, missed and
    cancelled ones, when there are any)."""
    counts = {s: 0 for s in model.WORKER_STATES}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    queued = sum(counts[s] for s in model.WORKER_QUEUED)
    parts = [f"{queued} queued"] if queued else []
    parts += [f"{counts[s]} {s}" for s in (model.RUNNING, model.FINISHED, model.FAILED)]
    parts += [f"{counts[s]} {s}" for s in (model.MISSED, model.CANCELLED) if counts[s]]
    return f"{len(statuses)} worker{'s' if len(statuses) != 1 else ''}: " + ", ".join(parts)
