"""The ARC backend against a real A-REX 6.17 (REST 1.0, fork LRMS) started by tests/support/peers/arc-ce.sh.

The CE trusts the PanDA simulator's test CA and maps its test user, so the instance's one proxy talks
to PanDA and to the CE and is what the CE delegates to the jobs (pull pilots use it to reach the
simulator). Jobs run as the CE's job user with the system python3; harvester_cli and its pure-Python
dependencies travel with every job as one zip (backend_options.input_files), as a pilot would on a
remote CE. The CE runs on this host, so jobs reach the simulator and the test file server on loopback.

Timings: the CE refreshes job states every ARC_CE_INFO_PERIOD seconds; a trivial job ends 10-20 s
after submission. Each test runs its jobs concurrently.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from harvester_cli.panda.jobs import PandaJob
from harvester_cli.state.schema import jobs, workers
from harvester_cli.steps import fetch_jobs as fetching
from harvester_cli.steps import poll as monitoring
from harvester_cli.steps import propagate as propagation
from harvester_cli.steps import submit as submission
from harvester_cli.steps import sweep as sweeping
from harvester_cli.steps.cycle import run_cycle
from tests.support.arc_ce import PILOT_ZIP, arc_queue, ce_state
from tests.support.harness import cycle_until, free_port, hold_panda_counts, rows, wait_until

pytestmark = pytest.mark.arc


# -- peers (A-REX itself and the pilot zip: tests/support/arc_ce.py) ---------------------------------------


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; accepts the absolute-form request target ARC's HTTP client sends."""

    def translate_path(self, path):
        parts = urllib.parse.urlsplit(path)
        return super().translate_path(parts.path if parts.scheme else path)

    def log_message(self, *args):
        pass


@dataclass
class FileServer:
    root: Path
    url: str

    def put(self, name: str, text: str) -> None:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_text(text)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """A storage element stand-in the CE stages job inputs from (http on loopback)."""
    root = tmp_path_factory.mktemp("storage")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_FileHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield FileServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


