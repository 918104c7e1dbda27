"""propagate: heartbeat, job updates, worker updates, worker statistics and PanDA's commands.

An update leaves the outbox only when PanDA answered success for that very item and version; anything
else (a network error, a refusal, a newer update queued meanwhile) stays for the next run.

When the state database fails over under a COMMIT (its answer never came), what it recorded is looked up
after reconnecting: an outbox deletion after PanDA accepted, or a command acknowledgement, is written again
if it was not kept. If the database does not come back within db_reconnect_seconds, the next run sends those
updates (or acknowledgements) again: PanDA takes a repeated update (a final one too: the job stays final)
and a repeated acknowledgement. A command is applied in the transaction that marks it applied: once.
"""

from __future__ import annotations

import json
import logging
import socket
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from harvester_cli import model
from harvester_cli.backends.base import job_dir
from harvester_cli.config import QueueConfig
from harvester_cli.errors import CommitUnknown, PandaError, PandaNoSuchCall
from harvester_cli.faults import fault_point
from harvester_cli.instance import Instance
from harvester_cli.panda import commands as panda_commands
from harvester_cli.panda import updates
from harvester_cli.panda.jobs import PandaJob
from harvester_cli.state import commands, jobs, meta, outbox, targets, workers
from harvester_cli.state.store import Tx
from harvester_cli.steps import registration

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


def refresh_running_jobs(instance: Instance, queues: list[QueueConfig]) -> int:
    """Push jobs that run long get a periodic "running" update: PanDA can only say "tobekilled" in an
    answer. Jobs that had a worker and wait for another (after a transient CE error) get a "starting" one:
    PanDA keeps them as this harvester's, not as lost. Returns how many were queued."""
    queued = 0
    at = model.now()
    for queue in queues:
        if queue.mode != "push" or not queue.job_heartbeat_seconds:
            continue
        with instance.store.transaction() as tx:
            before = at - queue.job_heartbeat_seconds
            due = [(p, j, model.JOB_RUNNING) for p, j in jobs.running_unheard_since(tx, queue.name, before)]
            due += [(p, j, model.JOB_STARTING) for p, j in jobs.waiting_again_unheard_since(tx, queue.name, before)]
            if not due:
                continue
            outbox.enqueue(tx, outbox.JOB, [(panda_id, queue.name, updates.job_update(
                PandaJob.from_json(job_json), status), False) for panda_id, job_json, status in due])
            jobs.touch(tx, [d[0] for d in due], at)
            queued += len(due)
    return queued


def _with_pilot_links(instance: Instance, rows) -> tuple[list[dict], set[int]]:
    """The updates of these outbox rows as PanDA gets them (with where the monitor finds the pilot), and
    the jobs whose update carries pilot_log: PanDA stores a new log record for every call that carries it,
    so it goes with one acknowledged update per job."""
    with instance.store.reading() as tx:
        links = jobs.pilot_links(tx, [r.key for r in rows])
    payloads, with_log = [], set()
    queues = instance.config.queues
    for row in rows:
        payload = json.loads(row.payload)
        link = links.get(row.key)
        if link is not None:
            pilot_log = link.batch_log_url if not link.pilot_log_sent else None
            stdout = link.stdout_url
            if row.queue in queues and queues[row.queue].many_to_one is not None and link.log_dir:
                # many jobs in one worker: the job's own pilot output, in its own directory of the worker's logs
                stdout = instance.log_url(f"{link.log_dir}/{job_dir(row.key)}/pilot.out") or stdout
            payload = updates.with_pilot_links(payload, stdout, link.batch_id, pilot_log)
            if pilot_log:
                with_log.add(row.key)
        payloads.append(payload)
    return payloads, with_log


