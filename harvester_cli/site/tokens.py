"""Bearer tokens: a token file per [tokens.NAME] profile, or with `directory` one token per CE, renewed by an
OAuth2 client-credentials request before it expires.

Per CE: the profile expands over the ACTIVE CEs of every queue whose `ce_token_profile` names it (listed in
the queue's backend options, or read from its CRIC file; config.ces). Each CE's audience is its normalised
endpoint (site.bearer.ce_audience); CEs with the same audience share one token and one issuer
call. The file of an audience is `<directory>/<audience as a file name>`, so a backend finds a CE's token
from its endpoint alone (`ce_token`) and renewal never goes through a worker.

`list_tokens` is the plain listing `status` (and metrics) show: every token file with its seconds left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from harvester_cli.config import Config, TokenProfile
from harvester_cli.config.ces import queue_ces
from harvester_cli.site import bearer
from harvester_cli.site.alerts import Problem
from harvester_cli.site.credentials import CredentialError, ProfileResult, duration
from harvester_cli.site.logs import redact, register_secret
from harvester_cli.site.secretfiles import (
    SecretFileError,
    locked,
    read_secret_file,
    read_token,
    write_private,
)

log = logging.getLogger(__name__)


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (not verified: only to know when to renew), or None."""
    return bearer.expiry(token)


@dataclass(frozen=True)
class TokenTarget:
    """One token a profile keeps: its file, the audience and scopes it asks for, the CEs it serves."""

    profile: str
    file: Path
    audience: str | None
    scope: str | None
    ces: tuple[str, ...] = ()


@dataclass
class Expansion:
    targets: list[TokenTarget] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def ce_token_file(profile: TokenProfile, audience: str) -> Path:
    assert profile.directory is not None
    return profile.directory / bearer.file_name(audience)


def ce_token(profile: TokenProfile, endpoint: str, flavour: str) -> tuple[Path, str]:
    """(token file, audience) of one CE of a per-CE profile."""
    audience = bearer.ce_audience(endpoint, flavour, profile.audience_formats)
    return ce_token_file(profile, audience), audience


def expand(config: Config, profile: TokenProfile) -> Expansion:
    """The tokens a profile keeps: its one file, or one per distinct CE audience of the queues using it."""
    if not profile.per_ce:
        assert profile.file is not None
        return Expansion([TokenTarget(profile.name, profile.file, profile.audience, profile.scopes)])
    out = Expansion()
    by_audience: dict[str, list[str]] = {}
    for queue in config.queues.values():
        if queue.ce_token_profile != profile.name:
            continue
        try:
            ces = queue_ces(queue)
        except ValueError as exc:   # the other queues' CEs still get their tokens
            out.problems.append(Problem(f"tokens.{profile.name}:{queue.name}:ces",
                                        f"[tokens.{profile.name}] queue {queue.name}: {exc}"))
            continue
        for ce in ces:
            audience = bearer.ce_audience(ce.endpoint, ce.flavour, profile.audience_formats)
            endpoints = by_audience.setdefault(audience, [])
            if ce.endpoint not in endpoints:
                endpoints.append(ce.endpoint)
    files: dict[Path, str] = {}
    for audience, endpoints in by_audience.items():
        path = ce_token_file(profile, audience)
        if files.setdefault(path, audience) != audience:
            out.problems.append(Problem(f"tokens.{profile.name}:{path.name}:clash",
                                        f"[tokens.{profile.name}] audiences {files[path]} and {audience} give the "
                                        f"same file name {path.name}; change audience_formats"))
            continue
        out.targets.append(TokenTarget(profile.name, path, audience, profile.scopes, tuple(endpoints)))
    return out


def _expires_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.expires")


def inspect_file(path: Path, now: float | None = None) -> tuple[bool, float | None]:
    """(file exists, seconds left). The lifetime is the JWT's `exp`, else what the endpoint said (expires_in),
    recorded beside the file when it was written."""
    now = time.time() if now is None else now
    if not path.exists():
        return False, None
    try:
        token = read_token(path)
    except SecretFileError:   # unreadable, or not a token: its lifetime is unknown
        return True, None
    expires = bearer.expiry(token)
    if expires is None:
        try:
            expires = float(_expires_file(path).read_text().strip())
        except (OSError, ValueError):
            expires = None
    return True, (expires - now) if expires is not None else None


def inspect_token(profile: TokenProfile, now: float | None = None) -> tuple[bool, float | None]:
    assert profile.file is not None
    return inspect_file(profile.file, now)


