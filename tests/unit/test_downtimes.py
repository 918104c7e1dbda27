"""Downtimes and shared caps without a daemon: the rules (times in UTC, CE matching, walltime into an outage,
AT_RISK), the GOCDB feed, the configuration, the planner's shares, and the commands against the simulator
with local workers. The real batch systems: tests/integration/htcondor and slurm (marker downtimes)."""

from __future__ import annotations

import json
import time

import pytest

from harvester_cli.config import QueueConfig, parse
from harvester_cli.config import downtimes as rules
from harvester_cli.config.downtimes import AT_RISK, OUTAGE, Downtime
from harvester_cli.steps.planner import QueueState, SharedCap, fair_shares, plan

pytestmark = pytest.mark.downtimes

HOUR = 3600.0
NOW = 1_800_000_000.0


def test_times_are_read_as_utc_and_shown_with_z():
    assert rules.parse_time("2026-03-01T08:00Z") == rules.parse_time("2026-03-01 08:00") == \
        rules.parse_time("2026-03-01T09:00+01:00") == rules.parse_time("2026-03-01 08:00 UTC")
    assert rules.utc(rules.parse_time("2026-03-01T08:00:59Z")) == "2026-03-01 08:00Z"
    assert rules.iso(rules.parse_time("2026-03-01")) == "2026-03-01T00:00:00Z"
    with pytest.raises(ValueError, match="UTC"):
        rules.parse_time("tomorrow")


def test_a_ce_named_by_host_matches_every_port_and_with_a_port_that_one_only():
    assert rules.ce_matches("ce1.example.org", "ce1.example.org:9619")
    assert rules.ce_matches("CE1.example.org", "https://ce1.example.org:443/arex")
    assert rules.ce_matches("ce1.example.org:9619", "ce1.example.org:9619")
    assert not rules.ce_matches("ce1.example.org:9619", "ce1.example.org:9620")
    assert not rules.ce_matches("ce1.example.org", "ce10.example.org:9619")
    assert rules.ce_matches("grid", "grid") and not rules.ce_matches("grid", "grid@other")


def test_an_outage_blocks_now_and_within_the_walltime_and_at_risk_never():
    ce_now = Downtime(NOW - HOUR, NOW + HOUR, OUTAGE, "kernel", ce="ce1.example.org")
    ce_later = Downtime(NOW + 3 * HOUR, NOW + 5 * HOUR, OUTAGE, "power", ce="ce2.example.org")
    risky = Downtime(NOW - HOUR, NOW + HOUR, AT_RISK, "network", ce="ce3.example.org")
    found = [ce_now, ce_later, risky]
    ces = ["ce1.example.org:9619", "ce2.example.org:9619", "ce3.example.org:9619"]
    short = rules.blocked_ces(found, "Q", ces, NOW, walltime=2 * HOUR)
    assert list(short) == ["ce1.example.org:9619"] and short[ces[0]].startswith("OUTAGE until ")
    long = rules.blocked_ces(found, "Q", ces, NOW, walltime=4 * HOUR)
    assert list(long) == ces[:2] and "within the walltime of a worker submitted now" in long[ces[1]]
    assert rules.queue_down(found, "Q", ces, NOW, 4 * HOUR) is None   # ce3 is only at risk: it takes the workers
    everything = rules.queue_down(found + [Downtime(NOW, NOW + HOUR, ce="ce3.example.org")], "Q", ces, NOW, 4 * HOUR)
    assert everything.startswith("every CE in downtime: ")
    whole = rules.queue_down([Downtime(NOW + HOUR, NOW + 2 * HOUR, reason="move", queue="Q")], "Q", ces, NOW, 2 * HOUR)
    assert whole.startswith("queue Q in downtime: OUTAGE from ") and "(move)" in whole
    assert rules.queue_down([Downtime(NOW + HOUR, NOW + 2 * HOUR, queue="Q")], "Q", ces, NOW, HOUR / 2) is None
    assert rules.queue_down([Downtime(NOW - 2 * HOUR, NOW - HOUR, queue="Q")], "Q", ces, NOW, HOUR) is None   # over
    assert rules.queue_down([Downtime(NOW, NOW + HOUR, queue="OTHER")], "Q", ces, NOW, HOUR) is None


