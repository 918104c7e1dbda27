"""The Slurm backend without daemons: parsers fed with output captured from Debian's Slurm 22.05.8 (the
test cluster of tests/support/peers/slurm.sh), state mapping, diagnostics, templates, grouping into arrays and
the configuration checks. The real-daemon tests are in test_slurm.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from harvester_cli import config, model
from harvester_cli.backends import _slurm_script as script
from harvester_cli.backends import _slurm_status as status
from harvester_cli.backends.base import WorkerSpec
from harvester_cli.errors import ConfigError
from harvester_cli.panda import diagnostics
from harvester_cli.instance import Instance

S = status.SEP

# squeue -h -a -r -t all -u root -O <SQUEUE_FORMAT>: a cancelled job, an array of two finished tasks, a job
# that exited 3, three held array tasks, a running job and one that hit its time limit.
SQUEUE = (
    f"629{S}CANCELLED{S}36608{S}None{S}2026-12-02T02:43:57{S}2026-12-02T02:44:03{S}debug{S}hc:44\n"
    f"626_0{S}COMPLETED{S}0{S}None{S}2026-12-02T02:43:57{S}2026-12-02T02:43:57{S}debug{S}hc:50+\n"
    f"626_2{S}COMPLETED{S}0{S}None{S}2026-12-02T02:43:57{S}2026-12-02T02:43:57{S}debug{S}hc:50+\n"
    f"624{S}FAILED{S}768{S}NonZeroExitCode{S}2026-12-02T02:43:57{S}2026-12-02T02:43:57{S}debug{S}hc:41\n"
    f"627_0{S}PENDING{S}0{S}JobHeldUser{S}N/A{S}N/A{S}debug{S}hc:60+\n"
    f"627_1{S}PENDING{S}0{S}JobHeldUser{S}N/A{S}N/A{S}debug{S}hc:60+\n"
    f"627_2{S}PENDING{S}0{S}JobHeldUser{S}N/A{S}N/A{S}debug{S}hc:60+\n"
    f"625{S}RUNNING{S}0{S}None{S}2026-12-02T02:43:57{S}NONE{S}debug{S}hc:42\n"
    f"628{S}TIMEOUT{S}15{S}TimeLimit{S}2026-12-02T02:43:57{S}2026-12-02T02:45:24{S}debug{S}hc:43\n"
)
# sacct -c -X -n -P --delimiter=<SEP> -o <SACCT_FORMAT> -j 624,628,629,626_0 (no slurmdbd: the job-completion
# log). It answers 626_0 with array task 2's record (raw job id 626), and loses TIMEOUT's signal.
SACCT_JOBCOMP = (
    f"626{S}COMPLETED{S}0:0{S}2026-12-02T02:43:57{S}2026-12-02T02:43:57{S}debug{S}hc:50+\n"
    f"624{S}FAILED{S}3:0{S}2026-12-02T02:43:57{S}2026-12-02T02:43:57{S}debug{S}hc:41\n"
    f"629{S}CANCELLED{S}0:0{S}2026-12-02T02:43:57{S}2026-12-02T02:44:03{S}debug{S}hc:44\n"
    f"628{S}TIMEOUT{S}0:0{S}2026-12-02T02:43:57{S}2026-12-02T02:45:24{S}debug{S}hc:43\n"
)
SACCT_JOBCOMP_STDERR = "sacct: error: Unknown type ArrayJobId: 626\nsacct: error: Unknown type ArrayTaskId: 2\n"
SCONTROL_TIMEOUT = (
    "JobId=628 JobName=hc:43 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901756 Nice=0 "
    "Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 "
    "BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:01:27 TimeLimit=00:01:00 TimeMin=N/A "
    "SubmitTime=2026-12-02T02:43:54 EligibleTime=2026-12-02T02:43:54 AccrueTime=2026-12-02T02:43:54 "
    "StartTime=2026-12-02T02:43:57 EndTime=2026-12-02T02:45:24 Deadline=N/A SuspendTime=None SecsPreSuspend=0 "
    "LastSchedEval=2026-12-02T02:43:57 Scheduler=Main Partition=debug AllocNode:Sid=localhost:6551 "
    "ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 "
    "ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* "
    "MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK "
    "Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/slurm-exp/jobs "
    "StdErr=/tmp/slurm-exp/jobs/slurm-628.out StdIn=/dev/null StdOut=/tmp/slurm-exp/jobs/slurm-628.out Power= \n")
SCONTROL_ARRAY_HELD = (
    "JobId=627 ArrayJobId=627 ArrayTaskId=1 JobName=hc:60+ UserId=root(0) GroupId=root(0) MCS_label=N/A "
    "Priority=0 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=JobHeldUser Dependency=(null) Requeue=1 "
    "Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A "
    "SubmitTime=2026-12-02T02:43:54 EligibleTime=Unknown AccrueTime=Unknown StartTime=Unknown EndTime=Unknown "
    "Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-12-02T02:43:54 Scheduler=Main "
    "Partition=debug AllocNode:Sid=localhost:6551 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 "
    "NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=16000M,node=1,billing=1 Socks/Node=* "
    "NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) "
    "DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) "
    "WorkDir=/tmp/slurm-exp/jobs StdErr=/tmp/slurm-exp/jobs/slurm-627_1.out StdIn=/dev/null "
    "StdOut=/tmp/slurm-exp/jobs/slurm-627_1.out Power= \n")
SCONTROL_WITH_COMMENT = (
    "JobId=1 JobName=hid:7 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) "
    "QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 "
    "ExitCode=3:0 RunTime=00:00:01 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-12-02T02:25:19 "
    "EligibleTime=2026-12-02T02:25:19 AccrueTime=2026-12-02T02:25:19 StartTime=2026-12-02T02:25:20 "
    "EndTime=2026-12-02T02:25:21 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-12-02T02:25:20 "
    "Scheduler=Main Partition=debug AllocNode:Sid=localhost:6551 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm "
    "BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 "
    "Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 "
    "Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) "
    "Command=(null) WorkDir=/tmp/slurm-exp/jobs Comment=harvester-cli a b  StdErr=/tmp/slurm-exp/jobs/slurm-1.out "
    "StdIn=/dev/null StdOut=/tmp/slurm-exp/jobs/slurm-1.out Power= \n")
SINFO = f"debug*{S}up\nsecond{S}up\n"
SCANCEL_DOWN = ("scancel: error: Kill job error on job id 5: Unable to contact slurm controller "
                "(connect failure)\n")


def local(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- parsers -------------------------------------------------------------------------------------

def test_squeue_listing_is_read_field_by_field():
    records = {r.job_id: r for r in status.parse_squeue(SQUEUE)}
    assert sorted(records) == ["624", "625", "626_0", "626_2", "627_0", "627_1", "627_2", "628", "629"]
    failed = records["624"]
    assert (failed.state, failed.exit_code, failed.signal, failed.reason) == ("FAILED", 3, 0, "NonZeroExitCode")
    assert failed.start == local("2026-12-02T02:43:57") and failed.partition == "debug" and failed.name == "hc:41"
    timeout = records["628"]
    assert (timeout.exit_code, timeout.signal) == (0, 15) and timeout.end == local("2026-12-02T02:45:24")
    assert records["629"].exit_code == 143   # scancel's SIGTERM reached the batch shell: 128 + 15
    running = records["625"]
    assert running.end is None and running.reason is None and running.cluster is None
    held = records["627_1"]
    assert held.start is None and held.reason == "JobHeldUser" and held.name == "hc:60+"


def test_squeue_separator_inside_a_job_name_does_not_shift_fields():
    line = f"7{S}RUNNING{S}0{S}None{S}2026-12-02T02:43:57{S}NONE{S}debug{S}odd{S}name\n"
    (record,) = status.parse_squeue(line)
    assert record.name == f"odd{S}name" and record.state == "RUNNING"


def test_squeue_with_clusters_attributes_lines_to_their_cluster():
    # Shape per squeue(1) for --clusters (no slurmdbd here to capture it): a CLUSTER line per cluster.
    text = "CLUSTER: hpc2\n" + SQUEUE.splitlines()[3] + "\n"
    (record,) = status.parse_squeue(text)
    assert record.cluster == "hpc2" and record.job_id == "624"


def test_sacct_from_the_job_completion_log():
    records = status.parse_sacct(SACCT_JOBCOMP + SACCT_JOBCOMP_STDERR, source="jobcomp")
    by_id = {r.job_id: r for r in records}
    assert sorted(by_id) == ["624", "626", "628", "629"]   # the stderr lines are not records
    assert (by_id["624"].exit_code, by_id["624"].signal) == (3, 0)
    assert by_id["628"].state == "TIMEOUT" and by_id["628"].signal == 0   # jobcomp drops the signal
    assert "626_0" not in by_id   # asked for task 0, got task 2's record: keyed by id, it is not taken for 626_0


def test_sacct_cancelled_by_a_user_keeps_the_state_word():
    (record,) = status.parse_sacct(f"12{S}CANCELLED by 0{S}0:15{S}2026-12-02T02:43:57{S}2026-12-02T02:44:03{S}"
                                   f"debug{S}hc:9\n")
    assert record.state == "CANCELLED" and record.signal == 15


def test_scontrol_one_line_with_spaces_in_values():
    timeout = status.parse_scontrol(SCONTROL_TIMEOUT)
    assert (timeout.job_id, timeout.state, timeout.exit_code, timeout.signal) == ("628", "TIMEOUT", 0, 15)
    assert timeout.reason == "TimeLimit" and timeout.partition == "debug"
    held = status.parse_scontrol(SCONTROL_ARRAY_HELD)
    assert held.job_id == "627_1" and held.state == "PENDING" and held.start is None and held.name == "hc:60+"
    failed = status.parse_scontrol(SCONTROL_WITH_COMMENT)
    assert failed.exit_code == 3 and failed.end == local("2026-12-02T02:25:21")
    assert status.parse_scontrol("") is None


def test_sbatch_and_sinfo_and_scancel():
    assert status.parse_sbatch("624\n") == ("624", None)
    assert status.parse_sbatch("731;hpc2\n") == ("731", "hpc2")
    assert status.parse_sbatch("") is None and status.parse_sbatch("sbatch: error: x\n") is None
    assert status.parse_sinfo(SINFO) == ({"debug": "up", "second": "up"}, "debug")
    assert status.parse_sinfo(f"CLUSTER: hpc2\ngpu{S}down\n") == ({"gpu@hpc2": "down"}, None)
    errors = status.scancel_errors(SCANCEL_DOWN)
    assert errors == {"5": "Unable to contact slurm controller (connect failure)"}
    assert not status.nothing_to_kill(errors["5"])
    assert status.nothing_to_kill("Job/step already completing or completed")
    assert status.nothing_to_kill("Invalid job id specified")


# -- states -------------------------------------------------------------------------------------

@pytest.mark.parametrize("state,expected", [
    ("PENDING", model.SUBMITTED), ("CONFIGURING", model.SUBMITTED), ("RUNNING", model.RUNNING),
    ("COMPLETING", model.RUNNING), ("SUSPENDED", model.IDLE), ("COMPLETED", model.FINISHED),
    ("FAILED", model.FAILED), ("TIMEOUT", model.FAILED), ("NODE_FAIL", model.FAILED),
    ("OUT_OF_MEMORY", model.FAILED), ("BOOT_FAIL", model.FAILED), ("DEADLINE", model.FAILED),
    ("PREEMPTED", model.FAILED), ("CANCELLED", model.CANCELLED), ("REQUEUE_HOLD", model.HELD),
])
def test_state_mapping(state, expected):
    record = status.JobRecord("5", state, exit_code=0, signal=0, reason="None")
    assert status.observe(1, model.SUBMITTED, record).status == expected


@pytest.mark.parametrize("state,code", [
    ("TIMEOUT", 1070), ("OUT_OF_MEMORY", 1071), ("NODE_FAIL", 1072), ("BOOT_FAIL", 1073), ("DEADLINE", 1074),
    ("PREEMPTED", 1075), ("FAILED", 1076), ("CANCELLED", 1077),
])
def test_each_failure_state_has_its_error_code(state, code):
    seen = status.observe(1, model.RUNNING, status.JobRecord("5", state, exit_code=3, signal=0, partition="p"))
    assert seen.diag.startswith(f"slurm {state}: ") and "job 5; partition p; exit code 3" in seen.diag
    assert diagnostics.classify(seen.status, seen.diag, seen.exit_code)[0] == code


def test_observations_from_captured_records():
    records = {r.job_id: r for r in status.parse_squeue(SQUEUE)}
    timeout = status.observe(1, model.RUNNING, records["628"])
    assert (timeout.status, timeout.native_status, timeout.exit_code) == (model.FAILED, "TIMEOUT", 143)
    assert timeout.end_time == local("2026-12-02T02:45:24")
    failed = status.observe(2, model.RUNNING, records["624"])
    assert failed.exit_code == 3 and "reason NonZeroExitCode" in failed.diag
    done = status.observe(3, model.RUNNING, records["626_0"])
    assert (done.status, done.exit_code, done.diag) == (model.FINISHED, 0, None)
    held = status.observe(4, model.SUBMITTED, records["627_1"])
    assert held.status == model.HELD and held.diag == "JobHeldUser (job 627_1)"
    running = status.observe(5, model.SUBMITTED, records["625"])
    assert running.status == model.RUNNING and running.start_time == local("2026-12-02T02:43:57")


def test_pending_reason_on_the_kill_list_asks_for_a_kill_and_unknown_states_keep_the_status():
    record = status.JobRecord("5", "PENDING", reason="PartitionConfig")
    seen = status.observe(1, model.SUBMITTED, record, ("PartitionConfig",))
    assert seen.status == model.SUBMITTED and seen.diag == "pending: PartitionConfig"
    assert seen.kill_reason.endswith("does not clear by itself: PartitionConfig")
    assert status.observe(1, model.SUBMITTED, status.JobRecord("5", "PENDING", reason="Priority")).kill_reason is None
    odd = status.observe(1, model.RUNNING, status.JobRecord("5", "NEW_STATE_2030"))
    assert odd.status == model.RUNNING and "NEW_STATE_2030" in odd.diag


def test_job_names_tie_jobs_to_workers():
    assert status.worker_of(status.job_name("site-h:1", 42), "900", "site-h:1") == 42
    assert status.worker_of(status.array_name("hc", 100), "900_7", "hc") == 107
    assert status.worker_of("hc:50+", "626", "hc") is None   # an array name without a task id
    assert status.worker_of("other:42", "900", "hc") is None and status.worker_of("wrap", "1", "hc") is None
    assert status.compress([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and status.compress([3]) == "3"


# -- templates -----------------------------------------------------------------------------------

def spec(tmp_path: Path, worker_id: int = 7, cores: int = 8, memory: int = 16000) -> WorkerSpec:
    return WorkerSpec(worker_id, "Q", "MCORE", cores, memory, 3601, tmp_path / "logs" / str(worker_id), "run pilot")


def test_shipped_templates_are_valid_and_render_sizes_per_node(tmp_path):
    for name in script.TEMPLATES:
        assert script.check_template(script.template_text(name, None)) is None
    queue = config.parse(minimal_slurm({"nodes": 2}), "<t>", tmp_path).queues["Q"]
    values = script.values(spec(tmp_path), harvester_id="hc", queue=queue, nodes=2, work_dir=tmp_path / "w",
                           partition="debug", options=queue.backend_options, proxy=None, token=None)
    text = script.render(script.template_text("default", None), values)
    assert script.header(text) == ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=4",
                                   "#SBATCH --mem=8000", "#SBATCH --time=61"]
    assert text.rstrip().endswith(f"exec /bin/sh {tmp_path}/w/harvester-worker.sh")


def test_template_placeholders_leave_shell_braces_alone_and_name_typos():
    text = "#!/bin/bash\n#SBATCH -c {nCorePerNode}\necho ${HOME} {a,b} $(awk '{print $1}' f) {workerID}\n"
    assert script.check_template(text) is None
    assert script.render(text, {"nCorePerNode": "4", "workerID": "9"}).splitlines()[1:] == [
        "#SBATCH -c 4", "echo ${HOME} {a,b} $(awk '{print $1}' f) 9"]
    problem = script.check_template("#!/bin/sh\n#SBATCH -c {nCorePernode}\n")
    assert problem.startswith("line 2: unknown placeholder {nCorePernode} (did you mean {nCorePerNode}?")
    assert script.check_template("#SBATCH -c 1\n").startswith("line 1: a batch script must start with #!")


def test_header_stops_at_the_first_command():
    text = "#!/bin/sh\n# note\n#SBATCH -c 1\n\n#SBATCH --mem=1\necho hi\n#SBATCH --time=5\n"
    assert script.header(text) == ["#SBATCH -c 1", "#SBATCH --mem=1"]


def test_paths_a_script_cannot_carry_are_refused(tmp_path):
    queue = config.parse(minimal_slurm({}), "<t>", tmp_path).queues["Q"]
    bad = WorkerSpec(1, "Q", "SCORE", 1, 1, 60, tmp_path / "my logs" / "1", "p")
    with pytest.raises(ValueError, match="logDir .* has characters a batch script cannot carry"):
        script.values(bad, harvester_id="hc", queue=queue, nodes=1, work_dir=tmp_path / "w", partition=None,
                      options=queue.backend_options, proxy=None, token=None)


# -- grouping and command lines (a backend without a cluster) --------------------------------------

def backend(tmp_path, **options):
    instance = Instance(config.parse(minimal_slurm(options), "<t>", tmp_path))
    return instance.backend(instance.config.queues["Q"])


def test_identical_workers_become_arrays_within_max_array_size(tmp_path):
    b = backend(tmp_path, max_array_size=10)
    text = "#!/bin/sh\n#SBATCH -c 1\nexec x\n"
    big = "#!/bin/sh\n#SBATCH -c 8\nexec x\n"
    prepared = ([(spec(tmp_path, i), "debug", text) for i in (100, 101, 105, 109, 110, 111)]
                + [(spec(tmp_path, 102), "debug", big), (spec(tmp_path, 103), "second", text)])
    groups = [([s.worker_id for s, _ in members], partition, array) for members, partition, array in b._groups(prepared)]
    # Task ids (worker id - first) stay below max_array_size: 110 starts a new array.
    assert groups == [([100, 101, 105, 109], "debug", True), ([110, 111], "debug", True),
                      ([102], "debug", False), ([103], "second", False)]
    assert [g[2] for g in backend(tmp_path, max_array_size=1)._groups(prepared)] == [False] * 8


def test_sbatch_command_lines(tmp_path):
    b = backend(tmp_path, account="atlas", qos="normal", reservation="maint", constraint="avx2",
                sbatch_options=["--exclusive"])
    assert b._common("gpu@hpc2") == ["--partition=gpu", "--clusters=hpc2", "--account=atlas", "--qos=normal",
                                     "--reservation=maint", "--constraint=avx2", "--exclusive"]
    s = spec(tmp_path, 42)
    args = b._single(s, "debug")
    assert args[:3] == ["sbatch", "--parsable", f"--job-name={b.context.harvester_id}:42"]
    assert f"--output={s.log_dir}/pilot.log" in args and args[-1] == str(tmp_path / "work" / "Q" / "42" / "job.sbatch")


def test_environment_of_slurm_commands_drops_the_callers_slurm_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.setenv("SQUEUE_FORMAT", "%i")
    monkeypatch.setenv("SBATCH_PARTITION", "x")
    out = backend(tmp_path, slurm_conf="/etc/slurm/other.conf")._run(["env"]).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["SLURM_CONF"] == "/etc/slurm/other.conf"
    assert not {"SLURM_JOB_ID", "SQUEUE_FORMAT", "SBATCH_PARTITION"} & set(env)


# -- configuration -----------------------------------------------------------------------------------

def minimal_slurm(options: dict) -> dict:
    return {"harvester_id": "hc", "work_dir": "work", "panda": {"url": "https://panda.example.org/api/v1"},
            "queues": {"Q": {"mode": "pull", "backend": "slurm", "backend_options": options, "pilot": "true"}}}


@pytest.mark.parametrize("options,message", [
    ({"partitions": ["a b"]}, "partitions: 'a b' is not a partition name"),
    ({"partitions": ["gpu@"]}, "partitions: 'gpu@' is not a partition name"),
    ({"partitions": ["a", "a"]}, "partitions: a partition is listed twice"),
    ({"nodes": 0}, "nodes: must be at least 1"),
    ({"shipped_template": "mpi"}, "shipped_template: expected one of 'default', 'multinode', got 'mpi'"),
    ({"sbatch_options": ["--job-name=x"]}, "sbatch_options: '--job-name=x': harvester-cli sets it on every job"),
    ({"sbatch_options": ["-p"]}, "sbatch_options: '-p': use backend_options.partitions"),
    ({"sbatch_options": ["--account=x"]}, "sbatch_options: '--account=x': use backend_options.account"),
    ({"sbatch_options": ["exclusive"]}, "sbatch_options: 'exclusive' is not an option"),
    ({"ce_fair_share": 2.0}, "ce_fair_share: must be at most 1"),
    ({"partition": "x"}, "unknown key 'partition' (did you mean 'partitions'?)"),
])
def test_bad_options_are_one_clear_line(options, message):
    with pytest.raises(ConfigError) as caught:
        config.parse(minimal_slurm(options), "cfg.toml", Path("/"))
    text = str(caught.value)
    assert text.startswith("cfg.toml: [queues.Q.backend_options] ") and message in text and "\n" not in text


def test_own_template_is_checked_before_any_worker_is_submitted(tmp_path):
    (tmp_path / "site.sbatch").write_text("#!/bin/sh\n#SBATCH --mem={requestRAM}\nexec {executableFile}\n")
    with pytest.raises(ConfigError, match=r"\[queues.Q.backend_options\] template: .*site.sbatch line 2: unknown "
                                          r"placeholder \{requestRAM\} \(did you mean \{requestRam\}\?"):
        backend(tmp_path, template="site.sbatch")
    with pytest.raises(ConfigError, match="template: cannot read .*missing.sbatch: No such file"):
        backend(tmp_path, template="missing.sbatch")
    cfg = config.parse(minimal_slurm({"template": "missing.sbatch"}), "cfg.toml", tmp_path)
    assert any("[queues.Q.backend_options] template:" in p and "No such file" in p
               for p in config.environment_problems(cfg))   # config check says so too


def test_the_commented_slurm_example_in_config_example_parses():
    import tomllib

    text = config.EXAMPLE
    block = text[text.index("# [queues.MY_SLURM_SITE]"):]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    parsed = config.parse(tomllib.loads(text[:text.index("# A Slurm cluster")] + uncommented), "<example>")
    options = parsed.queues["MY_SLURM_SITE"].backend_options
    assert options.partitions == ["grid", "grid-long"] and options.account == "atlas"