def send_job_updates(instance: Instance, queues: list[str], run: PropagateRun,
                     progress: Callable[[int], None] | None = None) -> None:
    store = instance.store
    many_to_one = {q.name for q in instance.config.queues.values() if q.many_to_one is not None}
    for rows in outbox.pages(store, outbox.JOB, queues, instance.config.panda.bulk_size):
        payloads, with_log = _with_pilot_links(instance, rows)
        try:
            fault_point("propagate_before_job_updates")
            outcomes = instance.panda.update_jobs_bulk(payloads)
        except PandaError as exc:
            run.errors.append(f"job updates: {exc}")
            outbox.refused(store, outbox.JOB, [(r.key, str(exc)) for r in rows])
            return
        fault_point("propagate_after_job_updates")   # PanDA has them; the outbox does not know yet
        sent = [r for r, o in zip(rows, outcomes) if o.accepted]
        refused = [(r.key, o.message or "PanDA refused") for r, o in zip(rows, outcomes) if not o.accepted]
        kill_jobs = [r.key for r, o in zip(rows, outcomes) if o.kill]
        # A job sharing its worker with others (many_to_one) is killed alone: sweep stops its step.
        alone = [r.key for r, o in zip(rows, outcomes) if o.kill and r.queue in many_to_one]
        kill_jobs = [k for k in kill_jobs if k not in alone]
        at = model.now()

        def record(tx: Tx) -> int:
            outbox.sent(tx, outbox.JOB, [(r.key, r.version) for r in sent])
            jobs.acknowledged(tx, [r.key for r in sent if r.key in with_log], [r.key for r in sent if r.final], at)
            return (workers.mark_kill_of_jobs(tx, kill_jobs, "PanDA answered tobekilled for its job")
                    + jobs.mark_kill(tx, alone, "PanDA answered tobekilled", at))

        # PanDA has these updates: losing this write to another host's deadlock, or to a failover under its
        # COMMIT, would send them again.
        keys = [r.key for r in sent]
        run.kills_from_panda += store.retrying(
            record, committed=lambda tx: bool(keys) and not outbox.still_claimed(tx, outbox.JOB, keys))
        outbox.refused(store, outbox.JOB, refused)
        run.jobs_sent += len(sent)
        run.jobs_refused += len(refused)
        if progress:
            progress(len(rows))


def send_worker_updates(instance: Instance, queues: list[str], run: PropagateRun,
                        progress: Callable[[int], None] | None = None) -> None:
    store = instance.store
    for rows in outbox.pages(store, outbox.WORKER, queues, instance.config.panda.bulk_size):
        with store.reading() as tx:
            current = workers.by_ids(tx, [r.key for r in rows])
            links = workers.panda_ids(tx, [r.key for r in rows])
        gone = [r for r in rows if r.key not in current]
        rows = [r for r in rows if r.key in current]
        if gone:   # swept meanwhile: nothing left to say
            with store.transaction() as tx:
                outbox.sent(tx, outbox.WORKER, [(r.key, r.version) for r in gone])
        if not rows:
            continue
        try:
            outcomes = instance.panda.update_workers([
                updates.worker_update(current[r.key], links[r.key], instance.config.panda_site(current[r.key].queue),
                                      instance.host)
                for r in rows])
        except PandaError as exc:
            run.errors.append(f"worker updates: {exc}")
            outbox.refused(store, outbox.WORKER, [(r.key, str(exc)) for r in rows])
            return
        fault_point("propagate_after_worker_updates")
        sent = [r for r, o in zip(rows, outcomes) if o.accepted]
        refused = [(r.key, "PanDA answered false for this worker") for r, o in zip(rows, outcomes) if not o.accepted]
        store.retrying(lambda tx: outbox.sent(tx, outbox.WORKER, [(r.key, r.version) for r in sent]),
                       rerun_unknown=True)   # deletes what PanDA took: a second run finds nothing more
        outbox.refused(store, outbox.WORKER, refused)
        run.workers_sent += len(sent)
        run.workers_refused += len(refused)
        if progress:
            progress(len(rows))


def worker_statistics(instance: Instance, queues: list[str]) -> dict:
    """What report_worker_statistics sends for these queues' live workers."""
    with instance.store.reading() as tx:
        return updates.worker_statistics(workers.live_counts(tx, queues))


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


def apply_command(instance: Instance, tx: Tx, command: panda_commands.PandaCommand) -> tuple[str, str | None, int]:
    """Apply one PanDA command to the state database; returns (status, diag, workers marked for kill)."""
    queues = instance.config.queues.values()
    action = panda_commands.interpret(command, configured_sites={q.site for q in queues},
                                      streaming_sites={q.site for q in queues if q.pilot_streaming})
    if isinstance(action, panda_commands.Rejected):
        return commands.REJECTED, action.reason, 0
    if isinstance(action, panda_commands.SetWorkerTargets):   # a newer command replaces the queue's numbers
        targets.replace(tx, action.site, action.targets, command.command_id, model.now())
        return commands.APPLIED, None, 0
    if isinstance(action, (panda_commands.KillWorkers, panda_commands.KillWorkerIds)):
        live = workers.live_unmarked(tx)
        if isinstance(action, panda_commands.KillWorkerIds):
            chosen = [w.worker_id for w in live if w.worker_id in action.worker_ids]
        else:
            chosen = [w.worker_id for w in live if action.matches(w.status, instance.config.panda_site(w.queue),
                                                                  w.computing_element, w.submission_host)]
        workers.mark_kill_ids(tx, chosen, f"PanDA command {command.name}")
        return commands.APPLIED, None, len(chosen)
    return commands.APPLIED, None, 0   # statistics and worker updates go out in every propagate run


