"""Retiring queued pilots against a real A-REX 6.17 (issue 30). Its REST interface has no conditional kill and
shows a job in its batch system as RUNNING whether it waits there or runs, so the backend kills a pilot only
while A-REX itself still holds it (ACCEPTING..PREPARED). Here a pilot is held in PREPARING by an input file
whose download the test keeps hanging, and another runs in the fork LRMS."""

from __future__ import annotations

import http.server
import threading

import pytest
from sqlalchemy import update

from harvester_cli import model
from harvester_cli.backends.base import RetireResult
from harvester_cli.instance import worker_ref
from harvester_cli.state.schema import workers
from harvester_cli.steps import poll, propagate, submit, sweep
from tests.support.arc_ce import arc_queue, ce_state
from tests.support.harness import rows, wait_until

pytestmark = [pytest.mark.arc, pytest.mark.retire]

HELD, RUNS = "ARC_HELD", "ARC_RUNS"


class HangingFiles:
    """An http server whose one file A-REX asks for and gets only when the test lets it (or it ends)."""

    def __init__(self):
        self.asked, self.go = threading.Event(), threading.Event()
        files = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self, body: bytes = b"input\n", send: bool = False):
                files.asked.set()
                files.go.wait(120)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send:
                    self.wfile.write(body)

            def do_GET(self):
                self.do_HEAD(send=True)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/input.dat"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.go.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging():
    files = HangingFiles()
    yield files
    files.close()


def test_only_a_pilot_arex_still_holds_is_retired(harness, sim, arc_ce, pilot_zip, hanging):
    queues_data = {
        HELD: {**arc_queue(arc_ce, pilot_zip, "pull", input_files=[str(pilot_zip), hanging.url]),
               "pilot": "sleep 120", "empty_pilot_floor": 0},
        RUNS: {**arc_queue(arc_ce, pilot_zip, "pull"), "pilot": "sleep 120", "empty_pilot_floor": 0},
    }
    instance = harness.instance(queues_data)
    queues = list(instance.config.queues.values())
    run = submit.submit(instance, queues, count=1)
    assert [len(q.submitted) for q in run.queues] == [1, 1], [q.failed or q.error for q in run.queues]
    held, runs = sorted(rows(instance, workers), key=lambda w: w.queue != HELD)
    assert hanging.asked.wait(60), f"A-REX never asked for the held pilot's input\n{arc_ce.logs()}"
    wait_until(lambda: poll.poll(instance, queues) and {w.queue: w.status for w in rows(instance, workers)}
               == {HELD: model.SUBMITTED, RUNS: model.RUNNING}, 90, 0.5, "one pilot preparing, one running")
    assert ce_state(instance, HELD, held.batch_id) == "PREPARING"
    backend_runs = instance.backend(instance.config.queues[RUNS])
    try:
        # The one in the fork LRMS: A-REX cannot say whether it waits or runs, so it is left alone.
        (left,) = backend_runs.retire([worker_ref(runs)], "retired: queued pilot no longer needed")
        assert (left.outcome, left.detail) == (RetireResult.STARTED, "RUNNING")
        assert ce_state(instance, RUNS, runs.batch_id) == "RUNNING"

        # The one A-REX holds goes the whole way: marked by submit (it waited an hour), removed by sweep.
        with instance.store.transaction() as conn:
            conn.execute(update(workers).where(workers.c.worker_id == held.worker_id)
                         .values(submit_time=model.now() - 3600))
        submit.submit(instance, queues)
        result = {q.queue: q for q in sweep.sweep(instance, queues).queues}
        assert (result[HELD].retired, result[HELD].retire_started, result[HELD].kill_failed) == (1, 0, [])
        now = {w.worker_id: w for w in rows(instance, workers)}
        assert now[held.worker_id].status == model.CANCELLED and "(PREPARING)" in now[held.worker_id].diag
        assert now[runs.worker_id].status == model.RUNNING and now[runs.worker_id].kill_reason is None
        hanging.go.set()   # the download may end now: the job was killed before it reached the batch system
        wait_until(lambda: ce_state(instance, HELD, held.batch_id) in ("KILLING", "KILLED"), 60, 0.5,
                   "the held pilot killed at the CE")
        assert ce_state(instance, RUNS, runs.batch_id) == "RUNNING"
        propagate.propagate(instance, queues)
        reported = sim.workers(harness.harvester_id)[held.worker_id]
        assert (reported["status"], reported["errorCode"]) == ("cancelled", 1014)
    finally:
        backend_runs.kill([worker_ref(runs)], "test ended")
