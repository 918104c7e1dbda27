"""renew-proxy without the grid tools and without mail: the builtin tool makes proxies from a grid CA of
our own (renew below the minimum lifetime, skip a short certificate, --check), token files come from a
real HTTPS token endpoint started here, the proxy and token profiles reach the PanDA client, the backends
and the pilots; the configuration rules of profiles. With voms-proxy-init, arcproxy and alert mail:
tests/integration/credentials.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from harvester_cli import config as config_module
from harvester_cli.errors import ConfigError
from tests.support.credentials import cert, mode, token_site
from tests.support.harness import free_port

pytestmark = pytest.mark.credentials


# ---------------------------------------------------------------------------------------------
# The builtin tool

def test_check_reports_without_renewing(site, ca):
    proxy = site.proxy("prod", [cert(ca.valid)], tool="builtin")
    result, data = site.renew("--check")
    assert result.returncode == 1   # something needs renewal
    assert data["profiles"][0]["action"] == "would renew"
    assert data["profiles"][0]["reason"] == "no proxy file"
    assert not proxy.exists()
    site.renew()
    result, data = site.renew("--check")
    assert result.returncode == 0, data
    # A run leaves the proxy and nothing else beside it: no lock file, no temporary directory.
    assert sorted(p.name for p in proxy.parent.iterdir()) == [proxy.name]
    assert data["profiles"][0]["action"] == "ok"


def test_renews_below_min_lifetime_and_not_above(site, ca):
    proxy = site.proxy("prod", [cert(ca.valid)], tool="builtin", lifetime=2 * 3600, min_lifetime=3600)
    _, data = site.renew()
    assert data["profiles"][0]["action"] == "renewed"
    first = proxy.read_bytes()
    _, data = site.renew()
    assert data["profiles"][0]["action"] == "ok"          # 2 h left > 1 h minimum
    assert proxy.read_bytes() == first
    site.data["proxies"]["prod"].update(lifetime=96 * 3600, min_lifetime=72 * 3600)
    _, data = site.renew()
    assert data["profiles"][0]["action"] == "renewed"     # 2 h left < 72 h minimum
    assert "less than" in data["profiles"][0]["reason"]
    assert proxy.read_bytes() != first


def test_short_certificate_is_skipped_for_a_longer_one(site, ca):
    """A certificate expiring before min_lifetime gives a short proxy: the next certificate is used."""
    short = ca.user("short user", hours=10)
    proxy = site.proxy("prod", [cert(short), cert(ca.valid)], tool="builtin")
    result, data = site.renew("--no-mail")
    (profile,) = data["profiles"]
    assert profile["certificate"] == str(ca.valid.cert)
    assert "lives only" in profile["attempts"][0]["reason"]
    assert result.returncode == 1
    # only short certificates: the short proxy is still better than none
    site.data["proxies"]["prod"]["certificates"] = [cert(short)]
    proxy.unlink()
    result, data = site.renew("--no-mail")
    assert data["profiles"][0]["action"] == "renewed" and proxy.exists()
    assert data["profiles"][0]["time_left"] < 11 * 3600
    assert result.returncode == 1


# ---------------------------------------------------------------------------------------------
# Tokens: a real HTTPS endpoint, client-credentials grant


def test_token_refresh_client_credentials(site, token_endpoint, pki):
    token, _ = token_site(site, token_endpoint, pki)
    result, data = site.renew()
    assert result.returncode == 0, result.stderr
    (profile,) = data["profiles"]
    assert profile["action"] == "renewed" and profile["kind"] == "token"
    assert 3500 < profile["time_left"] <= 3600
    assert token.read_text() == token_endpoint.issued[0] + "\n"
    assert mode(token) == 0o600
    (request,) = token_endpoint.requests
    assert request["form"] == {"grant_type": "client_credentials", "audience": "https://ce1.example.org:9619",
                               "scope": "compute.create compute.read"}
    # fresh enough: no second request
    _, data = site.renew()
    assert data["profiles"][0]["action"] == "ok" and len(token_endpoint.requests) == 1
    # never the token or the secret in output or logs
    for text in (result.stdout, result.stderr, site.command_log()):
        assert token_endpoint.issued[0] not in text
        assert token_endpoint.secret not in text


def test_token_endpoint_retries_then_succeeds(site, token_endpoint, pki):
    token, _ = token_site(site, token_endpoint, pki, retries=3)
    token_endpoint.fail_next = [503, 502]
    result, data = site.renew()
    assert result.returncode == 0, result.stderr
    assert len(token_endpoint.requests) == 3
    assert token.exists()


def test_token_endpoint_unreachable_retries_bounded(site, pki):
    endpoint = type("E", (), {"url": f"https://127.0.0.1:{free_port()}/token", "client_id": "c", "secret": "x" * 12})
    token, _ = token_site(site, endpoint, pki, retries=2, timeout=2)
    started = time.monotonic()
    result, data = site.renew("--no-mail")
    assert result.returncode == 1
    assert "ConnectionError" in data["profiles"][0]["problems"][0]["text"]
    assert time.monotonic() - started < 30


def test_client_secret_readable_by_others_is_refused(site, token_endpoint, pki):
    token, secret = token_site(site, token_endpoint, pki)
    secret.chmod(0o644)
    result, data = site.renew("--no-mail")
    assert result.returncode == 1
    assert f"refused: client secret file {secret} has mode 0644" in data["profiles"][0]["problems"][0]["text"]
    assert token_endpoint.requests == []


def test_panda_client_uses_the_token_profile(site, token_endpoint, pki, sim):
    """The PanDA client reads the token file the token profile maintains."""
    token, _ = token_site(site, token_endpoint, pki)
    site.data["panda"] = {"url": sim.url, "token_profile": "ce1", "token_origin": "atlas", "ca": str(pki.ca_file)}
    site.renew()
    from harvester_cli.instance import Instance

    instance = Instance(site.config())
    assert instance.panda_config.token_file == token
    instance.panda._refresh_token()
    assert instance.panda.session.headers["Authorization"] == f"Bearer {token_endpoint.issued[0]}"
    instance.close()


# ---------------------------------------------------------------------------------------------
# The proxy path reaches the PanDA client, the backends and the pilots


def test_proxy_profile_drives_panda_client_backends_and_pilots(site, pki, sim):
    """A proxy renew-proxy made (builtin tool, from the simulator's test user) is what the PanDA client
    presents: the simulator requires a client certificate."""
    user = {"cert": str(pki.user_cert), "key": str(pki.user_key)}
    panda_proxy = site.proxy("panda", [user], tool="builtin")
    pilots_proxy = site.proxy("pilots", [user], tool="builtin")
    site.data["panda"] = {"url": sim.url, "proxy_profile": "panda", "ca": str(pki.ca_file), "retries": 0}
    site.data["queues"]["Q"]["proxy_profile"] = "pilots"
    site.data["queues"]["R"] = {"mode": "pull", "backend": "local", "pilot": "true"}
    _, data = site.renew()
    assert [p["action"] for p in data["profiles"]] == ["renewed", "renewed"]
    from harvester_cli.instance import Instance

    config = site.config()
    instance = Instance(config)
    assert config.proxies["panda"].file == panda_proxy
    assert instance.panda_config.proxy == panda_proxy
    assert instance.proxy_for(config.queues["Q"]) == pilots_proxy
    assert instance.proxy_for(config.queues["R"]) == panda_proxy
    assert instance.backend(config.queues["Q"]).context.proxy == pilots_proxy
    assert instance.pilot_environment(config.queues["Q"], 1, "SCORE")["X509_USER_PROXY"] == str(pilots_proxy)
    # a call that needs the client certificate: with the profile's proxy it goes through ...
    assert instance.panda.acquire_commands(1) == []
    # ... and without any, the simulator refuses it
    from harvester_cli.errors import PandaError
    from harvester_cli.panda.client import PandaClient

    bare = PandaClient(replace(config.panda, proxy_profile=None), config.harvester_id)
    with pytest.raises(PandaError):
        bare.acquire_commands(1)
    bare.close()
    instance.close()


# ---------------------------------------------------------------------------------------------
# Configuration


def base_config(**proxies) -> dict:
    return {"harvester_id": "h", "panda": {"url": "https://127.0.0.1:9/api/v1"},
            "proxies": proxies, "queues": {"Q": {"mode": "pull", "backend": "local", "pilot": "true"}}}


PROFILE = {"file": "/var/lib/h/proxy.pem", "certificates": [{"cert": "/c.pem", "key": "/k.pem"}]}


@pytest.mark.parametrize("settings,fragment", [
    ({"tool": "grid-proxy-init"}, "tool: expected one of 'voms-proxy-init', 'arcproxy', 'builtin'"),
    ({"tool": "builtin", "voms": "atlas"}, "builtin tool makes proxies without VOMS"),
    ({"voms": "atlas:atlas/Role=production"}, "voms: expected 'vo' or 'vo:/vo/Role=...'"),
    ({"min_lifetime": 400000}, "min_lifetime: (400000) must be less than lifetime (345600)"),
    ({"certificates": []}, "certificates: list at least one"),
    ({"certificates": [{"cert": "/c.pem"}]}, "[proxies.p.certificates[0]] missing required key 'key'"),
    ({"lifetime": -1}, "lifetime: must be at least 600"),
])
def test_bad_proxy_profiles(settings, fragment):
    with pytest.raises(ConfigError) as info:
        config_module.parse(base_config(p={**PROFILE, **settings}), "/etc/h.toml", Path("/"))
    assert fragment in str(info.value)
    assert str(info.value).startswith("/etc/h.toml")


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d["queues"]["Q"].update(proxy_profile="nope"), "[queues.Q] proxy_profile: no [proxies.nope]"),
    (lambda d: d["panda"].update(proxy_profile="nope"), "[panda] proxy_profile: no [proxies.nope]"),
    (lambda d: d["panda"].update(proxy_profile="p", proxy="/x.pem"), "set one of proxy, proxy_profile"),
    (lambda d: d.update(smtp={"security": "tls"}), "[smtp] security: expected one of 'none', 'starttls', 'ssl'"),
    (lambda d: d.update(tokens={"t": {"file": "/t", "endpoint": "http://x/token", "client_id": "c",
                                      "client_secret_file": "/s"}}), "endpoint: expected an https:// URL"),
    (lambda d: d["proxies"].update(q=dict(PROFILE)), "file: /var/lib/h/proxy.pem is also written by [proxies.p]"),
])
def test_bad_credential_references(change, fragment):
    data = base_config(p=dict(PROFILE))
    change(data)
    with pytest.raises(ConfigError) as info:
        config_module.parse(data, "/etc/h.toml", Path("/"))
    assert fragment in str(info.value)


def test_profile_paths_are_relative_to_the_config_file():
    data = base_config(p={"file": "proxy.pem", "certificates": [{"cert": "certs/c.pem", "key": "certs/k.pem"}]})
    cfg = config_module.parse(data, "/etc/h.toml", Path("/etc/h"))
    profile = cfg.proxies["p"]
    assert profile.file == Path("/etc/h/proxy.pem")
    assert profile.certificates[0].cert == Path("/etc/h/certs/c.pem")
    assert profile.tool == "voms-proxy-init" and profile.lifetime == 96 * 3600 and profile.min_lifetime == 72 * 3600


def test_unknown_profile_on_the_command_line_is_exit_2(site, ca):
    site.proxy("prod", [cert(ca.valid)], tool="builtin")
    result = site.cli("renew-proxy", "--profile", "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == "harvester-cli: error: unknown profile 'nope' (configured: prod)"


def test_no_profiles_configured(site):
    result = site.cli("renew-proxy")
    assert result.returncode == 0, result.stderr
    assert "no [proxies.NAME] or [tokens.NAME] profile configured" in result.stdout


def test_redaction_of_secrets_in_log_lines():
    from harvester_cli.site import logs

    logs.register_secret("a-very-secret-passphrase")
    assert logs.redact("key with a-very-secret-passphrase inside") == "key with [redacted] inside"
    assert logs.redact("Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln") == "Authorization: Bearer [redacted]"
    assert logs.redact('{"access_token": "abc.def.ghi", "x": 1}') == '{"access_token": "[redacted]", "x": 1}'
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    assert "MIIEow" not in logs.redact(f"proxy: {pem} end")


def test_a_proxy_file_that_holds_no_certificate_is_named_so_in_one_short_line(tmp_path, pki):
    from harvester_cli.config import ProxyProfile
    from harvester_cli.site.proxies import inspect_proxy

    def problem(data: bytes) -> str | None:
        path = tmp_path / "proxy"
        path.write_bytes(data)
        return inspect_proxy(ProxyProfile("p", path, []), voms_info=False).problem

    assert problem(b"") == "not a proxy: an empty file"
    assert problem(b"\n") == "not a proxy: an empty file"
    assert problem(b"a token, not a proxy\n") == "not a proxy: no PEM certificate in it"
    assert problem(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").startswith(
        "not a proxy: ValueError")
    assert problem(pki.proxy.read_bytes()) is None
