"""The time left on every proxy and token file the configuration names (per CE too), for `status`, the
metrics and PanDA's service metrics. Nothing is run: a proxy's lifetime is its certificate chain's (what
voms-proxy-info -timeleft says), a token's its `exp`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from harvester_cli.config import Config, ProxyProfile


@dataclass
class Credential:
    kind: str                    # proxy | token
    profile: str                 # [proxies.NAME] / [tokens.NAME], or "panda" for [panda] proxy / token_file
    file: str
    seconds_left: float | None   # None: unknown (missing, unreadable, a token without exp)
    expires: float | None
    problem: str | None = None
    audience: str | None = None  # a token's: the CE (or PanDA) it is for


def credentials(config: Config, now: float | None = None) -> list[Credential]:
    """Every proxy and token file the configuration names, with its time left. The proxy's lifetime is its
    certificate chain's (what voms-proxy-info -timeleft says); no tool is run."""
    now = time.time() if now is None else now
    out: list[Credential] = []
    proxies = dict(config.proxies)
    if config.panda.proxy and config.panda.proxy not in {p.file for p in proxies.values()}:
        proxies["panda"] = ProxyProfile(name="panda", file=config.panda.proxy, certificates=[])
    if not proxies and not config.tokens and not config.panda.token_file:
        return out   # and the X.509 and token modules stay unimported: a command with nothing to do starts faster
    from harvester_cli.site.proxies import inspect_proxy
    from harvester_cli.site.tokens import list_tokens, token_expiry

    for name, profile in proxies.items():
        info = inspect_proxy(profile, now=now, voms_info=False)
        out.append(Credential("proxy", name, str(profile.file), info.time_left,
                              info.not_after if info.time_left is not None else None, info.problem))
    tokens = list_tokens(config, now)   # per CE too: one file per audience
    for token in tokens:
        left = token["seconds_left"]
        out.append(Credential("token", token["profile"], token["file"], left, now + left if left is not None else None,
                              None if token["exists"] else "no token file", token["audience"]))
    token_file = config.panda.token_file
    if token_file and str(token_file) not in {t["file"] for t in tokens}:
        from harvester_cli.site.secretfiles import SecretFileError, read_token

        try:
            expires = token_expiry(read_token(token_file))
            out.append(Credential("token", "panda", str(token_file), expires - now if expires else None, expires))
        except SecretFileError as exc:   # unreadable, or not a token
            out.append(Credential("token", "panda", str(token_file), None, None,
                                  str(exc).removeprefix(f"token file {token_file}: ")))
    return out
