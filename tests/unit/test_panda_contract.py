"""The PanDA v1 contract (docs/panda-api.md, panda-server 1.0.4): the simulator over real HTTPS, then
PandaClient against it.

The simulator is what every other test trusts as "the server", so its answers are pinned here to the
texts and shapes the real server produces. `pki` and `sim` here are module-scoped (one PKI, one
simulator) and shadow the conftest fixtures of the same names; tests keep out of each other's way with
their own harvester ids and site names.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
from datetime import datetime

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harvester_cli.config import PandaConfig
from harvester_cli.errors import PandaError
from harvester_cli.panda.client import PandaClient, PandaRefused
from harvester_cli.panda.sim import certs, server
from harvester_cli.panda.sim.server import PandaSimulator
from harvester_cli.site.proxies import build_proxy

MSG_SECURE = "SSL secure connection is required"
MSG_DATABASE = "database error in the PanDA server"
UNION_BUG = "'types.UnionType' object has no attribute '__name__'"
JSON = {"Accept": "application/json", "Content-Type": "application/json"}

_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> certs.TestPKI:
    return certs.create(tmp_path_factory.mktemp("contract-pki"))


@pytest.fixture(scope="module")
def sim(pki):
    simulator = PandaSimulator(pki).start()
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def _no_outage_left(request):
    """A test that sets fail_next must not leave an outage for the next test."""
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").fail_next.clear()


# -- raw HTTPS ------------------------------------------------------------------------------------
# REQUESTS_CA_BUNDLE is set in this environment and overrides a session's verify, so every request
# passes verify= itself.

def post(sim, path, body=None, *, cert=True, headers=JSON, data=None) -> requests.Response:
    return requests.post(f"{sim.url}/{path}", data=json.dumps(body) if data is None else data,
                         headers=headers, cert=str(sim.pki.proxy) if cert else None,
                         verify=str(sim.pki.ca_file), timeout=10)


def get(sim, path, params=None, *, cert=True, headers=JSON) -> requests.Response:
    return requests.get(f"{sim.url}/{path}", params=params, headers=headers,
                        cert=str(sim.pki.proxy) if cert else None, verify=str(sim.pki.ca_file), timeout=10)


def answer(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    body = json.loads(response.text)
    assert list(body) == ["success", "message", "data"]
    return body


def acquired(sim, count: int = 1) -> list[int]:
    """Jobs at a fresh site, fetched over HTTPS, so the server considers them sent."""
    site = unique("SITE")
    ids = sim.add_jobs(site, count)
    jobs = answer(post(sim, "pilot/acquire_jobs", {"site_name": site, "n_jobs": count}))["data"]["jobs"]
    assert [j["PandaID"] for j in jobs] == ids
    return ids


def update(sim, job_id: int, status: str, **fields) -> dict:
    return answer(post(sim, "pilot/update_job", {"job_id": job_id, "job_status": status, **fields}))


def status_of(sim, job_id: int) -> str:
    (entry,) = answer(get(sim, "pilot/get_job_status", {"job_ids": [job_id]}))["data"]
    return entry["status"]


def client_for(sim, harvester_id: str | None = None, *, retries: int = 3, **config) -> PandaClient:
    settings = {"url": sim.url, "proxy": sim.pki.proxy, "ca": sim.pki.ca_file, "retries": retries, **config}
    return PandaClient(PandaConfig(**settings), harvester_id or unique("client"), retry_wait=0.01)


# -- simulator: authentication and routing --------------------------------------------------------

def test_is_alive_needs_no_certificate(sim):
    assert answer(get(sim, "system/is_alive", cert=False)) == {"success": True, "message": "", "data": None}


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_no_client_certificate_is_refused_before_anything_else(sim, method):
    """The SSL check comes first: even a wrong HTTP method gets the SSL message."""
    body = {"harvester_id": "h", "n_commands": 1}
    response = (post(sim, "harvester/acquire_commands", body, cert=False) if method == "POST"
                else get(sim, "harvester/acquire_commands", cert=False))
    assert answer(response) == {"success": False, "message": MSG_SECURE, "data": None}


def test_unknown_method_is_http_403(sim):
    response = post(sim, "harvester/no_such_method", {})
    assert (response.status_code, response.text) == (403, "ERROR : method no_such_method is forbidden")


def test_legacy_path_is_http_403(sim):
    response = requests.get(f"https://{sim.host}:{sim.port}/server/panda/getJob", cert=str(sim.pki.proxy),
                            verify=str(sim.pki.ca_file), timeout=10)
    assert (response.status_code, response.text) == (403, "ERROR : method getJob is forbidden")


def _limited_proxy(pki: certs.TestPKI, path) -> None:
    """An RFC 3820 proxy of the test user whose last CN is "limited proxy"."""
    user_cert = x509.load_pem_x509_certificate(pki.user_cert.read_bytes())
    user_key = serialization.load_pem_private_key(pki.user_key.read_bytes(), password=None)
    cert, key = build_proxy(user_cert, user_key, 2 * 3600, common_name="limited proxy")
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                     + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption())
                     + user_cert.public_bytes(serialization.Encoding.PEM))


def test_limited_proxy_is_refused(sim, tmp_path):
    """is_secure() refuses a DN containing "/CN=limited proxy"."""
    proxy = tmp_path / "limited.pem"
    _limited_proxy(sim.pki, proxy)
    body = json.dumps({"harvester_id": "h", "n_commands": 1})
    response = requests.post(f"{sim.url}/harvester/acquire_commands", data=body, headers=JSON, cert=str(proxy),
                             verify=str(sim.pki.ca_file), timeout=10)
    assert answer(response) == {"success": False, "message": MSG_SECURE, "data": None}


def test_bearer_token_with_origin_is_accepted(pki):
    with PandaSimulator(pki, tokens=("t",)) as sim:
        headers = {**JSON, "Authorization": "Bearer t", "Origin": "atlas"}
        body = {"harvester_id": unique("tok"), "n_commands": 1}
        assert answer(post(sim, "harvester/acquire_commands", body, cert=False, headers=headers))["success"]
        assert sim.calls[-1]["dn"] == "token:atlas"


def test_unknown_bearer_token_is_refused(pki):
    with PandaSimulator(pki, tokens=("t",)) as sim:
        headers = {**JSON, "Authorization": "Bearer other", "Origin": "atlas"}
        body = {"harvester_id": unique("tok"), "n_commands": 1}
        response = post(sim, "harvester/acquire_commands", body, cert=False, headers=headers)
        assert answer(response)["message"] == MSG_SECURE


# -- simulator: validation, as request_validation words it ----------------------------------------

VALIDATION = [
    pytest.param("GET", "harvester/acquire_commands", None, "expecting POST, received GET", id="wrong-method"),
    pytest.param("POST", "pilot/acquire_jobs", {"site_name": "S", "n_jobs": "2"},
                 "Type error: 'n_jobs' must be of type int, got str.", id="int-as-string"),
    pytest.param("POST", "harvester/acquire_commands", {"harvester_id": "h", "n_commands": 1, "x": 1},
                 "Argument error: got an unexpected keyword argument 'x'", id="unknown-argument"),
    pytest.param("POST", "harvester/acquire_commands", {"harvester_id": "h"},
                 "Argument error: missing a required argument: 'n_commands'", id="missing-argument"),
    pytest.param("POST", "harvester/acquire_commands", {"harvester_id": "h", "x": 1},
                 "Argument error: missing a required argument: 'n_commands'", id="missing-beats-unknown"),
    pytest.param("POST", "pilot/update_job", {"job_id": 1, "job_status": "running", "meta_data": None},
                 "Type error: 'meta_data' must be of type str, got NoneType.", id="null-where-default-is-not-null"),
    pytest.param("POST", "harvester/report_worker_statistics",
                 {"harvester_id": "h", "panda_queue": "Q", "statistics": {}},
                 "Type error: 'statistics' must be of type str, got dict.", id="statistics-must-be-json-string"),
    pytest.param("POST", "job/kill", {"job_ids": ["1"]}, "Type error: All elements in 'job_ids' must be int.",
                 id="list-of-int-with-str"),
]


@pytest.mark.parametrize("method, path, body, message", VALIDATION)
def test_validation_failure_is_http_200_with_message(sim, method, path, body, message):
    """inspect.signature().bind() names a missing argument before an unexpected one."""
    response = post(sim, path, body) if method == "POST" else get(sim, path)
    assert answer(response) == {"success": False, "message": message, "data": None}


@pytest.mark.parametrize("query, message", [
    pytest.param({"job_ids": "5,6"},
                 "Type error: 'job_ids' with value '['5,6']' could not be casted to type List from list.",
                 id="comma-joined-list"),
    pytest.param({"job_ids": 5, "timeout": "abc"},
                 "Type error: 'timeout' with value 'abc' could not be casted to type int from str.",
                 id="int-not-a-number"),
])
def test_uncastable_get_parameter_is_a_type_error(sim, query, message):
    """GET values are cast from strings; a failed cast is a success:false Type error, not an HTTP 500."""
    assert answer(get(sim, "pilot/get_job_status", query)) == {"success": False, "message": message, "data": None}


def test_float_parameter_rejects_int():
    """No harvester call has a float-only parameter (update_worker_node's clock_speed has), so this checks
    the simulator's validator directly: JSON 2000 is an int, and `float` refuses it."""
    route = server.Route("x", "POST", {"clock_speed": (float, None)})
    with pytest.raises(server.ArgumentError,
                       match=re.escape("Type error: 'clock_speed' must be of type float, got int.")):
        server._type_check(route, {"clock_speed": 2000})


def test_union_parameter_accepts_int_and_float(sim):
    for factor in (2, 2.5):
        assert update(sim, 1, "running", cpu_conversion_factor=factor)["data"]["command"] == "tobekilled"


@pytest.mark.parametrize("path, body", [
    ("pilot/update_job", {"job_id": 1, "job_status": "running", "cpu_conversion_factor": "fast"}),
    ("pilot/acquire_jobs", {"site_name": "S", "target_architecture": [1]}),
])
def test_union_parameter_with_wrong_type_is_http_500(sim, path, body):
    response = post(sim, path, body)
    assert (response.status_code, response.text) == (500, UNION_BUG)


def test_invalid_json_body_is_http_500(sim):
    response = post(sim, "harvester/acquire_commands", data="{not json")
    assert response.status_code == 500
    assert response.text.startswith("ERROR : received invalid JSON : ")


def test_json_body_that_is_not_an_object_is_http_500(sim):
    assert post(sim, "harvester/acquire_commands", [1, 2]).status_code == 500


@pytest.mark.parametrize("body", [
    {"harvester_id": "h", "n_commands": 1},
    {"harvester_id": "a=b", "n_commands": 1},
], ids=["plain", "value-with-equals-sign"])
def test_json_content_type_with_charset_loses_the_body(sim, body):
    """Only the exact "application/json" selects JSON parsing; werkzeug parses any other non-form
    Content-Type as no parameters at all, whatever the body contains."""
    headers = {"Accept": "application/json", "Content-Type": "application/json; charset=utf-8"}
    assert answer(post(sim, "harvester/acquire_commands", body, headers=headers)) == {
        "success": False, "message": "Argument error: missing a required argument: 'harvester_id'", "data": None}


@pytest.mark.parametrize("accept", ["*/*", "application/json, */*"])
def test_without_exact_json_accept_the_body_is_python_repr(sim, accept):
    response = get(sim, "system/is_alive", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.text == "{'success': True, 'message': '', 'data': None}"


def test_answers_are_labelled_text_plain_even_when_json(sim):
    assert get(sim, "system/is_alive").headers["Content-Type"] == "text/plain"


# -- simulator: harvester calls -------------------------------------------------------------------

def test_first_heartbeat_registers_but_fails_second_succeeds(sim):
    body = {"harvester_id": unique("hb"), "data": {"startTime": "2026-01-01 00:00:00", "sw_version": "1"}}
    assert answer(post(sim, "harvester/heartbeat", body)) == {"success": False, "message": MSG_DATABASE, "data": None}
    assert answer(post(sim, "harvester/heartbeat", body)) == {"success": True, "message": "", "data": None}


def test_heartbeat_without_data_fails(sim):
    harvester_id = unique("hb")
    for _ in range(2):
        assert answer(post(sim, "harvester/heartbeat", {"harvester_id": harvester_id}))["message"] == MSG_DATABASE


def test_acknowledge_empty_list_fails(sim):
    assert answer(post(sim, "harvester/acknowledge_commands", {"command_ids": []})) == {
        "success": False, "message": MSG_DATABASE, "data": None}


def test_update_workers_empty_list_fails(sim):
    body = {"harvester_id": unique("w"), "workers": []}
    assert answer(post(sim, "harvester/update_workers", body)) == {
        "success": False, "message": MSG_DATABASE, "data": None}


def test_update_workers_answers_one_true_per_worker(sim):
    workers = [{"workerID": 1, "status": "submitted"}, {"workerID": 2, "status": "running", "unknownKey": 1}]
    body = {"harvester_id": unique("w"), "workers": workers}
    assert answer(post(sim, "harvester/update_workers", body)) == {"success": True, "message": "", "data": [True, True]}


def test_current_worker_id_without_workers_is_a_database_error(sim):
    response = get(sim, "harvester/get_current_worker_id", {"harvester_id": unique("w")})
    assert answer(response) == {"success": False, "message": MSG_DATABASE, "data": None}


def test_current_worker_id_is_the_highest_seen(sim):
    harvester_id = unique("w")
    workers = [{"workerID": 7}, {"workerID": 3}]
    answer(post(sim, "harvester/update_workers", {"harvester_id": harvester_id, "workers": workers}))
    assert answer(get(sim, "harvester/get_current_worker_id", {"harvester_id": harvester_id}))["data"] == 7


def test_acquire_commands_creation_date_is_an_isoformat_string(sim):
    """The real getCommands writes `creation_date = entry[4].isoformat()`: a plain string on the wire,
    not the {"__datetime__": ...} wrapper json.dumps would make of a datetime object."""
    harvester_id = unique("cmd")
    sim.add_command("REPORT_WORKER_STATS", None, harvester_id=harvester_id)
    body = {"harvester_id": harvester_id, "n_commands": 5}
    (command,) = answer(post(sim, "harvester/acquire_commands", body))["data"]
    assert set(command) == {"command_id", "command", "params", "ack_requested", "creation_date"}
    assert isinstance(command["creation_date"], str)
    datetime.fromisoformat(command["creation_date"])


def test_acquired_commands_are_not_given_twice(sim):
    harvester_id = unique("cmd")
    sim.add_command("REPORT_WORKER_STATS", None, harvester_id=harvester_id)
    body = {"harvester_id": harvester_id, "n_commands": 5}
    assert len(answer(post(sim, "harvester/acquire_commands", body))["data"]) == 1
    assert answer(post(sim, "harvester/acquire_commands", body)) == {"success": True, "message": "", "data": []}


def test_every_call_is_recorded_with_its_args(sim):
    body = {"harvester_id": unique("rec"), "n_commands": 3}
    post(sim, "harvester/acquire_commands", body)
    get(sim, "pilot/get_job_status", {"job_ids": [11, 12]})
    posted, got = sim.calls[-2:]
    assert (posted["method"], posted["path"], posted["args"]) == ("POST", "harvester/acquire_commands", body)
    assert posted["answer"] == {"success": True, "message": "", "data": []}
    assert (got["method"], got["path"], got["args"]) == ("GET", "pilot/get_job_status", {"job_ids": [11, 12]})


def test_caller_dn_is_in_grid_format(sim):
    """The proxy's subject as Apache gives it (SSLOptions +LegacyDNStringFormat in the server's httpd.conf):
    the string production_dns and the limited-proxy check search for "/CN=..."."""
    post(sim, "harvester/acquire_commands", {"harvester_id": unique("dn"), "n_commands": 1})
    assert re.fullmatch(r"/DC=org/DC=harvester-cli/OU=test/CN=harvester-cli test user/CN=\d+", sim.calls[-1]["dn"])


# -- simulator: jobs ------------------------------------------------------------------------------

def test_acquire_jobs_without_jobs(sim):
    assert answer(post(sim, "pilot/acquire_jobs", {"site_name": unique("EMPTY"), "n_jobs": 3})) == {
        "success": False, "message": "No jobs in PanDA", "data": None}


def test_acquire_jobs_returns_full_job_dicts_once(sim):
    site = unique("SITE")
    ids = sim.add_jobs(site, 2)
    data = answer(post(sim, "pilot/acquire_jobs", {"site_name": site, "n_jobs": 1}))["data"]
    assert data["StatusCode"] == 0 and len(data["jobs"]) == 1
    assert set(server.JOB_KEYS) <= set(data["jobs"][0])
    second = answer(post(sim, "pilot/acquire_jobs", {"site_name": site, "n_jobs": 5}))["data"]["jobs"]
    assert [j["PandaID"] for j in data["jobs"] + second] == ids


def test_final_update_is_held_then_finished(sim, monkeypatch):
    """A finished update is stored as holding; the server's daemons finish it later (finish_delay)."""
    monkeypatch.setattr(sim, "finish_delay", 2.0)   # long enough for a busy machine to ask in between
    (job_id,) = acquired(sim)
    assert update(sim, job_id, "finished") == {
        "success": True, "message": "", "data": {"StatusCode": 0, "command": "NULL"}}
    held = time.monotonic()
    assert status_of(sim, job_id) == "holding"
    time.sleep(max(0.0, 2.1 - (time.monotonic() - held)))
    assert status_of(sim, job_id) == "finished"


def test_repeated_final_update_is_already_done(sim, monkeypatch):
    monkeypatch.setattr(sim, "finish_delay", 60)
    (job_id,) = acquired(sim)
    update(sim, job_id, "failed")
    assert update(sim, job_id, "failed")["data"]["command"] == "alreadydone"


def test_killed_job_gets_tobekilled_on_next_update(sim):
    (job_id,) = acquired(sim)
    assert update(sim, job_id, "running")["data"]["command"] == "NULL"
    assert answer(post(sim, "job/kill", {"job_ids": [job_id]}))["data"] == [True]
    assert update(sim, job_id, "running")["data"]["command"] == "tobekilled"


def test_update_of_unknown_job_gets_tobekilled(sim):
    assert update(sim, 123, "running") == {
        "success": True, "message": "", "data": {"StatusCode": 0, "command": "tobekilled"}}


def test_update_with_wrong_attempt_gets_tobekilled(sim):
    (job_id,) = acquired(sim)
    assert update(sim, job_id, "running", attempt_nr=2)["data"]["command"] == "tobekilled"


def test_invalid_job_status(sim):
    (job_id,) = acquired(sim)
    assert update(sim, job_id, "bogus") == {"success": False, "message": "Invalid job status: bogus",
                                            "data": {"StatusCode": 50}}


def test_get_job_status_reports_unknown_ids_as_not_found(sim):
    (job_id,) = acquired(sim)
    assert answer(get(sim, "pilot/get_job_status", {"job_ids": [job_id, 42]}))["data"] == [
        {"job_id": job_id, "status": "sent", "attempt_number": 1},
        {"job_id": 42, "status": "not found", "attempt_number": 0}]


def test_update_jobs_bulk_answers_each_entry_in_order(sim):
    first, second = acquired(sim, 2)
    job_list = [
        {"job_id": first, "job_status": "running", "attempt_nr": 1},
        {"job_id": 77, "job_status": "running"},
        {"job_id": second, "job_status": "bogus"},
        {"job_id": second, "job_status": "running", "foo": 1},
        {"job_id": "x", "job_status": "running"},
    ]
    body = answer(post(sim, "pilot/update_jobs_bulk", {"job_list": job_list, "harvester_id": "h"}))
    assert body["success"] is True
    assert body["data"] == [
        {"success": True, "message": "", "data": {"StatusCode": 0, "command": "NULL"}},
        {"success": True, "message": "", "data": {"StatusCode": 0, "command": "tobekilled"}},
        {"success": False, "message": "Invalid job status: bogus", "data": {"StatusCode": 50}},
        {"success": False, "message": "Argument error: got an unexpected keyword argument 'foo'", "data": None},
        {"success": False, "message": "Type error: 'job_id' must be of type int, got str.", "data": None},
    ]


def test_update_jobs_bulk_entry_without_job_id_fails_the_call(sim):
    """The whole answer is lost, but the entries before the bad one were already applied."""
    (job_id,) = acquired(sim)
    job_list = [{"job_id": job_id, "job_status": "running"}, {"job_status": "running"}]
    assert answer(post(sim, "pilot/update_jobs_bulk", {"job_list": job_list})) == {
        "success": False, "message": "failed with KeyError 'job_id'", "data": []}
    assert status_of(sim, job_id) == "running"


def test_update_jobs_bulk_union_bug_fails_the_call_not_http(sim):
    job_list = [{"job_id": 1, "job_status": "running", "max_rss": "big"}]
    assert answer(post(sim, "pilot/update_jobs_bulk", {"job_list": job_list})) == {
        "success": False, "message": f"failed with AttributeError {UNION_BUG}", "data": []}


def test_update_jobs_bulk_empty_list_succeeds(sim):
    assert answer(post(sim, "pilot/update_jobs_bulk", {"job_list": []})) == {"success": True, "message": "", "data": []}


# -- client ---------------------------------------------------------------------------------------

def test_client_reuses_one_connection(sim):
    client = client_for(sim)
    before = sim.connections
    for _ in range(20):
        client.is_alive()
    assert sim.connections - before == 1
    client.close()


def test_client_acquire_jobs_returns_empty_list_when_no_jobs(sim):
    assert client_for(sim).acquire_jobs(unique("EMPTY"), 5) == []


def test_client_acquire_jobs_returns_job_dicts(sim):
    site = unique("SITE")
    ids = sim.add_jobs(site, 2)
    jobs = client_for(sim).acquire_jobs(site, 5)
    assert [j["PandaID"] for j in jobs] == ids
    assert all(sim.job_status(i) == "sent" for i in ids)


def test_client_refusal_carries_panda_message(sim):
    with pytest.raises(PandaRefused) as refused:
        client_for(sim).update_workers([])
    assert refused.value.message == MSG_DATABASE


def test_client_acknowledge_empty_list_sends_nothing(sim):
    before = len(sim.calls)
    client_for(sim).acknowledge_commands([])
    assert len(sim.calls) == before


def test_client_commands_come_back_with_datetimes_as_strings(sim):
    client = client_for(sim)
    command_id = sim.add_command("KILL_WORKERS", {"status": ["submitted"]}, ack_requested=True,
                                 harvester_id=client.harvester_id)
    (command,) = client.acquire_commands()
    assert (command.command_id, command.params) == (command_id, {"status": ["submitted"]})
    datetime.fromisoformat(command.created)
    client.acknowledge_commands([command_id])
    assert sim.commands[command_id]["status"] == "acknowledged"


def test_client_update_jobs_bulk_returns_one_answer_per_entry(sim):
    (job_id,) = acquired(sim)
    answers = client_for(sim).update_jobs_bulk([{"job_id": job_id, "job_status": "running"},
                                                {"job_id": 99, "job_status": "running"}])
    assert [(a.job_id, a.accepted, a.command, a.kill) for a in answers] == [(job_id, True, None, False),
                                                                          (99, True, "tobekilled", True)]


def test_client_update_jobs_bulk_whole_call_failure_is_refused(sim):
    with pytest.raises(PandaRefused, match="failed with KeyError 'job_id'"):
        client_for(sim).update_jobs_bulk([{"job_status": "running"}])


def test_client_get_job_status_sends_repeated_keys(sim):
    (job_id,) = acquired(sim)
    statuses = client_for(sim).get_job_status([job_id, 5])
    assert [s["status"] for s in statuses] == ["sent", "not found"]


@pytest.mark.parametrize("code", [500, 502, 503])
def test_client_retries_idempotent_call_after_5xx(sim, code):
    client = client_for(sim)
    before = len(sim.calls_to("metaconfig/get_resource_types"))
    sim.fail_next = [code]
    assert client.get_resource_types() == server.RESOURCE_TYPES
    assert sim.fail_next == []   # the outage answer was consumed: two requests in all
    assert len(sim.calls_to("metaconfig/get_resource_types")) == before + 1


def test_client_gives_up_after_configured_retries(sim):
    client = client_for(sim, retries=3)
    sim.fail_next = [503, 503, 503, 503]
    with pytest.raises(PandaError) as error:
        client.get_resource_types()
    assert not isinstance(error.value, PandaRefused)
    assert sim.fail_next == [503]   # exactly three attempts


def test_client_does_not_retry_acquire_jobs_the_server_received(sim):
    """After the server saw the request it may have marked jobs sent; a retry could lose them."""
    site = unique("SITE")
    (job_id,) = sim.add_jobs(site, 1)
    client = client_for(sim, retries=3)
    sim.fail_next = [503]
    with pytest.raises(PandaError) as error:
        client.acquire_jobs(site, 1)
    assert not isinstance(error.value, PandaRefused)
    assert sim.fail_next == []   # one request reached the server ...
    assert not [c for c in sim.calls_to("pilot/acquire_jobs") if c["args"].get("site_name") == site]  # ... only one
    assert sim.job_status(job_id) == "activated"
    assert [j["PandaID"] for j in client.acquire_jobs(site, 1)] == [job_id]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_retries_acquire_jobs_when_connection_refused(pki, monkeypatch):
    """A refused connection cannot have reached the server, so even acquire_jobs is retried."""
    config = PandaConfig(url=f"https://127.0.0.1:{_closed_port()}/api/v1", proxy=pki.proxy, ca=pki.ca_file, retries=3)
    client = PandaClient(config, "h", retry_wait=0.01)
    attempts = []
    send = client._send

    def counting_send(*args, **kwargs):
        attempts.append(args[1])
        return send(*args, **kwargs)

    monkeypatch.setattr(client, "_send", counting_send)
    with pytest.raises(PandaError) as error:
        client.acquire_jobs("SITE", 1)
    assert not isinstance(error.value, PandaRefused)
    assert attempts == ["pilot/acquire_jobs"] * 3


def test_client_rereads_token_file_when_it_changes(pki, tmp_path):
    """The old token is revoked after the refresh, so a client still sending it would be refused."""
    token_file = tmp_path / "token"

    def write_token(token: str) -> None:   # the way a refresher does it: a new file moved into place
        (tmp_path / "token.new").write_text(token + "\n")
        os.replace(tmp_path / "token.new", token_file)

    with PandaSimulator(pki, tokens=("a", "b")) as sim:
        config = PandaConfig(url=sim.url, token_file=token_file, token_origin="atlas", ca=pki.ca_file, retries=1)
        client = PandaClient(config, unique("tok"), retry_wait=0.01)
        write_token("a")
        assert client.acquire_commands() == []
        time.sleep(0.05)   # past the file system's timestamp granularity
        write_token("b")
        sim.tokens.discard("a")
        assert client.acquire_commands() == []
        assert [c["dn"] for c in sim.calls] == ["token:atlas", "token:atlas"]


# -- harvester/update_service_metrics (panda-server 1.0.4 harvester_api + DBProxy.updateServiceMetrics) -----

def service_entry(when: str = "2026-05-04 12:13:14.123456", host: str = "harvester.example.org", **metrics) -> list:
    return [when, host, json.dumps({"rss_mib": 12.5, "memory_pc": 0.1, "cpu_pc": 1.0, "cert_lifetime": {}, **metrics})]


def test_service_metrics_are_stored_as_sent(sim):
    harvester = unique("svc")
    entry = service_entry(volume_data_pc=20.0)
    body = answer(post(sim, "harvester/update_service_metrics", {"harvester_id": harvester, "metrics": [entry]}))
    assert body == {"success": True, "message": "", "data": [True]}
    (row,) = [r for r in sim.service_metrics if r["harvester_id"] == harvester]
    assert row["creation_time"] == datetime(2026, 5, 4, 12, 13, 14, 123456)
    assert row["host"] == "harvester.example.org" and row["metrics"] == entry[2]   # the JSON text, verbatim


@pytest.mark.parametrize("metrics, message", [
    pytest.param(json.dumps([service_entry()]), "Type error: 'metrics' must be of type list, got str.",
                 id="metrics-as-json-string"),
    pytest.param({"a": 1}, "Type error: 'metrics' must be of type list, got dict.", id="metrics-as-object"),
])
def test_service_metrics_must_be_a_json_array(sim, metrics, message):
    body = {"harvester_id": unique("svc"), "metrics": metrics}
    assert answer(post(sim, "harvester/update_service_metrics", body)) == {"success": False, "message": message,
                                                                           "data": None}


@pytest.mark.parametrize("entries", [
    pytest.param([service_entry(when="2026-05-04 12:13:14")], id="no-microseconds"),
    pytest.param([service_entry(when="2026-05-04T12:13:14.123456")], id="iso-format"),
    pytest.param([["harvester.example.org", "2026-05-04 12:13:14.123456", "{}"]], id="host-first-as-the-docstring"),
    pytest.param([["2026-05-04 12:13:14.123456", "h", {"rss_mib": 1}]], id="metrics-as-object-not-text"),
    pytest.param([["2026-05-04 12:13:14.123456", "h"]], id="two-elements"),
    pytest.param([service_entry(), service_entry(when="yesterday")], id="one-bad-entry-fails-them-all"),
    pytest.param([["2026-05-04 12:13:14.123456", "h", "x" * 4001]], id="longer-than-the-column"),
])
def test_bad_service_metrics_are_a_database_error_and_nothing_is_stored(sim, entries):
    harvester = unique("svc")
    body = answer(post(sim, "harvester/update_service_metrics", {"harvester_id": harvester, "metrics": entries}))
    assert body == {"success": False, "message": MSG_DATABASE, "data": None}
    assert not [r for r in sim.service_metrics if r["harvester_id"] == harvester]


def test_service_metrics_need_a_certificate_but_no_production_role(pki):
    with PandaSimulator(pki, production_dns=("/CN=nobody",)) as restricted:
        body = {"harvester_id": unique("svc"), "metrics": [service_entry()]}
        assert answer(post(restricted, "harvester/update_service_metrics", body))["data"] == [True]
        assert answer(post(restricted, "harvester/update_service_metrics", body, cert=False))["message"] == MSG_SECURE
        assert answer(get(restricted, "harvester/update_service_metrics"))["message"] == \
            "expecting POST, received GET"


def test_client_sends_service_metrics_as_the_server_takes_them(sim):
    from harvester_cli.site import hostmetrics

    client = client_for(sim)
    metrics = hostmetrics.collect({"data": sim.pki.proxy.parent}, {str(sim.pki.proxy): 95.6})
    client.update_service_metrics([hostmetrics.entry(metrics, "harvester.example.org")])
    (row,) = [r for r in sim.service_metrics if r["harvester_id"] == client.harvester_id]
    stored = json.loads(row["metrics"])
    assert stored["cert_lifetime"] == {str(sim.pki.proxy): 96}
    assert set(stored) == {"rss_mib", "memory_pc", "cpu_pc", "volume_data_pc", "cert_lifetime"}
    assert client.errors == {}