GOCDB = """<?xml version="1.0" encoding="UTF-8"?>
<results>
  <DOWNTIME ID="1" PRIMARY_KEY="101G0" CLASSIFICATION="SCHEDULED">
    <PRIMARY_KEY>101G0</PRIMARY_KEY><HOSTNAME>ce1.example.org</HOSTNAME>
    <SERVICE_TYPE>org.opensciencegrid.htcondorce</SERVICE_TYPE><HOSTED_BY>SITE-A</HOSTED_BY>
    <SEVERITY>OUTAGE</SEVERITY><DESCRIPTION>Storage
      migration</DESCRIPTION>
    <START_DATE>{start}</START_DATE><END_DATE>{end}</END_DATE>
  </DOWNTIME>
  <DOWNTIME ID="2" PRIMARY_KEY="102G0" CLASSIFICATION="UNSCHEDULED">
    <HOSTNAME>ce2.example.org</HOSTNAME><SEVERITY>WARNING</SEVERITY>
    <FORMATED_START_DATE>2026-03-01 08:00</FORMATED_START_DATE><FORMATED_END_DATE>2026-03-02 08:00</FORMATED_END_DATE>
  </DOWNTIME>
  <DOWNTIME ID="3" PRIMARY_KEY="103G0" CLASSIFICATION="SCHEDULED">
    <HOSTNAME>ce3.example.org</HOSTNAME><SEVERITY>AT_RISK</SEVERITY><DESCRIPTION>network</DESCRIPTION>
    <FORMATED_START_DATE>2026-03-01 08:00</FORMATED_START_DATE><FORMATED_END_DATE>2026-03-02 08:00</FORMATED_END_DATE>
  </DOWNTIME>
</results>"""


def test_the_gocdb_feed_gives_outage_and_at_risk_per_host_and_leaves_out_what_it_cannot_read():
    found = rules.from_gocdb(GOCDB.format(start=int(NOW), end=int(NOW + HOUR)))
    assert [(d.ce, d.severity, d.source, d.id) for d in found] == [
        ("ce1.example.org", OUTAGE, "gocdb", "101G0"), ("ce3.example.org", AT_RISK, "gocdb", "103G0")]
    assert found[0].start == NOW and found[0].reason == "Storage migration"
    assert found[1].start == rules.parse_time("2026-03-01T08:00Z")
    with pytest.raises(ValueError, match="not XML"):
        rules.from_gocdb("<results><DOWNTIME>")
    with pytest.raises(ValueError, match="root element"):
        rules.from_gocdb("<html/>")


