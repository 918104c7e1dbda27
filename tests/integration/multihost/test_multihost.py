"""Several hosts, one database: three harvester hosts (network namespaces, each its own [instance] host)
run their own loops of `cycle` and step commands against a private PostgreSQL and a private MariaDB,
with the PanDA simulator and the `local` backend; some are killed (-9) or cut off from the network.

Every assertion is on an outcome that a broken coordination would change: a job fetched twice, a worker
started twice or by another host, an update sent twice, a command applied twice, a limit passed while
the hosts were running, a host's workers lost because another host polled them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict

import pytest
from sqlalchemy import create_engine, func, select

from harvester_cli import model
from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state.schema import commands, job_workers, jobs, workers
from tests.support import multihost
from tests.support.harness import kill_local_workers
from tests.support.multihost import SERVER, Network, PrivateMariaDB, PrivatePostgres, Site

pytestmark = pytest.mark.multihost

HOSTS = 3
LEASE = 10   # [lease_seconds]: how long a dead or cut-off host's claims and queue leases block the others
LIMITS = {"n_queue_limit_worker": 4, "max_workers": 6, "max_new_workers_per_cycle": 3}
CYCLE_INTERVAL = 2


@pytest.fixture(scope="module")
def network():
    with Network(HOSTS) as net:
        yield net


@pytest.fixture(scope="module")
def servers(network):
    with PrivatePostgres() as pg, PrivateMariaDB() as maria:
        yield {"postgres": pg, "mariadb": maria}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return certs.create(tmp_path_factory.mktemp("pki-multihost"), addresses=(SERVER,))


@pytest.fixture
def sim(pki, network):
    with PandaSimulator(pki, host=SERVER, finish_delay=0.0) as simulator:
        yield simulator


@pytest.fixture(params=["postgres", "mariadb"])
def database(request, servers):
    return servers[request.param].database()


class Watch:
    """Samples the queued and active workers of every queue while the hosts run (one SELECT: a consistent
    view), keeping the highest seen."""

    def __init__(self, url: str):
        self.engine = create_engine(url, isolation_level="READ COMMITTED" if url.startswith("mysql") else None)
        self.highest: dict[str, Counter] = defaultdict(Counter)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(select(workers.c.queue, workers.c.status, func.count())
                                        .group_by(workers.c.queue, workers.c.status)).all()
            except Exception:   # noqa: BLE001 - a sample lost to a busy server is just one sample less
                continue
            per_queue: dict[str, Counter] = defaultdict(Counter)
            for queue, status, n in rows:
                if status in model.WORKER_QUEUED:
                    per_queue[queue]["queued"] += n
                if status in (*model.WORKER_QUEUED, model.RUNNING):
                    per_queue[queue]["active"] += n
            for queue, counts in per_queue.items():
                for key, n in counts.items():
                    self.highest[queue][key] = max(self.highest[queue][key], n)
            self.samples += 1


def make_site(tmp_path, sim, database, queues: dict, **instance) -> Site:
    site = Site(tmp_path, database,
                panda={"url": sim.url, "proxy": str(sim.pki.proxy), "ca": str(sim.pki.ca_file), "retries": 2,
                       "timeout": 8, "allow_test_pilot": True},
                queues=queues, harvester_id=f"mh-{tmp_path.name[-20:]}",
                extra={"lease_seconds": LEASE,
                       "instance": {"cycle_interval": CYCLE_INTERVAL, "db_timeout": 5, **instance}})
    site.add_hosts(HOSTS)
    answers = site.upgrade_at_once()
    # Migrated once: one host found the database empty, the others waited and found it at head.
    assert sum(1 for a in answers if a["from"] is None) == 1, answers
    assert {a["to"] for a in answers} == {answers[0]["to"]}
    return site


def push_queues(starts, names=("PUSH_A", "PUSH_B", "PUSH_C")) -> dict:
    pilot = multihost.pilot_template(starts, "{python} -m harvester_cli.panda.sim.pilot")
    return {name: {"mode": "push", "backend": "local", "pilot": pilot, "lost_grace_seconds": 5, **LIMITS}
            for name in names}


def run_until(site: Site, done, timeout: float, during=None) -> None:
    site.start("mixed")
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not done within {timeout} s; hosts' last errors: "
                                     + "; ".join(r["stderr"][-300:] for h in site.hosts for r in h.runs()[-1:]))
            if during is not None:
                during()
            time.sleep(0.5)
    finally:
        site.stop()
        kill_local_workers(site.harvester_id)


def db_rows(url: str, table, *where):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(table).where(*where)).all()
    finally:
        engine.dispose()


def all_final(url: str) -> bool:
    rows = db_rows(url, workers)
    return bool(rows) and all(r.status in model.WORKER_FINAL for r in rows)


def check_workers(site: Site, sim: PandaSimulator, watch: Watch, starts_file, *, killed_ok: bool = False) -> list:
    """The promises about workers, whatever the queues' mode."""
    rows = db_rows(site.state, workers)
    started = multihost.starts(starts_file)
    # Every worker submitted once, by the host that recorded it, and (host-bound) only on that host.
    assert Counter(w for w, _ in started) == Counter({r.worker_id: 1 for r in rows if r.batch_id}), "started twice"
    host_of = {r.worker_id: r.harvester_host for r in rows}
    assert all(host_of[w] == "h" + ns.removeprefix("hch") for w, ns in started), "started by another host"
    assert all(r.submission_host == r.harvester_host for r in rows if r.batch_id)
    # Host-bound workers polled only by their host: another host would not find the process and fail it
    # as lost; none was.
    lost = [r for r in rows if r.status == model.FAILED]
    assert not lost, [(r.worker_id, r.diag) for r in lost]
    # A host killed between recording a worker and starting it leaves it missed on repair (never started,
    # its job bound to a new worker): that is the only other end a worker may have.
    started_ids = {w for w, _ in started}
    never_started = [r for r in rows if r.status == model.MISSED and r.worker_id not in started_ids]
    if not killed_ok:
        assert all(r.status == model.FINISHED or r in never_started for r in rows), Counter(r.status for r in rows)
    # Every final state reached PanDA (once the outbox is empty, each report was deleted after PanDA took it).
    at_panda = sim.workers(site.harvester_id)
    assert all(at_panda[r.worker_id]["status"] == r.status for r in rows), "PanDA has another worker state"
    # The limits held over all hosts at every sample, and the per-cycle cap within every interval.
    assert watch.samples > 10
    for queue, highest in watch.highest.items():
        assert highest["queued"] <= LIMITS["n_queue_limit_worker"], (queue, highest)
        assert highest["active"] <= LIMITS["max_workers"], (queue, highest)
    by_queue = defaultdict(list)
    for r in rows:
        by_queue[r.queue].append(r.created)
    for queue, created in by_queue.items():
        created.sort()
        for i, t in enumerate(created):
            window = sum(1 for u in created[i:] if u < t + CYCLE_INTERVAL)
            assert window <= LIMITS["max_new_workers_per_cycle"], (queue, "per-cycle cap passed")
    return rows


