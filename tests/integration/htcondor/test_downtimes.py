"""Downtimes against the real HTCondor pool, through the CE fanout over two CEs: the pool's schedd standing
in for an HTCondor-CE under two names (127.0.0.1:9618 and localhost:9618), grid jobs held at the local
schedd (what is tested is where the fanout sends them, not that they run). The pool: tests/support/condor_pool.py.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from harvester_cli.config.downtimes import utc
from harvester_cli.state.schema import workers
from harvester_cli.steps import downtimes
from harvester_cli.steps import submit as submission
from tests.support.condor_pool import COLLECTOR, SCHEDD
from tests.support.harness import rows

pytestmark = [pytest.mark.htcondor, pytest.mark.downtimes]

OTHER_CE = "localhost:9618"   # the same schedd by another name: a second CE behind the fanout
HOUR = 3600


def grid_queue(htc, walltime: int = 2 * HOUR) -> dict:
    return htc.queue(pilot="echo pilot", ces=[{"endpoint": COLLECTOR, "name": SCHEDD},
                                              {"endpoint": OTHER_CE, "name": SCHEDD}],
                     extra_attributes={"hold": "true"},
                     queue={"n_queue_limit_worker": 20, "max_workers": 40, "walltime": walltime})


def ces_of(instance, worker_ids) -> Counter:
    return Counter(w.computing_element for w in rows(instance, workers) if w.worker_id in worker_ids)


def grid_resources(htc, worker_ids) -> set[str]:
    return {ad["GridResource"] for ad in htc.jobs(projection=["GridResource", "harvesterWorkerID"])
            if ad["harvesterWorkerID"] in worker_ids}


def test_a_ce_in_downtime_gets_no_worker_and_the_other_ce_takes_them(htc, sim):
    instance = htc.instance({"HTC_DT": grid_queue(htc)})
    queues = list(instance.config.queues.values())
    added = downtimes.add(instance, queue=None, ce="127.0.0.1", start=None, end=time.time() + HOUR, severity="OUTAGE",
                          reason="CE reinstall")
    plan = submission.submit(instance, queues, dry_run=True).queues[0].plan
    step = next(s for s in plan.trace if s.rule == "CEs in downtime")
    assert step.inputs.startswith(f"{COLLECTOR}: OUTAGE until ") and "(CE reinstall)" in step.inputs
    during = submission.submit(instance, queues, count=4).queues[0]
    assert len(during.submitted) == 4 and not during.failed
    assert ces_of(instance, during.submitted) == {OTHER_CE: 4}
    assert grid_resources(htc, during.submitted) == {f"condor {SCHEDD} {OTHER_CE}"}
    assert downtimes.remove(instance, [int(added.id)]) == ([int(added.id)], [])
    after = submission.submit(instance, queues, count=4).queues[0]
    assert ces_of(instance, after.submitted)[COLLECTOR] >= 1   # back in the fanout


def test_no_worker_whose_walltime_runs_into_an_announced_outage(htc, sim):
    instance = htc.instance({"HTC_LONG": grid_queue(htc, walltime=3 * HOUR),
                             "HTC_SHORT": grid_queue(htc, walltime=HOUR)})
    long_, short = (instance.config.queues[n] for n in ("HTC_LONG", "HTC_SHORT"))
    start = time.time() + 2 * HOUR
    downtimes.add(instance, queue=None, ce=COLLECTOR, start=start, end=start + HOUR, severity="OUTAGE",
                  reason="cooling")
    long_run = submission.submit(instance, [long_], count=4).queues[0]
    assert ces_of(instance, long_run.submitted) == {OTHER_CE: 4}   # 3 h of walltime would run into it
    short_run = submission.submit(instance, [short], count=4).queues[0]
    assert set(ces_of(instance, short_run.submitted)) == {COLLECTOR, OTHER_CE}   # 1 h ends before it
    downtimes.add(instance, queue="HTC_LONG", ce=None, start=start, end=start + HOUR, severity="OUTAGE",
                  reason="queue moved")
    refused = submission.submit(instance, [long_], count=2).queues[0]
    assert refused.submitted == [] and refused.plan.total == 0
    assert f"OUTAGE from {utc(start)} to {utc(start + HOUR)} (queue moved)" in refused.shortfall
    assert "within the walltime of a worker submitted now" in refused.shortfall
    assert submission.submit(instance, [short], dry_run=True, count=2).queues[0].plan.total == 2   # not that one


def test_at_risk_from_the_gocdb_feed_does_not_block_and_an_outage_there_does(htc, sim, tmp_path):
    now = int(time.time())
    feed = tmp_path / "gocdb.xml"
    feed.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<results>
  <DOWNTIME ID="7" PRIMARY_KEY="7G0" CLASSIFICATION="SCHEDULED"><HOSTNAME>127.0.0.1</HOSTNAME>
    <SERVICE_TYPE>org.opensciencegrid.htcondorce</SERVICE_TYPE><SEVERITY>AT_RISK</SEVERITY>
    <DESCRIPTION>network maintenance</DESCRIPTION><START_DATE>{now - 60}</START_DATE><END_DATE>{now + HOUR}</END_DATE>
  </DOWNTIME>
  <DOWNTIME ID="8" PRIMARY_KEY="8G0" CLASSIFICATION="SCHEDULED"><HOSTNAME>localhost</HOSTNAME>
    <SERVICE_TYPE>org.opensciencegrid.htcondorce</SERVICE_TYPE><SEVERITY>OUTAGE</SEVERITY>
    <DESCRIPTION>upgrade</DESCRIPTION><START_DATE>{now - 60}</START_DATE><END_DATE>{now + HOUR}</END_DATE>
  </DOWNTIME>
</results>""")
    instance = htc.instance({"HTC_RISK": grid_queue(htc)}, downtimes={"gocdb_file": str(feed)})
    queues = list(instance.config.queues.values())
    run = submission.submit(instance, queues, count=4).queues[0]
    assert ces_of(instance, run.submitted) == {COLLECTOR: 4}   # at risk, still used; the outage CE is not
    summary = downtimes.summary(instance, queues)
    assert [(d["computing_element"], d["severity"], d["source"]) for d in summary["downtimes"]] == [
        ("127.0.0.1", "AT_RISK", "gocdb"), ("localhost", "OUTAGE", "gocdb")]
    assert summary["ces_down"] == [{"queue": "HTC_RISK", "computing_element": OTHER_CE,
                                    "why": summary["ces_down"][0]["why"]}]
    assert "upgrade" in summary["ces_down"][0]["why"] and summary["queues_down"] == []
