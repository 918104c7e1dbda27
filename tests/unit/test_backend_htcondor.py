"""HTCondor backend without daemons: real htcondor2.Submit parsing and classad2 evaluation, CE fanout
arithmetic, and the backend against a fake schedd at the one narrow seam (Backend.schedd)."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harvester_cli.panda.jobs import PandaJob
from harvester_cli import config, model
from harvester_cli.backends import _htcondor_status as status_map
from harvester_cli.backends import _htcondor_submit as build
from harvester_cli.backends import ce_choice
from harvester_cli.backends.base import BackendContext, WorkerRef, WorkerSpec
from harvester_cli.errors import ConfigError

classad2 = pytest.importorskip("classad2")
htcondor2 = pytest.importorskip("htcondor2")

NOW = 1_800_000_000.0


# -- CE fanout (pure) ---------------------------------------------------------------------------

def test_weights_are_even_without_history_and_follow_throughput_with_it():
    assert ce_choice.weights(["a", "b"], {}, 0.5) == {"a": 0.5, "b": 0.5}
    stats = {"a": {"started": 9, "queued": 1}, "b": {"started": 0, "queued": 10}}
    assert ce_choice.weights(["a", "b"], stats, 0.0) == {"a": 1.0, "b": 0.0}
    mixed = ce_choice.weights(["a", "b"], stats, 0.5)
    assert mixed == pytest.approx({"a": 0.75, "b": 0.25})
    # a CE without recent workers gets the others' mean throughput: a chance, no more
    fresh = ce_choice.weights(["a", "b", "new"], {"a": {"started": 4, "queued": 4}, "b": {"started": 0, "queued": 4}}, 0.0)
    assert fresh["new"] == pytest.approx(fresh["a"] / 2 + fresh["b"] / 2)


def test_systematic_choice_gives_each_ce_floor_or_ceiling_of_its_share():
    for seed in range(50):
        rng = random.Random(seed)
        assert ce_choice.systematic({"a": 0.5, "b": 0.5}, 4, rng) == {"a": 2, "b": 2}
        counts = ce_choice.systematic({"a": 0.7, "b": 0.2, "c": 0.1}, 10, rng)
        assert counts == {"a": 7, "b": 2, "c": 1}
        odd = ce_choice.systematic({"a": 0.5, "b": 0.5}, 3, rng)
        assert sorted(odd.values()) == [1, 2]


def test_choose_respects_per_ce_capacity_and_stops_when_all_are_full():
    rng = random.Random(1)
    picks = ce_choice.choose({"a": 0.5, "b": 0.5}, 6, {"a": 1, "b": None}, rng)
    assert Counter(picks) == {"a": 1, "b": 5}
    assert Counter(ce_choice.choose({"a": 0.5, "b": 0.5}, 6, {"a": 2, "b": 1}, rng)) == {"a": 2, "b": 1}
    assert ce_choice.choose({"a": 1.0}, 3, {"a": 0}, rng) == []


def test_cric_pandaqueue_lists_the_ces_and_their_states():
    data = {"SITE_A": {"queues": [
        {"ce_endpoint": "ce1.example.org:9619", "ce_flavour": "HTCONDOR-CE", "ce_state": "ACTIVE", "ce_queue_name": "grid"},
        {"ce_endpoint": "arc.example.org", "ce_flavour": "ARC-CE", "ce_state": "INACTIVE", "ce_queue_name": "atlas"},
    ]}}
    entries = ce_choice.from_cric(data, "SITE_A")
    assert [(e.endpoint, e.flavour, e.queue, e.active) for e in entries] == [
        ("ce1.example.org:9619", "htcondor-ce", "grid", True), ("arc.example.org", "arc-ce", "atlas", False)]
    assert ce_choice.from_cric(data["SITE_A"], "ignored") == entries
    with pytest.raises(ValueError, match="no pandaqueue 'OTHER'"):
        ce_choice.from_cric(data, "OTHER")
    with pytest.raises(ValueError, match=r"queues\[0\] has no ce_endpoint"):
        ce_choice.from_cric({"queues": [{"ce_flavour": "ARC-CE"}]}, "X")


def test_unreachable_or_failing_ces_are_benched_for_the_back_off_period():
    health: dict = {}
    assert ce_choice.mark_unreachable(health, "down:9619", NOW - 100, NOW)
    assert not ce_choice.mark_unreachable(health, "down:9619", NOW - 100, NOW)   # nothing new: no rewrite
    recent = {"bad:9619": {"missed": 3, "started": 0}, "flaky:9619": {"missed": 5, "started": 2}}
    ces = ["down:9619", "bad:9619", "flaky:9619", "good:9619"]
    benched = ce_choice.bench_reasons(ces, health=health, recent=recent, at=NOW + 10, backoff_seconds=600, max_failures=3)
    assert set(benched) == {"down:9619", "bad:9619"}
    assert "unreachable since 110 s" in benched["down:9619"] and "3 failed submissions" in benched["bad:9619"]
    later = ce_choice.bench_reasons(ces, health=health, recent={}, at=NOW + 601, backoff_seconds=600, max_failures=3)
    assert later == {}
    assert ce_choice.mark_reachable(health, "down:9619") and health == {}


# -- job ad -> observation ----------------------------------------------------------------------

POLICY = status_map.Policy(held_timeout=3600, kill_hold_reasons=("13", "proxy expired"), unavailable_timeout=1800)


def ad(**attrs) -> "classad2.ClassAd":
    return classad2.ClassAd({"ClusterId": 7, "ProcId": 0, "harvesterWorkerID": 1, **attrs})


@pytest.mark.parametrize("attrs,status,native", [
    ({"JobStatus": 1}, model.SUBMITTED, "IDLE"),
    ({"JobStatus": 1, "NumJobStarts": 1}, model.IDLE, "IDLE"),
    ({"JobStatus": 7, "JobStartDate": NOW - 50}, model.IDLE, "SUSPENDED"),
    ({"JobStatus": 2, "JobCurrentStartDate": NOW - 5}, model.RUNNING, "RUNNING"),
    ({"JobStatus": 6, "JobCurrentStartDate": NOW - 5}, model.RUNNING, "TRANSFERRING_OUTPUT"),
    ({"JobStatus": 4, "ExitCode": 0, "CompletionDate": NOW}, model.FINISHED, "COMPLETED"),
    ({"JobStatus": 3, "RemoveReason": "via condor_rm"}, model.CANCELLED, "REMOVED"),
    ({"JobStatus": 5, "HoldReason": "disk full", "EnteredCurrentStatus": NOW - 10}, model.HELD, "HELD"),
    ({"JobStatus": 2, "GridJobStatus": "RUNNING"}, model.RUNNING, "RUNNING (grid RUNNING)"),
])
def test_job_status_maps_to_worker_states(attrs, status, native):
    seen = status_map.observe(1, ad(**attrs), NOW, POLICY)
    assert (seen.status, seen.native_status) == (status, native)
    assert seen.kill_reason is None


def test_completed_jobs_keep_exit_code_signal_and_times():
    failed = status_map.observe(1, ad(JobStatus=4, ExitCode=3, JobStartDate=NOW - 60, CompletionDate=NOW - 1), NOW, POLICY)
    assert (failed.status, failed.exit_code, failed.diag) == (model.FAILED, 3, "pilot exited with code 3")
    assert (failed.start_time, failed.end_time) == (NOW - 60, NOW - 1)
    killed = status_map.observe(1, ad(JobStatus=4, ExitBySignal=True, ExitSignal=9), NOW, POLICY)
    assert killed.status == model.FAILED and killed.diag == "pilot killed by signal 9"
    removed = status_map.observe(1, ad(JobStatus=3, RemoveReason=classad2.Value.Undefined), NOW, POLICY)
    assert removed.diag == "removed: no reason given"


def test_held_jobs_are_removed_after_the_timeout_or_for_a_reason_on_the_kill_list():
    young = status_map.observe(1, ad(JobStatus=5, HoldReason="Transfer input files failure", HoldReasonCode=12,
                                     HoldReasonSubCode=2, EnteredCurrentStatus=NOW - 60), NOW, POLICY)
    assert young.status == model.HELD and young.kill_reason is None
    assert young.diag == "Transfer input files failure (HoldReasonCode 12, subcode 2)"
    old = status_map.observe(1, ad(JobStatus=5, HoldReason="x", EnteredCurrentStatus=NOW - 3601), NOW, POLICY)
    assert old.kill_reason.startswith("held longer than 3600 s: x")
    by_code = status_map.observe(1, ad(JobStatus=5, HoldReason="Error from slot", HoldReasonCode=13,
                                       EnteredCurrentStatus=NOW), NOW, POLICY)
    assert "kill list ('13')" in by_code.kill_reason
    by_text = status_map.observe(1, ad(JobStatus=5, HoldReason="The job's Proxy Expired", EnteredCurrentStatus=NOW),
                                 NOW, POLICY)
    assert "kill list ('proxy expired')" in by_text.kill_reason


def test_grid_job_whose_ce_is_unreachable_stays_queued_then_is_removed():
    grid = "condor ce.example.org ce.example.org:9619"
    fresh = status_map.observe(1, ad(JobStatus=1, GridResource=grid, GridResourceUnavailableTime=NOW - 60), NOW, POLICY)
    assert fresh.status == model.SUBMITTED and fresh.kill_reason is None
    assert fresh.diag.startswith("CE unreachable since 2027-01-15T") and grid in fresh.diag
    stale = status_map.observe(1, ad(JobStatus=1, GridResource=grid, GridResourceUnavailableTime=NOW - 1801), NOW, POLICY)
    assert stale.kill_reason == f"CE unreachable for more than 1800 s ({grid})"


# -- submit descriptions (real htcondor2.Submit, offline) ---------------------------------------

def spec(worker_id=1, log_dir=Path("/logs/1"), job=None, **kw) -> WorkerSpec:
    return WorkerSpec(worker_id=worker_id, queue="Q", resource_type="MCORE", n_core=8, memory_mb=16000,
                      walltime=3 * 3600 + 30, log_dir=log_dir, pilot_command=kw.pop("pilot", "run-pilot --queue Q"),
                      environment=kw.pop("environment", {"PANDA_QUEUE": "SITE"}), job=job and PandaJob.from_dict(job))


class Q:
    site, job_type, prod_source_label, name, n_queue_limit_worker = "SITE", "managed", "managed", "Q", 10


def expanded(submit, item: dict, key: str) -> str:
    copy = htcondor2.Submit(str(submit))
    copy.update(item)
    return copy.expand(key)


@pytest.mark.parametrize("flavour", build.FLAVOURS)
def test_shipped_templates_parse_and_take_the_worker_macros(flavour):
    submit = build.description(build.template_text(flavour, None), harvester_id='my "harvester"', queue_name="Q",
                               ce="ce.example.org:9619", extra={"+HarvesterBackground": "True"})
    assert submit.getQArgs() == ""
    assert submit["+harvesterID"] == '"my \\"harvester\\""' and submit["+harvesterWorkerID"] == "$(workerID)"
    assert submit["+HarvesterBackground"] == "True"
    item = build.macros(spec(), harvester_id="h", queue=Q, work_dir=Path("/work/Q/1"), input_files=["/a", "/b"],
                        ce_endpoint="ce.example.org:9619" if flavour != "arc-ce" else "arc.example.org",
                        ce_flavour=flavour, ce_name=None, ce_queue="grid", proxy=Path("/p.pem"), token=None,
                        disk_mb_per_core=1000)
    assert set(item) == set(build.MACROS)
    assert expanded(submit, item, "executable") == "/work/Q/1/harvester-worker.sh"
    assert expanded(submit, item, "output") == "/logs/1/pilot.out"
    assert expanded(submit, item, "transfer_input_files") == "/a,/b"
    assert expanded(submit, item, "x509userproxy") == "/p.pem"
    if flavour == "vanilla":
        assert expanded(submit, item, "request_cpus") == "8" and expanded(submit, item, "request_memory") == "16000"
        assert expanded(submit, item, "request_disk") == str(8 * 1000 * 1024)
    elif flavour == "htcondor-ce":
        assert expanded(submit, item, "grid_resource") == "condor ce.example.org ce.example.org:9619"
        assert expanded(submit, item, "MY.maxWallTime") == "181" and expanded(submit, item, "MY.remote_queue") == '"grid"'
    else:
        assert expanded(submit, item, "grid_resource") == "arc https://arc.example.org:443/arex"
        assert "<QueueName>grid</QueueName>" in expanded(submit, item, "arc_resources")


def test_own_template_with_a_queue_statement_submits_one_job_per_worker(tmp_path):
    template = tmp_path / "mine.sub"
    template.write_text("universe = vanilla\nexecutable = $(executableFile)\n+Site = \"$(computingSite)\"\nqueue 5\n")
    submit = build.description(build.template_text("vanilla", template), harvester_id="h", queue_name="Q", ce="x", extra={})
    assert submit.getQArgs() == "" and submit["MY.Site"] == '"$(computingSite)"'


def test_a_template_may_run_the_pilot_itself_with_htcondor_arguments(tmp_path):
    template = tmp_path / "direct.sub"
    template.write_text('universe = vanilla\nexecutable = $(pilotExecutable)\narguments = "$(pilotArguments)"\n')
    submit = build.description(build.template_text("vanilla", template), harvester_id="h", queue_name="Q", ce="x", extra={})
    pilot = "/opt/pilot/run.sh -q SITE --label \"it's\" -w 'a b' --json '{\"k\":1}'"
    item = build.macros(spec(pilot=pilot), harvester_id="h", queue=Q, work_dir=tmp_path, input_files=[], ce_endpoint="x",
                        ce_flavour="vanilla", ce_name=None, ce_queue=None, proxy=None, token=None, disk_mb_per_core=1)
    assert expanded(submit, item, "executable") == "/opt/pilot/run.sh"
    assert item["pilotArguments"] == "-q SITE --label 'it''s' -w 'a b' --json '{\"\"k\"\":1}'"
    assert build.pilot_parts("a 'unclosed") == ("", "")


def test_endpoints_split_into_host_and_port():
    assert build.split_endpoint("ce.example.org:9619", "htcondor-ce") == ("ce.example.org", 9619)
    assert build.split_endpoint("ce.example.org", "htcondor-ce") == ("ce.example.org", 9619)
    assert build.split_endpoint("https://arc.example.org:8443/arex", "arc-ce") == ("arc.example.org", 8443)
    assert build.split_endpoint("arc.example.org", "arc-ce") == ("arc.example.org", 443)


def test_wrapper_runs_the_pilot_with_its_environment_and_keeps_its_outputs(tmp_path):
    pilot = "echo \"$PANDA_QUEUE $ODD\"; echo '{}' > heartbeat.json; exit 4"
    script = tmp_path / "w.sh"
    script.write_text(build.wrapper(spec(pilot=pilot, environment={"PANDA_QUEUE": "SITE", "ODD": "a 'b' $c"}), "h",
                                    ("heartbeat.json", "jobReport.json"), {"PANDA_QUEUE": "SITE", "ODD": "a 'b' $c"}))
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    done = subprocess.run(["/bin/sh", str(script)], cwd=sandbox, capture_output=True, text=True)
    assert done.returncode == 4 and done.stdout == "SITE a 'b' $c\n"
    assert (sandbox / "harvester-outputs" / "heartbeat.json").is_file()
    assert not (sandbox / "harvester-outputs" / "jobReport.json").exists()


# -- the backend against a fake schedd ----------------------------------------------------------

class FakeSchedd:
    """Only the four calls the backend makes, with real classad2 evaluation of its constraints."""

    def __init__(self):
        self.queue: list = []
        self.history_ads: list = []
        self.submits: list[int] = []
        self.next_cluster = 100
        self.fail_submit: Exception | None = None
        self.refuse: set[str] = set()
        self.acts: list = []

    def submit(self, description, itemdata, spool=False):
        items = list(itemdata)
        if self.fail_submit:
            raise self.fail_submit
        cluster, self.next_cluster = self.next_cluster, self.next_cluster + 1
        self.submits.append(len(items))
        for proc, item in enumerate(items):
            self.queue.append(classad2.ClassAd({
                "ClusterId": cluster, "ProcId": proc, "JobStatus": 1, "harvesterID": json.loads(description["+harvesterID"]),
                "harvesterWorkerID": int(item["workerID"]), "harvesterCE": json.loads(description["+harvesterCE"]),
                "QDate": int(NOW)}))

        class Result:
            def cluster(self):
                return cluster

            def first_proc(self):
                return 0

            def num_procs(self):
                return len(items)

        return Result()

    @staticmethod
    def _matching(ads, constraint):
        expr = classad2.ExprTree(constraint)
        return [a for a in ads if expr.eval(a) is True]

    def query(self, constraint, projection):
        return self._matching(self.queue, constraint)

    def history(self, constraint, projection, match=-1, since=None):
        found = self._matching(self.history_ads, constraint)
        return found[:match] if match > 0 else found

    def act(self, action, job_spec, reason=None):
        self.acts.append((action, job_spec, reason))
        result = {"TotalSuccess": 0, "TotalNotFound": 0, "TotalAlreadyDone": 0, "TotalBadStatus": 0,
                  "TotalPermissionDenied": 0, "TotalError": 0}
        for job in job_spec if isinstance(job_spec, list) else []:
            ads = [a for a in self.queue if status_map.batch_id(a) == job]
            if not ads:
                result["TotalNotFound"] += 1
            elif job in self.refuse:
                result["TotalPermissionDenied"] += 1
            else:
                ads[0]["JobStatus"] = 3
                result["TotalSuccess"] += 1
        return classad2.ClassAd(result)


def make_backend(tmp_path, stats=None, **options):
    from harvester_cli import backends

    data = {"harvester_id": "h1", "panda": {"url": "https://panda.example.org/api/v1", "proxy": str(tmp_path / "proxy.pem")},
            "queues": {"Q": {"mode": "pull", "backend": "htcondor", "pilot": "true", "n_queue_limit_worker": 10,
                             "backend_options": {"schedd": "schedd@example", **options}}}}
    queue = config.parse(data, "<test>", tmp_path).queues["Q"]
    context = BackendContext("h1", tmp_path / "work", proxy=tmp_path / "proxy.pem",
                             ce_statistics=(lambda q, since: stats or {}))
    backend = backends.create("htcondor", queue, context)
    fake = FakeSchedd()
    backend._schedds["schedd@example"] = fake
    backend._rng = random.Random(3)
    return backend, fake


def ref(result, log_dir=None, status=model.SUBMITTED) -> WorkerRef:
    return WorkerRef(result.worker_id, "Q", result.batch_id, result.submission_host, result.computing_element, status,
                     log_dir, NOW)


def test_submit_is_one_schedd_call_per_max_at_once_with_files_per_worker(tmp_path):
    backend, fake = make_backend(tmp_path, max_at_once=2)
    specs = [spec(i, tmp_path / "logs" / str(i), job={"PandaID": 10 + i} if i == 2 else None,
                  environment={"PANDA_QUEUE": "SITE", "X509_USER_PROXY": "/host/proxy"}) for i in range(1, 6)]
    results = backend.submit(specs)
    assert fake.submits == [2, 2, 1]
    assert [r.worker_id for r in results] == [1, 2, 3, 4, 5] and all(r.ok for r in results)
    assert [r.batch_id for r in results] == ["100.0", "100.1", "101.0", "101.1", "102.0"]
    assert {(r.submission_host, r.computing_element, r.stdout, r.batch_log) for r in results} == {
        ("schedd@example", "schedd@example", "pilot.out", "pilot.log")}
    work = tmp_path / "work" / "Q"
    job_file = work / "2" / "pandaJobData.out"
    assert json.loads(job_file.read_text()) == {"PandaID": 12} and stat.S_IMODE(job_file.stat().st_mode) == 0o600
    assert not (work / "1" / "pandaJobData.out").exists()
    wrapper = (work / "1" / "harvester-worker.sh").read_text()
    assert "export PANDA_QUEUE=SITE" in wrapper and "X509_USER_PROXY" not in wrapper   # HTCondor gives the job's copy
    assert os.access(work / "1" / "harvester-worker.sh", os.X_OK)
    described = (tmp_path / "logs" / "2" / "pilot.jdl").read_text()
    assert "workerID = 2" in described and f"inputFiles = {job_file}" in described and described.endswith("queue\n")


def test_failed_submit_call_adopts_what_the_schedd_took_and_fails_the_rest(tmp_path):
    backend, fake = make_backend(tmp_path)
    fake.fail_submit = RuntimeError("SCHEDD:2:Setting job owner to \"root\" is not permitted")
    fake.queue.append(classad2.ClassAd({"ClusterId": 5, "ProcId": 0, "JobStatus": 1, "harvesterID": "h1",
                                        "harvesterWorkerID": 2, "harvesterCE": "schedd@example"}))
    results = backend.submit([spec(1, tmp_path / "l1"), spec(2, tmp_path / "l2")])
    assert results[0].error.startswith("schedd schedd@example refused the submission: SCHEDD:2:Setting job owner")
    assert results[1].ok and results[1].batch_id == "5.0"


def test_fanout_splits_over_ces_and_skips_benched_and_full_ones(tmp_path):
    ces = [{"endpoint": "a.example.org:9619"}, {"endpoint": "b.example.org:9619"},
           {"endpoint": "c.example.org", "flavour": "arc-ce", "queue": "grid"},
           {"endpoint": "off.example.org:9619", "state": "DRAINING"}]
    backend, fake = make_backend(tmp_path, stats={"c.example.org": {"queued": 10}}, ces=ces)
    backend.save_health({"b.example.org:9619": {"unreachable_since": NOW, "seen": model.now()}})
    results = backend.submit([spec(i, tmp_path / str(i)) for i in range(1, 4)])
    assert [r.computing_element for r in results] == ["a.example.org:9619"] * 3   # b benched, c full, off inactive
    described = (tmp_path / "1" / "pilot.jdl").read_text()
    assert "ceEndpoint = a.example.org:9619" in described and "grid_resource = condor $(ceName) $(ceEndpoint)" in described
    backend.save_health({})
    results = backend.submit([spec(i, tmp_path / str(i)) for i in range(4, 8)])
    assert Counter(r.computing_element for r in results) == {"a.example.org:9619": 2, "b.example.org:9619": 2}
    nothing, _ = make_backend(tmp_path, stats={"a.example.org:9619": {"queued": 10}}, ces=ces[:1])
    (refused,) = nothing.submit([spec(9, tmp_path / "9")])
    assert refused.error == "no CE can take this worker (a.example.org:9619: already queues 10 of 10)"


def test_ces_from_a_cric_file(tmp_path):
    cric = tmp_path / "cric.json"
    cric.write_text(json.dumps({"Q": {"queues": [{"ce_endpoint": "x.example.org:9619", "ce_flavour": "HTCONDOR-CE",
                                                      "ce_state": "ACTIVE"}]}}))
    backend, _ = make_backend(tmp_path, cric_file=str(cric))
    (result,) = backend.submit([spec(1, tmp_path / "1")])
    assert result.computing_element == "x.example.org:9619"


def test_unreadable_cric_file_fails_the_workers_with_the_reason(tmp_path):
    backend, fake = make_backend(tmp_path, cric_file=str(tmp_path / "missing.json"))
    (result,) = backend.submit([spec(1, tmp_path / "1")])
    assert result.error.startswith("cannot read the CEs of Q from ") and "No such file" in result.error
    assert fake.submits == []


def test_poll_constraint_is_a_range_for_dense_ids_and_a_list_for_sparse_ones(tmp_path):
    backend, _ = make_backend(tmp_path)
    assert "harvesterWorkerID >= 3 && harvesterWorkerID <= 7 &&" in backend._constraint([3, 4, 5, 7])
    assert backend._constraint([3, 400]).endswith("member(harvesterWorkerID, {3, 400})")
    # a page of thousands asks by range: a member() list that long costs the schedd its length per job
    large = backend._constraint(list(range(1, 20_000, 2)))
    assert "harvesterWorkerID <= 19999" in large and "member(" not in large
    assert f'harvesterQueue =?= "{backend.queue.name}"' in large   # the other queues' ids in the range stay out


def test_check_reads_the_queue_then_the_history_and_reports_the_rest_missing(tmp_path):
    backend, fake = make_backend(tmp_path, ces=[{"endpoint": "a:9619"}])
    results = backend.submit([spec(i, tmp_path / str(i)) for i in (1, 2, 3)])
    fake.queue[0]["GridResourceUnavailableTime"] = int(NOW)
    fake.history_ads.append(fake.queue.pop(1))
    fake.history_ads[0].update({"JobStatus": 4, "ExitCode": 0, "CompletionDate": int(NOW)})
    fake.queue.pop(1)
    # a condor-C copy of worker 3 at a CE that is this same schedd: not ours
    fake.queue.append(classad2.ClassAd({"ClusterId": 900, "ProcId": 0, "JobStatus": 2, "harvesterID": "h1",
                                        "harvesterWorkerID": 3, "SubmitterGlobalJobId": "x#1.0#1"}))
    seen = backend.check([ref(r) for r in results])
    assert [s.status for s in seen] == [model.SUBMITTED, model.FINISHED, model.MISSING]
    assert seen[0].diag.startswith("CE unreachable since") and "history of the last 172800 s" in seen[2].diag
    assert "a:9619" in backend.load_health()


def test_kill_removes_with_a_reason_and_checks_the_counts(tmp_path):
    backend, fake = make_backend(tmp_path)
    results = backend.submit([spec(i, tmp_path / str(i)) for i in (1, 2, 3)])
    fake.queue.pop(2)   # already gone: counts as killed
    fake.refuse.add(results[1].batch_id)
    outcome = backend.kill([ref(r) for r in results], "killed by harvester-cli sweep")
    assert [o.ok for o in outcome] == [True, False, True]
    assert "did not remove 100.1" in outcome[1].error and "TotalPermissionDenied=1" in outcome[1].error
    action, ids, reason = fake.acts[0]
    assert action == htcondor2.JobAction.Remove and ids == ["100.0", "100.1", "100.2"]
    assert reason == ("harvester-cli: killed by harvester-cli sweep", 1)


def test_find_adopts_from_queue_or_history_by_tag(tmp_path):
    backend, fake = make_backend(tmp_path)
    results = backend.submit([spec(i, tmp_path / str(i)) for i in (1, 2)])
    fake.history_ads.append(fake.queue.pop(0))
    pending = [WorkerRef(i, "Q", None, None, None, model.PENDING, None) for i in (1, 2, 3)]
    found = backend.find(pending)
    assert [f.batch_id if f else None for f in found] == [results[0].batch_id, results[1].batch_id, None]
    assert found[0].computing_element == "schedd@example"


def test_fetch_outputs_takes_what_htcondor_brought_back(tmp_path):
    backend, _ = make_backend(tmp_path)
    log_dir = tmp_path / "log"
    (log_dir / "harvester-outputs").mkdir(parents=True)
    (log_dir / "harvester-outputs" / "heartbeat.json").write_text("{}")
    got = backend.fetch_outputs(WorkerRef(1, "Q", "1.0", None, None, model.FINISHED, log_dir), ["heartbeat.json",
                                                                                                  "jobReport.json"])
    assert got == {"heartbeat.json": log_dir / "heartbeat.json"} and (log_dir / "heartbeat.json").read_text() == "{}"


def test_clean_removes_private_files_and_forces_lingering_removed_jobs_out(tmp_path):
    backend, fake = make_backend(tmp_path)
    (result,) = backend.submit([spec(1, tmp_path / "1", job={"PandaID": 1})])
    assert (tmp_path / "work" / "Q" / "1" / "pandaJobData.out").exists()
    backend.clean([ref(result, status=model.CANCELLED)])
    assert not (tmp_path / "work" / "Q" / "1").exists()
    action, constraint, reason = fake.acts[-1]
    assert action == htcondor2.JobAction.RemoveX and constraint.endswith("&& JobStatus == 3")
    assert classad2.ExprTree(constraint.replace("JobStatus == 3", "true")).eval(fake.queue[0]) is True



def test_polls_force_stuck_removed_jobs_out_once_per_removed_timeout_not_once_per_process(tmp_path, monkeypatch):
    """A long-lived process (the tests' cycles, a poll of many pages) still forces out a job that got stuck in
    Removed after its first round: at most one condor_rm -forcex per schedd and removed_timeout."""
    backend, fake = make_backend(tmp_path, removed_timeout=60)
    (result,) = backend.submit([spec(1, tmp_path / "1")])
    clock = [NOW]
    monkeypatch.setattr(model, "now", lambda: clock[0])

    def forced() -> int:
        return sum(1 for action, _, _ in fake.acts if action == htcondor2.JobAction.RemoveX)

    backend.check([ref(result)])
    assert forced() == 1
    clock[0] += 30
    backend.check([ref(result)])
    assert forced() == 1   # within removed_timeout of the last one: the schedd is not asked again
    clock[0] += 31
    backend.check([ref(result)])
    assert forced() == 2


# -- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("options,message", [
    ({"ces": [{"endpoint": "a", "flavour": "cream-ce"}]}, "ces[0]] flavour: expected one of 'htcondor-ce', 'arc-ce'"),
    ({"ces": [{"flavour": "arc-ce"}]}, "missing required key 'endpoint'"),
    ({"ces": [{"endpoint": "a"}], "cric_file": "x.json"}, "either ces or cric_file"),
    ({"ce_fair_share": 1.5}, "ce_fair_share: must be at most 1"),
    ({"held_timout": 5}, "did you mean 'held_timeout'"),
    ({"extra_attributes": {"+A": 1}}, "extra_attributes.+A: expected a string"),
])
def test_bad_backend_options_are_refused_with_the_key(options, message):
    data = {"harvester_id": "h", "panda": {"url": "https://x"},
            "queues": {"Q": {"mode": "pull", "backend": "htcondor", "backend_options": options, "pilot": "true"}}}
    with pytest.raises(ConfigError, match=None) as error:
        config.parse(data, "c.toml")
    assert message in str(error.value)


def test_config_check_and_backend_creation_do_not_import_htcondor(tmp_path):
    code = (
        "import sys; from harvester_cli import config, backends; from harvester_cli.backends.base import BackendContext\n"
        "from pathlib import Path\n"
        "c = config.parse({'harvester_id': 'h', 'panda': {'url': 'https://x'}, 'queues': {'Q': {'mode': 'pull', 'pilot': 'true', "
        "'backend': 'htcondor', 'backend_options': {'ces': [{'endpoint': 'a:9619'}]}}}})\n"
        "backends.create('htcondor', c.queues['Q'], BackendContext('h', Path('/tmp')))\n"
        "assert 'htcondor2' not in sys.modules and 'classad2' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_schedd_fanout_spreads_workers_like_ces_with_limits_and_back_off(tmp_path):
    from harvester_cli import backends

    stats = {"submission_host": {"full@example": {"queued": 10}}}
    data = {"harvester_id": "h1", "panda": {"url": "https://panda.example.org/api/v1", "proxy": str(tmp_path / "p")},
            "queues": {"Q": {"mode": "pull", "backend": "htcondor", "pilot": "true", "n_queue_limit_worker": 10, "backend_options": {
                "collector": "pool.example.org", "schedds": [
                    {"name": "a@example"}, {"name": "b@example", "collector": "other.example.org"},
                    {"name": "full@example"}, {"name": "off@example", "state": "DRAINING"}]}}}}
    queue = config.parse(data, "<test>", tmp_path).queues["Q"]
    context = BackendContext("h1", tmp_path / "work", proxy=tmp_path / "p",
                             ce_statistics=lambda q, since, by="computing_element": stats.get(by, {}))
    backend = backends.create("htcondor", queue, context)
    assert not backend.host_bound   # remote schedds: any host works these workers
    fakes = {name: FakeSchedd() for name in ("a@example", "b@example", "full@example")}
    backend._schedds.update(fakes)
    backend._rng = random.Random(5)
    results = backend.submit([spec(i, tmp_path / str(i)) for i in range(1, 7)])
    assert all(r.ok for r in results)
    assert Counter(r.submission_host for r in results) == {"a@example": 3, "b@example": 3}   # full, off: none
    assert sum(fakes["a@example"].submits) == 3 and not fakes["full@example"].submits
    # Checks go to the schedd each worker went to.
    observed = backend.check([ref(r) for r in results])
    assert [o.status for o in observed] == [model.SUBMITTED] * 6
    # A schedd whose submissions keep failing is benched for the back-off period.
    stats["submission_host"]["b@example"] = {"missed": 3}
    results = backend.submit([spec(i, tmp_path / str(i)) for i in range(7, 10)])
    assert {r.submission_host for r in results} == {"a@example"}
    fakes["a@example"].fail_submit = RuntimeError("schedd down")
    results = backend.submit([spec(10, tmp_path / "10")])
    assert results[0].error and results[0].submission_host == "a@example"   # counts against a@example
    stats["submission_host"] = {n: {"queued": 10} for n in ("a@example", "b@example", "full@example")}
    (refused,) = backend.submit([spec(11, tmp_path / "11")])
    assert refused.error.startswith("no schedd can take this worker (a@example: already queues 10 of 10")


def test_schedd_and_schedds_together_are_refused(tmp_path):
    data = {"harvester_id": "h1", "panda": {"url": "https://panda.example.org/api/v1", "proxy": str(tmp_path / "p")},
            "queues": {"Q": {"mode": "pull", "backend": "htcondor", "pilot": "true", "backend_options": {
                "schedd": "s@example", "schedds": [{"name": "a@example"}]}}}}
    with pytest.raises(config.ConfigError, match="either schedd or schedds"):
        config.parse(data, "<test>", tmp_path)
