"""propagate: heartbeat, job updates, worker updates, worker statistics and PanDA's commands.

An update leaves the outbox only when PanDA answered success for that very item and version; anything
else (a network error, a refusal, a newer update queued meanwhile) stays for the next run.
"""

from __future__ import annotations

import json
import logging
import socket
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, func, select, update

from harvester_cli import model
from harvester_cli.config import QueueConfig
from harvester_cli.errors import PandaError, PandaNoSuchCall
from harvester_cli.faults import fault_point
from harvester_cli.panda import diagnostics, pilot_outputs
from harvester_cli.state.schema import (
    commands,
    job_workers,
    jobs,
    reports,
    worker_targets,
    workers,
)
from harvester_cli.steps import registration
from harvester_cli.steps.instance import Instance

log = logging.getLogger(__name__)


@dataclass
class PropagateRun:
    heartbeat: str = "not sent"
    jobs_sent: int = 0
    jobs_refused: int = 0
    workers_sent: int = 0
    workers_refused: int = 0
    stats_queues: int = 0
    commands_received: int = 0
    commands_applied: int = 0
    kills_from_panda: int = 0
    job_heartbeats: int = 0
    service_metrics: str = "not due"
    errors: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.errors or self.jobs_refused or self.workers_refused)

    def problems(self) -> list[str]:
        out = list(self.errors)
        if self.jobs_refused:
            out.append(f"PanDA refused {self.jobs_refused} job update(s); they are retried next run (status shows why)")
        if self.workers_refused:
            out.append(f"PanDA refused {self.workers_refused} worker update(s); they are retried next run")
        return out


def send_heartbeat(instance: Instance, run: PropagateRun) -> None:
    result = registration.heartbeat(instance)
    instance.registration = result
    if result.problem:
        run.errors.append(result.problem)
        run.heartbeat = "failed" if result.registered is None else f"refused ({result.problem})"
    else:
        run.heartbeat = "ok"


def _report_pages(instance: Instance, kind: str, queues: list[str]) -> Iterator[list]:
    """Claimed pages of pending reports, by key (keyset pagination: items refused in this run are not
    taken again), `bulk_size` per page."""
    store = instance.store
    after = -1
    while True:
        with store.write() as conn:
            rows = store.claim(conn, reports, (reports.c.kind == kind) & reports.c.queue.in_(queues)
                               & (reports.c.key > after), instance.config.panda.bulk_size, order_by=reports.c.key)
        if not rows:
            return
        after = max(r.key for r in rows)
        yield rows


def refresh_running_jobs(instance: Instance, queues: list[QueueConfig]) -> int:
    """Push jobs that run long get a periodic "running" update: PanDA can only say "tobekilled" in an
    answer. Returns how many were queued."""
    store = instance.store
    queued = 0
    at = model.now()
    for queue in queues:
        if queue.mode != "push" or not queue.job_heartbeat_seconds:
            continue
        with store.write() as conn:
            due = conn.execute(select(jobs.c.panda_id, jobs.c.job_json).where(
                jobs.c.queue == queue.name, jobs.c.sub_status == model.SUB_RUNNING,
                jobs.c.modified < at - queue.job_heartbeat_seconds).limit(5000)).all()
            if not due:
                continue
            store.enqueue_reports(conn, "job", [
                (panda_id, queue.name, pilot_outputs.base_update(json.loads(job_json), model.JOB_RUNNING), False)
                for panda_id, job_json in due])
            conn.execute(update(jobs).where(jobs.c.panda_id.in_([d[0] for d in due])).values(modified=at))
            queued += len(due)
    return queued


def _failed(instance: Instance, kind: str, failures: list[tuple[int, str]]) -> None:
    """Record why items were not accepted and release them for the next run."""
    store = instance.store
    with store.write() as conn:
        if failures:
            conn.execute(update(reports).where(reports.c.kind == kind, reports.c.key == bindparam("k"),
                                               store.owned(reports))
                         .values(attempts=reports.c.attempts + 1, last_error=bindparam("e")),
                         [{"k": k, "e": e[:1000]} for k, e in failures])
        store.release(conn, reports, [(kind, k) for k, _ in failures])


