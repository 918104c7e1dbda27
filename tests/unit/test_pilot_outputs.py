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
        assert "heartbeat has no state" in problems and update["pilot_error_code"] == pilot_outputs.ERR_BAD_HEARTBEAT


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


def test_a_heartbeat_without_a_state_says_so_with_the_bad_heartbeat_code():
    update, problems = pilot_outputs.from_heartbeat(JOB, {"jobId": 123, "exeErrorCode": 0})
    assert update["job_status"] == "failed" and update["pilot_error_code"] == pilot_outputs.ERR_BAD_HEARTBEAT
    assert problems == ["heartbeat has no state"] and update["exe_error_code"] == 0


def test_values_convert_to_what_each_field_is():
    update, problems = pilot_outputs.from_heartbeat(JOB, {
        "state": "finished", "cpuConsumptionTime": 12.6, "coreCount": 8.0, "maxRSS": "2048", "maxPSS": "10.5",
        "avgVMEM": 3, "node": 5, "jobMetrics": {"nEvents": 2}, "pilotErrorDiag": "ok", "xml": ["a"]})
    assert problems == []
    assert update["cpu_consumption_time"] == 13 and isinstance(update["cpu_consumption_time"], int)   # rounded
    assert update["core_count"] == 8 and isinstance(update["core_count"], int)
    assert update["max_rss"] == 2048 and isinstance(update["max_rss"], int)   # a whole number from text: an int
    assert update["max_pss"] == 10.5 and update["avg_vmem"] == 3 and isinstance(update["avg_vmem"], int)
    assert update["node"] == "5" and update["job_metrics"] == '{"nEvents": 2}' and update["pilot_error_diag"] == "ok"
    assert update["job_output_report"] == '["a"]'


def test_empty_and_null_values_are_left_out_quietly_and_bad_ones_named_by_type():
    update, problems = pilot_outputs.from_heartbeat(JOB, {"state": "failed", "exeErrorCode": "", "node": None,
                                                          "transExitCode": None})
    assert problems == [] and "exe_error_code" not in update and "node" not in update
    update, problems = pilot_outputs.from_heartbeat(JOB, {"state": "failed", "maxRSS": "lots", "nEvents": True})
    assert problems == ["maxRSS='lots' is not a number", "nEvents=True is not int"]


def test_problems_are_said_exactly():
    _, problems = pilot_outputs.from_heartbeat(JOB, {"state": "running"})
    assert problems == ["pilot's last state was 'running', not finished or failed"]
    update, _ = pilot_outputs.from_heartbeat(JOB, {"jobId": 5, "state": "finished"})
    assert update["pilot_error_diag"] == "heartbeat.json belongs to another job"


def test_only_logfile_reports_are_slimmed(tmp_path):
    report = {"executor": [{"name": "a"}, "not a dict", {"name": "b", "logfileReport": {"x": 1}}]}
    assert pilot_outputs.slim_job_report(report) == {
        "executor": [{"name": "a"}, "not a dict", {"name": "b", "logfileReport": {}}]}


def test_final_update_notes(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"jobId": 123, "state": "finished"}))
    update, note = pilot_outputs.final_update(JOB, {"heartbeat.json": good}, None)
    assert update["job_status"] == "finished" and note is None
    update, note = pilot_outputs.final_update(JOB, {}, None)
    assert note == "no heartbeat.json from the worker" and update["pilot_error_diag"] == note
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    update, note = pilot_outputs.final_update(JOB, {"heartbeat.json": listed}, None)
    assert note == "unreadable heartbeat.json: not a JSON object"
    assert (update["job_status"], update["pilot_error_code"], update["pilot_error_diag"]) == \
        ("failed", pilot_outputs.ERR_BAD_HEARTBEAT, note)
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"jobId": 123, "state": "running", "nEvents": "x"}))
    bad_report = tmp_path / "report.json"
    bad_report.write_text("{")
    update, note = pilot_outputs.final_update(JOB, {"heartbeat.json": two, "jobReport.json": bad_report}, None)
    assert note.startswith("nEvents='x' is not int; pilot's last state was 'running', not finished or failed; "
                           "unreadable jobReport.json: ")
    update, note = pilot_outputs.final_update(JOB, {"jobReport.json": listed}, None)   # a report not an object
    assert "meta_data" not in update and note == "no heartbeat.json from the worker"
    update, note = pilot_outputs.final_update(JOB, {"heartbeat.json": good, "jobReport.json": bad_report}, None)
    assert note.startswith("unreadable jobReport.json: ") and update["job_status"] == "finished"


def test_a_job_report_of_exactly_the_limit_is_sent_and_one_byte_more_is_not(tmp_path):
    report = tmp_path / "jobReport.json"
    for size, sent in ((pilot_outputs.MAX_META_DATA, True), (pilot_outputs.MAX_META_DATA + 1, False)):
        report.write_text(json.dumps({"x": "a" * (size - len('{"x": ""}'))}))
        update, _ = pilot_outputs.final_update(JOB, {"jobReport.json": report}, None)
        assert ("meta_data" in update) is sent and (not sent or len(update["meta_data"]) == size)
