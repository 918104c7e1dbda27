"""renew-proxy: check every proxy and token profile, renew what needs it, mail the problems (throttled)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

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


def unmanaged_proxy(config: Config) -> Path | None:
    """The `[panda] proxy` file when no [proxies.NAME] profile maintains it (renew-proxy --check reports it)."""
    proxy = config.panda.proxy
    if proxy is None or config.panda.proxy_profile or proxy in {p.file for p in config.proxies.values()}:
        return None
    return proxy


def renew(config: Config, names: tuple[str, ...] | list[str] = (), *, force: bool = False, check_only: bool = False,
          mail: bool = True) -> RenewRun:
    """Check every selected profile, renew what needs it, and mail the problems (throttled)."""
    from harvester_cli.site import alerts

    run = RenewRun(check_only=check_only)
    # --check also looks at a [panda] proxy the site keeps itself (named "panda", as `status` names it)
    plain = unmanaged_proxy(config) if check_only else None
    wanted = [n for n in names if n != "panda"] if plain is not None else list(names)
    for profile in select_profiles(config, wanted) if wanted or not names else []:
        if isinstance(profile, ProxyProfile):
            run.results.append(proxies.renew_proxy(profile, force=force, check_only=check_only))
        else:
            run.results.extend(tokens.renew_profile(config, profile, force=force, check_only=check_only))
    if plain is not None and (not names or "panda" in names):
        run.results.append(proxies.check_unmanaged(plain))
    if not check_only and mail:
        run.alerts = alerts.alert(config.smtp, config.logs, config.harvester_id, "credentials need attention",
                                  run.problems)
    return run
