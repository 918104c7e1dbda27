"""The quick part of the fault suite (issue 12): hostile input one at a time. A poisoned job dict among good
ones (through the library), any configuration value, any command line, a damaged state file: each ends in
a result or a one-line error, never a traceback, and never holds up the good ones. TLS is verified; a
state database others may read is reported. The recovery runs (kills, PanDA faults, a full disk, clock
jumps, overlapping runs): tests/integration/faults/test_faults.py; `pytest -m faults` runs both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from harvester_cli import config as config_module
from harvester_cli.instance import Instance
from harvester_cli.panda import jobs as panda_jobs
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.state.schema import jobs, reports
from harvester_cli.steps import fetch_jobs
from tests.support.harness import new_state

pytestmark = pytest.mark.faults


# -- hostile job dicts ------------------------------------------------------------------------------

HOSTILE = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.text(max_size=12), st.none(),
                    st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.just("NULL"),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
FIELDS = ("attemptNr", "coreCount", "minRamCount", "resource_type", "jobPars", "PandaID")


@pytest.fixture(scope="module")
def job_maker(pki):
    return PandaSimulator(pki)   # never started: only its job dicts


@pytest.fixture(scope="module")
def job_store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("poison")
    data = {"harvester_id": "poison", "state": str(directory / "state.db"), "work_dir": str(directory / "work"),
            "panda": {"url": "https://127.0.0.1:9/api/v1"},
            "queues": {"PUSH": {"mode": "push", "backend": "local", "resource_types": ["SCORE", "MCORE"], "pilot": "true"}}}
    instance = Instance(config_module.parse(data, "<faults>", directory))
    new_state(instance.state_url)
    yield instance
    instance.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), HOSTILE), max_size=3), st.integers(1, 3))
@example(poison=[("attemptNr", float("inf"))], good_count=1)   # found by a full run: int(inf) is an OverflowError
@example(poison=[("coreCount", float("nan")), ("minRamCount", -float("inf"))], good_count=2)
@example(poison=[("attemptNr", "\u00b2")], good_count=1)   # "²" is a digit to str.isdigit(), not to int()
def test_one_poison_job_never_holds_up_the_good_ones(job_store, job_maker, poison, good_count):
    good = [job_maker.make_job("PUSH") for _ in range(good_count)]
    bad = job_maker.make_job("PUSH")
    for field, value in poison:
        bad[field] = value
    queue = job_store.config.queues["PUSH"]
    with job_store.store.reading() as conn:   # the store is shared between examples: a poisoned PandaID may be taken
        known = set(conn.scalars(select(jobs.c.panda_id))) | set(conn.scalars(select(reports.c.key)))
    result = fetch_jobs.store_jobs(job_store, queue, [good[0], bad, *good[1:]])   # never raises
    with job_store.store.reading() as conn:
        stored = {r.panda_id: r for r in conn.execute(select(jobs).where(
            jobs.c.panda_id.in_([g["PandaID"] for g in good])))}
        reported = set(conn.scalars(select(reports.c.key).where(reports.c.kind == "job")))
    assert all(stored[g["PandaID"]].sub_status == "fetched" for g in good), "a good job was held up"
    bad_id = panda_jobs.panda_id_of(bad)
    problem = panda_jobs.problem(bad, queue.resource_types) if isinstance(bad, dict) else "?"
    if bad_id is not None and bad_id not in known and problem:   # refused: PanDA hears why
        assert bad_id in reported
    assert result.stored + result.invalid >= good_count


# -- hostile configurations and command lines ---------------------------------------------------------

TOML_VALUES = st.one_of(st.integers(min_value=-2**65, max_value=2**65), st.floats(allow_nan=True), st.text(max_size=10),
                        st.booleans(), st.lists(st.integers(), max_size=2))
KEYS = ("timeout", "retries", "bulk_size", "url", "stats_refresh", "max_workers", "status", "mode", "core_count",
        "walltime", "lease_seconds", "n_queue_limit_worker_ratio", "pilot", "resource_types")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), TOML_VALUES), min_size=1, max_size=4))
def test_any_configuration_value_is_taken_or_refused_in_one_line_each(changes):
    from harvester_cli.errors import ConfigError

    data = {"harvester_id": "h", "panda": {"url": "https://panda.example.org/api/v1"},
            "queues": {"Q": {"mode": "pull", "backend": "local", "pilot": "true"}}}
    for key, value in changes:
        where = data["panda"] if key in ("timeout", "retries", "bulk_size", "url", "stats_refresh") else \
            data if key == "lease_seconds" else data["queues"]["Q"]
        where[key] = value
    try:
        config_module.parse(data, "c.toml", Path("/srv"))
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith("c.toml: ") for line in lines), lines


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(["--count", "--queue", "--status", "--since", "--limit", "--worker",
                                           "--older-than", "--json", "-q", "--dry-run", "--timeout"]),
                          st.text(alphabet="0123456789abcdefhms-.", max_size=22)), max_size=5),
       st.sampled_from(["submit", "workers", "jobs", "kill-workers", "plan", "status", "sweep"]))
def test_any_command_line_ends_in_a_result_or_a_clear_error(cli_site, args, command):
    result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(cli_site), command, *args,
                             "--dry-run" if command in ("submit", "kill-workers") else "--json"],
                            capture_output=True, text=True, timeout=60, cwd=cli_site.parent)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2), result


@pytest.fixture(scope="module")
def cli_site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    config = directory / "config.toml"
    config.write_text(f'harvester_id = "h"\nstate = "{directory / "state.db"}"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
                      'retries = 0\ntimeout = 1\n[queues.Q]\nmode = "push"\nbackend = "local"\npilot = "true"\n')
    new_state(directory / "state.db")
    return config


# -- a damaged state file -----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_state_file_is_one_line_exit_2(harness, sim, damage):
    harness.write_config({"PUSH": {"mode": "push"}})
    state = harness.tmp_path / "state.db"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 3] if damage == "truncate" else os.urandom(len(data)))
    for suffix in ("-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    for command in ("status", "cycle", "db upgrade"):
        result = harness.cli(*command.split())
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
        assert str(state) in result.stderr


# -- security ----------------------------------------------------------------------------------------

def test_tls_is_verified_and_empty_ca_variables_do_not_turn_it_off(harness, sim):
    harness.write_config({"PULL": {"mode": "pull"}}, panda={"ca": None, "retries": 0, "timeout": 5})
    text = (harness.tmp_path / "config.toml").read_text()
    (harness.tmp_path / "config.toml").write_text("\n".join(line for line in text.splitlines()
                                                            if not line.startswith("ca = ")) + "\n")
    result = harness.cli("propagate", env={"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ""})
    assert result.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in result.stderr, result.stderr
    assert not sim.calls_to("harvester/heartbeat"), "talked to a server it could not verify"


def test_the_state_database_with_loose_modes_is_reported_by_config_check(harness, sim):
    config = harness.write_config({"PULL": {"mode": "pull"}})
    state = harness.tmp_path / "state.db"
    state.chmod(0o644)
    result = harness.cli("config", "check")
    assert result.returncode == 2 and "chmod 600" in result.stderr and str(state) in result.stderr
    assert config.exists()
