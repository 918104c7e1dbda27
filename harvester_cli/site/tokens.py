"""Bearer tokens: a token file per [tokens.NAME] profile, renewed by an OAuth2 client-credentials
request before it expires."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

from harvester_cli.config import TokenProfile
from harvester_cli.site.alerts import Problem
from harvester_cli.site.credentials import CredentialError, ProfileResult, duration
from harvester_cli.site.logs import redact, register_secret
from harvester_cli.site.secretfiles import (
    SecretFileError,
    locked,
    read_secret_file,
    write_private,
)

log = logging.getLogger(__name__)

def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (not verified: only to know when to renew), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(payload["exp"])
    except (ValueError, KeyError, TypeError):
        return None


def _token_state(profile: TokenProfile) -> Path:
    return profile.file.with_name(f".{profile.file.name}.expires")


def inspect_token(profile: TokenProfile, now: float | None = None) -> tuple[bool, float | None]:
    """(file exists, seconds left). The lifetime is the JWT's `exp`, else what the endpoint said (expires_in),
    recorded beside the file when it was written."""
    now = time.time() if now is None else now
    try:
        token = profile.file.read_text().strip()
    except FileNotFoundError:
        return False, None
    register_secret(token)
    expires = token_expiry(token)
    if expires is None:
        try:
            expires = float(_token_state(profile).read_text().strip())
        except (OSError, ValueError):
            expires = None
    return True, (expires - now) if expires is not None else None


class TokenEndpointError(CredentialError):
    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def request_token(profile: TokenProfile, secret: str) -> tuple[str, float | None]:
    """One client-credentials grant (RFC 6749 4.4, client_secret_basic), retried on connection trouble,
    timeouts, 429 and 5xx. Returns (access token, expires_in)."""
    import requests
    from tenacity import (
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential,
    )

    data = {"grant_type": "client_credentials"}
    if profile.audience:
        data["audience"] = profile.audience
    if profile.scope:
        data["scope"] = profile.scope
    verify: str | bool = str(profile.ca) if profile.ca else True

    def once() -> tuple[str, float | None]:
        try:
            response = requests.post(profile.endpoint, data=data, auth=(profile.client_id, secret),
                                     headers={"Accept": "application/json"}, timeout=(10, profile.timeout),
                                     verify=verify)
        except requests.exceptions.SSLError as exc:
            raise TokenEndpointError(f"token endpoint {profile.endpoint}: TLS: {str(exc)[:160]}", False) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TokenEndpointError(f"token endpoint {profile.endpoint}: {type(exc).__name__}", True) from None
        if response.status_code != 200:
            try:
                body = response.json()
                detail = " ".join(str(body.get(k, "")) for k in ("error", "error_description")).strip()
            except ValueError:
                detail = ""
            raise TokenEndpointError(
                f"token endpoint {profile.endpoint} answered {response.status_code}"
                + (f": {redact(detail)[:160]}" if detail else ""),
                response.status_code == 429 or response.status_code >= 500)
        try:
            body = response.json()
            token = body["access_token"]
        except (ValueError, KeyError, TypeError):
            raise TokenEndpointError(f"token endpoint {profile.endpoint}: answer without access_token", False) from None
        if not isinstance(token, str) or not token.strip():
            raise TokenEndpointError(f"token endpoint {profile.endpoint}: empty access_token", False)
        register_secret(token)
        expires_in = body.get("expires_in")
        return token.strip(), float(expires_in) if isinstance(expires_in, (int, float)) else None

    return Retrying(retry=retry_if_exception(lambda e: isinstance(e, TokenEndpointError) and e.transient),
                    stop=stop_after_attempt(profile.retries + 1), wait=wait_exponential(multiplier=0.5, max=8),
                    reraise=True)(once)


def renew_token(profile: TokenProfile, *, force: bool = False, check_only: bool = False,
                now: float | None = None) -> ProfileResult:
    started = time.monotonic()
    where = f"tokens.{profile.name}"
    result = ProfileResult(profile.name, "token", str(profile.file))
    exists, left = inspect_token(profile, now)
    result.time_left = left
    if not exists:
        reason = "no token file"
    elif left is None:
        reason = "lifetime unknown"
    elif left < profile.min_lifetime:
        reason = f"{duration(left)} left, less than {duration(profile.min_lifetime)}"
    else:
        reason = "forced" if force else None
    result.reason = reason
    if reason is None or check_only:
        result.action = "ok" if reason is None else "would renew"
        result.seconds = time.monotonic() - started
        return result
    # One renewal of a profile at a time: a second cron run waits, then finds the proxy fresh.
    with locked(profile.file):
        try:
            secret = read_secret_file(profile.client_secret_file, "client secret file")
            token, expires_in = request_token(profile, secret)
            expires = token_expiry(token) or (time.time() + expires_in if expires_in else None)
            write_private(profile.file, (token + "\n").encode())
            if token_expiry(token) is None and expires is not None:
                write_private(_token_state(profile), f"{expires:.0f}\n".encode())
            if profile.file.read_text().strip() != token:
                raise CredentialError(f"{profile.file}: written token does not read back")
        except (CredentialError, SecretFileError) as exc:
            result.action = "failed"
            result.problems.append(Problem(f"{where}:renewal", f"[{where}] token renewal failed: {exc}"))
            log.error("%s: token renewal failed: %s", where, exc)
        else:
            result.action = "renewed"
            result.time_left = (expires - time.time()) if expires is not None else None
            log.info("%s: renewed %s (%s left)", where, profile.file, duration(result.time_left))
    result.seconds = time.monotonic() - started
    return result


