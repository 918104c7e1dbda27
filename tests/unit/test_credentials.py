"""renew-proxy with the real tools: voms-proxy-init and arcproxy make proxies from a test CA with one expired
and one valid user certificate; the fallback picks the valid one; problems are mailed to a real SMTP server
(aiosmtpd on loopback) once, not twice; token files come from a real HTTPS token endpoint started here.

Tests marked `voms` need voms-clients and nordugrid-arc-client (scripts/apt-packages.txt): they fail, not
skip, when the tools are missing.
"""

from __future__ import annotations

import base64
import email
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from harvester_cli import config as config_module
from harvester_cli.errors import ConfigError
from harvester_cli.site import credentials, proxies
from tests.conftest import to_toml

pytestmark = pytest.mark.credentials

from tests.support.peers import grid_ca  # noqa: E402  (tests/support/peers has shell and Python peers, no __init__)

TOOLS = {"voms-proxy-init": "voms-clients", "voms-proxy-info": "voms-clients", "voms-proxy-fake": "voms-clients",
         "arcproxy": "nordugrid-arc-client"}


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {TOOLS.get(name, name)} (scripts/apt-packages.txt "
                    f"lists it; bash scripts/test installs it as root)")
    return path


# ---------------------------------------------------------------------------------------------
# Peers: a grid CA, an SMTP server, a token endpoint


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    grid = grid_ca.make_ca(tmp_path_factory.mktemp("grid-ca"))
    grid.expired = grid.user("expired user", hours=24, start_hours_ago=72)
    grid.valid = grid.user("valid user")
    grid.second = grid.user("second user")
    return grid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    def __init__(self):
        self.messages: list[email.message.Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def wait(self, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < count:
            time.sleep(0.05)
        return list(self.messages)


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


def make_jwt(claims: dict) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


class TokenEndpoint:
    """A small OAuth2 token endpoint over HTTPS (client_credentials, client_secret_basic)."""

    def __init__(self, pki, client_id: str, secret: str, lifetime: int = 3600):
        self.client_id, self.secret, self.lifetime = client_id, secret, lifetime
        self.requests: list[dict] = []
        self.fail_next: list[int] = []   # status codes to answer before succeeding
        self.issued: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                auth = self.headers.get("Authorization", "")
                endpoint.requests.append({"form": form, "auth": auth, "path": self.path})
                if endpoint.fail_next:
                    self._answer(endpoint.fail_next.pop(0), {"error": "temporarily_unavailable"})
                    return
                expected = "Basic " + base64.b64encode(f"{endpoint.client_id}:{endpoint.secret}".encode()).decode()
                if auth != expected:
                    self._answer(401, {"error": "invalid_client", "error_description": "bad client credentials"})
                    return
                if form.get("grant_type") != "client_credentials":
                    self._answer(400, {"error": "unsupported_grant_type"})
                    return
                token = make_jwt({"sub": endpoint.client_id, "aud": form.get("audience"), "scope": form.get("scope"),
                                  "exp": int(time.time()) + endpoint.lifetime, "jti": os.urandom(8).hex()})
                endpoint.issued.append(token)
                self._answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": endpoint.lifetime})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki.host_cert), str(pki.host_key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_endpoint(pki):
    endpoint = TokenEndpoint(pki, "harvester-client", "s3cr3t-client-secret-value")
    yield endpoint
    endpoint.close()


# ---------------------------------------------------------------------------------------------
# Running the CLI


class Site:
    """A configuration with proxy/token profiles, written to a file, and the CLI run against it."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.data = {"harvester_id": "cred-test", "state": str(tmp_path / "state.db"),
                     "log_dir": str(tmp_path / "logs"),
                     "panda": {"url": "https://127.0.0.1:9/api/v1", "retries": 0, "timeout": 2},
                     "queues": {"Q": {"mode": "pull", "backend": "local", "pilot": "true"}}}

    def proxy(self, name: str, certs: list, tool: str = "voms-proxy-init", **settings) -> Path:
        path = self.tmp / "proxies" / f"{name}.pem"
        self.data.setdefault("proxies", {})[name] = {
            "file": str(path), "tool": tool, "ca": str(settings.pop("ca_dir", None) or ""),
            "certificates": certs, **settings}
        if not self.data["proxies"][name]["ca"]:
            del self.data["proxies"][name]["ca"]
        return path

    def mail_to(self, box: Mailbox, **settings):
        self.data["smtp"] = {"host": "127.0.0.1", "port": box.port, "to": ["ops@example.org"], "timeout": 5,
                             "retries": 1, **settings}

    def write(self) -> Path:
        path = self.tmp / "config.toml"
        path.write_text(to_toml_with_certs(self.data))
        return path

    def config(self):
        return config_module.load(self.write())

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        self.write()
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.tmp / "xdg"), "XDG_STATE_HOME": str(self.tmp / "xdg-state")}
        return subprocess.run([sys.executable, "-m", "harvester_cli", "--config", str(self.tmp / "config.toml"), *args],
                              capture_output=True, text=True, env=env, timeout=300)

    def renew(self, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
        result = self.cli("--json", "renew-proxy", *args)
        assert result.returncode in (0, 1), (result.returncode, result.stderr)
        return result, json.loads(result.stdout)

    def command_log(self, name: str = "renew-proxy") -> str:
        return (self.tmp / "logs" / "commands" / f"{name}.log").read_text()


def to_toml_with_certs(data: dict) -> str:
    """conftest's to_toml plus arrays of inline tables (certificates = [{cert=..., key=...}])."""
    data = json.loads(json.dumps(data, default=str))
    certs = {}
    for name, profile in data.get("proxies", {}).items():
        certs[name] = profile.pop("certificates")
    text = to_toml(data)
    for name, entries in certs.items():
        inline = ", ".join("{" + ", ".join(f"{k} = {json.dumps(str(v))}" for k, v in e.items()) + "}" for e in entries)
        text = text.replace(f"[proxies.{name}]\n", f"[proxies.{name}]\ncertificates = [{inline}]\n", 1)
    return text


def cert(user, **extra) -> dict:
    return {"cert": str(user.cert), "key": str(user.key), **extra}


@pytest.fixture
def site(tmp_path) -> Site:
    return Site(tmp_path)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


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
    assert "expired user" in mail.get_payload() or "expired-user-cert.pem" in mail.get_payload()
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
    body = mail.get_payload()
    assert "renewal failed with all 1 certificate(s)" in body and "expired" in body


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
# Alerts: once, not twice


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


# ---------------------------------------------------------------------------------------------
# VOMS attributes: read with the real info tools from a proxy voms-proxy-fake made


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


# ---------------------------------------------------------------------------------------------
# Tokens: a real HTTPS endpoint, client-credentials grant


def token_site(site, endpoint, pki, **settings) -> tuple[Path, Path]:
    secret = site.tmp / "client.secret"
    secret.write_text(endpoint.secret + "\n")
    secret.chmod(0o600)
    token = site.tmp / "tokens" / "ce1.token"
    site.data["tokens"] = {"ce1": {"file": str(token), "endpoint": endpoint.url, "client_id": endpoint.client_id,
                                   "client_secret_file": str(secret), "audience": "https://ce1.example.org:9619",
                                   "scope": "compute.create compute.read", "ca": str(pki.ca_file), **settings}}
    return token, secret


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
    assert "not-the-right-secret" not in mail.get_payload()
    assert "not-the-right-secret" not in result.stdout + result.stderr + site.command_log()


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
