"""submit: repair interrupted submissions, plan, record workers as pending, call the backend, record results.

Never a worker submitted twice, never a job in two workers. The invariant: a worker exists as a `pending`
row, claimed by the run that submits it, before the backend is called, and in push mode its job is bound to
it in that same transaction. Only the backend's answer moves it on (`submitted` with its batch id, or
`missed`), and only while it is still pending. A pending row whose run is gone (its claim expired, or its
process on this host died) is never submitted again: the next submit asks the backend for the batch job
tagged with its worker id and adopts it, or records it missed.

One queue's submission, in order (`submit_queue`):
  1. lease "submit:QUEUE"          one run per queue over every host
  2. repair_pending                adopt or miss what an interrupted run left pending
  3. plan                          how many workers, per resource type (steps.planner, pure); and which
                                   queued pilots nobody needs any more, marked for sweep (steps.retire)
  4. record_pending                one transaction: the rows and their jobs' bindings, only while the lease holds
  5. backend.submit                each batch job tagged with the harvester id and its worker id
  6. record_results                one transaction: submitted or missed, rows still pending only; jobs follow

A COMMIT of step 4 or 6 whose answer never came (the database failed over under it) is looked up after
reconnecting: step 4's rows exist (then the backend is called) or not (then they are recorded again); step
6's rows are no longer pending (kept) or still are (recorded again). If the database does not come back
within db_reconnect_seconds, the rows stay pending, claimed by a run that has ended: the next submit's repair
asks the backend (find) and adopts them. Never a second backend call for them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

from harvester_cli import model
from harvester_cli.backends.base import SubmitResult, WorkerSpec
from harvester_cli.config import QueueConfig
from harvester_cli.config import downtimes as downtime_rules
from harvester_cli.errors import PandaError, PandaRefused, StateError, exit_code_of
from harvester_cli.faults import fault_point
from harvester_cli.instance import Instance, worker_ref
from harvester_cli.panda import ce_errors, job_counts, resource_types, updates
from harvester_cli.panda.jobs import MAX_INT32, PandaJob
from harvester_cli.state import jobs, locks, meta, outbox, targets, workers
from harvester_cli.state.store import Tx, chunks
from harvester_cli.steps import allocation, caps, planner, registration, resources, retire, transitions

log = logging.getLogger(__name__)

BACKEND_BATCH = 100
# Workers recorded as pending (and their specs held in memory) at a time: a submission of any size keeps
# its memory flat, and a crash leaves at most this many to repair.
SUBMIT_ROUND = 1000


@dataclass
class QueueSubmit:
    queue: str
    plan: planner.Plan | None = None
    submitted: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    adopted: int = 0
    missed: int = 0
    retried: int = 0      # push jobs PanDA confirmed as still ours after a transient CE error: a new worker
    abandoned: int = 0    # push jobs waiting to be resubmitted that PanDA had killed, reassigned or ended
    retry_problem: str | None = None   # PanDA could not be asked about the jobs waiting to be resubmitted
    skipped: str | None = None
    error: str | None = None
    error_exit: int = 1   # what `error` asks of the run: 2 for a configuration problem
    interrupted: Interrupted | None = None

    @property
    def shortfall(self) -> str | None:
        """`submit --count N` that cannot submit N: which caps cut it (a run that failed says why instead)."""
        return self.plan.shortfall if self.plan is not None and not self.error else None


@dataclass
class Interrupted:
    """What an interrupt (Ctrl-C) left of a submission: workers recorded but not known to be submitted, those
    the backend turned out to have (adopted), those it did not (cancelled), and those it could not be asked
    about (left pending for the next submit to repair)."""

    recorded: int = 0
    adopted: int = 0
    cancelled: int = 0
    unknown: int = 0

    def __str__(self) -> str:
        return (f"interrupted: {self.recorded} worker(s) recorded but not submitted: {self.adopted} adopted (the "
                f"backend had them), {self.cancelled} cancelled (it did not), {self.unknown} left pending for "
                "the next submit to ask the backend again")


@dataclass
class SubmitRun:
    queues: list[QueueSubmit] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # what the whole run could not learn (PanDA unreachable)

    @property
    def partial(self) -> bool:
        return bool(self.errors) or any(q.failed or q.error or q.shortfall or q.retry_problem for q in self.queues)

    @property
    def exit_code(self) -> int:
        """0, 1 (partial: the next run retries), 2 when a queue's backend found a configuration problem."""
        worst = max([q.error_exit for q in self.queues if q.error] + [0])
        return max(worst, 1 if self.partial else 0)

    @property
    def interrupted(self) -> Interrupted | None:
        return next((q.interrupted for q in self.queues if q.interrupted), None)

    def problems(self) -> list[str]:
        """Every reason the run was partial, one line each."""
        out = list(self.errors)
        for q in self.queues:
            if q.error:
                out.append(f"queue {q.queue}: {q.error}")
            elif q.shortfall:
                out.append(f"queue {q.queue}: {q.shortfall}")
            if q.retry_problem:
                out.append(f"queue {q.queue}: {q.retry_problem}")
            out += [f"queue {q.queue}: worker {w}: {e}" for w, e in q.failed]
        return out