def _job_payloads(instance: Instance, rows) -> tuple[list[dict], set[int]]:
    """The updates of these outbox rows as PanDA gets them, and the jobs whose update carries pilot_log.

    harvester-cli speaks for push-mode pilots, so it names the pilot the way PanDA's monitor links to it:
    pilot_id is the worker's public stdout URL unless the pilot's own heartbeat gave one, and batch_id the
    batch job. pilot_log (the batch log URL, as Harvester sends it) goes once per job: PanDA stores a new
    log record for every call that carries it."""
    with instance.store.read() as conn:
        pilot = {r.panda_id: r for r in conn.execute(
            select(jobs.c.panda_id, jobs.c.pilot_log_sent, workers.c.stdout_url, workers.c.batch_log_url,
                   workers.c.batch_id)
            .join(job_workers, job_workers.c.panda_id == jobs.c.panda_id)
            .join(workers, workers.c.worker_id == job_workers.c.worker_id)
            .where(jobs.c.panda_id.in_([r.key for r in rows])))}
    payloads, with_log = [], set()
    for row in rows:
        payload = json.loads(row.payload)
        worker = pilot.get(row.key)
        if worker is not None:
            if worker.stdout_url:
                payload.setdefault("pilot_id", worker.stdout_url)
            if worker.batch_id:
                payload.setdefault("batch_id", worker.batch_id)
            if worker.batch_log_url and not worker.pilot_log_sent:
                payload["pilot_log"] = worker.batch_log_url
                with_log.add(row.key)
        payloads.append(payload)
    return payloads, with_log


def send_job_updates(instance: Instance, queues: list[str], run: PropagateRun,
                     progress: Callable[[int], None] | None = None) -> None:
    store = instance.store
    for rows in _report_pages(instance, "job", queues):
        payloads, with_log = _job_payloads(instance, rows)
        try:
            fault_point("propagate_before_job_updates")
            answers = instance.panda.update_jobs_bulk(payloads)
        except PandaError as exc:
            run.errors.append(f"job updates: {exc}")
            _failed(instance, "job", [(r.key, str(exc)) for r in rows])
            return
        fault_point("propagate_after_job_updates")   # PanDA has them; the outbox does not know yet
        sent, refused, kill_jobs = [], [], []
        for row, answer in zip(rows, answers):
            data = answer.get("data") if isinstance(answer, dict) else None
            if isinstance(answer, dict) and answer.get("success") and isinstance(data, dict) and data.get("StatusCode") == 0:
                sent.append(row)
                if "tobekilled" in str(data.get("command") or ""):
                    kill_jobs.append(row.key)
            else:
                message = answer.get("message") if isinstance(answer, dict) else str(answer)
                refused.append((row.key, f"PanDA refused: {message} {data or ''}".strip()))
        at = model.now()

        def record(conn) -> int:
            store.reports_sent(conn, "job", [(r.key, r.version) for r in sent])
            logged = [r.key for r in sent if r.key in with_log]
            if logged:
                conn.execute(update(jobs).where(jobs.c.panda_id.in_(logged)).values(pilot_log_sent=True))
            done = [r.key for r in sent if r.final]
            if done:
                conn.execute(update(jobs).where(jobs.c.panda_id.in_(done), jobs.c.sub_status == model.SUB_REPORTING)
                             .values(sub_status=model.SUB_DONE, modified=at))
            if not kill_jobs:
                return 0
            worker_ids = select(job_workers.c.worker_id).where(job_workers.c.panda_id.in_(kill_jobs))
            return conn.execute(
                update(workers).where(workers.c.worker_id.in_(worker_ids), workers.c.kill_reason.is_(None),
                                      workers.c.status.not_in(model.WORKER_FINAL))
                .values(kill_reason="PanDA answered tobekilled for its job")).rowcount

        # PanDA has these updates: losing this write to another host's deadlock would send them again.
        run.kills_from_panda += store.retrying(record)
        _failed(instance, "job", refused)
        run.jobs_sent += len(sent)
        run.jobs_refused += len(refused)
        if progress:
            progress(len(rows))


