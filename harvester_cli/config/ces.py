"""The computing elements a queue submits to: its configured list (HTCondor `ces`, ARC `endpoints`) or the
ACTIVE entries of a CRIC pandaqueue file, and what a CE flavour implies (its default port, the audience a
token for it carries, the scopes a CE token asks for). Shared by the grid backends (CE fanout, submit
macros), the credential side (site.tokens, site.bearer: a token per CE) and the configuration's own
rules, so it lives with the configuration and reads only the files the configuration names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# The CEs a grid queue submits to (CRIC's ce_flavour, lower-cased).
CE_FLAVOURS = ("htcondor-ce", "arc-ce")
# The port of a CE endpoint written without one.
DEFAULT_PORTS = {"htcondor-ce": 9619, "arc-ce": 443}
# The `aud` of a CE's token by flavour, from its host and port: HTCondor-CE checks host:port (its
# SCITOKENS_SERVER_AUDIENCE convention), ARC-CE https://host:port. A token profile may change them.
AUDIENCE_FORMATS = {"htcondor-ce": "{host}:{port}", "arc-ce": "https://{host}:{port}"}
# What a per-CE token asks for unless its profile says otherwise.
WLCG_COMPUTE_SCOPES = "compute.create compute.read compute.modify compute.cancel"


@dataclass(frozen=True)
class CEEntry:
    """One CE of a queue, as configured or as CRIC describes it."""

    endpoint: str
    flavour: str = "htcondor-ce"
    queue: str | None = None
    state: str = "ACTIVE"

    @property
    def active(self) -> bool:
        return self.state.upper() == "ACTIVE"


def from_cric(data: dict, site: str) -> list[CEEntry]:
    """The CEs of a CRIC pandaqueue description: one pandaqueue object (with `queues`), or a map of
    pandaqueue name -> object (CRIC's query output) from which `site` is taken."""
    if "queues" not in data:
        if site not in data:
            raise ValueError(f"no pandaqueue {site!r} in the CRIC description (has: {', '.join(sorted(data)) or 'none'})")
        data = data[site]
    entries = data.get("queues")
    if not isinstance(entries, list):
        raise ValueError("the CRIC pandaqueue has no 'queues' list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("ce_endpoint"):
            raise ValueError(f"queues[{i}] has no ce_endpoint")
        out.append(CEEntry(
            endpoint=str(entry["ce_endpoint"]),
            flavour=str(entry.get("ce_flavour") or "htcondor-ce").lower(),
            queue=str(entry["ce_queue_name"]) if entry.get("ce_queue_name") else None,
            state=str(entry.get("ce_state") or "ACTIVE"),
        ))
    return out


def queue_ces(queue) -> list[CEEntry]:
    """The ACTIVE CEs of a queue whose backend submits to CEs (htcondor: `ces` or `cric_file`; arc:
    `endpoints`, ARC-CEs); empty for the others. Raises ValueError when a CRIC file cannot be read."""
    options = queue.backend_options
    if queue.backend == "arc" and options is not None:
        return [CEEntry(endpoint, "arc-ce") for endpoint in options.endpoints]
    if queue.backend != "htcondor" or options is None:
        return []
    if options.cric_file:
        try:
            entries = from_cric(json.loads(options.cric_file.read_text()), queue.site)
        except OSError as exc:
            raise ValueError(f"cannot read the CEs of {queue.site} from {options.cric_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"cannot read the CEs of {queue.site} from {options.cric_file}: {exc}") from None
    else:
        entries = [CEEntry(c.endpoint, c.flavour, c.queue, c.state) for c in options.ces]
    return [e for e in entries if e.active]