# -- crash repair ---------------------------------------------------------------------------

@dataclass
class Repair:
    adopted: int = 0
    missed: int = 0
    problem: str | None = None   # the backend could not be asked
    exit_code: int = 1           # what the problem asks of the run (2: a configuration problem)


def repair_pending(instance: Instance, queue: QueueConfig) -> Repair:
    """Adopt or miss workers left `pending` by an interrupted submit (and free the push jobs it had claimed
    for workers it never recorded). When the backend cannot be asked, they stay pending (and count as queued)
    for lost_grace_seconds, then end missed: a worker whose fate nobody can learn must not hold its place for
    good. Its push job is then reported failed, never given to another worker: the first may still run it."""
    store = instance.store
    with store.transaction() as tx:
        if queue.mode == "push":
            jobs.release_dead_claims(tx, queue.name)
        rows = workers.claim_interrupted(tx, queue.name, instance.host_filter(queue), 1000)
    if not rows:
        return Repair()
    try:
        found = instance.backend(queue).find([worker_ref(r) for r in rows])
    except Exception as exc:   # cannot tell: keep them pending (released) and ask again next run
        log.info("queue %s: backend lookup of interrupted submissions failed: %s", queue.name, exc,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        at = model.now()
        overdue = [r for r in rows if at - r.created > queue.lost_grace_seconds]
        with store.transaction() as tx:
            workers.release(tx, [r.worker_id for r in rows if r not in overdue])
        if overdue:
            _end_unknown(instance, queue, overdue, exc, at)
        return Repair(missed=len(overdue), exit_code=exit_code_of(exc), problem=(
            f"{len(rows)} worker(s) left pending by an interrupted submission: the backend could not be asked "
            f"({exc}); {len(overdue)} pending longer than lost_grace_seconds={queue.lost_grace_seconds} ended "
            "missed, the others are asked about again by the next submit"))
    results = [f if f is not None else SubmitResult(r.worker_id, error="submission was interrupted and the "
                                                    "backend has no trace of this worker")
               for r, f in zip(rows, found)]
    record_results(instance, queue, results, min(r.created for r in rows))   # recorded before the backend call
    adopted = sum(1 for f in found if f is not None)
    return Repair(adopted, len(rows) - adopted)


def _end_unknown(instance: Instance, queue: QueueConfig, rows: list, exc: Exception, at: float) -> None:
    diags = {r.worker_id: (f"submission was interrupted and the backend could not be asked for "
                           f"{model.duration(at - r.created)} ({str(exc)[:200]}); if its batch job exists, it runs "
                           "unreported") for r in rows}

    def record(tx: Tx) -> None:
        workers.record_missed(tx, [(w, d, None, None) for w, d in diags.items()], at)
        outbox.enqueue_workers(tx, queue.name, list(diags))
        transitions.fail_jobs_of_unknown(tx, queue, diags, at)

    instance.store.retrying(record, committed=lambda tx: not workers.pending_of_mine(tx, list(diags)))


# -- planning -------------------------------------------------------------------------------

def queue_state(instance: Instance, queue: QueueConfig, activated: job_counts.ActivatedJobs | None,
                sizes: dict[str, tuple[int, int]], registration_problem: str | None = None,
                shared: tuple[planner.SharedCap, ...] = (),
                free: planner.FreeResources | None = None) -> planner.QueueState:
    at = model.now()
    ces = downtime_rules.fanout_ces(queue)
    announced = instance.downtimes()
    down = downtime_rules.queue_down(announced, queue.name, ces, at, queue.walltime)
    ces_down = {} if down else downtime_rules.blocked_ces(announced, queue.name, ces, at, queue.walltime)
    interval = instance.config.instance.cycle_interval
    made_at = stats_made(instance.config.panda.stats_refresh, at)
    age = None if made_at is None else int(at - made_at)
    with instance.store.reading() as tx:
        load = workers.queue_load(tx, queue.name)
        # a window either side of now: hosts' clocks differ a little; a stamp further ahead is a wrong clock
        missed = workers.missed_since(tx, queue.name, at - queue.throttle_window, at + queue.throttle_window)
        streaming = targets.remaining(tx, queue.site, queue.job_type) if queue.pilot_streaming else None
        waiting = jobs.unbound_by_type(tx, queue.name, at)
        ages = jobs.unbound_ages(tx, queue.name, at) if queue.many_to_one is not None else {}
        # every host's workers of this queue in the interval (the queue lease keeps this exact)
        made = workers.made_since(tx, queue.name, at - interval, at + interval) if interval else None
        started = workers.started_since(tx, queue.name, made_at) if queue.mode == "pull" and made_at is not None else {}
        turnover_cycle = interval or 60   # cron's minute when the hosts' rhythm is not set
        ends = (workers.end_times_since(tx, queue.name, at - planner.TURNOVER_CYCLES * turnover_cycle)
                if queue.free_resources else None)
    asked = activated is not None and activated.source != job_counts.NOT_ASKED
    total, by_type = (activated.for_queue(queue.site, queue.prod_source_label, queue.resource_types)
                      if asked else (None, None))
    return planner.QueueState(
        queued=load.queued, running=load.running, activated=total, activated_by_type=by_type,
        activated_source=activated.source if asked else planner.NO_ANSWER if activated is None else "",
        started_recently=started,
        stats_age=age, waiting_jobs=waiting, waiting_ages=ages, streaming_targets=streaming, missed_recent=missed,
        queued_cores=load.queued_cores, queued_memory_mb=load.queued_memory_mb, sizes=sizes,
        registration=registration_problem, made_recently=made, cycle_interval=interval, downtime=down,
        ces_down=ces_down, shared_caps=shared, free=free, ended_recently=None if ends is None else len(ends),
        ended_peak=None if ends is None else planner.most_within(ends, turnover_cycle), turnover_cycle=turnover_cycle)


def stats_made(refresh: int, now: float) -> float | None:
    """When PanDA last refreshed its activated-job counts, or None if they are live. The view is refreshed on
    multiples of `refresh` seconds (pg_cron's "* * * * *": every full minute); a pilot that started since then
    may have taken a job the counts still show. The moment itself, not now less whole seconds: a pilot that
    started within the second after the refresh (a batch system's start times are whole seconds) counts."""
    return now - now % refresh if refresh else None


def activated_jobs(instance: Instance, queues: list[QueueConfig], errors: list[str] | None = None, *,
                   push: bool = False) -> job_counts.ActivatedJobs | None:
    """Activated jobs from PanDA for the pull queues (one call per run; with `push`, for the push queues too:
    the jobs waiting at PanDA for fetch-jobs, which a plan mentions); None if PanDA cannot say (the reason
    goes to `errors` when a pull queue needed it: pull queues then get only their empty-pilot floor)."""
    pull = any(q.mode == "pull" and not q.pilot_streaming for q in queues)
    if not pull and not (push and any(q.mode == "push" for q in queues)):
        return job_counts.ActivatedJobs(job_counts.NOT_ASKED, {}, {})
    try:
        return job_counts.fetch(instance.panda)
    except PandaError as exc:
        if errors is not None and pull:
            errors.append(f"cannot get activated jobs from PanDA ({exc}): pull queues get their empty-pilot floor only")
        return None


# -- submission -----------------------------------------------------------------------------

def worker_id_floor(instance: Instance) -> int:
    """The highest worker id PanDA has seen, asked once for a new state database (ids are never reused)."""
    if meta.get(instance.store, meta.LAST_WORKER_ID) is not None:
        return 0
    try:
        return instance.panda.get_current_worker_id()
    except PandaRefused as exc:
        # PanDA answers "database error" when it has no worker of this harvester: a new instance.
        log.info("PanDA knows no worker of %s yet (%s): numbering from 1", instance.config.harvester_id, exc.message)
        return 0


def _size(queue: QueueConfig, resource_type: str, job: PandaJob | None,
          sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Push: the job's cores and memory; pull: the resource type's worker size on this queue."""
    if job is not None:   # fetch-jobs checked both are within what a worker row holds
        cores = job.core_count or 1
        memory = job.min_ram_count or cores * queue.memory_mb_per_core
    else:
        cores, memory = sizes.get(resource_type) or (queue.core_count, queue.core_count * queue.memory_mb_per_core)
    return cores, min(memory, MAX_INT32)   # cores x MB per core can pass what the column holds


class LeaseLost(StateError):
    """This run's queue lease ran out before its workers were recorded: another host may have planned since."""


def _claim_allocations(instance: Instance, queue: QueueConfig, counts: dict[str, int], at: float,
                       fill_now: bool, nodes_max: int | None
                       ) -> list[tuple[str, PandaJob | None, allocation.Packed | None]]:
    """many_to_one: claim the jobs of the planned allocations, oldest first, and pack them (`nodes_max`: the
    plan's largest allocation when the idle nodes make it smaller); jobs left over (another host took some, or a
    half-filled rest still waits to fill) are released at once."""
    items: list[tuple[str, PandaJob | None, allocation.Packed | None]] = []
    jobs_max = allocation.largest(queue, nodes_max) * queue.many_to_one.jobs_per_node
    with instance.store.transaction() as tx:
        for rt, n in counts.items():
            if n <= 0:
                continue
            rows = jobs.claim_unbound(tx, queue.name, rt, n * jobs_max)
            packed, left = allocation.pack(queue, [(PandaJob.from_json(r.job_json), r.created) for r in rows], at,
                                           fill_now=fill_now, nodes_max=nodes_max)
            jobs.release(tx, [job.panda_id for job in left])
            items += [(rt, None, p) for p in packed]
    return items


def record_pending(instance: Instance, queue: QueueConfig, counts: dict[str, int], floor: int,
                   sizes: dict[str, tuple[int, int]], *, fill_now: bool = False,
                   fitted: int | None = None, nodes_max: int | None = None) -> list[WorkerSpec]:
    """Step 4: record the new workers as pending, claimed by this run, and bind their jobs, in one
    transaction; returns their specs (nothing when a push queue has no job left to bind). A many_to_one
    queue's worker is an allocation holding many jobs: every one of them is bound to it in that same
    transaction (`fill_now`: a half-filled one goes without waiting to fill). `fitted`: the plan's walltime
    when a backfill window shortens the queue's; `nodes_max`: its largest allocation when the idle nodes make it
    smaller than the queue's."""
    store = instance.store
    at = model.now()
    items: list[tuple[str, PandaJob | None, allocation.Packed | None]] = []
    if queue.many_to_one is not None:
        items = _claim_allocations(instance, queue, counts, at, fill_now, nodes_max)
    elif queue.mode == "push":
        with store.transaction() as tx:
            for rt, n in counts.items():
                if n > 0:
                    items += [(rt, PandaJob.from_json(row.job_json), None)
                              for row in jobs.claim_unbound(tx, queue.name, rt, n)]
    else:
        items = [(rt, None, None) for rt, n in counts.items() for _ in range(n)]
    if not items:
        return []
    fault_point("submit_after_job_claims")   # push jobs claimed, no worker recorded for them yet
    ids = meta.allocate_worker_ids(store, len(items), floor)
    specs, rows, links = [], [], []
    log_root = instance.worker_log_root(queue.name, at)
    for worker_id, (rt, job, packed) in zip(ids, items):
        log_dir = log_root / str(worker_id)
        if packed is not None:   # each job's pilot gets a step of the allocation's size per job
            cores, memory, walltime = packed.cores, packed.memory_mb, packed.walltime
            command = instance.pilot_command(queue, worker_id, rt, packed.allocation.cores_per_job,
                                             packed.allocation.memory_per_job)
        else:
            cores, memory = _size(queue, rt, job, sizes)
            walltime = fitted or queue.walltime
            command = instance.pilot_command(queue, worker_id, rt, cores, memory, walltime)
        specs.append(WorkerSpec(
            worker_id=worker_id, queue=queue.name, resource_type=rt, n_core=cores, memory_mb=memory,
            walltime=walltime, log_dir=log_dir, pilot_command=command,
            environment=instance.pilot_environment(queue, worker_id, rt), job=job,
            jobs=packed.jobs if packed else [], allocation=packed.allocation if packed else None,
        ))
        rows.append((worker_id, queue.name, queue.backend, queue.mode, rt, queue.job_type, cores, memory,
                     model.PENDING, str(log_dir), at, at, store.owner, None, instance.host))
        bound = [job] if job is not None else packed.jobs if packed is not None else []
        links += [(j.panda_id, worker_id) for j in bound]

    def insert(tx: Tx) -> None:
        if not locks.holds(tx, f"submit:{queue.name}"):
            raise LeaseLost(f"the queue's submit lease ran out (more than lease_seconds={store.lease_seconds} since "
                            "it was renewed): nothing recorded, another host may have planned since; the next run "
                            "plans again")
        lease = tx.lease_now() + store.lease_seconds   # by the server's clock, as every claim
        workers.record_pending(tx, [(*row[:13], lease, row[14]) for row in rows])
        jobs.bind(tx, links, at)

    recorded = [r[0] for r in rows]
    try:
        # run again whole if another host's transaction deadlocked it; a COMMIT whose answer never came is
        # looked up: the rows are there, or recorded now
        store.retrying(insert, committed=lambda tx: bool(workers.pending_of_mine(tx, recorded)))
    except LeaseLost:
        if links:   # the jobs bound for these workers wait for the next run, not for their claims to expire
            with store.transaction() as tx:
                jobs.release(tx, [p for p, _ in links])
        raise
    return specs


def record_results(instance: Instance, queue: QueueConfig, results: list[SubmitResult],
                   sent: float | None = None) -> None:
    """Step 6: store what the backend said per worker, in one transaction (run again whole if another
    host's transaction deadlocked it); jobs of missed workers go back to wait (or fail). `sent`: when the
    workers went to the backend, their submit time (a batch may start running before the call returns)."""
    at = model.now()
    ok = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    # A refusal the CE tables call permanent fails its push job at once; a transient one, or one the tables do
    # not know, gives it back (PanDA is asked before it gets a new worker).
    errors = {r.worker_id: ce_errors.match(r.error, queue.backend) for r in bad}
    permanent = {w for w, entry in errors.items() if entry is not None and not entry.transient}

    def record(tx: Tx) -> None:
        log_dirs = workers.log_dirs(tx, [r.worker_id for r in results])

        def url(result: SubmitResult, name: str | None) -> str | None:
            if not name:
                return None
            if "://" in name or name.startswith("/"):
                return name
            return instance.log_url(f"{log_dirs.get(result.worker_id)}/{name}")

        workers.record_submitted(tx, [(r.batch_id, r.submission_host, r.computing_element, sent or at, url(r, r.stdout),
                                       url(r, r.stderr), url(r, r.batch_log), r.worker_id) for r in ok])
        workers.record_missed(tx, [(r.worker_id, r.error or "submission failed", r.computing_element,
                                    r.submission_host) for r in bad], at)
        fault_point("submit_mid_transaction")   # results written, not yet committed
        outbox.enqueue_workers(tx, queue.name, [r.worker_id for r in results])
        if ok:
            transitions.jobs_submitted(tx, queue, {r.worker_id: r.batch_id for r in ok}, at)
        if bad:
            transitions.requeue_jobs(tx, queue, {r.worker_id: r.error or "submission failed" for r in bad}, at,
                                     give_up=permanent)

    # The backend has these workers: a COMMIT whose answer never came is looked up (the rows left pending,
    # or not), never answered by a second backend call.
    ids = [r.worker_id for r in results]
    instance.store.retrying(record, committed=lambda tx: not workers.pending_of_mine(tx, ids))
    for r in bad:
        instance.count("harvester_cli_submission_failures_total", queue=queue.name,
                       computing_element=r.computing_element or "")
        entry = errors[r.worker_id]
        if entry is not None:
            instance.count("harvester_cli_ce_errors_total", queue=queue.name, computing_element=r.computing_element,
                           code=entry.code, transient=str(entry.transient).lower())


@dataclass
class RetryCheck:
    """Jobs that waited for PanDA's word before a new worker: confirmed (they wait for one now), abandoned
    (PanDA no longer has them as ours), and why PanDA could not be asked."""

    confirmed: int = 0
    abandoned: int = 0
    problem: str | None = None


def confirm_retries(instance: Instance, queue: QueueConfig, limit: int = 500) -> RetryCheck:
    """Ask PanDA about the queue's jobs whose worker failed for a transient CE reason before they started:
    a job PanDA still has as ours (sent, starting or running, same attempt) gets its `starting` heartbeat now
    and waits for a new worker; one it killed, reassigned or ended is over here. Nothing moves without PanDA's
    answer: a job PanDA cannot be asked about waits for the next run."""
    store = instance.store
    check = RetryCheck()
    with store.transaction() as tx:
        rows = jobs.claim_retries(tx, queue.name, limit)
    if not rows:
        return check
    held = {r.panda_id: PandaJob.from_json(r.job_json) for r in rows}
    gone: dict[int, str] = {}
    try:
        states = instance.panda.job_states(list(held))
        for panda_id, job in held.items():
            state = states.get(panda_id)
            if state is None or state.status == "not found":
                gone[panda_id] = "not resubmitted: PanDA does not have the job"
            elif state.status not in model.JOB_RETRYABLE_AT_PANDA:
                gone[panda_id] = f"not resubmitted: PanDA has the job {state.status}"
            elif job.attempt_nr is not None and state.attempt_nr not in (None, job.attempt_nr):
                gone[panda_id] = (f"not resubmitted: PanDA reassigned the job (attempt {state.attempt_nr}, this "
                                  f"harvester has attempt {job.attempt_nr})")
        ask = [p for p in held if p not in gone]
        # The heartbeat says "starting" again, and its answer is PanDA's last word: tobekilled ends it here.
        outcomes = instance.panda.update_jobs_bulk([updates.job_update(held[p], model.JOB_STARTING) for p in ask]) \
            if ask else []
    except PandaError as exc:
        with store.transaction() as tx:
            jobs.release(tx, list(held))
        check.problem = (f"{len(held)} job(s) wait to be resubmitted: PanDA could not be asked ({exc}); asked again "
                         "next run")
        return check
    confirmed = []
    for panda_id, outcome in zip(ask, outcomes):
        if outcome.kill or (outcome.accepted and outcome.command == "alreadydone"):
            gone[panda_id] = f"not resubmitted: PanDA answered {outcome.command} to its starting heartbeat"
        elif outcome.accepted:
            confirmed.append(panda_id)
    at = model.now()

    def record(tx: Tx) -> int:
        n = jobs.confirm_retries(tx, confirmed, at)
        jobs.abandon(tx, gone, at)
        jobs.release(tx, list(held))   # refused heartbeats: asked again next run
        return n

    # compare-and-set on sub-status retry and the claim: run again after an unanswered COMMIT, it moves nothing twice
    check.confirmed, check.abandoned = store.retrying(record, rerun_unknown=True), len(gone)
    for panda_id, why in gone.items():
        log.info("queue %s: job %s: %s", queue.name, panda_id, why)
    if gone:
        instance.count("harvester_cli_retries_abandoned_total", len(gone), queue=queue.name)
    return check


def submit_specs(instance: Instance, queue: QueueConfig, specs: list[WorkerSpec], result: QueueSubmit,
                 progress: Callable[[int], None] | None = None) -> None:
    """Steps 5 and 6, one backend batch at a time. An interrupt (Ctrl-C) withdraws what the backend does not
    have; a backend failure leaves the rest pending for the next submit's repair."""
    backend = instance.backend(queue)
    store = instance.store
    renewed = model.now()
    left = [s.worker_id for s in specs]   # recorded, not yet known to be submitted
    try:
        for batch in chunks(specs, BACKEND_BATCH):
            if model.now() - renewed > store.lease_seconds / 3:
                # A slow backend: keep the queue lock and the waiting workers' claims alive, well before their
                # lease could run out and another run take them over.
                with store.transaction() as tx:
                    workers.renew(tx, left)
                    locks.renew(tx, f"submit:{queue.name}")
                renewed = model.now()
            fault_point("before_backend_submit")
            sent = model.now()
            shown = 0   # workers the backend reported as it went: the progress moves per worker

            def report(n: int) -> None:
                nonlocal shown
                shown += n
                progress(n)

            backend.on_submitted = report if progress else None
            try:
                results = backend.submit(list(batch))
            except Exception as exc:
                # Some workers of the batch may have started: release them as pending, so the next submit's
                # repair asks the backend (find) instead of guessing, and no job runs twice.
                log.info("queue %s: backend %s failed during submission: %s", queue.name, queue.backend, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))   # a traceback with -vv only
                with store.transaction() as tx:
                    workers.release(tx, left)
                result.error = f"backend {queue.backend} failed: {exc}; the next submit repairs these workers"
                result.error_exit = exit_code_of(exc)
                return
            finally:
                backend.on_submitted = None
            fault_point("after_backend_submit")
            record_results(instance, queue, results, sent)
            del left[:len(batch)]
            result.submitted += [r.worker_id for r in results if r.ok]
            result.failed += [(r.worker_id, r.error or "submission failed") for r in results if not r.ok]
            if progress:
                progress(max(0, len(batch) - shown))
    except KeyboardInterrupt:
        result.interrupted = withdraw(instance, queue, left)


def withdraw(instance: Instance, queue: QueueConfig, worker_ids: list[int]) -> Interrupted:
    """An operator interrupted the submission: of the workers recorded and not known to be submitted, adopt
    those the backend has (a batch may have reached it mid-call), end the others cancelled, quietly (no
    failure: nothing was tried), their jobs back to wait without an attempt counted. If the backend cannot
    be asked, they stay pending for the next submit's repair."""
    store = instance.store
    with store.reading() as tx:
        rows = list(workers.pending_of_mine(tx, worker_ids).values())
    outcome = Interrupted(recorded=len(rows))
    if not rows:
        return outcome
    try:
        found = instance.backend(queue).find([worker_ref(r) for r in rows])
    except Exception as exc:
        log.warning("queue %s: after the interrupt, the backend could not be asked about %d workers: %s",
                    queue.name, len(rows), exc)
        with store.transaction() as tx:
            workers.release(tx, [r.worker_id for r in rows])
        outcome.unknown = len(rows)
        return outcome
    adopted = [f for f in found if f is not None]
    record_results(instance, queue, adopted, min(r.created for r in rows))
    absent = [r.worker_id for r, f in zip(rows, found) if f is None]
    diag = "submission interrupted by the operator before the backend took it"
    at = model.now()

    def cancel(tx: Tx) -> int:
        ended = workers.record_withdrawn(tx, absent, diag, at)
        outbox.enqueue_workers(tx, queue.name, ended)
        transitions.requeue_jobs(tx, queue, {w: diag for w in ended}, at, attempt=False)
        return len(ended)

    outcome.adopted = len(adopted)
    outcome.cancelled = store.retrying(cancel, committed=lambda tx: not workers.pending_of_mine(tx, absent))
    return outcome


def rounds(counts: dict[str, int], size: int) -> Iterator[dict[str, int]]:
    """The plan's workers per resource type, `size` at a time."""
    left = {rt: n for rt, n in counts.items() if n > 0}
    while left:
        this_round: dict[str, int] = {}
        room = size
        for rt in list(left):
            take = min(left[rt], room)
            this_round[rt] = take
            room -= take
            left[rt] -= take
            if not left[rt]:
                del left[rt]
            if not room:
                break
        yield this_round


def worker_sizes(instance: Instance, queue: QueueConfig) -> dict[str, tuple[int, int]]:
    """Cores and memory of a new worker per resource type of the queue."""
    definitions = resource_types.definitions(instance.panda, instance.cache_dir / "resource_types.json")
    return {rt: resource_types.worker_size(queue, rt, definitions) for rt in queue.resource_types}


def _demand_now(instance: Instance, activated: job_counts.ActivatedJobs | None):
    """demand_of for caps.inputs: another queue of this host's configuration, planned without the shared
    caps, for what it wants now."""
    def demand_of(other: QueueConfig, usage) -> caps.Demand:
        sizes = worker_sizes(instance, other)
        wanted = planner.plan(other, queue_state(instance, other, activated, sizes), run_remaining=MAX_PLAN)
        return caps.demand(wanted, usage, max(c for c, _ in sizes.values()), instance.host, model.now())

    return demand_of


# What a queue's demand for the shared caps is planned with in place of the per-run cap.
MAX_PLAN = 10**9


@contextmanager
def _cap_leases(instance: Instance, queue: QueueConfig, dry_run: bool) -> Iterator[str | None]:
    """Hold the lease of every shared cap of the queue; yields the cap another run holds (None: all held)."""
    with ExitStack() as stack:
        for name in caps.lease_names(instance, queue):
            if not stack.enter_context(locks.lease(instance.store, name)) and not dry_run:
                yield name.removeprefix("cap:")
                return
        yield None


def submit_queue(instance: Instance, queue: QueueConfig, activated: job_counts.ActivatedJobs | None,
                 run_remaining: int, *, dry_run: bool = False, count: int | None = None,
                 resource_type: str | None = None, force: bool = False,
                 progress: Callable[[int], None] | None = None, registration_problem: str | None = None) -> QueueSubmit:
    result = QueueSubmit(queue.name)
    with locks.lease(instance.store, f"submit:{queue.name}") as got, _cap_leases(instance, queue, dry_run) as busy:
        if not got and not dry_run:
            result.skipped = "another run is submitting for this queue"
            return result
        if busy is not None:
            result.skipped = f"another run is submitting for a queue sharing cap {busy}"
            return result
        if not dry_run:   # under the queue lock: never repair the pending workers of a live submission
            repair = repair_pending(instance, queue)
            result.adopted, result.missed, result.error = repair.adopted, repair.missed, repair.problem
            result.error_exit = repair.exit_code
            if queue.mode == "push":   # before planning: a confirmed job counts as waiting for a worker
                retries = confirm_retries(instance, queue)
                result.retried, result.abandoned, result.retry_problem = (retries.confirmed, retries.abandoned,
                                                                          retries.problem)
        sizes = worker_sizes(instance, queue)
        shared = caps.inputs(instance, queue, _demand_now(instance, activated))
        free = resources.gather(instance, queue, sizes) if count is None else None
        state = queue_state(instance, queue, activated, sizes, registration_problem, shared.caps, free)
        if free is not None and not free.unsupported and not free.problem and queue.status == "online":
            seen, unasked = resources.still_waiting(instance, queue, sum(state.queued.values()))
            state = replace(state, queued_seen=seen, queued_unasked=unasked)
        if count is not None:
            result.plan = one_off_plan(queue, state, count, resource_type or queue.resource_types[0], force)
        else:
            result.plan = planner.plan(queue, state, run_remaining)
            # queued pilots beyond the demand: marked for sweep to retire (under this lease: one host decides)
            step = retire.mark_excess(instance, queue, state, dry_run=dry_run)
            trace = result.plan.trace
            trace.insert(len(trace) - 1 if trace and trace[-1].rule == "PanDA registration" else len(trace), step)
            if shared.caps and not dry_run:   # what the hosts that do not run this queue split the caps by
                caps.record(instance, queue, caps.demand(result.plan, shared.usage[queue.name],
                                                         max(c for c, _ in sizes.values()), instance.host, model.now()))
        if registration_problem and not dry_run:
            result.error = f"not registered at PanDA, nothing submitted: {registration_problem}"
        if dry_run or result.plan.total == 0 or result.error:   # a backend that cannot be asked gets nothing new
            return result
        try:
            floor = worker_id_floor(instance)
        except PandaError as exc:
            result.error = f"cannot learn the highest worker id from PanDA for a new state database: {exc}"
            return result
        if progress:
            progress(0, expected=result.plan.total)
        for counts in rounds(result.plan.per_resource_type, SUBMIT_ROUND):
            try:
                specs = record_pending(instance, queue, counts, floor, sizes, fill_now=count is not None,
                                       fitted=result.plan.walltime, nodes_max=result.plan.nodes)
            except LeaseLost as exc:
                result.error = str(exc)
                break
            if not specs:   # push: no job left to bind
                break
            before = len(result.submitted)
            submit_specs(instance, queue, specs, result, progress)
            if queue.pilot_streaming and len(result.submitted) > before:
                consume_targets(instance, queue, specs, set(result.submitted[before:]))
            if result.error or result.interrupted:
                break
    return result


def consume_targets(instance: Instance, queue: QueueConfig, specs: list[WorkerSpec], submitted: set[int]) -> None:
    """Pilot streaming: what was submitted comes off PanDA's numbers."""
    per_type: dict[str, int] = defaultdict(int)
    for spec in specs:
        if spec.worker_id in submitted:
            per_type[spec.resource_type] += 1
    with instance.store.transaction() as tx:
        targets.consume(tx, queue.site, queue.job_type, per_type, model.now())


def one_off_plan(queue: QueueConfig, state: planner.QueueState, count: int, resource_type: str,
                 force: bool) -> planner.Plan:
    """`submit --count N`: exactly N, still within max_workers and what is left of the shared caps unless
    forced, and never into a downtime; fewer says which caps cut it."""
    active = sum(state.queued.values()) + sum(state.running.values())
    trace = [planner.Step("requested", f"--count {count} --resource-type {resource_type}", count)]
    cuts = []
    n = count
    if not force:
        n = min(count, max(0, queue.max_workers - active))
        trace.append(planner.Step("max_workers (hard cap; --force overrides)",
                                  f"max={queue.max_workers}, active={active}", n))
        if n < count:
            cuts.append(f"max_workers={queue.max_workers} with {active} worker(s) active leaves room for "
                        f"{n} (--force lifts max_workers)")
        for cap in state.shared_caps:   # what is left of each shared cap, over every host
            unit = state.sizes.get(resource_type, (queue.core_count, 0))[0] if cap.kind == "cores" else 1
            used = sum(cap.used.values())
            room = max(0, cap.limit - used) // max(1, unit)
            if room < n:
                cuts.append(f"shared cap {cap.name}: max_{cap.kind}={cap.limit} with {used} used leaves room for "
                            f"{room} (--force lifts it)")
            n = min(n, room)
            trace.append(planner.Step(f"shared cap {cap.name} (hard cap; --force overrides)",
                                      f"max_{cap.kind}={cap.limit}, used={used}", n))
    if state.downtime is not None:
        n = 0
        trace.append(planner.Step("downtime", state.downtime, n))
        cuts.append(state.downtime + " (`harvester-cli downtime remove` withdraws one added by command)")
    if queue.many_to_one is not None:
        made, why = allocation.allocations_for(state.waiting_ages.get(resource_type, []), queue, fill_now=True)
        if made < n:
            cuts.append(f"many_to_one: the {resource_type} jobs waiting make {made} allocation(s) ({why})")
        n = min(n, made)
        trace.append(planner.Step("jobs per allocation (many_to_one)", why, n))
    elif queue.mode == "push":
        waiting = state.waiting_jobs.get(resource_type, 0)
        if waiting < n:
            cuts.append(f"push mode: one worker per fetched job, and {waiting} {resource_type} job(s) wait for a "
                        "worker (fetch-jobs gets more from PanDA)")
        n = min(n, waiting)
        trace.append(planner.Step("waiting jobs", f"{resource_type} jobs without a worker={waiting}", n))
    if state.registration is not None:
        n = 0
        trace.append(planner.Step("PanDA registration", state.registration, n))
        cuts.append(f"not registered at PanDA: {state.registration}")
    shortfall = f"--count {count}: only {n} can be submitted: {'; '.join(cuts)}" if n < count else None
    return planner.Plan(queue.name, {resource_type: n}, trace, shortfall)


def submit(instance: Instance, queues: list[QueueConfig], *, dry_run: bool = False, count: int | None = None,
           resource_type: str | None = None, force: bool = False,
           progress: Callable[[int], None] | None = None) -> SubmitRun:
    run = SubmitRun()
    instance.store   # a state database this code cannot use is an error before PanDA is asked anything
    if dry_run:   # a plan sends nothing: it says what submit would do first
        problem = None if registration.registered_at(instance) is not None else \
            "not registered yet: submit sends a heartbeat first, and submits only once PanDA accepted one"
        gate = None
    else:
        known = registration.ensure_registered(instance)
        problem = gate = None if known.registered is not None else known.problem
    # the queues sharing a cap with these are planned too, for their demand
    activated = activated_jobs(instance, queues + caps.local_members(instance, queues), run.errors, push=dry_run)
    remaining = instance.config.max_new_workers_per_run
    for queue in queues:
        result = submit_queue(instance, queue, activated, remaining, dry_run=dry_run, count=count,
                              resource_type=resource_type, force=force, progress=progress, registration_problem=gate)
        if problem and not gate and result.plan:
            result.plan.trace.append(planner.Step("PanDA registration", problem, result.plan.total))
        remaining -= len(result.submitted)
        run.queues.append(result)
        if result.interrupted:   # the operator asked to stop: no other queue is started
            break
    return run