class Forwarder:
    """A TCP relay in front of the CE that the test switches off (connection refused) and on again."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener:
                try:   # wakes the thread blocked in accept() (close alone leaves the socket listening)
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# -- helpers -------------------------------------------------------------------------------------------


class Turnaround:
    """Per push job: submit (worker submit_time) -> final update propagated (seen in the simulator), split
    into the CE's part (submit -> the job's end at the CE, ARC EndTime), the wait until a poll saw the end
    (the CE publishes states every ARC_CE_INFO_PERIOD s), and the rest (outputs, final update, PanDA)."""

    def __init__(self, sim, instance):
        self.sim, self.instance, self.final_at, self.seen_end = sim, instance, {}, {}

    def watch(self, panda_ids) -> bool:
        now = time.time()
        for w in rows(self.instance, workers):
            if w.status in ("finished", "failed", "cancelled") and w.worker_id not in self.seen_end:
                self.seen_end[w.worker_id] = now
        for panda_id in panda_ids:
            if panda_id not in self.final_at and self.sim.job_status(panda_id) in ("finished", "failed"):
                self.final_at[panda_id] = now
        return len(self.final_at) == len(panda_ids)

    def report(self, label: str) -> None:
        from harvester_cli.state.schema import job_workers

        with self.instance.store.reading() as conn:
            bound = conn.execute(select(job_workers.c.panda_id, workers.c.worker_id, workers.c.submit_time,
                                        workers.c.end_time)
                                 .join(workers, workers.c.worker_id == job_workers.c.worker_id)).all()
        first_submit = min((w.submit_time for w in rows(self.instance, workers) if w.submit_time), default=None)
        if not bound and first_submit:   # pull: the pilots report their jobs themselves
            print(f"{label}: first pilot submitted -> all {len(self.final_at)} jobs final in PanDA "
                  f"{max(self.final_at.values()) - first_submit:.1f} s; -> all pilots seen ended "
                  f"{max(self.seen_end.values()) - first_submit:.1f} s")
        for panda_id, worker_id, submit, end in bound:
            final = self.final_at.get(panda_id)
            if final and submit and end:
                print(f"{label}: job {panda_id}: submit -> final update propagated {final - submit:.1f} s, of which "
                      f"at the CE {end - submit:.1f} s (-> ARC EndTime), then {final - end:.1f} s (the CE publishing "
                      f"the state, the next poll, outputs, propagate)")


# -- the CE itself ---------------------------------------------------------------------------------------

def test_arex_sends_csr_version_2_which_cryptography_refuses_without_the_fix(arc_ce, pki):
    from cryptography import x509

    from harvester_cli.backends import _arc_compat
    from harvester_cli.backends.arc import connect

    client = connect(arc_ce.url, pki.proxy, 30, arc_ce.ca_dir)
    delegation, csr = client.newDelegation()
    try:
        with pytest.raises(x509.InvalidVersion, match="2 is not a valid CSR version"):
            x509.load_pem_x509_csr(csr.encode())
        assert _arc_compat.load_csr(csr).is_signature_valid
    finally:
        client.deleteDelegation(delegation)
        client.close()


def test_description_reads_as_intended_by_arcs_own_parser(tmp_path, harness, arc_ce, pilot_zip, files):
    """The ADL we send, parsed by ARC's libarccompute (python3-nordugrid-arc, system python)."""
    from harvester_cli.backends import _arc_description as adl
    from harvester_cli.backends.base import WorkerSpec

    instance = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push", runtime_environments=[
        "HARVESTER/TEST"], stage_inputs=files.url + "/{scope}/{lfn}")})
    backend = instance.backend(instance.config.queues["ARC_PUSH"])
    job = {"PandaID": 7, "inFiles": "EVNT.1,EVNT.2", "scopeIn": "mc23,mc23", "maxWalltime": 7200, "coreCount": 4}
    spec = WorkerSpec(42, "ARC_PUSH", "MCORE", 4, 8001, 86400, tmp_path / "logs", "{python} -m pilot",
                      job=PandaJob.from_dict(job))
    (tmp_path / "job.adl").write_text(adl.bulk([backend._activity(spec, "deleg1")]))
    code = """
import arc, json, sys
jobs = arc.JobDescriptionList()
assert arc.JobDescription.Parse(open(sys.argv[1]).read(), jobs)
j = jobs[0]; r = j.Resources
print(json.dumps({"name": j.Identification.JobName, "memory": r.IndividualPhysicalMemory.max,
  "wall": r.TotalWallTime.range.max, "slots": r.SlotRequirement.NumberOfSlots, "queue": r.QueueName,
  "rte": [str(s) for s in r.RunTimeEnvironment.getSoftwareList()], "exe": j.Application.Executable.Path,
  "inputs": {f.Name: [s.fullstr() for s in f.Sources] for f in j.DataStaging.InputFiles},
  "outputs": [f.Name for f in j.DataStaging.OutputFiles], "delegation": j.DataStaging.DelegationID}))
"""
    run = subprocess.run(["/usr/bin/python3", "-c", code, str(tmp_path / "job.adl")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    parsed = json.loads(run.stdout)
    assert parsed["name"] == f"{harness.harvester_id}:42" and parsed["queue"] == "fork"
    assert parsed["memory"] == 2500 and parsed["slots"] == 4 and parsed["wall"] == 7200
    assert parsed["rte"] == ["HARVESTER/TEST"] and parsed["exe"] == "harvester-worker.sh"
    assert parsed["inputs"]["EVNT.2"] == [files.url + "/mc23/EVNT.2"]
    assert {"harvester-worker.sh", "pandaJobData.out", PILOT_ZIP} <= set(parsed["inputs"])
    assert parsed["outputs"] == ["pilot.out", "pilot.err", "heartbeat.json", "jobReport.json", "pilotlog.txt"]
    assert parsed["delegation"] == "deleg1"


def test_delegation_is_created_once_reused_and_renewed_when_the_proxy_changes(tmp_path, harness, arc_ce, pki,
                                                                              pilot_zip):
    from harvester_cli.backends._arc_delegation import Delegations, listed_ids
    from harvester_cli.panda.sim import certs

    proxy = tmp_path / "proxy.pem"
    shutil.copy(pki.proxy, proxy)
    instance = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push")}, panda={"proxy": str(proxy)})
    backend = instance.backend(instance.config.queues["ARC_PUSH"])
    client = backend._client(arc_ce.url)
    first = backend._delegations.get(client, arc_ce.url, proxy)
    state = tmp_path / "work" / "arc" / "delegations.json"
    assert json.loads(state.read_text())[f"{arc_ce.url} {proxy}"]["id"] == first
    # Another run (a new process) reuses it: same id, nothing new on the CE.
    before = listed_ids(client)
    assert Delegations(state, 3600).get(client, arc_ce.url, proxy) == first
    assert listed_ids(client) == before
    # The proxy is renewed: the same delegation now carries a credential signed by the new proxy.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    user = x509.load_pem_x509_certificate(pki.user_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.user_key.read_bytes(), None)
    new_cert, new_key = certs.make_proxy(user, key, hours=48)
    proxy.write_bytes(new_cert.public_bytes(serialization.Encoding.PEM) + certs._pem_key(new_key)
                      + user.public_bytes(serialization.Encoding.PEM))
    client = backend._client(arc_ce.url)   # a new connection: the client certificate changed
    assert Delegations(state, 3600).get(client, arc_ce.url, proxy) == first
    delegated = x509.load_pem_x509_certificate(client.getDelegation(first).encode())
    assert delegated.issuer == new_cert.subject
    assert listed_ids(client) == before


# -- the working cycle on ARC -------------------------------------------------------------------------------

def test_push_heartbeat_becomes_the_final_state_and_clean_removes_the_session(harness, sim, arc_ce, pilot_zip, files):
    files.put("mc23/EVNT.arc.1", "staged by the CE\n")
    (ok,) = sim.add_jobs("ARC_PUSH", 1, inFiles="EVNT.arc.1", scopeIn="mc23",
                         jobPars='test "$HARVESTER_TEST_RTE" = yes && cat EVNT.arc.1')
    (bad,) = sim.add_jobs("ARC_PUSH", 1, jobPars="echo failing; exit 3")
    (lost,) = sim.add_jobs("ARC_PUSH", 1, jobPars="kill -9 $PPID")   # the pilot dies: no heartbeat.json
    instance = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push", runtime_environments=[
        "HARVESTER/TEST"], stage_inputs=files.url + "/{scope}/{lfn}")})
    clock = Turnaround(sim, instance)
    cycle_until(instance, lambda: clock.watch([ok, bad, lost]), timeout=150, what="three push jobs final in PanDA")
    clock.report("push")
    assert [sim.job_status(i) for i in (ok, bad, lost)] == ["finished", "failed", "failed"]

    final = sim.jobs[ok].updates[-1]
    assert final["exe_error_code"] == 0 and json.loads(final["meta_data"])["executor"][0]["logfileReport"] == {}
    assert final["pilot_id"].startswith("http://127.0.0.1:8080/logs/workers/") and final["pilot_id"].endswith("/pilot.out")
    assert len(sim.jobs[ok].pilot_logs) == 1   # the batch log URL, once
    assert final["batch_id"]
    assert sim.jobs[bad].updates[-1]["exe_error_code"] == 3
    missing = sim.jobs[lost].updates[-1]
    assert missing["pilot_error_code"] == 9000
    assert "no heartbeat.json" in missing["pilot_error_diag"] and "LRMS error: (137)" in missing["pilot_error_diag"]

    by_job = {j.panda_id: j for j in rows(instance, jobs)}
    with instance.store.reading() as conn:
        from harvester_cli.state.schema import job_workers

        worker_of = dict(conn.execute(select(job_workers.c.panda_id, job_workers.c.worker_id)).all())
    ws = {w.worker_id: w for w in rows(instance, workers)}
    good = ws[worker_of[ok]]
    assert good.status == "finished" and good.computing_element == arc_ce.url and good.native_status == "FINISHED"
    log_dir = Path(good.log_dir)
    assert "staged by the CE" in (log_dir / "pilot.out").read_text()
    assert {"heartbeat.json", "jobReport.json", "pilot.err", "pilot.log", "pilot.jdl"} <= {p.name for p in log_dir.iterdir()}
    died = ws[worker_of[lost]]
    assert died.status == "failed" and died.native_exit_code == 137 and "LRMS error: (137)" in died.diag
    assert all(j.sub_status == "done" for j in by_job.values())

    # Clean after success: sweep forgets the final workers and removes their CE sessions.
    queues = list(instance.config.queues.values())
    swept = sweeping.sweep(instance, queues, retention=0)
    assert swept.queues[0].cleaned == 3
    wait_until(lambda: ce_state(instance, "ARC_PUSH", good.batch_id) == "404", timeout=30,
               what="the CE forgets the cleaned job")   # A-REX cleans asynchronously
    assert not (harness.tmp_path / "work" / "arc" / "ARC_PUSH" / str(good.worker_id)).exists()
    assert (log_dir / "heartbeat.json").exists()   # our copy stays


