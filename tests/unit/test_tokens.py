"""Tokens per CE without a CE: audiences, configuration rules, renewal of a per-CE profile against the test
issuer (one call per audience), the token listing `status` shows, pilot environments. Refusals mailed
once: tests/integration/credentials."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from harvester_cli import config as config_module
from harvester_cli.errors import ConfigError
from harvester_cli.site import bearer, renewal, tokens
from tests.support.credentials import token_config
from tests.support.harness import free_port
from tests.support.peers.token_issuer import COMPUTE_SCOPES, TokenIssuer, decode

pytestmark = pytest.mark.credentials


@pytest.mark.parametrize("endpoint, flavour, audience", [
    ("ce01.example.org", "htcondor-ce", "ce01.example.org:9619"),
    ("CE01.Example.org:9620", "htcondor-ce", "ce01.example.org:9620"),
    ("arc.example.org", "arc-ce", "https://arc.example.org:443"),
    ("https://ARC.example.org:8443/arex", "arc-ce", "https://arc.example.org:8443"),
    ("https://arc.example.org/arex", "arc-ce", "https://arc.example.org:443"),
])
def test_ce_audience_is_the_normalised_endpoint(endpoint, flavour, audience):
    assert bearer.ce_audience(endpoint, flavour) == audience


def test_file_names_of_audiences_differ_and_hold_no_separator():
    names = {bearer.file_name(a) for a in ("ce.example.org:9619", "https://ce.example.org:9619", "ce.example.org:443")}
    assert len(names) == 3 and not any("/" in n or ":" in n for n in names)


def test_refusal_reason_names_what_the_ce_would_refuse():
    issuer = TokenIssuer(Path("unused"), Path("unused"))
    issuer.httpd = type("H", (), {"server_address": ("127.0.0.1", 1)})()
    aud = "https://arc.example.org:443"
    assert "expired" in bearer.refusal_reason(issuer.mint(aud=aud, lifetime=-60), aud)
    assert "is not this CE's https://arc.example.org:443" in bearer.refusal_reason(issuer.mint(aud="x:1"), aud)
    assert "lacks compute.create" in bearer.refusal_reason(issuer.mint(aud=aud, scope="compute.read"), aud)
    assert bearer.refusal_reason("not a jwt", aud) == "the token file does not hold a JWT"


@pytest.mark.parametrize("change, message", [
    (lambda d: d["queues"]["HTC"].pop("ce_token_profile"), "\"token\" needs ce_token_profile"),
    (lambda d: d["queues"]["LOCAL"].update(ce_credentials="token", ce_token_profile="ce"),
     "local queues have no CE to give a token"),
    (lambda d: d["queues"]["LOCAL"].update(pilot_token_profile="ce"),
     "[tokens.ce] keeps a token per CE (directory); the pilots need one token for PanDA (file)"),
    (lambda d: d["tokens"]["ce"].update(file="/tmp/x"), "set file (one token) or directory (a token per CE), not both"),
    (lambda d: d["tokens"]["ce"].update(audience="x"), "a per-CE profile (directory) asks each CE's own audience"),
    (lambda d: d["tokens"]["ce"].update(audience_formats={"arc-ce": "https://{hostname}"}),
     "arc-ce: use {host} and {port} only"),
    (lambda d: d["queues"]["HTC"].update(ce_credentials="tokens"), "(did you mean 'token'?)"),
])
def test_bad_token_configuration_is_one_line_naming_the_table_and_key(tmp_path, change, message):
    data = token_config(tmp_path, "https://127.0.0.1:9")
    change(data)
    with pytest.raises(ConfigError) as caught:
        config_module.parse(data, "site.toml", tmp_path)
    lines = [line for line in str(caught.value).splitlines() if message in line]
    assert len(lines) == 1 and lines[0].startswith("site.toml: ["), str(caught.value)


def test_per_ce_profile_asks_once_per_audience_and_lists_every_token(tmp_path, issuer, pki):
    config = config_module.parse(token_config(tmp_path, issuer.url, pki.ca_file), "site.toml", tmp_path)
    run = renewal.renew(config, mail=False)
    by_audience = {r.audience: r for r in run.results}
    # ce1 twice (with and without its default port), the DISABLED ce2 none, arc1 from two queues once
    assert sorted(by_audience) == ["ce1.example.org:9619", "https://arc1.example.org:443"]
    assert sorted(by_audience["ce1.example.org:9619"].ces) == ["ce1.example.org", "ce1.example.org:9619"]
    assert sorted(r["form"]["audience"] for r in issuer.requests) == sorted(by_audience)
    assert all(r["form"]["scope"] == COMPUTE_SCOPES for r in issuer.requests)
    for result in run.results:
        path = Path(result.file)
        assert result.action == "renewed" and decode(path.read_text().strip())["aud"] == result.audience
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert renewal.renew(config, mail=False).results[0].action == "ok" and len(issuer.requests) == 2
    listed = tokens.list_tokens(config)
    assert {t["audience"] for t in listed} == set(by_audience)
    assert all(t["exists"] and 3500 < t["seconds_left"] <= 3600 for t in listed)


def test_pilot_token_environment_by_backend(tmp_path):
    from harvester_cli.instance import Instance

    token = tmp_path / "pilot" / "panda_token"
    key = tmp_path / "panda_token_key"
    data = token_config(tmp_path, "https://127.0.0.1:9")
    data["tokens"]["pilot"] = {"file": str(token), "endpoint": "https://127.0.0.1:9/token", "client_id": "p",
                               "client_secret_file": str(tmp_path / "client.secret")}
    for name in ("ARC", "LOCAL"):
        data["queues"][name].update(pilot_token_profile="pilot", pilot_token_key=str(key))
    instance = Instance(config_module.parse(data, "site.toml", tmp_path))
    arc = instance.pilot_environment(instance.config.queues["ARC"], 1, "SCORE")
    local = instance.pilot_environment(instance.config.queues["LOCAL"], 2, "SCORE")
    assert (arc["PANDA_AUTH_TOKEN"], arc["PANDA_AUTH_TOKEN_KEY"], arc["PANDA_AUTH_ORIGIN"]) == \
        ("panda_token", "panda_token_key", "atlas")   # files that travel with the job, by name
    assert (local["PANDA_AUTH_TOKEN"], local["PANDA_AUTH_TOKEN_KEY"]) == (str(token), str(key))   # this host's
    assert "X509_USER_PROXY" not in arc and "X509_USER_PROXY" not in local
    assert instance.pilot_files(instance.config.queues["ARC"]) == {"panda_token": token, "panda_token_key": key}


def test_missing_ce_token_fails_each_worker_with_the_reason_before_any_ce_is_asked(tmp_path):
    """No token yet (renew-proxy has not run): ARC and HTCondor say so per worker, naming the CE and the file."""
    from harvester_cli.backends.base import WorkerSpec
    from harvester_cli.instance import Instance
    from tests.support.harness import new_state

    data = token_config(tmp_path, "https://127.0.0.1:9")
    data["queues"]["ARC"]["backend_options"]["endpoints"] = [f"https://127.0.0.1:{free_port()}/arex"]
    data["queues"]["ARC"]["ce_credentials"] = "token"
    data["queues"]["HTC"]["backend_options"].update(schedd="nowhere@nohost", collector="127.0.0.1:9")
    instance = Instance(config_module.parse(data, "site.toml", tmp_path))
    new_state(instance.state_url)   # CE fanout reads recent throughput
    for name, expected in (("ARC", r"ARC CE https://127\.0\.0\.1:\d+/arex: no token for audience "),
                           # the fanout picks any of the CEs, ce1 listed with and without its port
                           ("HTC", r"CE (ce1|arc1)\.example\.org(:9619)?: no token for audience (ce1|https://arc1)")):
        queue = instance.config.queues[name]
        specs = [WorkerSpec(i, name, "SCORE", 1, 2000, 3600, tmp_path / "logs" / name / str(i), "true")
                 for i in (1, 2)]
        results = instance.backend(queue).submit(specs)
        assert [r.ok for r in results] == [False, False]
        for result in results:
            assert re.match(expected, result.error), result.error
            assert "does not exist" in result.error and "renew-proxy" in result.error


def _panda_token_config(harness, token: Path) -> None:
    """The harness's configuration with a [panda] token file instead of the proxy (and the test's queues)."""
    from tests.support.harness import new_state, to_toml

    data = harness.config_data({"PULL_Q": {"mode": "pull", "pilot": "sleep 30"}})
    del data["panda"]["proxy"]
    data["panda"].update(token_file=str(token), token_origin="atlas", retries=0)
    (harness.tmp_path / "config.toml").write_text(to_toml(data))
    new_state(data["state"])


def _jwt(**payload) -> str:
    import base64
    import json

    part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part(payload)}.c2ln"


@pytest.mark.parametrize("content", ["binary", "link to a binary", "utf-8 text", "empty"])
def test_a_token_file_that_holds_no_token_is_one_line_per_step_and_the_other_steps_go_on(harness, content):
    token = harness.tmp_path / "token"
    if content == "binary":
        token.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe" * 50)
    elif content == "link to a binary":
        binary = harness.tmp_path / "sh"
        binary.write_bytes(Path("/bin/sh").resolve().read_bytes())
        binary.chmod(0o600)
        token.symlink_to(binary)
    elif content == "utf-8 text":
        token.write_text("jeton-für-panda\n")
    else:
        token.write_text("\n")
    if not token.is_symlink():
        token.chmod(0o600)
    _panda_token_config(harness, token)
    result = harness.cli("--json", "cycle")
    assert "Traceback" not in result.stderr and "UnicodeDecodeError" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    import json

    steps = {s["step"]: s for s in json.loads(result.stdout)["steps"]}
    assert list(steps) == ["fetch-jobs", "submit", "poll", "propagate", "sweep"]   # every step ran
    assert not steps["poll"]["partial"] and not steps["sweep"]["partial"]
    for problem in steps["propagate"]["problems"]:
        assert f"token file {token}: " in problem and len(problem.splitlines()) == 1
        assert ("empty" if content == "empty" else "not a bearer token") in problem
    assert steps["propagate"]["problems"]


def test_an_expired_panda_token_is_not_sent_and_the_error_says_what_renews_it(harness, sim):
    import json
    import time

    token = harness.tmp_path / "token"
    expired = _jwt(sub="pilot", exp=int(time.time()) - 120)
    token.write_text(expired + "\n")
    token.chmod(0o600)
    sim.tokens.add(expired)   # PanDA would take it: harvester-cli must not send it at all
    _panda_token_config(harness, token)
    result = harness.cli("--json", "cycle")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    problems = [p for s in json.loads(result.stdout)["steps"] for p in s["problems"]]
    assert problems and all("the token expired 1" in p and "renew-proxy" in p for p in problems if "token" in p)
    assert any(f"token file {token}: the token expired" in p for p in problems), problems
    assert harness.harvester_id not in sim.harvesters   # no heartbeat reached PanDA with it
    assert expired not in result.stdout + result.stderr
    fresh = _jwt(sub="pilot", exp=int(time.time()) + 3600)
    token.write_text(fresh + "\n")
    sim.tokens.add(fresh)
    harness.cli("propagate")
    assert harness.harvester_id in sim.harvesters   # a renewed token is read and sent