def worker_dict(row, panda_ids: list[int], site: str, host: str | None = None) -> dict:
    """A worker as update_workers wants it (None values left out)."""
    status = model.SUBMITTED if row.status == model.PENDING else row.status
    code, short = diagnostics.classify(row.status, row.diag, row.native_exit_code)
    diag = f"{short}: {row.diag}" if short and row.diag else (short or row.diag)
    data = {
        "workerID": row.worker_id, "batchID": row.batch_id, "queueName": row.queue, "status": status,
        "computingSite": site, "computingElement": row.computing_element, "nCore": row.n_core,
        "submitTime": model.panda_time(row.submit_time), "startTime": model.panda_time(row.start_time),
        "endTime": model.panda_time(row.end_time), "lastUpdate": model.panda_time(row.modified),
        "stdOut": row.stdout_url, "stdErr": row.stderr_url, "batchLog": row.batch_log_url,
        "resourceType": row.resource_type, "jobType": row.job_type, "nativeExitCode": row.native_exit_code,
        "nativeStatus": row.native_status, "diagMessage": (diag or "")[:500] or None,
        "submissionHost": row.submission_host, "harvesterHost": host or socket.gethostname(),
        "errorCode": row.error_code if row.error_code is not None else code,
        "minRamCount": row.memory_mb, "nJobs": len(panda_ids) or None, "pandaid_list": panda_ids or None,
    }
    return {k: v for k, v in data.items() if v is not None}


def send_worker_updates(instance: Instance, queues: list[str], run: PropagateRun,
                        progress: Callable[[int], None] | None = None) -> None:
    store = instance.store
    for rows in _report_pages(instance, "worker", queues):
        ids = [r.key for r in rows]
        with store.read() as conn:
            current = {w.worker_id: w for w in conn.execute(select(workers).where(workers.c.worker_id.in_(ids)))}
            links = defaultdict(list)
            for panda_id, worker_id in conn.execute(select(job_workers.c.panda_id, job_workers.c.worker_id)
                                                    .where(job_workers.c.worker_id.in_(ids))):
                links[worker_id].append(panda_id)
        gone = [r for r in rows if r.key not in current]
        rows = [r for r in rows if r.key in current]
        if gone:   # swept meanwhile: nothing left to say
            with store.write() as conn:
                store.reports_sent(conn, "worker", [(r.key, r.version) for r in gone])
        if not rows:
            continue
        try:
            answers = instance.panda.update_workers([
                worker_dict(current[r.key], links[r.key], instance.config.panda_site(current[r.key].queue),
                            instance.host)
                for r in rows])
        except PandaError as exc:
            run.errors.append(f"worker updates: {exc}")
            _failed(instance, "worker", [(r.key, str(exc)) for r in rows])
            return
        fault_point("propagate_after_worker_updates")
        sent = [r for r, ok in zip(rows, answers) if ok]
        refused = [(r.key, "PanDA answered false for this worker") for r, ok in zip(rows, answers) if not ok]
        store.retrying(lambda conn: store.reports_sent(conn, "worker", [(r.key, r.version) for r in sent]))
        _failed(instance, "worker", refused)
        run.workers_sent += len(sent)
        run.workers_refused += len(refused)
        if progress:
            progress(len(rows))


def worker_statistics(instance: Instance, queues: list[str]) -> dict:
    """{jobType: {resourceType: {status: n}}} of these queues' live workers (pending counts as submitted)."""
    stats: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    with instance.store.read() as conn:
        for job_type, rt, status, n in conn.execute(
            select(workers.c.job_type, workers.c.resource_type, workers.c.status, func.count())
            .where(workers.c.queue.in_(queues), workers.c.status.in_([model.PENDING, *model.WORKER_ACTIVE]))
            .group_by(workers.c.job_type, workers.c.resource_type, workers.c.status)
        ):
            status = model.SUBMITTED if status == model.PENDING else status
            stats[job_type or "managed"][rt or "Undefined"][status] += n
    return json.loads(json.dumps(stats))