def list_tokens(config: Config, now: float | None = None) -> list[dict]:
    """Every token file the configuration keeps, with its seconds left (None: unknown or missing):
    [{"profile", "file", "audience", "ces", "exists", "seconds_left"}]. Plain data for status and metrics."""
    now = time.time() if now is None else now
    rows = []
    for profile in config.tokens.values():
        expansion = expand(config, profile)
        seen = set()
        for target in expansion.targets:
            exists, left = inspect_file(target.file, now)
            seen.add(target.file)
            rows.append({"profile": profile.name, "file": str(target.file), "audience": target.audience,
                         "ces": list(target.ces), "exists": exists, "seconds_left": left})
        if profile.directory is not None and profile.directory.is_dir():
            # a CE that left every queue keeps its file until someone removes it: still worth seeing
            for path in sorted(profile.directory.iterdir()):
                if path in seen or path.name.startswith(".") or not path.is_file():
                    continue
                exists, left = inspect_file(path, now)
                try:
                    aud = (bearer.claims(read_token(path)) or {}).get("aud")
                except SecretFileError:
                    aud = None
                rows.append({"profile": profile.name, "file": str(path), "audience": aud, "ces": [],
                             "exists": exists, "seconds_left": left})
    return rows


class TokenEndpointError(CredentialError):
    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def request_token(profile: TokenProfile, secret: str, audience: str | None = None,
                  scope: str | None = None) -> tuple[str, float | None]:
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
    if audience:
        data["audience"] = audience
    if scope:
        data["scope"] = scope
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


def renew_profile(config: Config, profile: TokenProfile, *, force: bool = False, check_only: bool = False,
                  now: float | None = None) -> list[ProfileResult]:
    """Check every token of a profile, renew those below min_lifetime: one issuer call per audience."""
    expansion = expand(config, profile)
    results = [_renew_target(profile, target, force=force, check_only=check_only, now=now)
               for target in expansion.targets]
    if expansion.problems or (profile.per_ce and not expansion.targets):
        result = ProfileResult(profile.name, "token", str(profile.directory), action="failed")
        result.problems = list(expansion.problems) or [Problem(
            f"tokens.{profile.name}:no-ces", f"[tokens.{profile.name}] no CE to make a token for: no queue with "
                                             f"ce_token_profile = \"{profile.name}\" lists an ACTIVE CE")]
        for problem in result.problems:
            log.error("%s", problem.text)
        results.append(result)
    return results


def renew_token(profile: TokenProfile, *, force: bool = False, check_only: bool = False,
                now: float | None = None) -> ProfileResult:
    """A single-file profile."""
    assert profile.file is not None
    return _renew_target(profile, TokenTarget(profile.name, profile.file, profile.audience, profile.scopes),
                         force=force, check_only=check_only, now=now)


def _renew_target(profile: TokenProfile, target: TokenTarget, *, force: bool, check_only: bool,
                  now: float | None) -> ProfileResult:
    started = time.monotonic()
    where = f"tokens.{profile.name}"
    what = f"[{where}] " + (f"CE {', '.join(target.ces)} (audience {target.audience}): " if target.ces else "")
    result = ProfileResult(profile.name, "token", str(target.file), audience=target.audience, ces=list(target.ces))
    exists, left = inspect_file(target.file, now)
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
    # One renewal at a time (the lock is on the token's directory): a second cron run waits, then finds it fresh.
    with locked(target.file):
        exists, left = inspect_file(target.file)
        if exists and left is not None and left >= profile.min_lifetime and not force:
            result.action, result.reason, result.time_left = "ok", None, left
            result.seconds = time.monotonic() - started
            return result
        try:
            secret = read_secret_file(profile.client_secret_file, "client secret file")
            token, expires_in = request_token(profile, secret, target.audience, target.scope)
            expires = bearer.expiry(token) or (time.time() + expires_in if expires_in else None)
            write_private(target.file, (token + "\n").encode())
            if bearer.expiry(token) is None and expires is not None:
                write_private(_expires_file(target.file), f"{expires:.0f}\n".encode())
            if target.file.read_text().strip() != token:
                raise CredentialError(f"{target.file}: written token does not read back")
        except (CredentialError, SecretFileError) as exc:
            result.action = "failed"
            key = f"{where}:{target.audience}:renewal" if target.ces else f"{where}:renewal"
            result.problems.append(Problem(key, f"{what}token renewal failed: {exc}"))
            log.error("%stoken renewal failed: %s", what, exc)
        else:
            result.action = "renewed"
            result.time_left = (expires - time.time()) if expires is not None else None
            log.info("%srenewed %s (%s left)", what or f"{where}: ", target.file, duration(result.time_left))
    result.seconds = time.monotonic() - started
    return result
