"""renew-proxy: check every proxy and token profile, renew what needs it, mail the problems (throttled)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from harvester_cli.config import Config, ProxyProfile, TokenProfile
from harvester_cli.errors import ConfigError
from harvester_cli.site import proxies, tokens
from harvester_cli.site.alerts import AlertOutcome, Problem
from harvester_cli.site.credentials import ProfileResult

log = logging.getLogger(__name__)

@dataclass
class RenewRun:
    results: list[ProfileResult] = field(default_factory=list)
    alerts: AlertOutcome | None = None
    check_only: bool = False

    @property
    def problems(self) -> list[Problem]:
        return [p for r in self.results for p in r.problems]

    @property
    def partial(self) -> bool:
        """Anything an operator must look at: a failed or skipped certificate, a failed renewal, a proxy
        that needs renewal (--check), or an alert that could not be sent."""
        if self.check_only:
            return any(r.action != "ok" for r in self.results)
        return bool(self.problems) or bool(self.alerts and self.alerts.error)


def select_profiles(config: Config, names: tuple[str, ...] | list[str] = ()) -> list[ProxyProfile | TokenProfile]:
    known = {**{n: p for n, p in config.tokens.items()}, **{n: p for n, p in config.proxies.items()}}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown profile {unknown[0]!r} (configured: "
                          f"{', '.join(list(config.proxies) + list(config.tokens)) or 'none'})")
    if names:
        return [known[n] for n in dict.fromkeys(names)]
    return list(config.proxies.values()) + list(config.tokens.values())


def renew(config: Config, names: tuple[str, ...] | list[str] = (), *, force: bool = False, check_only: bool = False,
          mail: bool = True) -> RenewRun:
    """Check every selected profile, renew what needs it, and mail the problems (throttled)."""
    from harvester_cli.site import alerts

    run = RenewRun(check_only=check_only)
    for profile in select_profiles(config, names):
        if isinstance(profile, ProxyProfile):
            run.results.append(proxies.renew_proxy(profile, force=force, check_only=check_only))
        else:
            run.results.extend(tokens.renew_profile(config, profile, force=force, check_only=check_only))
    if not check_only and mail:
        run.alerts = alerts.alert(config.smtp, config.logs, config.harvester_id, "credentials need attention",
                                  run.problems)
    return run