def send_statistics(instance: Instance, queues: list[QueueConfig], run: PropagateRun) -> None:
    # PanDA replaces the statistics of (harvester, PanDA queue): send one sum per PanDA queue (OneBox twins).
    by_site: dict[str, list[str]] = defaultdict(list)
    for queue in instance.config.queues.values():
        by_site[queue.site].append(queue.name)
    for site in dict.fromkeys(q.site for q in queues):
        try:
            instance.panda.report_worker_statistics(site, worker_statistics(instance, by_site[site]))
            run.stats_queues += 1
        except PandaError as exc:
            run.errors.append(f"worker statistics for {site}: {exc}")


def _match(value, wanted) -> bool:
    return wanted in (None, "ALL") or value in (wanted if isinstance(wanted, list) else [wanted])


def apply_command(instance: Instance, conn, command_id: int, command: str, params,
                  configured: set[str]) -> tuple[str, str | None, int]:
    """Apply one PanDA command locally; returns (status, diag, workers marked for kill)."""
    name, _, target = command.partition(":")
    if name == "SET_N_WORKERS_JOBTYPE":
        streaming = {q.site for q in instance.config.queues.values() if q.pilot_streaming}
        if target not in configured:
            return "rejected", f"queue {target!r} is not configured here", 0
        if target not in streaming:
            return "rejected", f"queue {target!r} is not in pilot-streaming mode here (pilot_streaming = false)", 0
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            return "rejected", f"params are not {{jobType: {{resourceType: n}}}}: {str(params)[:200]}", 0
        # A newer command replaces the queue's numbers; submit consumes them.
        conn.execute(delete(worker_targets).where(worker_targets.c.site == target))
        rows = [{"site": target, "job_type": job_type, "resource_type": rt, "remaining": max(0, int(n)),
                 "command_id": command_id, "updated": model.now()}
                for job_type, per_type in params.items() for rt, n in per_type.items()]
        if rows:
            conn.execute(worker_targets.insert(), rows)
        return "applied", None, 0
    if name in ("KILL_WORKERS", "SYNC_WORKERS_KILL"):
        candidates = conn.execute(select(workers).where(workers.c.status.not_in(model.WORKER_FINAL),
                                                        workers.c.kill_reason.is_(None))).all()
        if name == "SYNC_WORKERS_KILL":
            ids = {int(i) for i in (params or [])}
            chosen = [w.worker_id for w in candidates if w.worker_id in ids]
        else:
            params = params or {}
            chosen = [w.worker_id for w in candidates
                      if _match(w.status, params.get("status"))
                      and _match(instance.config.panda_site(w.queue), params.get("computingSite"))
                      and _match(w.computing_element, params.get("computingElement"))
                      and _match(w.submission_host, params.get("submissionHost"))]
        if chosen:
            conn.execute(update(workers).where(workers.c.worker_id.in_(chosen))
                         .values(kill_reason=f"PanDA command {name}"))
        return "applied", None, len(chosen)
    if name in ("SYNC_WORKERS_ACTIVATE", "REPORT_WORKER_STATS"):
        return "applied", None, 0   # statistics and worker updates go out in every propagate run
    return "rejected", f"unknown command {name!r}", 0