def test_the_configuration_takes_toml_datetimes_and_says_what_is_wrong(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('harvester_id = "h"\n[panda]\nurl = "https://p.example.org/api/v1"\n'
                    '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n'
                    '[caps.SITE]\nqueues = ["Q", "ELSEWHERE"]\nmax_queued = 5\n'
                    '[[downtimes.scheduled]]\nqueue = "Q"\nstart = 2026-03-01T08:00:00Z\nend = 2026-03-01T18:00:00\n'
                    'reason = "power"\n'
                    '[[downtimes.scheduled]]\nce = "ce1.example.org"\nend = "2026-03-02 08:00"\nseverity = "AT_RISK"\n')
    from harvester_cli.config import load

    config = load(path)
    first, second = (entry.downtime() for entry in config.downtimes.scheduled)
    assert (first.start, first.end) == (rules.parse_time("2026-03-01T08:00Z"), rules.parse_time("2026-03-01T18:00Z"))
    assert second.start == 0 and second.severity == AT_RISK
    assert config.caps_of("Q")[0].limits() == {"queued": 5}
    base = {"harvester_id": "h", "panda": {"url": "https://p.example.org/api/v1"}}
    for table, needle in [({"downtimes": {"scheduled": [{"queue": "Q", "start": "2026-03-02", "end": "2026-03-01"}]}},
                           "must be after start"),
                          ({"downtimes": {"scheduled": [{"reason": "x", "end": "2026-03-01"}]}}, "name a queue, a ce"),
                          ({"downtimes": {"scheduled": [{"queue": "NOPE", "end": "2026-03-01"}]}}, "no [queues.NOPE]"),
                          ({"downtimes": {"scheduled": [{"ce": "c", "end": "2026-03-01", "severity": "OUT"}]}},
                           "one of 'OUTAGE', 'AT_RISK'"),
                          ({"caps": {"C": {"queues": ["Q"]}}}, "set max_queued, max_running or max_cores")]:
        with pytest.raises(Exception) as caught:
            parse({**base, **table})
        assert needle in str(caught.value), (table, str(caught.value))


def queue(**kw):
    base = {"name": "A", "mode": "pull", "backend": "local", "pilot": "true", "n_queue_limit_worker": 100,
            "max_workers": 1000, "max_new_workers_per_cycle": 100, "empty_pilot_floor": 0}
    return QueueConfig(**{**base, **kw})


def test_a_cap_splits_by_demand_gives_no_queue_more_than_it_wants_and_is_even_across_hosts():
    assert fair_shares(6, {"A": 8, "B": 4}, {"A": 8, "B": 4}) == {"A": 4, "B": 2}
    assert fair_shares(6, {"A": 8, "B": 1}, {"A": 8, "B": 8}) == {"A": 5, "B": 1}   # B leaves its part to A
    assert fair_shares(20, {"A": 8, "B": 4}, {"A": 8, "B": 4}) == {"A": 8, "B": 4}  # not binding
    assert fair_shares(6, {"A": 8, "B": 4}, {"A": 8, "B": 0}) == {"A": 6, "B": 0}
    cap = SharedCap("SITE", "queued", 6, used={"A": 0, "B": 0}, targets={"B": 4}, demand={"B": 4.0})
    first = plan(queue(), QueueState(activated=8, shared_caps=(cap,)), 100)
    assert first.total == 4 and first.wanted == 8 and first.demand == 8
    step = next(s for s in first.trace if s.rule == "shared cap SITE")
    assert "split by demand A=8, B=4: share of A=4" in step.inputs and step.result == 4
    # The other host, after A took its share: B gets its own, not what is left of A's.
    other = SharedCap("SITE", "queued", 6, used={"A": 4, "B": 0}, targets={"A": 8}, demand={"A": 8.0})
    assert plan(queue(name="B"), QueueState(activated=4, shared_caps=(other,)), 100).total == 2
    # Over its share (it took the cap before the other queue had demand): nothing new, the other gets room.
    over = SharedCap("SITE", "queued", 6, used={"A": 5, "B": 0}, targets={"B": 4}, demand={"B": 4.0})
    assert plan(queue(), QueueState(queued={"SCORE": 5}, activated=8, shared_caps=(over,)), 100).total == 0
    cores = SharedCap("SITE", "cores", 20, used={"A": 0}, targets={}, demand={})
    assert plan(queue(core_count=8), QueueState(activated=8, sizes={"SCORE": (8, 16000)}, shared_caps=(cores,)),
                100).total == 2


def test_a_queue_in_downtime_plans_nothing_and_says_why():
    result = plan(queue(), QueueState(activated=8, downtime="queue A in downtime: OUTAGE until 2026-03-01 18:00Z"),
                  100)
    assert result.total == 0 and result.trace[-1].rule == "downtime" and result.demand == 0
    partial = plan(queue(), QueueState(activated=8, ces_down={"ce1": "OUTAGE until 2026-03-01 18:00Z"}), 100)
    assert partial.total == 8
    assert any(s.rule == "CEs in downtime" and "ce1: OUTAGE until" in s.inputs for s in partial.trace)


# -- through the CLI, with local workers against the simulator ------------------------------------------

def test_downtime_add_list_remove_and_what_status_plan_and_metrics_say(harness, sim):
    sim.add_jobs("DT_Q", 3)
    harness.write_config({"DT_Q": {"mode": "pull", "empty_pilot_floor": 0}, "OTHER": {"mode": "pull"}},
                         metrics={"textfile": str(harness.tmp_path / "m.prom")})
    added = harness.cli_json("downtime", "add", "--queue", "DT_Q", "--for", "2h", "--reason", "power work")
    row = added["downtime"]
    assert row["source"] == "database" and row["queues"] == ["DT_Q"] and row["active"] and row["end"].endswith("Z")
    assert abs(rules.parse_time(row["end"]) - rules.parse_time(row["start"]) - 2 * HOUR) < 1
    soon = harness.cli_json("downtime", "add", "--queue", "OTHER", "--start",
                            time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() + 3 * 86400)), "--for", "1h",
                            "--reason", "later", "--severity", "AT_RISK")["downtime"]
    listed = harness.cli_json("downtime", "list")
    assert [d["id"] for d in listed["downtimes"]] == [row["id"], soon["id"]]
    assert listed["queues_down"] == [{"queue": "DT_Q", "why": listed["queues_down"][0]["why"]}]
    assert "power work" in listed["queues_down"][0]["why"]
    text = harness.cli("downtime", "list", env={"COLUMNS": "80"}).stdout
    assert "queue DT_Q" in text and "AT_RISK" in text and "no new worker" in text
    planned = harness.cli_json("plan", "--queue", "DT_Q")
    assert planned["queues"][0]["plan"] == {"SCORE": 0}
    assert any(s["rule"] == "downtime" and "power work" in s["inputs"] for s in planned["queues"][0]["trace"])
    status = harness.cli_json("status")
    assert status["downtimes"]["queues_down"][0]["queue"] == "DT_Q"
    assert harness.cli("submit").returncode == 0
    metrics = (harness.tmp_path / "m.prom").read_text()
    assert 'harvester_cli_queue_down{harvester_id="' in metrics and 'queue="DT_Q"} 1.0' in metrics
    assert 'queue="OTHER"} 0.0' in metrics and "harvester_cli_downtime_end_timestamp_seconds" in metrics
    removed = harness.cli_json("downtime", "remove", row["id"], "999")
    assert removed["removed"] == [int(row["id"])] and removed["missing"] == [999]
    assert harness.cli("downtime", "remove", "999").returncode == 1
    assert harness.cli_json("plan", "--queue", "DT_Q")["queues"][0]["plan"] == {"SCORE": 3}
    wrong = harness.cli("downtime", "add", "--ce", "x", "--end", "2001-01-01T00:00Z", "--reason", "old")
    assert wrong.returncode == 2 and "has passed already" in wrong.stderr
    assert harness.cli("downtime", "add", "--ce", "x", "--reason", "no end").returncode == 2


