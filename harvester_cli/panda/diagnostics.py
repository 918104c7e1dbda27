"""Backend diag texts -> a numeric error code and a short message for PanDA's worker record, so an
operator can tell from PanDA why a worker (and a lost-heartbeat job) ended.

The order: a kill PanDA asked for, then the CE's own error (ce_errors: one table per backend, each entry
with a stable code and whether it is transient), then the harvester's own rules below (killed, held, lost,
submission), then a catch-all."""

from __future__ import annotations

import re

from harvester_cli import model
from harvester_cli.panda import ce_errors

# (pattern on the worker's diag, error code, short message); first match wins.
RULES: tuple[tuple[str, int, str], ...] = (
    # A queued pilot nobody needed any more, removed while it still waited (steps/retire.py): cancelled on
    # purpose, not a failure of the site's.
    (r"^retired", 1014, "queued pilot retired: no longer needed"),
    (r"^killed: PanDA", 1010, "killed on PanDA's request"),
    (r"^killed: .*held", 1011, "removed after being held"),
    (r"^killed: .*queued longer", 1012, "removed after queuing too long"),
    (r"^killed", 1013, "killed by the harvester"),
    (r"^held: .*(proxy|credential|x509|token)", 1020, "held: credential problem"),
    (r"^held", 1021, "held by the batch system"),
    (r"^lost", 1030, "lost: the batch system has no trace of the worker"),
    (r"submission was interrupted", 1040, "submission interrupted, worker not found"),
    (r"^(backend error|cannot start)", 1041, "submission failed"),
    (r"no heartbeat\.json", 1050, "pilot left no heartbeat"),
    (r"exited with code", 1060, "pilot exited with an error"),
)


# Codes whose rules are asked before the CE tables: who asked for a kill (PanDA, or retirement) says more
# than what the CE said meanwhile.
FIRST = (1010, 1014)


def classify(status: str, diag: str | None, exit_code: int | None,
             backend: str | None = None) -> tuple[int | None, str | None]:
    """(error code, short message) of a worker, or (None, None) when it ended well or still runs."""
    text = diag or ""
    for pattern, code, short in RULES:
        if code in FIRST and re.search(pattern, text, re.IGNORECASE):
            return code, short
    entry = ce_errors.match(text, backend)
    if entry is not None:
        return entry.code, entry.meaning
    for pattern, code, short in RULES:
        if re.search(pattern, text, re.IGNORECASE):
            return code, short
    if status == model.MISSED:
        return 1041, "submission failed"
    if status in (model.FAILED, model.CANCELLED):
        return 1099, f"worker {status}" + (f" (exit code {exit_code})" if exit_code else "")
    return None, None


def meaning(code: int | None) -> str:
    """What an error code of ours means (for `status` and the status page)."""
    for _, rule_code, short in RULES:
        if rule_code == code:
            return short
    entry = ce_errors.by_code(code)
    if entry is not None:
        return entry.meaning
    return {1099: "worker failed or cancelled, no known cause", None: "no error code"}.get(code, f"error code {code}")


def transient(code: int | None) -> bool:
    """Whether the error of this code is one the same job may well not meet again a little later. Of the
    harvester's own codes, an interrupted submission the backend has no trace of is."""
    entry = ce_errors.by_code(code)
    return entry.transient if entry is not None else code == 1040
