"""The local backend as its own interface promises: submit, check, kill, find by tag, outputs, clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester_cli.panda.jobs import PandaJob
from harvester_cli.backends.base import BackendContext, WorkerRef, WorkerSpec
from harvester_cli.backends.local import LocalBackend
from harvester_cli.config import QueueConfig
from tests.support.harness import wait_until


@pytest.fixture
def backend(tmp_path):
    queue = QueueConfig(name="Q", mode="push", backend="local", pilot="true")
    b = LocalBackend(queue, BackendContext(harvester_id=f"local-test-{id(tmp_path)}", work_root=tmp_path / "work"))
    yield b
    b.kill([ref(tmp_path, i) for i in range(1, 6)], "test teardown")


def spec(tmp_path, worker_id, command, job=None):
    return WorkerSpec(worker_id, "Q", "SCORE", 1, 2000, 60, tmp_path / "logs" / str(worker_id), command,
                      job=job and PandaJob.from_dict(job))


def ref(tmp_path, worker_id, batch_id=None):
    return WorkerRef(worker_id, "Q", batch_id, None, None, "submitted", tmp_path / "logs" / str(worker_id))


def test_exit_codes_map_to_finished_and_failed(tmp_path, backend):
    results = backend.submit([spec(tmp_path, 1, "echo hi"), spec(tmp_path, 2, "exit 4")])
    assert all(r.ok for r in results)
    seen = wait_until(lambda: (o := backend.check([ref(tmp_path, 1), ref(tmp_path, 2)]))
                      and all(x.status in ("finished", "failed") for x in o) and o)
    assert [(o.status, o.exit_code) for o in seen] == [("finished", 0), ("failed", 4)]
    assert (tmp_path / "logs" / "1" / "pilot.out").read_text() == "hi\n"


def test_kill_stops_the_process_group_and_reports_cancelled(tmp_path, backend):
    (result,) = backend.submit([spec(tmp_path, 3, "sleep 60 & sleep 60")])
    worker = ref(tmp_path, 3, result.batch_id)
    # At once, before its wrapper may have written the pid file: the process with the worker's tag runs,
    # and a kill reaches it.
    wait_until(lambda: backend.check([worker])[0].status == "running", 10, 0.01, "the worker running")
    assert backend.kill([worker], "operator")[0].ok
    seen = wait_until(lambda: (o := backend.check([worker])[0]).status == "cancelled" and o)
    assert "operator" in seen.diag
    assert not Path(f"/proc/{result.batch_id}").exists() or \
        Path(f"/proc/{result.batch_id}/stat").read_text().split()[2] == "Z"


def test_find_adopts_a_running_tagged_process_and_ignores_unknown_ids(tmp_path, backend):
    (result,) = backend.submit([spec(tmp_path, 4, "sleep 30")])
    pid_file = tmp_path / "work" / "Q" / "4" / ".pid"
    wait_until(pid_file.exists, 10, 0.05, "the wrapper's pid file")
    assert pid_file.read_text().split()[0] == result.batch_id
    pid_file.unlink()   # as if the wrapper could not write it (full disk)
    # Right after the spawn the child may not have exec'd the wrapper yet (no tag in its environment).
    found, missing = wait_until(lambda: (lambda f: f if f[0] else None)(backend.find([ref(tmp_path, 4), ref(tmp_path, 5)])),
                                10, 0.1, "the tagged process")
    assert found.batch_id == result.batch_id and missing is None
    assert pid_file.read_text().split()[0] == result.batch_id   # recorded again: poll knows it from now on


def test_push_outputs_are_copied_to_the_log_dir_and_clean_removes_the_work_dir(tmp_path, backend):
    backend.submit([spec(tmp_path, 5, "echo '{}' > heartbeat.json", job={"PandaID": 1})])
    wait_until(lambda: backend.check([ref(tmp_path, 5)])[0].status == "finished")
    assert (tmp_path / "work" / "Q" / "5" / "pandaJobData.out").exists()
    files = backend.fetch_outputs(ref(tmp_path, 5), ["heartbeat.json", "jobReport.json"])
    assert list(files) == ["heartbeat.json"] and files["heartbeat.json"].parent == tmp_path / "logs" / "5"
    backend.clean([ref(tmp_path, 5)])
    assert not (tmp_path / "work" / "Q" / "5").exists()


def test_overlapping_polls_never_read_half_a_copied_output(tmp_path, backend):
    """Two polls at once fetch the same worker's outputs: one reading heartbeat.json while the other copies
    it must see the whole file (a truncated read turned a finished job into a failed one)."""
    import json
    import threading

    from harvester_cli.panda.pilot_outputs import HEARTBEAT

    work = tmp_path / "work" / "Q" / "5"
    work.mkdir(parents=True)
    (work / HEARTBEAT).write_text(json.dumps({"state": "finished", "padding": "x" * 2_000_000}))
    worker = ref(tmp_path, 5)
    backend.fetch_outputs(worker, [HEARTBEAT])
    stop, torn, failed = threading.Event(), [], []

    def copy_again():
        while not stop.is_set():
            try:
                backend.fetch_outputs(worker, [HEARTBEAT])
            except OSError as exc:
                failed.append(exc)

    copier = threading.Thread(target=copy_again)
    copier.start()
    try:
        for _ in range(200):
            files = backend.fetch_outputs(worker, [HEARTBEAT])
            try:
                json.loads(files[HEARTBEAT].read_text())
            except ValueError:
                torn.append(files[HEARTBEAT].stat().st_size)
    finally:
        stop.set()
        copier.join()
    assert not torn, f"{len(torn)} of 200 reads saw a partly copied file"
    assert not failed, failed[:1]
    assert not [p.name for p in (tmp_path / "logs" / "5").iterdir() if p.name.endswith(".part")]