def test_a_gocdb_feed_that_cannot_be_read_is_said_and_fails_the_plan(harness, sim):
    feed = harness.tmp_path / "gocdb.xml"
    harness.write_config({"Q": {"mode": "pull"}}, downtimes={"gocdb_file": str(feed)})
    result = harness.cli("--json", "plan")
    assert result.returncode == 1 and "GOCDB downtime feed" in json.loads(result.stdout)["errors"][0]
    feed.write_text(GOCDB.format(start=int(time.time()), end=int(time.time() + HOUR)))
    listed = harness.cli_json("downtime", "list", "--all")
    assert [d["computing_element"] for d in listed["downtimes"]] == ["ce1.example.org"]
    assert listed["downtimes"][0]["queues"] == [] and listed["problems"] == []


def test_plan_shows_a_shared_cap_and_submit_keeps_each_queue_within_its_share(harness, sim):
    sim.add_jobs("CAP_A", 8)
    sim.add_jobs("CAP_B", 4)
    local = {"mode": "pull", "empty_pilot_floor": 0, "pilot": "sleep 60"}
    harness.write_config({"CAP_A": local, "CAP_B": local}, caps={"SITE": {"queues": ["CAP_A", "CAP_B"],
                                                                       "max_queued": 6}})
    planned = harness.cli_json("plan")
    assert {q["queue"]: q["plan"]["SCORE"] for q in planned["queues"]} == {"CAP_A": 4, "CAP_B": 2}
    (cap,) = planned["queues"][0]["caps"]
    assert cap["binding"] and cap["queues"]["CAP_A"]["share"] == 4 and cap["queues"]["CAP_B"]["demand"] == 4
    text = harness.cli("plan").stdout
    assert "shared caps (over every host)" in text and "split by demand CAP_A=8, CAP_B=4: share of CAP_A=4" in text
    submitted = harness.cli_json("submit")
    assert {q["queue"]: len(q["submitted"]) for q in submitted["queues"]} == {"CAP_A": 4, "CAP_B": 2}
    again = harness.cli_json("submit")
    assert [len(q["submitted"]) for q in again["queues"]] == [0, 0]