def handle_commands(instance: Instance, run: PropagateRun) -> None:
    store = instance.store
    try:
        received = instance.panda.acquire_commands(100)
    except PandaError as exc:
        run.errors.append(f"commands: {exc}")
        received = []
    at = model.now()
    if received:
        # PanDA has handed these out: a COMMIT whose answer never came stores them again (what was kept is
        # skipped), rather than leave them unknown here
        run.commands_received += store.retrying(lambda tx: commands.record_received(tx, received, at),
                                                rerun_unknown=True)
    # Applied once over all hosts: each new command is claimed (FOR UPDATE SKIP LOCKED) by one run, applied
    # and marked in the same transaction, so another host's propagate finds it applied or skips it. A COMMIT
    # whose answer never came applied them all or none: a later run applies what was not kept.
    applied = killed_now = 0
    try:
        with store.transaction() as tx:
            for row in commands.claim_new(tx, 100):
                try:
                    command = panda_commands.PandaCommand(row.command_id, row.command,
                                                          json.loads(row.params or "null"), bool(row.ack_requested))
                    status, diag, killed = apply_command(instance, tx, command)
                except ValueError as exc:   # params we cannot read back: keep the reason, do not loop
                    status, diag, killed = commands.REJECTED, f"malformed params: {exc}", 0
                commands.record_outcome(tx, row.command_id, status, diag, at)
                applied += status == commands.APPLIED
                killed_now += killed
    except CommitUnknown as exc:
        run.errors.append(f"commands: {exc}; those not kept are applied by a later run, once")
        return
    run.commands_applied += applied
    run.kills_from_panda += killed_now
    # Acknowledge only what was applied here; a rejected command keeps its reason in the table. Claimed, so
    # one host acknowledges each (and the claim expires if it dies before it could).
    with store.transaction() as tx:
        to_ack = commands.claim_to_acknowledge(tx)
    if to_ack:
        fault_point("propagate_before_ack")   # applied and committed here, not yet acknowledged
        try:
            instance.panda.acknowledge_commands(to_ack)
        except PandaError as exc:
            run.errors.append(f"acknowledging commands: {exc}")
            with store.transaction() as tx:
                commands.release(tx, to_ack)
            return
        # PanDA has the acknowledgements: a COMMIT whose answer never came is written again (a second run
        # finds them acknowledged already)
        store.retrying(lambda tx: commands.record_acknowledged(tx, to_ack), rerun_unknown=True)


def _service_metrics_key(host: str) -> str:
    return f"service_metrics:{host}"[:64]


def send_service_metrics(instance: Instance, run: PropagateRun) -> None:
    """This host's memory, CPU, disk and proxy lifetimes for PanDA's monitor, at most every
    [metrics] panda_interval seconds per host (Harvester's service monitor: every 300 s)."""
    from harvester_cli.site import hostmetrics
    from harvester_cli.site.lifetimes import credentials

    interval = instance.config.metrics.panda_interval
    if not interval:
        run.service_metrics = "off"
        return
    at = model.now()
    last = meta.get(instance.store, _service_metrics_key(instance.host))
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
    with instance.store.transaction() as tx:
        meta.put(tx, _service_metrics_key(instance.host), int(at))
    run.service_metrics = "sent"


def propagate(instance: Instance, queues: list[QueueConfig],
              progress: Callable[[int], None] | None = None) -> PropagateRun:
    run = PropagateRun()
    instance.store   # a state database this code cannot use is an error before PanDA is told anything
    names = [q.name for q in queues]
    send_heartbeat(instance, run)
    handle_commands(instance, run)
    run.job_heartbeats = refresh_running_jobs(instance, queues)
    send_job_updates(instance, names, run, progress)
    send_worker_updates(instance, names, run, progress)
    send_statistics(instance, queues, run)
    send_service_metrics(instance, run)
    return run