def test_pull_pilots_fetch_their_jobs_from_panda_with_the_delegated_proxy(harness, sim, arc_ce, pilot_zip,
                                                                         monkeypatch):
    ids = sim.add_jobs("ARC_PULL", 2, jobPars="echo pulled")
    hold_panda_counts(sim, monkeypatch)   # exactly one pilot per job, below
    instance = harness.instance({"ARC_PULL": {**arc_queue(arc_ce, pilot_zip, "pull"), "empty_pilot_floor": 0}})
    clock = Turnaround(sim, instance)
    cycle_until(instance, lambda: clock.watch(ids) and all(w.status == "finished" for w in rows(instance, workers)),
                timeout=150, what="pull jobs finished and pilots ended")
    clock.report("pull")
    local = rows(instance, workers)
    assert len(local) == 2 and all(sim.job_status(i) == "finished" for i in ids)
    reported = sim.workers(harness.harvester_id)
    assert all(reported[w.worker_id]["status"] == "finished" for w in local)
    for w in local:
        out = (Path(w.log_dir) / "pilot.out").read_text()
        assert "test pilot: running job" in out and "pulled" in out
        assert reported[w.worker_id]["stdOut"].endswith(f"/{w.worker_id}/pilot.out")


def test_sweep_kills_on_the_ce_and_the_job_is_reported_cancelled(harness, sim, arc_ce, pilot_zip):
    (panda_id,) = sim.add_jobs("ARC_PUSH", 1, jobPars="sleep 45")
    instance = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push")})
    queues = list(instance.config.queues.values())
    fetching.fetch_jobs(instance, queues)
    submission.submit(instance, queues)
    # No propagate yet: PanDA's tobekilled comes as the answer to the job's next update (running).
    wait_until(lambda: monitoring.poll(instance, queues) and rows(instance, workers)[0].status == "running",
               timeout=90, what="worker running")
    sim.kill_jobs(None, [panda_id], None, False, [])
    assert propagation.propagate(instance, queues).kills_from_panda == 1
    result = sweeping.sweep(instance, queues)
    assert result.queues[0].killed == 1 and not result.queues[0].kill_failed
    (worker,) = rows(instance, workers)
    assert worker.status == "cancelled"
    propagation.propagate(instance, queues)
    final = sim.jobs[panda_id].updates[-1]
    assert final["job_status"] == "failed" and final["job_sub_status"] == "cancelled"
    # The CE takes the kill (the fork LRMS may leave the payload itself running: not checked).
    wait_until(lambda: ce_state(instance, "ARC_PUSH", worker.batch_id) in ("KILLING", "KILLED"), timeout=30,
               what="CE state KILLING or KILLED")
    # Killing again (a retried sweep) is harmless, and a job the CE forgot counts as killed.
    backend = instance.backend(queues[0])
    from harvester_cli.instance import worker_ref

    ref = worker_ref(worker)
    forgotten = ref.replace(worker_id=ref.worker_id + 1000, batch_id="nosuchjob0000")
    assert [r.ok for r in backend.kill([ref, forgotten], "again")] == [True, True]