def test_submit_count_stays_within_what_is_left_of_a_shared_cap_unless_forced(harness, sim):
    local = {"mode": "pull", "pilot": "sleep 60", "max_workers": 50}
    harness.write_config({"CNT_A": local, "CNT_B": local}, caps={"SITE": {"queues": ["CNT_A", "CNT_B"],
                                                                       "max_running": 3}})
    first = harness.cli_json("submit", "--queue", "CNT_B", "--count", "2")
    assert len(first["queues"][0]["submitted"]) == 2
    cut = harness.cli("--json", "submit", "--queue", "CNT_A", "--count", "4")
    assert cut.returncode == 1
    data = json.loads(cut.stdout)
    assert len(data["queues"][0]["submitted"]) == 1
    assert "shared cap SITE: max_running=3 with 2 used leaves room for 1 (--force lifts it)" in data["errors"][0]
    forced = harness.cli_json("submit", "--queue", "CNT_A", "--count", "2", "--force")
    assert len(forced["queues"][0]["submitted"]) == 2


def test_a_downtime_is_shown_with_its_times_in_utc_and_whether_it_is_under_way():
    down = Downtime(NOW, NOW + HOUR, AT_RISK, "kernel", queue="Q", ce="ce1.example.org", source="database", id="7")
    assert down.as_dict(NOW) == {
        "id": "7", "queue": "Q", "computing_element": "ce1.example.org", "severity": AT_RISK,
        "start": rules.iso(NOW), "end": rules.iso(NOW + HOUR), "reason": "kernel", "source": "database",
        "active": True, "blocks": False}
    assert rules.iso(NOW) == "2027-01-15T08:00:00Z"
    assert Downtime(NOW, NOW + HOUR).as_dict(NOW + HOUR)["active"] is False
    assert Downtime(NOW, NOW + HOUR).as_dict(NOW - 1)["blocks"] is True


def test_times_are_shown_in_utc_whatever_the_hosts_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert rules.iso(NOW) == "2027-01-15T08:00:00Z"
        assert rules.utc(NOW) == "2027-01-15 08:00Z"
        assert rules.utc(NOW, short=True) == "01-15 08:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_downtimes_shown_for_a_queue_are_its_own_and_its_ces_not_over_yet_soonest_first():
    later = Downtime(NOW + 2 * HOUR, NOW + 3 * HOUR, queue="Q")
    ce_now = Downtime(NOW - HOUR, NOW + HOUR, ce="ce1.example.org")
    ce_now_longer = Downtime(NOW - HOUR, NOW + 2 * HOUR, ce="ce1.example.org", queue="Q")
    ending_now = Downtime(NOW - HOUR, NOW, queue="Q")
    other_queue = Downtime(NOW, NOW + HOUR, queue="OTHER")
    other_ce = Downtime(NOW, NOW + HOUR, ce="ce9.example.org")
    ce_of_other_queue = Downtime(NOW, NOW + HOUR, ce="ce1.example.org", queue="OTHER")
    every = [later, ce_now_longer, ending_now, other_queue, other_ce, ce_of_other_queue, ce_now]
    assert rules.relevant(every, "Q", ["ce1.example.org:9619", "ce2.example.org:9619"], NOW) == \
        [ce_now, ce_now_longer, later]
    assert rules.relevant(every, "Q", [], NOW) == [later]


