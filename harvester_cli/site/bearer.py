"""WLCG bearer tokens as data (pure: no I/O, standard library and config.ces only): a token's claims, a CE's
audience, the file a per-CE token lives in, and why a CE would refuse a token. Used by the token renewal
(site.tokens) and by the grid backends to explain a refusal.

Nothing here verifies a signature: the claims are read only to know when to renew and to explain a refusal
(A-REX answers a bare 403 for a token of the wrong audience, an expired one and one without
compute.create alike; the HTCondor client says only "Failed to authenticate using SCITOKENS").

Audiences (`ce_audience`): WLCG tokens name the CE they are for in `aud`. A CE endpoint is written many
ways (CRIC: "host", "host:port", an https URL with a path); it is normalised to a lower-case host and an
explicit port (the flavour's default when none is given: HTCondor-CE 9619, ARC-CE 443), then formatted
per flavour: HTCondor-CE checks `host:port` (its SCITOKENS_SERVER_AUDIENCE convention), ARC-CE
`https://host:port` (config.ces.AUDIENCE_FORMATS). A profile may change the formats (`audience_formats`).
"""

from __future__ import annotations

import base64
import json
import re
import time

from harvester_cli.config.ces import AUDIENCE_FORMATS, DEFAULT_PORTS

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def claims(token: str) -> dict | None:
    """The JWT's payload (not verified), or None if it is not a JWT."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


def expiry(token: str) -> float | None:
    """The `exp` claim, or None."""
    exp = (claims(token) or {}).get("exp")
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def split_endpoint(endpoint: str, flavour: str | None = None) -> tuple[str, int | None]:
    """(host, port) of "host", "host:port" or "https://host:port/path"; the flavour's default port if none."""
    rest = endpoint.strip().split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if sep and port.isdigit():
        return host.lower(), int(port)
    return rest.lower(), DEFAULT_PORTS.get(flavour or "")


def ce_audience(endpoint: str, flavour: str, formats: dict[str, str] | None = None) -> str:
    """The `aud` a token for this CE carries, e.g. "ce.example.org:9619" or "https://arc.example.org:443"."""
    host, port = split_endpoint(endpoint, flavour)
    template = (formats or {}).get(flavour) or AUDIENCE_FORMATS.get(flavour) or "{host}:{port}"
    return template.format(host=host, port=port if port is not None else "")


def file_name(audience: str) -> str:
    """A token file's name for an audience: "ce.example.org_9619", "https_arc.example.org_443"."""
    return _UNSAFE.sub("_", audience).strip("_") or "token"


def refusal_reason(token: str | None, audience: str | None, scope: str = "compute.create",
                   now: float | None = None, peer: str = "CE") -> str:
    """What in the token makes a CE (or schedd: `peer`) expecting `audience` and `scope` refuse it (one line,
    no secret)."""
    if not token:
        return "the token file is empty"
    payload = claims(token)
    if payload is None:
        return "the token file does not hold a JWT"
    now = time.time() if now is None else now
    problems = []
    exp = payload.get("exp")
    if isinstance(exp, (int, float)) and exp <= now:
        problems.append(f"the token expired {int(now - exp)} s ago (is renew-proxy running?)")
    aud = payload.get("aud")
    auds = aud if isinstance(aud, list) else [aud] if aud else []
    if audience and audience not in auds:
        problems.append(f"its audience {' '.join(map(str, auds)) or '(none)'} is not this {peer}'s {audience}")
    scopes = str(payload.get("scope") or "").split()
    if scope and scope not in scopes:
        problems.append(f"its scope {' '.join(scopes) or '(none)'} lacks {scope}")
    if problems:
        return "; ".join(problems)
    return (f"the token looks right to harvester-cli (aud {' '.join(map(str, auds)) or '(none)'}, iss "
            f"{payload.get('iss')}): check that the {peer} trusts this issuer and expects this audience")