def test_transient_arc_error_gives_the_job_a_new_worker(harness, sim, arc_ce, pilot_zip, files):
    (panda_id,) = sim.add_jobs("ARC_PUSH", 1, inFiles="EVNT.late", scopeIn="mc23", jobPars="cat EVNT.late")
    instance = harness.instance({"ARC_PUSH": {**arc_queue(arc_ce, pilot_zip, "push",
                                                           stage_inputs=files.url + "/{scope}/{lfn}"),
                                              "max_submit_attempts": 3}})
    # The storage does not have the file yet: data staging fails, an error on the transient list.
    cycle_until(instance, lambda: rows(instance, jobs)[0].submit_attempts == 1, timeout=90, what="job requeued")
    (first,) = rows(instance, workers)
    assert first.status == "failed" and "Failed in data staging" in first.diag
    assert sim.job_status(panda_id) not in ("failed", "finished")
    files.put("mc23/EVNT.late", "arrived late\n")
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", timeout=120, what="job finished on a new worker")
    second = [w for w in rows(instance, workers) if w.worker_id != first.worker_id]
    assert len(second) == 1 and second[0].status == "finished"
    assert "arrived late" in (Path(second[0].log_dir) / "pilot.out").read_text()


@pytest.fixture
def relay(arc_ce):
    forwarder = Forwarder(arc_ce.port)   # starts down: connection refused
    yield forwarder
    forwarder.down()


