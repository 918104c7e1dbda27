"""Credentials without a CE: a grid CA of our own, a site whose configuration has proxy and token
profiles and the CLI run against it, an OAuth2 token endpoint over HTTPS and a token issuer of our own
(both in this process), the grid tools a test needs. The SMTP server for alert mails: mail.py."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import pytest

from harvester_cli import config as config_module
from tests.support.harness import to_toml
from tests.support.peers import grid_ca  # tests/support/peers has shell and Python peers, no __init__
from tests.support.peers.token_issuer import TokenIssuer

if TYPE_CHECKING:
    from tests.support.mail import Mailbox

TOOLS = {"voms-proxy-init": "voms-clients", "voms-proxy-info": "voms-clients", "voms-proxy-fake": "voms-clients",
         "arcproxy": "nordugrid-arc-client"}


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {TOOLS.get(name, name)} (scripts/apt-packages.txt "
                    f"lists it; bash scripts/test installs it as root)")
    return path


# ---------------------------------------------------------------------------------------------
# A grid CA, a token endpoint


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    grid = grid_ca.make_ca(tmp_path_factory.mktemp("grid-ca"))
    grid.expired = grid.user("expired user", hours=24, start_hours_ago=72)
    grid.valid = grid.user("valid user")
    grid.second = grid.user("second user")
    return grid


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


# Tokens

def token_site(site, endpoint, pki, **settings) -> tuple[Path, Path]:
    secret = site.tmp / "client.secret"
    secret.write_text(endpoint.secret + "\n")
    secret.chmod(0o600)
    token = site.tmp / "tokens" / "ce1.token"
    site.data["tokens"] = {"ce1": {"file": str(token), "endpoint": endpoint.url, "client_id": endpoint.client_id,
                                   "client_secret_file": str(secret), "audience": "https://ce1.example.org:9619",
                                   "scope": "compute.create compute.read", "ca": str(pki.ca_file), **settings}}
    return token, secret


SECRET = "unit-planted-secret-93e1"


def token_config(tmp_path: Path, issuer_url: str, ca: Path | None = None, **extra) -> dict:
    """A site with a per-CE token profile [tokens.ce] and an HTCondor, an ARC and a local queue."""
    secret = tmp_path / "client.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    data = {
        "harvester_id": "tok", "state": str(tmp_path / "state.db"), "log_dir": str(tmp_path / "logs"),
        "panda": {"url": "https://127.0.0.1:9/api/v1", "token_file": str(tmp_path / "panda.token"),
                  "token_origin": "atlas"},
        "tokens": {"ce": {"directory": str(tmp_path / "ce"), "endpoint": f"{issuer_url}/token",
                          "client_id": "harvester-client", "client_secret_file": str(secret),
                          **({"ca": str(ca)} if ca else {})}},
        "queues": {
            "HTC": {"mode": "pull", "backend": "htcondor", "pilot": "true", "ce_credentials": "token", "ce_token_profile": "ce",
                    "backend_options": {"ces": [{"endpoint": "ce1.example.org"},
                                                {"endpoint": "ce1.example.org:9619", "queue": "long"},
                                                {"endpoint": "ce2.example.org", "state": "DISABLED"},
                                                {"endpoint": "arc1.example.org", "flavour": "arc-ce"}]}},
            "ARC": {"mode": "pull", "backend": "arc", "pilot": "true", "ce_credentials": "both", "ce_token_profile": "ce",
                    "backend_options": {"endpoints": ["https://arc1.example.org:443/arex"]}},
            "LOCAL": {"mode": "pull", "backend": "local", "pilot": "true"},
        },
    }
    for key, value in extra.items():
        data[key] = value
    return data


@pytest.fixture
def issuer(pki):
    """A token issuer of our own (peers/token_issuer.py) that knows the client of token_config."""
    with TokenIssuer(pki.host_cert, pki.host_key) as server:
        server.add_client("harvester-client", SECRET)
        yield server