def test_an_active_downtime_covers_its_start_and_not_its_end():
    down = Downtime(NOW, NOW + HOUR)
    assert down.active(NOW) and down.active(NOW + HOUR - 1)
    assert not down.active(NOW - 1) and not down.active(NOW + HOUR)


def test_of_several_outages_the_one_ending_last_is_the_one_a_queue_waits_for():
    short = Downtime(NOW - HOUR, NOW + HOUR, queue="Q", reason="short")
    long = Downtime(NOW, NOW + 5 * HOUR, queue="Q", reason="long")
    assert rules.blocking([long, short], "Q", None, NOW, HOUR) is long
    assert rules.blocking([short, long], "Q", None, NOW, HOUR) is long


@pytest.mark.parametrize("named,endpoint,same", [
    ("ce1.example.org", "CE1.EXAMPLE.ORG:9619", True),
    ("https://ce1.example.org:443/arex/rest/1.0", "ce1.example.org:443", True),
    ("https://ce1.example.org:443/arex/rest", "https://ce1.example.org:8443/arex", False),
    ("ce1.example.org:9619", "ce1.example.org", False),
    ("ce1.example.org:port", "ce1.example.org:port", True),
    ("[2001:db8::1]:9619", "[2001:db8::1]:9619", True),
    ("2001:db8::1", "2001:db8::2", False),
    ("ce1.example.org", "ce1.example.org:x", False),
])
def test_a_ce_is_matched_by_host_and_by_port_when_named_with_one(named, endpoint, same):
    assert rules.ce_matches(named, endpoint) is same


def test_the_ces_of_a_queue_are_those_its_fanout_picks_from():
    from harvester_cli.config.backend_options import CE, ArcOptions, HTCondorOptions, SlurmOptions

    assert rules.fanout_ces(queue(backend="slurm", backend_options=SlurmOptions(partitions=["grid", "gpu@hpc2"]))) \
        == ["grid", "gpu@hpc2"]
    assert rules.fanout_ces(queue(backend="slurm", backend_options=None)) == []
    assert rules.fanout_ces(queue(backend="htcondor", backend_options=HTCondorOptions(
        ces=[CE(endpoint="ce1.example.org:9619"), CE(endpoint="ce2.example.org:9619", state="OFFLINE")]))) == \
        ["ce1.example.org:9619"]
    assert rules.fanout_ces(queue(backend="arc", backend_options=ArcOptions(
        endpoints=["https://arc1.example.org/arex"]))) == ["https://arc1.example.org/arex"]
    assert rules.fanout_ces(queue()) == []


