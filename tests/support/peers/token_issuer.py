"""A WLCG token issuer for the tests (INDIGO IAM's part that harvester-cli and the CEs use): a real HTTPS
server on loopback with OIDC discovery (`/.well-known/openid-configuration`), a JWKS endpoint (`/jwks`) and
a client-credentials token endpoint (`/token`, client_secret_basic) that issues RS256- or ES256-signed JWTs
with the WLCG profile claims (iss, sub, aud, scope, wlcg.ver, exp, iat, nbf, jti). Signed with
`cryptography` directly (a JWS is two base64url JSON documents and a signature), so the tests need no JWT
library.

The CEs verify these tokens for real: A-REX and HTCondor's SciTokens library fetch the discovery document
and the JWKS over HTTPS, so the server certificate must be signed by a CA the CE trusts (the tests use the
PanDA simulator's test CA, whose host certificate names localhost and 127.0.0.1).

Test knobs: `clients` (client id -> secret and the scopes it may get), `refuse_next` (HTTP statuses to
answer before issuing), `lifetime`; `mint()` signs any claims (an expired token, a foreign audience).

    python tests/peers/token_issuer.py CERT KEY     # run one by hand; prints its URL, Ctrl-C stops it
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

COMPUTE_SCOPES = "compute.create compute.read compute.modify compute.cancel"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(value: int, size: int | None = None) -> bytes:
    return value.to_bytes(size or (value.bit_length() + 7) // 8, "big")


class SigningKey:
    """One signing key (RS256: RSA 2048, ES256: P-256) and its JWK."""

    def __init__(self, alg: str = "RS256", kid: str | None = None):
        if alg not in ("RS256", "ES256"):
            raise ValueError(f"unsupported alg {alg}")
        self.alg = alg
        self.kid = kid or f"{alg.lower()}-{os.urandom(4).hex()}"
        self.key = rsa.generate_private_key(65537, 2048) if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict:
        public = self.key.public_key().public_numbers()
        if self.alg == "RS256":
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": b64url(_int_bytes(public.n)),
                    "e": b64url(_int_bytes(public.e))}
        return {"kty": "EC", "kid": self.kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": b64url(_int_bytes(public.x, 32)), "y": b64url(_int_bytes(public.y, 32))}

    def sign(self, claims: dict) -> str:
        header = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        if self.alg == "RS256":
            signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:   # JWS wants the raw r || s, not DER
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = _int_bytes(r, 32) + _int_bytes(s, 32)
        return f"{signing_input.decode()}.{b64url(signature)}"


class TokenIssuer:
    """The issuer on https://<host>:<port>; `url` is its `iss`. Start with `start()` (or as a context manager)."""

    def __init__(self, cert: Path, key: Path, *, alg: str = "RS256", host: str = "localhost", lifetime: int = 3600):
        self.cert, self.key_file, self.host = cert, key, host
        # the first key signs what /token issues; the JWKS publishes both kinds, so mint(alg=...) can use either
        self.keys = [SigningKey(alg), SigningKey("ES256" if alg == "RS256" else "RS256")]
        self.lifetime = lifetime
        # client id -> {"secret": ..., "scopes": the scopes this client may be granted}
        self.clients: dict[str, dict] = {}
        self.refuse_next: list[int] = []
        self.requests: list[dict] = []       # every token request: form, client, path
        self.issued: list[str] = []
        self.jwks_fetches = 0
        self._lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    # -- tokens ------------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str, scopes: str = COMPUTE_SCOPES) -> None:
        self.clients[client_id] = {"secret": secret, "scopes": scopes.split()}

    def claims(self, sub: str, aud: str | list[str] | None, scope: str, lifetime: int | None = None,
               now: float | None = None) -> dict:
        now = int(time.time() if now is None else now)
        lifetime = self.lifetime if lifetime is None else lifetime
        claims = {"wlcg.ver": "1.0", "iss": self.url, "sub": sub, "scope": scope, "iat": now,
                  "nbf": min(now, now + lifetime), "exp": now + lifetime, "jti": os.urandom(12).hex()}
        if aud:
            claims["aud"] = aud
        return claims

    def mint(self, sub: str = "harvester-client", aud: str | list[str] | None = None, scope: str = COMPUTE_SCOPES,
             lifetime: int | None = None, alg: str | None = None, **extra) -> str:
        """A signed token with any claims (e.g. lifetime=-600 for one that expired ten minutes ago)."""
        key = next(k for k in self.keys if alg in (None, k.alg))
        token = key.sign({**self.claims(sub, aud, scope, lifetime), **extra})
        self.issued.append(token)
        return token

    # -- server ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.httpd is not None, "start() the issuer first"
        return f"https://{self.host}:{self.httpd.server_address[1]}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/token"

    def start(self) -> TokenIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict, extra: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlsplit(self.path).path
                if path.rstrip("/") == "/.well-known/openid-configuration":
                    self._answer(200, {
                        "issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                        "token_endpoint": issuer.token_endpoint, "grant_types_supported": ["client_credentials"],
                        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                        "id_token_signing_alg_values_supported": sorted({k.alg for k in issuer.keys}),
                        "scopes_supported": ["openid", *COMPUTE_SCOPES.split()],
                        "response_types_supported": ["token"], "subject_types_supported": ["public"]})
                elif path == "/jwks":
                    with issuer._lock:
                        issuer.jwks_fetches += 1
                    self._answer(200, {"keys": [k.jwk() for k in issuer.keys]})
                else:
                    self._answer(404, {"error": "not_found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                client_id, secret = self._basic()
                with issuer._lock:
                    issuer.requests.append({"form": form, "client": client_id, "path": self.path})
                    refuse = issuer.refuse_next.pop(0) if issuer.refuse_next else None
                if urlsplit(self.path).path != "/token":
                    self._answer(404, {"error": "not_found"})
                elif refuse:
                    self._answer(refuse, {"error": "temporarily_unavailable"})
                elif client_id not in issuer.clients or issuer.clients[client_id]["secret"] != secret:
                    self._answer(401, {"error": "invalid_client", "error_description": "Bad client credentials"},
                                 {"WWW-Authenticate": 'Basic realm="token"'})
                elif form.get("grant_type") != "client_credentials":
                    self._answer(400, {"error": "unsupported_grant_type"})
                else:
                    allowed = issuer.clients[client_id]["scopes"]
                    asked = (form.get("scope") or " ".join(allowed)).split()
                    # IAM grants the requested scopes the client is allowed, silently dropping the others
                    scope = " ".join(s for s in asked if s in allowed)
                    audience = form.get("audience")
                    aud = audience.split() if audience and " " in audience else audience
                    token = issuer.keys[0].sign(issuer.claims(client_id, aud, scope))
                    with issuer._lock:
                        issuer.issued.append(token)
                    self._answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": issuer.lifetime,
                                       "scope": scope})

            def _basic(self) -> tuple[str | None, str | None]:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return None, None
                try:
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                except ValueError:
                    return None, None
                return user, password

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key_file))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self) -> TokenIssuer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def decode(token: str) -> dict:
    """The claims of a JWT, unverified (for assertions)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def public_key_pem(key: SigningKey) -> bytes:
    return key.key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


if __name__ == "__main__":
    with TokenIssuer(Path(sys.argv[1]), Path(sys.argv[2])) as server:
        server.add_client("harvester-client", "client-secret")
        print(f"issuer {server.url}, client harvester-client / client-secret", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
