"""heartbeat.json / jobReport.json -> the final update, typed as PanDA's v1 API demands."""

from __future__ import annotations

import json

from harvester_cli.panda import pilot_outputs
from harvester_cli.panda.jobs import PandaJob

JOB = PandaJob.from_dict({"PandaID": 123, "attemptNr": 2})


def test_heartbeat_fields_become_typed_snake_case_update_fields():
    update, problems = pilot_outputs.from_heartbeat(JOB, {
        "jobId": 123, "state": "finished", "exeErrorCode": "0", "cpuConsumptionTime": 12.0, "coreCount": "8",
        "maxRSS": "2048", "node": "wn1", "startTime": "2026-01-01 00:00:00", "unknownKey": 1})
    assert problems == []
    assert update == {"job_id": 123, "job_status": "finished", "attempt_nr": 2, "exe_error_code": 0,
                      "cpu_consumption_time": 12, "core_count": 8, "max_rss": 2048, "node": "wn1",
                      "start_time": "2026-01-01 00:00:00"}


def test_a_value_that_does_not_convert_is_dropped_and_named():
    update, problems = pilot_outputs.from_heartbeat(JOB, {"state": "failed", "exeErrorCode": "boom"})
    assert "exe_error_code" not in update and problems == ["exeErrorCode='boom' is not int"]


def test_numbers_json_cannot_carry_are_dropped_and_named_and_an_absurd_attempt_is_left_out():
    heartbeat = {"jobId": 123, "state": "finished", "exeErrorCode": float("inf"), "maxRSS": float("nan"),
                 "cpuConversionFactor": "-inf", "maxVMEM": 10.5}
    update, problems = pilot_outputs.from_heartbeat(PandaJob.from_dict({"PandaID": 123, "attemptNr": float("inf")}),
                                                 heartbeat)
    json.dumps(update, allow_nan=False)   # what PanDA can parse
    assert update["job_status"] == "finished" and update["max_vmem"] == 10.5 and "attempt_nr" not in update
    assert sorted(p.split("=")[0] for p in problems) == ["cpuConversionFactor", "exeErrorCode", "maxRSS"]


def test_a_non_final_last_state_is_reported_failed():
    update, problems = pilot_outputs.from_heartbeat(JOB, {"state": "running"})
    assert update["job_status"] == "failed" and update["pilot_error_code"] == pilot_outputs.ERR_BAD_HEARTBEAT
    assert "not finished or failed" in problems[0]


def test_job_report_is_slimmed_and_missing_heartbeat_synthesises_a_failure(tmp_path):
    report = {"executor": [{"name": "x", "logfileReport": {"details": ["line"] * 10000}}], "exitCode": 0}
    (tmp_path / "jobReport.json").write_text(json.dumps(report))
    update, note = pilot_outputs.final_update(JOB, {"jobReport.json": tmp_path / "jobReport.json"},
                                              "LRMS error: (3)")
    assert update["job_status"] == "failed" and update["pilot_error_code"] == pilot_outputs.ERR_NO_HEARTBEAT
    assert "LRMS error: (3)" in update["pilot_error_diag"] and "no heartbeat.json" in note
    assert json.loads(update["meta_data"])["executor"][0]["logfileReport"] == {}
    assert len(update["meta_data"]) < 200
    assert "pilot_log" not in update   # sent once per job, by propagate, not with every final update


def test_a_heartbeat_without_a_state_is_reported_failed_never_finished():
    for heartbeat in ({"jobId": 123}, {"jobId": 123, "state": None}, {"jobId": 123, "state": ""},
                      {"jobId": 123, "exeErrorCode": 0, "transExitCode": 0}):
        update, problems = pilot_outputs.from_heartbeat(JOB, heartbeat)
        assert update["job_status"] == "failed", heartbeat


def test_a_heartbeat_for_another_job_is_not_taken_for_this_one():
    update, problems = pilot_outputs.from_heartbeat(JOB, {"jobId": 999, "state": "finished", "exeErrorCode": 0,
                                                          "node": "wn1"})
    assert update["job_status"] == "failed" and update["pilot_error_code"] == pilot_outputs.ERR_BAD_HEARTBEAT
    assert "exe_error_code" not in update and "node" not in update   # nothing of the other job's is sent
    assert problems == ["heartbeat is for job 999, not 123"]
    # the same job written as a string is this job
    update, problems = pilot_outputs.from_heartbeat(JOB, {"jobId": "123", "state": "finished"})
    assert update["job_status"] == "finished" and problems == []


def test_a_heartbeat_file_for_another_job_fails_the_final_update(tmp_path):
    (tmp_path / "heartbeat.json").write_text(json.dumps({"jobId": 7, "state": "finished"}))
    update, note = pilot_outputs.final_update(JOB, {"heartbeat.json": tmp_path / "heartbeat.json"}, None)
    assert update["job_status"] == "failed" and "heartbeat is for job 7, not 123" in note