GOCDB_EDGES = """<results>
  <DOWNTIME ID="9"><HOSTNAME>ce9.example.org</HOSTNAME><SEVERITY>outage</SEVERITY>
    <START_DATE>not a number</START_DATE><FORMATED_START_DATE>nonsense</FORMATED_START_DATE>
    <END_DATE>{end}</END_DATE></DOWNTIME>
  <DOWNTIME ID="10"><HOSTNAME>ce10.example.org</HOSTNAME><SEVERITY>OUTAGE</SEVERITY>
    <START_DATE>{start}</START_DATE><END_DATE>{start}</END_DATE></DOWNTIME>
  <DOWNTIME ID="11"><HOSTNAME>ce11.example.org</HOSTNAME><SEVERITY>OUTAGE</SEVERITY>
    <START_DATE>{start}</START_DATE></DOWNTIME>
  <DOWNTIME ID="12"><HOSTNAME>ce12.example.org</HOSTNAME><SEVERITY>OUTAGE</SEVERITY>
    <END_DATE>{end}</END_DATE></DOWNTIME>
  <DOWNTIME ID="13"><SEVERITY>OUTAGE</SEVERITY><START_DATE>{start}</START_DATE><END_DATE>{end}</END_DATE></DOWNTIME>
  <DOWNTIME ID="14"><HOSTNAME>ce14.example.org</HOSTNAME><START_DATE>{start}</START_DATE><END_DATE>{end}</END_DATE>
  </DOWNTIME>
  <DOWNTIME ID="15"><PRIMARY_KEY>115G0</PRIMARY_KEY><HOSTNAME> ce15.example.org </HOSTNAME>
    <SEVERITY>at_risk</SEVERITY><START_DATE>{start}</START_DATE><END_DATE>{end}</END_DATE></DOWNTIME>
  <DOWNTIME ID="16"><HOSTNAME>ce16.example.org</HOSTNAME><SEVERITY>OUTAGE</SEVERITY>
    <FORMATED_START_DATE>2026-03-01 08:00</FORMATED_START_DATE><END_DATE>{end}</END_DATE></DOWNTIME>
</results>"""


def test_a_gocdb_entry_without_a_readable_start_end_host_or_severity_is_left_out_and_the_rest_kept():
    found = rules.from_gocdb(GOCDB_EDGES.format(start=int(NOW), end=int(NOW + HOUR)))
    assert [(d.ce, d.severity, d.id, d.start, d.end, d.reason) for d in found] == [
        ("ce15.example.org", AT_RISK, "115G0", NOW, NOW + HOUR, ""),
        ("ce16.example.org", OUTAGE, "16", rules.parse_time("2026-03-01T08:00Z"), NOW + HOUR, "")]


def test_a_ce_named_by_its_ipv6_address_matches_it_on_any_port():
    assert rules.ce_matches("[2001:db8::1]", "[2001:db8::1]:9619")


def test_an_outage_blocks_a_worker_that_would_run_into_it_and_not_one_that_ends_as_it_starts():
    ends_now = Downtime(NOW - HOUR, NOW, queue="Q")
    starts_after = Downtime(NOW + HOUR, NOW + 2 * HOUR, queue="Q")
    assert rules.blocking([ends_now, starts_after], "Q", None, NOW, HOUR) is None
    assert rules.blocking([starts_after], "Q", None, NOW, HOUR + 1) is starts_after


def test_a_ce_outage_of_another_queue_and_a_ce_outage_for_the_queue_as_a_whole_block_nothing():
    other = Downtime(NOW, NOW + HOUR, ce="ce1.example.org", queue="OTHER")
    ces = ["ce1.example.org:9619"]
    assert rules.blocked_ces([other], "Q", ces, NOW, HOUR) == {}
    assert rules.queue_down([other], "Q", ces, NOW, HOUR) is None
    assert rules.blocking([Downtime(NOW, NOW + HOUR, ce="ce1.example.org")], "Q", None, NOW, HOUR) is None


def test_a_queue_whose_every_ce_is_down_says_why_for_each():
    ces = ["ce1.example.org:9619", "ce2.example.org:9619"]
    down = [Downtime(NOW, NOW + HOUR, ce="ce1.example.org", reason="kernel"),
            Downtime(NOW, NOW + HOUR, ce="ce2.example.org")]
    assert rules.queue_down(down, "Q", ces, NOW, HOUR) == (
        "every CE in downtime: ce1.example.org:9619: OUTAGE until 2027-01-15 09:00Z (kernel); "
        "ce2.example.org:9619: OUTAGE until 2027-01-15 09:00Z")


def test_a_ce_outage_of_the_queue_itself_blocks_that_ce():
    ces = ["ce1.example.org:9619"]
    own = Downtime(NOW, NOW + HOUR, ce="ce1.example.org", queue="Q")
    assert list(rules.blocked_ces([own], "Q", ces, NOW, HOUR)) == ces
    assert rules.queue_down([own], "Q", ces, NOW, HOUR).startswith("every CE in downtime: ce1.example.org:9619: ")
