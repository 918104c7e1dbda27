"""renew-proxy's problems are mailed to a real SMTP server (aiosmtpd on loopback) once, not twice: a proxy
no certificate can renew, a token endpoint or a token issuer that refuses the client; the mail is
throttled, two runs at once mail once, an SMTP server that is down is retried by the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from harvester_cli import config as config_module
from harvester_cli.site import renewal
from tests.support.credentials import SECRET, cert, mode, token_config, token_site
from tests.support.harness import free_port
from tests.support.mail import body

pytestmark = pytest.mark.credentials


def test_all_certificates_fail_keeps_the_old_proxy(site, ca, smtp):
    proxy = site.proxy("prod", [cert(ca.valid)], tool="builtin")
    site.renew("--no-mail")
    before = proxy.read_bytes()
    site.data["proxies"]["prod"]["certificates"] = [cert(ca.expired)]
    site.mail_to(smtp)
    result, data = site.renew("--force")
    assert result.returncode == 1
    assert data["profiles"][0]["action"] == "failed"
    assert proxy.read_bytes() == before and mode(proxy) == 0o600
    (mail,) = smtp.wait(1)
    text = body(mail)
    assert "renewal failed with all 1 certificate(s)" in text and "expired" in text


def test_alert_mail_is_throttled(site, ca, smtp):
    site.proxy("prod", [cert(ca.expired)], tool="builtin")
    site.mail_to(smtp, throttle=3600)
    _, first = site.renew()
    assert first["alerts"]["sent"]
    _, second = site.renew()
    assert second["alerts"]["sent"] == [] and sorted(second["alerts"]["throttled"]) == sorted(first["alerts"]["sent"])
    time.sleep(0.5)
    assert len(smtp.messages) == 1
    state = json.loads((site.tmp / "logs" / ".state" / "alerts.json").read_text())
    assert set(state) == set(first["alerts"]["sent"])
    assert mode(site.tmp / "logs" / ".state" / "alerts.json") == 0o600
    # once the interval passed, it mails again
    site.data["smtp"]["throttle"] = 0
    _, third = site.renew()
    assert third["alerts"]["sent"]
    assert len(smtp.wait(2)) == 2


def test_two_runs_at_once_mail_once(site, ca, smtp):
    site.proxy("prod", [cert(ca.expired)], tool="builtin")
    site.mail_to(smtp)
    site.write()
    env = {**os.environ, "XDG_STATE_HOME": str(site.tmp / "xdg-state")}
    args = [sys.executable, "-m", "harvester_cli", "--config", str(site.tmp / "config.toml"), "renew-proxy"]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(2)]
    codes = [p.wait(120) for p in runs]
    for p in runs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [1, 1]
    time.sleep(0.5)
    assert len(smtp.messages) == 1


def test_smtp_down_is_reported_and_retried_next_run(site, ca, smtp):
    site.proxy("prod", [cert(ca.expired)], tool="builtin")
    site.mail_to(smtp)
    site.data["smtp"]["port"] = free_port()   # nothing listens
    result, data = site.renew()
    assert result.returncode == 1
    assert "failed" in data["alerts"]["error"] and data["alerts"]["sent"] == []
    site.data["smtp"]["port"] = smtp.port
    _, data = site.renew()
    assert data["alerts"]["sent"]   # not throttled: it was never sent
    assert len(smtp.wait(1)) == 1


def test_token_endpoint_refusal_is_an_alert(site, token_endpoint, pki, smtp):
    token, secret = token_site(site, token_endpoint, pki, retries=3)
    secret.write_text("not-the-right-secret\n")
    site.mail_to(smtp)
    result, data = site.renew()
    assert result.returncode == 1
    (profile,) = data["profiles"]
    assert profile["action"] == "failed"
    assert "401" in profile["problems"][0]["text"] and "invalid_client" in profile["problems"][0]["text"]
    assert len(token_endpoint.requests) == 1   # a refusal is not retried
    assert not token.exists()
    (mail,) = smtp.wait(1)
    assert "not-the-right-secret" not in body(mail)
    assert "not-the-right-secret" not in result.stdout + result.stderr + site.command_log()


def test_issuer_refusal_is_reported_per_ce_and_mailed_once(tmp_path, issuer, pki, smtp):
    data = token_config(tmp_path, issuer.url, pki.ca_file)
    data["smtp"] = {"host": "127.0.0.1", "port": smtp.port, "to": ["ops@example.org"], "timeout": 5, "retries": 1}
    config = config_module.parse(data, "site.toml", tmp_path)
    issuer.add_client("harvester-client", "another secret")
    first = renewal.renew(config)
    assert [r.action for r in first.results] == ["failed", "failed"] and first.partial
    texts = [p.text for p in first.problems]
    assert any(t.startswith("[tokens.ce] CE ce1.example.org, ce1.example.org:9619 (audience ce1.example.org:9619): "
                            "token renewal failed: token endpoint") and "401" in t for t in texts), texts
    second = renewal.renew(config)
    assert sorted(second.alerts.throttled) == sorted(first.alerts.sent) and len(first.alerts.sent) == 2
    (mail,) = smtp.wait(1)
    assert "https://arc1.example.org:443" in body(mail) and SECRET not in body(mail)