def handle_commands(instance: Instance, queues: list[QueueConfig], run: PropagateRun) -> None:
    store = instance.store
    try:
        received = instance.panda.acquire_commands(100)
    except PandaError as exc:
        run.errors.append(f"commands: {exc}")
        received = []
    at = model.now()
    configured = {q.site for q in instance.config.queues.values()}
    with store.write() as conn:
        known = set(conn.scalars(select(commands.c.command_id).where(
            commands.c.command_id.in_([int(c["command_id"]) for c in received]))))
        new = [c for c in received if int(c["command_id"]) not in known]
        if new:
            conn.execute(commands.insert(), [{
                "command_id": int(c["command_id"]), "command": str(c["command"]), "params": json.dumps(c.get("params")),
                "ack_requested": bool(c.get("ack_requested")), "queue": str(c["command"]).partition(":")[2] or None,
                "status": "new", "received": at} for c in new])
        run.commands_received += len(new)
    # Applied once over all hosts: each new command is claimed (FOR UPDATE SKIP LOCKED) by one run, applied
    # and marked in the same transaction, so another host's propagate finds it applied or skips it.
    with store.write() as conn:
        pending = store.claim(conn, commands, commands.c.status == "new", 100, order_by=commands.c.command_id)
        for row in pending:
            try:
                params = json.loads(row.params or "null")
                status, diag, killed = apply_command(instance, conn, row.command_id, row.command, params, configured)
            except (ValueError, TypeError) as exc:   # malformed params from PanDA: keep the reason, do not loop
                status, diag, killed = "rejected", f"malformed params: {exc}", 0
            conn.execute(update(commands).where(commands.c.command_id == row.command_id, store.owned(commands))
                         .values(status=status, diag=diag, applied=at, lock_owner=None, lock_expires=None))
            run.commands_applied += status == "applied"
            run.kills_from_panda += killed
    # Acknowledge only what was applied here; a rejected command keeps its reason in the table. Claimed, so
    # one host acknowledges each (and the claim expires if it dies before it could).
    with store.write() as conn:
        to_ack = [r.command_id for r in store.claim(conn, commands, (commands.c.status == "applied")
                                                    & commands.c.ack_requested.is_(True), 500)]
    if to_ack:
        fault_point("propagate_before_ack")   # applied and committed here, not yet acknowledged
        try:
            instance.panda.acknowledge_commands(to_ack)
        except PandaError as exc:
            run.errors.append(f"acknowledging commands: {exc}")
            with store.write() as conn:
                store.release(conn, commands, to_ack)
            return
        with store.write() as conn:
            conn.execute(update(commands).where(commands.c.command_id.in_(to_ack), store.owned(commands))
                         .values(status="acked", lock_owner=None, lock_expires=None))


def _service_metrics_key(host: str) -> str:
    return f"service_metrics:{host}"[:64]


def send_service_metrics(instance: Instance, run: PropagateRun) -> None:
    """This host's memory, CPU, disk and proxy lifetimes for PanDA's monitor, at most every
    [metrics] panda_interval seconds per host (Harvester's service monitor: every 300 s)."""
    from harvester_cli.site import hostmetrics
    from harvester_cli.state.schema import meta
    from harvester_cli.steps.monitor import credentials

    interval = instance.config.metrics.panda_interval
    if not interval:
        run.service_metrics = "off"
        return
    at = model.now()
    last = instance.store.get_meta(_service_metrics_key(instance.host))
    if last is not None and at - last < interval:
        return
    config = instance.config
    volumes = {"logs": config.logs}
    state_file = instance.store.sqlite_path
    if state_file is not None:
        volumes["state"] = state_file.parent
    lifetimes = {c.file: c.seconds_left / 3600 for c in credentials(config, at)
                 if c.kind == "proxy" and c.seconds_left is not None}
    metrics = hostmetrics.collect(volumes, lifetimes)
    try:
        instance.panda.update_service_metrics([hostmetrics.entry(metrics, socket.getfqdn(), at)])
    except PandaNoSuchCall:
        run.service_metrics = "not taken by this PanDA server"
        return
    except PandaError as exc:
        run.errors.append(f"service metrics: {exc}")
        run.service_metrics = "failed"
        return
    with instance.store.write() as conn:
        key = _service_metrics_key(instance.host)
        if not conn.execute(update(meta).where(meta.c.key == key).values(ivalue=int(at))).rowcount:
            conn.execute(meta.insert().values(key=key, ivalue=int(at)))
    run.service_metrics = "sent"


def propagate(instance: Instance, queues: list[QueueConfig],
              progress: Callable[[int], None] | None = None) -> PropagateRun:
    run = PropagateRun()
    instance.store   # a state database this code cannot use is an error before PanDA is told anything
    names = [q.name for q in queues]
    send_heartbeat(instance, run)
    handle_commands(instance, queues, run)
    run.job_heartbeats = refresh_running_jobs(instance, queues)
    send_job_updates(instance, names, run, progress)
    send_worker_updates(instance, names, run, progress)
    send_statistics(instance, queues, run)
    send_service_metrics(instance, run)
    return run