def check_runs(site: Site) -> dict:
    """No command opened more than two database connections; conflicts were retried, not lost."""
    runs = [r for h in site.hosts for r in h.runs()]
    assert runs
    with_stats = [r for r in runs if r["database"]]
    assert with_stats
    assert max(r["database"]["connections"] for r in with_stats) <= 2, \
        max(with_stats, key=lambda r: r["database"]["connections"])
    tracebacks = [r["stderr"] for r in runs if "Traceback" in r["stderr"]]
    return {"runs": len(runs), "conflicts": sum(r["database"]["conflicts_retried"] for r in with_stats),
            "tracebacks": tracebacks}


def check_push_jobs(sim: PandaSimulator, ids: list[int], site: Site, lost: set[int] = frozenset()) -> None:
    """Every job fetched once, final once and finished; those `lost` in flight (see push_done) never kept."""
    snapshot = {j["panda_id"]: j for j in sim.snapshot()["jobs"]}
    kept = {r.panda_id for r in db_rows(site.state, jobs)}
    for panda_id in ids:
        job = sim.jobs[panda_id]
        assert job.spec["nSent"] == 1, f"job {panda_id} fetched {job.spec['nSent']} times"
        if panda_id in lost:
            assert panda_id not in kept and snapshot[panda_id]["status"] == "sent" and not job.updates
            continue
        finals = [u for u in job.updates if u["job_status"] in ("finished", "failed")]
        assert len(finals) == 1, f"job {panda_id}: {len(finals)} final updates"
        assert snapshot[panda_id]["status"] == "finished"
    links = db_rows(site.state, job_workers)
    assert Counter(link.panda_id for link in links) == Counter({i: 1 for i in ids if i not in lost}), \
        "a job bound to two workers"


