"""Backend diag texts -> a numeric error code and a short message for PanDA's worker record, so an
operator can tell from PanDA why a worker (and a lost-heartbeat job) ended."""

from __future__ import annotations

import re

from harvester_cli import model

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
    # Slurm's final job states (backends/_slurm_status.py writes "slurm <STATE>: ..."); before the generic
    # exit-code rule, so a walltime kill is not reported as a pilot error.
    (r"^slurm TIMEOUT", 1070, "Slurm: walltime exceeded (TIMEOUT)"),
    (r"^slurm OUT_OF_MEMORY", 1071, "Slurm: memory limit exceeded (OUT_OF_MEMORY)"),
    (r"^slurm NODE_FAIL", 1072, "Slurm: node failure (NODE_FAIL)"),
    (r"^slurm BOOT_FAIL", 1073, "Slurm: node failed to boot (BOOT_FAIL)"),
    (r"^slurm DEADLINE", 1074, "Slurm: deadline reached before the job ran (DEADLINE)"),
    (r"^slurm PREEMPTED", 1075, "Slurm: preempted (PREEMPTED)"),
    (r"^slurm (FAILED|SPECIAL_EXIT)", 1076, "Slurm: batch job failed (FAILED)"),
    (r"^slurm (CANCELLED|REVOKED)", 1077, "Slurm: cancelled outside the harvester (CANCELLED)"),
    (r"no heartbeat\.json", 1050, "pilot left no heartbeat"),
    (r"exited with code", 1060, "pilot exited with an error"),
)


def classify(status: str, diag: str | None, exit_code: int | None) -> tuple[int | None, str | None]:
    """(error code, short message) of a worker, or (None, None) when it ended well or still runs."""
    text = diag or ""
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
    return {1099: "worker failed or cancelled, no known cause", None: "no error code"}.get(code, f"error code {code}")