def test_ce_down_loses_nothing_and_costs_at_most_one_attempt(harness, sim, arc_ce, pilot_zip, relay):
    (panda_id,) = sim.add_jobs("ARC_PUSH", 1, jobPars="sleep 12; echo survived")
    url = f"https://localhost:{relay.port}/arex"
    instance = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push", url=url)})
    queues = list(instance.config.queues.values())
    for _ in range(3):
        run_cycle(instance, queues)
    (pending,) = rows(instance, workers)
    assert pending.status == "pending"   # waits for the CE; no new worker piles up, nothing missed per run
    (job,) = rows(instance, jobs)
    assert job.sub_status == "submitted" and job.submit_attempts == 0
    assert sim.job_status(panda_id) not in ("failed", "finished")

    relay.up()
    cycle_until(instance, lambda: any(w.status == "running" for w in rows(instance, workers)), timeout=90,
                what="worker running once the CE is back")
    statuses = sorted(w.status for w in rows(instance, workers))
    assert statuses == ["missed", "running"]   # the pending one was never on the CE: its job got a new worker

    relay.down()   # the CE goes away while the job runs
    poll = monitoring.poll(instance, queues)
    assert poll.partial and "unreachable" in poll.queues[0].error
    assert sorted(w.status for w in rows(instance, workers)) == ["missed", "running"]

    relay.up()
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", timeout=120, what="job finished")
    assert rows(instance, jobs)[0].submit_attempts == 1
    assert "survived" in (Path(next(w for w in rows(instance, workers) if w.status == "finished").log_dir)
                          / "pilot.out").read_text()

    relay.down()   # cleaning needs the CE: the workers are kept until it answers
    assert sweeping.sweep(instance, queues, retention=0).queues[0].cleaned == 0
    assert sorted(w.status for w in rows(instance, workers)) == ["finished", "missed"]
    relay.up()
    assert sweeping.sweep(instance, queues, retention=0).queues[0].cleaned == 2


def test_crash_after_the_ce_created_the_job_is_adopted_and_its_uploads_completed(harness, sim, arc_ce, pilot_zip):
    (panda_id,) = sim.add_jobs("ARC_PUSH", 1, jobPars="echo adopted")
    harness.write_config({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push")})
    harness.cli("fetch-jobs", check=True)
    crashed = harness.cli("submit", env={"HARVESTER_CLI_CRASH_AT": "arc_after_create"})
    assert crashed.returncode == 99, crashed.stderr
    instance = harness.instance({"ARC_PUSH": arc_queue(arc_ce, pilot_zip, "push")})
    (pending,) = rows(instance, workers)
    assert pending.status == "pending"
    again = harness.cli_json("submit")
    assert again["queues"][0]["adopted"] == 1 and again["queues"][0]["submitted"] == []
    (worker,) = rows(instance, workers)
    assert worker.status == "submitted" and worker.batch_id and worker.computing_element == arc_ce.url
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", timeout=120, what="adopted job finished")
    assert len(rows(instance, workers)) == 1   # never submitted twice