def push_done(sim, ids, site, lost: set[int] | None = None):
    """Every job finished at PanDA, every worker final, nothing left to report. With `lost` (filled here): a
    job PanDA sent that no host has kept for 10 s was lost in flight, by a host killed between PanDA's answer
    and its commit; PanDA's own 'sent' timeout takes such a job back (half an hour and more: not waited for),
    so it counts as done, and is named in `lost`."""
    unkept_since: dict[int, float] = {}

    def done():
        if lost is not None:
            kept, now = {r.panda_id for r in db_rows(site.state, jobs)}, time.monotonic()
            for i in ids:
                if sim.job_status(i) == "sent" and i not in kept:
                    unkept_since.setdefault(i, now)
                else:
                    unkept_since.pop(i, None)
            lost.clear()
            lost.update(i for i, t in unkept_since.items() if now - t >= 10)
        return (all(sim.job_status(i) == "finished" or i in (lost or ()) for i in ids) and all_final(site.state)
                and not pending(site))
    return done


def pending(site: Site) -> bool:
    from harvester_cli.state.schema import reports

    return bool(db_rows(site.state, reports))


def test_three_hosts_share_push_queues(tmp_path, sim, database):
    starts = tmp_path / "starts.log"
    site = make_site(tmp_path, sim, database, push_queues(starts))
    ids = [i for q in ("PUSH_A", "PUSH_B", "PUSH_C") for i in sim.add_jobs(q, 10, jobPars="sleep 1")]
    with Watch(database) as watch:
        run_until(site, push_done(sim, ids, site), timeout=120)
    check_push_jobs(sim, ids, site)
    rows = check_workers(site, sim, watch, starts)
    assert len({r.harvester_host for r in rows}) >= 2, "the hosts did not share the work"
    runs = check_runs(site)
    assert not runs["tracebacks"], runs["tracebacks"][0]


def test_hosts_killed_with_sigkill_lose_nothing(tmp_path, sim, database):
    starts = tmp_path / "starts.log"
    site = make_site(tmp_path, sim, database, push_queues(starts))
    ids = [i for q in ("PUSH_A", "PUSH_B", "PUSH_C") for i in sim.add_jobs(q, 10, jobPars="sleep 1")]
    rng = random.Random()
    next_kill = [time.monotonic() + 2]
    dead: dict[int, float] = {}

    def chaos():
        now = time.monotonic()
        for index, back in list(dead.items()):
            if now >= back:   # the host comes back, with the same identity
                site.hosts[index].start("mixed", seed=rng.randrange(1 << 30))
                del dead[index]
        if now >= next_kill[0] and len(dead) < HOSTS - 1:
            index = rng.choice([i for i in range(HOSTS) if i not in dead])
            site.hosts[index].kill()
            dead[index] = now + rng.uniform(1, 4)
            next_kill[0] = now + rng.uniform(2, 4)

    lost: set[int] = set()   # a kill between PanDA's answer to acquire_jobs and the jobs' commit (rare)
    with Watch(database) as watch:
        run_until(site, push_done(sim, ids, site, lost), timeout=150, during=chaos)
    kills = sum(h.kills for h in site.hosts)
    assert kills >= 2 and len(lost) < len(ids) // 2, (kills, sorted(lost))
    check_push_jobs(sim, ids, site, lost)
    check_workers(site, sim, watch, starts)
    check_runs(site)


