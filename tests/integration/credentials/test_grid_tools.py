"""renew-proxy with the real tools: voms-proxy-init and arcproxy make proxies from a test CA with one expired
and one valid user certificate; the fallback picks the valid one; voms-proxy-info reads what was made.

Tests marked `voms` need voms-clients and nordugrid-arc-client (scripts/apt-packages.txt): they fail, not
skip, when the tools are missing.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from harvester_cli import config as config_module
from harvester_cli.site import credentials, proxies
from tests.support.credentials import cert, mode, need_tool
from tests.support.harness import free_port
from tests.support.mail import body

pytestmark = pytest.mark.credentials


# ---------------------------------------------------------------------------------------------
# The real tools: fallback from the expired certificate to the valid one


@pytest.mark.voms
@pytest.mark.parametrize("tool", ["voms-proxy-init", "arcproxy", "builtin"])
def test_fallback_picks_the_valid_certificate(site, ca, smtp, tool):
    if tool != "builtin":
        need_tool(tool)
    proxy = site.proxy("prod", [cert(ca.expired), cert(ca.valid)], tool=tool, ca_dir=ca.certdir)
    site.mail_to(smtp)
    started = time.monotonic()
    result, data = site.renew()
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr   # renewed, but the expired certificate is an alert
    (profile,) = data["profiles"]
    assert profile["action"] == "renewed"
    assert profile["certificate"] == str(ca.valid.cert)
    assert profile["identity"] == ca.valid.dn
    first, second = profile["attempts"]
    assert not first["ok"] and "expired" in first["reason"]
    assert second["ok"]
    assert proxy.exists() and mode(proxy) == 0o600
    assert profile["time_left"] > 95 * 3600
    print(f"\n{tool}: renew with fallback {elapsed:.2f} s (tool run {second['seconds']:.2f} s)")
    # the real tools accept what was made
    if shutil.which("voms-proxy-info"):
        check = subprocess.run(["voms-proxy-info", "-file", str(proxy), "-exists", "-valid", "95:00"],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        identity = subprocess.run(["voms-proxy-info", "-file", str(proxy), "-identity"], capture_output=True, text=True)
        assert identity.stdout.strip() == ca.valid.dn
    # the alert arrived, once
    (mail,) = smtp.wait(1)
    assert "expired user" in body(mail) or "expired-user-cert.pem" in body(mail)
    assert mail["To"] == "ops@example.org"
    assert data["alerts"]["sent"] and not data["alerts"]["error"]


@pytest.mark.voms
@pytest.mark.parametrize("tool", ["voms-proxy-init", "arcproxy"])
def test_the_tool_itself_refuses_an_expired_certificate(tmp_path, ca, tool):
    """Past our own pre-check: the real tool, given the expired certificate, makes no usable proxy."""
    need_tool(tool)
    profile = config_module.ProxyProfile(name="p", file=tmp_path / "p.pem", tool=tool, ca=ca.certdir,
                                         certificates=[config_module.CertificateConfig(ca.expired.cert, ca.expired.key)])
    out = tmp_path / "candidate.pem"
    try:
        proxies.TOOLS[tool](profile, profile.certificates[0], out, None)
    except credentials.CredentialError as exc:
        # "ERROR: Your certificate expired <date>" / "Proxy generation failed: Certificate has expired."
        assert "expired" in str(exc).lower() and "your identity" not in str(exc).lower(), exc
        print(f"\n{tool} on the expired certificate: {exc}")
    else:
        pytest.fail(f"{tool} made a proxy from an expired certificate and exited 0")


@pytest.mark.voms
@pytest.mark.parametrize("tool", ["voms-proxy-init", "arcproxy", "builtin"])
def test_encrypted_key_wrong_then_right_passphrase(site, ca, tool, tmp_path):
    """A failing tool run (wrong passphrase) is skipped like an expired certificate; the passphrase
    reaches the tool on stdin and never shows in output or logs."""
    if tool != "builtin":
        need_tool(tool)
    locked = ca.user(f"locked user {tool}", passphrase="right-horse-battery")
    wrong, right = tmp_path / "wrong.pass", tmp_path / "right.pass"
    for path, text in ((wrong, "wrong-horse-battery\n"), (right, "right-horse-battery\n")):
        path.write_text(text)
        path.chmod(0o600)
    proxy = site.proxy("locked", [cert(locked, passphrase_file=wrong), cert(locked, passphrase_file=right)],
                       tool=tool, ca_dir=ca.certdir)
    result, data = site.renew("--no-mail")
    (profile,) = data["profiles"]
    assert profile["action"] == "renewed", profile
    first, second = profile["attempts"]
    assert not first["ok"] and second["ok"], profile["attempts"]
    assert mode(proxy) == 0o600
    for text in (result.stdout, result.stderr, site.command_log()):
        assert "right-horse-battery" not in text and "wrong-horse-battery" not in text


@pytest.mark.voms
def test_key_readable_by_others_is_refused(site, ca):
    loose = ca.user("loose user", key_mode=0o644)
    site.proxy("loose", [cert(loose)], tool="voms-proxy-init", ca_dir=ca.certdir)
    result, data = site.renew("--no-mail")
    assert result.returncode == 1
    (profile,) = data["profiles"]
    assert profile["action"] == "failed"
    (attempt,) = profile["attempts"]
    assert attempt["reason"] == f"refused: key {loose.key} has mode 0644, readable by others; run chmod 600 {loose.key}"
    assert not (site.tmp / "proxies" / "loose.pem").exists()


@pytest.mark.voms
@pytest.mark.parametrize("tool", ["voms-proxy-init", "arcproxy"])
def test_voms_attribute_lifetime_and_fqan_are_read(site, ca, tool):
    fake = need_tool("voms-proxy-fake")
    need_tool(tool)
    voms_cert, voms_key = ca.voms_server("atlas")
    vomses = site.tmp / "vomses"   # a VOMS server on loopback where nothing listens
    vomses.write_text(f'"atlas" "127.0.0.1" "{free_port()}" "/DC=org/DC=harvester-cli/CN=voms.test.example" "atlas"\n')
    proxy = site.proxy("atlas", [cert(ca.valid)], tool=tool, ca_dir=ca.certdir, vomsdir=str(ca.vomsdir),
                       vomses=str(vomses), voms="atlas:/atlas/Role=production", timeout=30)
    proxy.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([fake, "-rfc", "-cert", str(ca.valid.cert), "-key", str(ca.valid.key),
                           "-certdir", str(ca.certdir), "-hostcert", str(voms_cert), "-hostkey", str(voms_key),
                           "-voms", "atlas", "-uri", "voms.test.example:15000", "-fqan", "/atlas/Role=production",
                           "-hours", "96", "-vomslife", "2", "-out", str(proxy)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    before = proxy.read_bytes()
    result, data = site.renew("--check")
    (profile,) = data["profiles"]
    assert profile["fqans"] == ["/atlas/Role=production"]
    assert profile["action"] == "would renew"
    assert profile["reason"].startswith("VOMS attribute has 1h5") or profile["reason"].startswith("VOMS attribute has 2h00")
    # Renewal needs the VOMS server, which does not answer: the real tool fails, it is reported, and the
    # proxy in place stays as it was.
    result, data = site.renew("--no-mail")
    assert result.returncode == 1
    (profile,) = data["profiles"]
    assert profile["action"] == "failed"
    reason = profile["attempts"][0]["reason"]
    assert reason.startswith(f"{tool} exited 1: ") and ("error" in reason.lower() or "failed" in reason.lower()), reason
    print(f"\n{tool} without a VOMS server: {profile['attempts'][0]['reason']}")
    assert proxy.read_bytes() == before
