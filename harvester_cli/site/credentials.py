"""What every credential profile shares: the result of checking or renewing one, and its errors.

`proxies` keeps X.509 proxy files alive ([proxies.NAME]), `tokens` bearer token files ([tokens.NAME]),
and `renewal` runs `renew-proxy` over all of them and mails what needs attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harvester_cli.errors import HarvesterError
from harvester_cli.model import duration  # noqa: F401  (proxies and tokens word their messages with it)
from harvester_cli.site.alerts import Problem


class CredentialError(HarvesterError):
    """One renewal attempt failed; the text is one line for the operator (never a secret)."""


@dataclass
class Attempt:
    certificate: str
    ok: bool
    reason: str | None = None
    seconds: float = 0.0


@dataclass
class ProfileResult:
    profile: str
    kind: str                           # "proxy" or "token"
    file: str
    action: str = "ok"                  # ok | renewed | would renew | failed
    reason: str | None = None           # why it was (or would be) renewed
    time_left: float | None = None
    identity: str | None = None
    audience: str | None = None         # a token's audience
    ces: list[str] = field(default_factory=list)   # the CEs a per-CE token serves
    fqans: list[str] = field(default_factory=list)
    certificate: str | None = None      # the certificate the proxy now comes from
    attempts: list[Attempt] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0


