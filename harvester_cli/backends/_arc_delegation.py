"""ARC delegations: one per proxy and CE, reused, renewed when the proxy changes or the delegation nears
its end, remembered in a small JSON file under the instance's work directory (backend-local state).

A delegation lives on the CE and is referenced by every job submitted with it; renewing keeps the id
and replaces the credential, so A-REX hands the new proxy to the jobs already running with it. A new
delegation is made only when the CE does not list the remembered one (CE reinstalled, expired).
Overlapping runs take an exclusive lock on the file for the short check-and-create, so they share one
delegation instead of making two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from harvester_cli.site.secretfiles import locked, write_private

log = logging.getLogger(__name__)

# A long-running process (cycle in a loop) asks the CE again after this long whether it still has the
# delegation: A-REX accepts jobs naming a delegation it does not have, and runs them without a proxy.
RECHECK_SECONDS = 600


@dataclass(frozen=True)
class ProxyInfo:
    fingerprint: str   # sha256 of the proxy certificate (the first one in the file)
    not_after: float   # epoch


def proxy_info(path: Path) -> ProxyInfo:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    end = getattr(cert, "not_valid_after_utc", None)
    if end is None:   # cryptography < 42
        import datetime as dt

        end = cert.not_valid_after.replace(tzinfo=dt.timezone.utc)
    return ProxyInfo(hashlib.sha256(cert.tbs_certificate_bytes).hexdigest(), end.timestamp())


def listed_ids(client) -> set[str]:
    """Delegation ids the CE knows for this user (REST 1.0 answers one delegation as a dict, not a list)."""
    listed = client.getDelegationsList()
    if isinstance(listed, dict):
        listed = [listed]
    return {d["id"] if isinstance(d, dict) else str(d) for d in listed or []}


@contextlib.contextmanager
def _quiet():
    # pyarcrest 0.5 uses cryptography's naive-datetime properties and datetime.utcnow().
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from cryptography.utils import CryptographyDeprecationWarning

            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        except ImportError:
            pass
        yield


class Delegations:
    def __init__(self, state_file: Path, min_lifetime: int):
        self.state_file = state_file
        self.min_lifetime = min_lifetime
        # (endpoint, proxy path) -> (delegation id, proxy fingerprint, when checked) in this process.
        self._known: dict[tuple[str, str], tuple[str, str, float]] = {}

    def _load(self) -> dict:
        try:
            data = json.loads(self.state_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict) -> None:
        write_private(self.state_file, json.dumps(data, indent=1, sort_keys=True).encode())

    def get(self, client, endpoint: str, proxy: Path) -> str:
        """The delegation id to put into job descriptions for `endpoint`, created or renewed if needed."""
        from harvester_cli.backends import _arc_compat

        info = proxy_info(proxy)
        key = (endpoint, str(proxy))
        known = self._known.get(key)
        if known and known[1] == info.fingerprint and time.time() - known[2] < RECHECK_SECONDS:
            return known[0]
        _arc_compat.install()
        with locked(self.state_file), _quiet():
            data = self._load()
            entry = data.get(f"{endpoint} {proxy}")
            now = time.time()
            delegation = None
            if entry and entry.get("id") in listed_ids(client):
                delegation = entry["id"]
                stale = entry.get("fingerprint") != info.fingerprint
                ending = entry.get("expires", 0) - now < self.min_lifetime and info.not_after > entry.get("expires", 0)
                if stale or ending:
                    try:
                        client.refreshDelegation(delegation, proxypath=str(proxy))
                        log.info("ARC %s: delegation %s renewed with the %s proxy", endpoint, delegation,
                                 "new" if stale else "same")
                    except Exception as exc:   # pyarcrest deleted it on a signing error; make a new one
                        log.warning("ARC %s: cannot renew delegation %s (%s); creating a new one",
                                    endpoint, delegation, exc)
                        delegation = None
            if delegation is None:
                delegation = client.createDelegation(proxypath=str(proxy))
                log.info("ARC %s: new delegation %s", endpoint, delegation)
            data[f"{endpoint} {proxy}"] = {"id": delegation, "fingerprint": info.fingerprint,
                                           "expires": info.not_after, "checked": now}
            self._save(data)
        self._known[key] = (delegation, info.fingerprint, time.time())
        return delegation