def test_a_host_cut_off_loses_its_claims_and_the_others_go_on(tmp_path, network, sim, database):
    starts = tmp_path / "starts.log"
    site = make_site(tmp_path, sim, database, push_queues(starts))
    ids = [i for q in ("PUSH_A", "PUSH_B", "PUSH_C") for i in sim.add_jobs(q, 10, jobPars="sleep 1")]
    cut = {"at": time.monotonic() + 4, "until": None, "finished_during": None}

    def during():
        now = time.monotonic()
        if cut["until"] is None and now >= cut["at"]:
            network.cut(1)   # host h1: mid-run, whatever it holds
            cut["until"] = now + LEASE + 8
            cut["finished_before"] = sum(sim.job_status(i) == "finished" for i in ids)
        elif cut["until"] is not None and cut["finished_during"] is None and now >= cut["until"]:
            cut["finished_during"] = sum(sim.job_status(i) == "finished" for i in ids) - cut["finished_before"]
            network.mend(1)

    try:
        with Watch(database) as watch:
            run_until(site, push_done(sim, ids, site), timeout=150, during=during)
    finally:
        network.mend(1)
    assert cut["until"] is not None, "every job finished before the cut: nothing was tested"
    if cut["finished_during"] is None:   # everything finished before h1 came back
        cut["finished_during"] = sum(sim.job_status(i) == "finished" for i in ids) - cut["finished_before"]
    # While h1 was away the others kept going: its queue leases and claims expired after lease_seconds.
    assert cut["finished_during"], "nothing finished while a host was cut off"
    check_push_jobs(sim, ids, site)
    check_workers(site, sim, watch, starts)
    check_runs(site)


def test_pull_limits_streaming_and_panda_commands_over_all_hosts(tmp_path, sim, database):
    starts = tmp_path / "starts.log"
    pilot = multihost.pilot_template(starts, "sleep 4")
    queues = {
        "PULL_LIMITED": {"mode": "pull", "backend": "local", "pilot": pilot, "lost_grace_seconds": 5,
                         "empty_pilot_floor": 0, **LIMITS},
        "STREAMING": {"mode": "pull", "backend": "local", "pilot": pilot, "pilot_streaming": True,
                      "lost_grace_seconds": 5, **LIMITS},
    }
    site = make_site(tmp_path, sim, database, queues)
    sim.add_jobs("PULL_LIMITED", 200)   # demand far above the limits: only the limits stop the hosts
    target = sim.add_command("SET_N_WORKERS_JOBTYPE:STREAMING", {"managed": {"SCORE": 7}}, ack_requested=True)
    phase = {"killed": None, "demand": True}

    def during():
        made = len(db_rows(site.state, workers, workers.c.queue == "PULL_LIMITED"))
        if phase["killed"] is None and made >= 8:
            # PanDA asks to kill every worker of the queue: applied once, each host kills its own workers.
            phase["killed"] = sim.add_command("KILL_WORKERS", {"computingSite": "PULL_LIMITED"}, ack_requested=True)
        elif phase["demand"] and phase["killed"] and sim.commands[phase["killed"]]["status"] == "acknowledged":
            phase["demand"] = False
            with sim.lock:
                for job in sim.jobs.values():   # the demand is gone: no new workers after the kill
                    job.status = "finished"
                sim.refresh_job_counts()

    def done():
        streamed = db_rows(site.state, workers, workers.c.queue == "STREAMING")
        acked = [c for c in sim.commands.values() if c["status"] == "acknowledged"]
        return (phase["killed"] is not None and len(acked) == 2 and len(streamed) >= 7 and all_final(site.state)
                and not pending(site))

    with Watch(database) as watch:
        run_until(site, done, timeout=120, during=during)
    rows = check_workers(site, sim, watch, starts, killed_ok=True)
    # Pilot streaming: PanDA's number over all hosts, not per host.
    assert len([r for r in rows if r.queue == "STREAMING"]) == 7
    # Each command applied once and acknowledged once, by one host.
    acks = Counter(i for call in sim.calls_to("harvester/acknowledge_commands") for i in call["args"]["command_ids"])
    assert acks == Counter({target: 1, phase["killed"]: 1}), acks
    assert {c.status for c in db_rows(site.state, commands)} == {"acked"}
    killed = [r for r in rows if r.kill_reason == "PanDA command KILL_WORKERS"]
    assert killed and all(r.status == model.CANCELLED or r.end_time for r in killed)
    check_runs(site)


def test_every_table_has_a_primary_key(database):
    """InnoDB clusters and Galera replication refuse tables without one."""
    from sqlalchemy import inspect

    from harvester_cli.state import upgrade

    upgrade.create(database).close()
    engine = create_engine(database)
    try:
        inspector = inspect(engine)
        tables = inspector.get_table_names()
        assert "workers" in tables and "alembic_version" in tables
        assert [t for t in tables if not inspector.get_pk_constraint(t)["constrained_columns"]] == []
    finally:
        engine.dispose()
