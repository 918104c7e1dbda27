"""What each CE and batch system says when a worker fails, as one table per backend: a stable error code (the
worker's errorCode at PanDA, counted per CE by `status` and the metrics), a short meaning, and whether the
error is transient (the same job on the same CE may well work a little later, without anyone changing it:
a CE that does not answer, a delegation refused for a proxy about to be renewed, a batch system that lost
the job before it ran).

An entry matches the worker's diag, the one line a backend writes from the native answer: HTCondor's
"<HoldReason> (HoldReasonCode N, subcode M)", ARC's error messages ("Job submission to LRMS failed", "LRMS
error: (3) ..."), Slurm's "slurm <STATE>: ..." and sbatch's messages. Matching the diag (and not a code
stored at observation time) classifies workers recorded before a table grew the same way, and one rule
serves a held worker and the same worker killed later for being held ("killed: held longer than ...: <the
hold>").

Codes never change meaning once shipped: a new case gets a new code. Ranges: 1100-1199 HTCondor (1100 + the
HoldReasonCode for holds; 1150-1199 grid universe and schedd), 1200-1299 ARC, 1300-1399 Slurm's sbatch and
reasons; Slurm's final job states keep the 1070-1077 they had before these tables. diagnostics.py holds the
harvester's own codes (killed, lost, ...) and the order the tables are asked in.

Transient is about the error alone. Whether a push job gets a new worker also needs proof that it never
started (steps/poll.py, steps/submit.py): an error after the payload ran is never retried here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class CEError:
    code: int
    backend: str        # htcondor, arc, slurm
    native: str         # what the CE or batch system says, as an operator looks it up in its documentation
    meaning: str
    transient: bool
    pattern: str        # matched (case-insensitive, re.search) against the worker's diag


def _e(code: int, backend: str, native: str, meaning: str, transient: bool, pattern: str) -> CEError:
    return CEError(code, backend, native, meaning, transient, pattern)


def _grid(code: int, native: str, meaning: str, transient: bool, pattern: str) -> CEError:
    """A hold the gridmanager gives (code 0 in HTCondor 25) that says what happened only in its text."""
    return _e(code, "htcondor", native, meaning, transient, rf"(?:{pattern}).*\(HoldReasonCode \d+,")


def _hold(code: int, label: str, meaning: str, transient: bool, subcode: int | None = None,
          number: int | None = None) -> CEError:
    """A HoldReasonCode (with a subcode, when that decides the case): HTCondor's own numbering + 1100."""
    sub = rf", subcode {subcode}\)" if subcode is not None else r"(, subcode [-\d]+|, subcode None)?\)"
    native = f"HoldReasonCode {code} {label}" + (f" subcode {subcode}" if subcode is not None else "")
    return _e(number or 1100 + code, "htcondor", native, meaning, transient, rf"\(HoldReasonCode {code}{sub}")


# -- HTCondor --------------------------------------------------------------------------------------
# HoldReasonCode values (HTCondor manual, "Hold Reason Codes"); grid universe holds carry code 0 and say
# what happened in the text. Provoked for real in tests/integration/htcondor/test_ce_errors.py: 3, 6, 12,
# 13, 15, the ARC grid job without credentials, the unreachable CE and the schedd the collector does not know.
HTCONDOR: tuple[CEError, ...] = (
    # grid universe: the gridmanager holds with code 0 and says why
    _grid(1151, "HoldReasonCode 0: ARC job has no credentials",
          "grid job without a usable proxy or token for its CE (credentials not delegated)", True,
          r"has no credentials|proxy .*expired|Failed to provide GAHP with token|delegat\w* .*(refused|failed)"),
    _grid(1152, "HoldReasonCode 0: Error connecting to schedd",
          "the CE's schedd (condor-C) did not answer", True, r"Error connecting to schedd|Failed to connect to"),
    _grid(1153, "HoldReasonCode 0: Error locating schedd", "the CE's collector does not know its schedd",
          True, r"Error locating schedd"),
    _grid(1154, "HoldReasonCode 0: Job disappeared from remote schedd", "the CE lost the job", True,
          r"Job disappeared from remote schedd"),
    _grid(1155, "HoldReasonCode 0: Failed to start GAHP / gridmanager",
          "the schedd could not start the program that talks to the CE", True,
          r"Failed to start (GAHP|gridmanager)|GAHP (server )?(died|error)"),
    _grid(1156, "HoldReasonCode 0: Error receiving files from schedd",
          "the CE did not send the job's outputs back", True,
          r"Error receiving files from schedd|didn't send expected files"),
    _grid(1157, "HoldReasonCode 0: ARC job failed", "the ARC CE says the grid job failed (see the text)",
          False, r"ARC job failed"),
    _grid(1158, "HoldReasonCode 0: grid submission failed", "the CE refused the grid job", False,
          r"Attempts? to submit failed|Job submission failed|Failed to submit"),
    _e(1159, "htcondor", "HoldReasonCode 0 (other)", "held by the gridmanager (a reason this table does not list)",
       False, r"\(HoldReasonCode 0,"),
    _hold(1, "UserRequest", "held with condor_hold (an operator)", False),
    _hold(3, "JobPolicy", "periodic_hold or on_exit_hold of the job said so", False),
    _hold(4, "CorruptedCredential", "the job's proxy or token could not be read", True),
    _hold(5, "JobPolicyUndefined", "a hold or remove expression of the job is undefined", False),
    _hold(6, "FailedToCreateProcess", "the execute node could not start the executable", False),
    _hold(7, "UnableToOpenOutput", "the job's stdout/stderr could not be opened", False),
    _hold(8, "UnableToOpenInput", "the job's stdin could not be opened", False),
    _hold(11, "InvalidTransferAck", "a file transfer was cut off", True),
    _hold(12, "DownloadFileError", "output files could not be transferred (the job had run)", False),
    _hold(13, "UploadFileError", "an input file does not exist", False, subcode=2, number=1160),
    _hold(13, "UploadFileError", "input files could not be transferred to the execute node", True),
    _hold(14, "IwdError", "the job's initial directory is not accessible", False),
    _hold(15, "SubmittedOnHold", "submitted on hold (hold = true)", False),
    _hold(16, "SpoolingInput", "waiting for its spooled input files", True),
    _hold(17, "JobShadowMismatch", "the shadow cannot run this job", True),
    _hold(18, "InvalidTransferGoAhead", "a file transfer was refused midway", True),
    _hold(19, "HookPrepareJobFailure", "the execute node's prepare hook failed", True),
    _hold(20, "MissedDeferredExecutionTime", "the job's deferral time passed", False),
    _hold(21, "StartdHeldJob", "the execute node's policy held the job", True),
    _hold(22, "UnableToInitUserLog", "the job event log could not be written", False),
    _hold(23, "FailedToAccessUserAccount", "the job's account does not exist on the execute node", False),
    _hold(24, "NoCompatibleShadow", "no shadow can run this job", False),
    _hold(26, "SystemPolicy", "SYSTEM_PERIODIC_HOLD of the schedd said so", False),
    _hold(27, "SystemPolicyUndefined", "SYSTEM_PERIODIC_HOLD is undefined", False),
    _hold(32, "MaxTransferInputSizeExceeded", "the input files exceed the schedd's limit", False),
    _hold(33, "MaxTransferOutputSizeExceeded", "the output files exceed the schedd's limit", False),
    _hold(34, "JobOutOfResources", "the job used more memory or disk than it asked for", False),
    _hold(35, "InvalidDockerImage", "the container image cannot be used", False),
    _hold(45, "SingularityTestFailed", "the execute node's container runtime failed its test", True),
    _hold(46, "JobDurationExceeded", "the job ran longer than allowed", False),
    _hold(47, "JobExecuteExceeded", "the job was started more often than allowed", False),
    _e(1149, "htcondor", "HoldReasonCode (other)", "held by HTCondor (a code this table does not list)", False,
       r"\(HoldReasonCode \d+"),
    _e(1170, "htcondor", "GridResourceUnavailableTime", "the grid CE cannot be reached", True,
       r"CE unreachable"),
    _e(1171, "htcondor", "collector does not know the schedd", "the schedd is down or not advertised", True,
       r"does not know schedd|Unable to locate (local )?daemon|Failed to (connect|locate)"),
    _e(1172, "htcondor", "MAX_JOBS_SUBMITTED / MAX_JOBS_PER_OWNER", "the schedd's job limit is reached", True,
       r"would exceed MAX_JOBS"),
    _e(1173, "htcondor", "schedd refused the credentials", "the schedd did not accept this client's "
       "authentication or the job's proxy", True,
       r"refused the token|Failed to authenticate|AUTHENTICATE|unable to read proxy file|PERMISSION DENIED"),
    _e(1174, "htcondor", "spooling input files failed", "the input files could not be sent to the schedd",
       True, r"spool(ing)? (the )?input"),
    _e(1175, "htcondor", "RemoveReason", "removed outside harvester-cli (condor_rm, a periodic_remove)", False,
       r"^removed: (?!harvester-cli)"),
    _e(1179, "htcondor", "schedd refused the submission", "the schedd refused the submission (see the text)",
       False, r"refused the submission|made no job for this worker"),
)

# -- ARC -------------------------------------------------------------------------------------------
# A-REX's failure messages (the job's Error list, REST info) and what the REST interface answers at
# submission. Provoked for real in tests/integration/arc/test_ce_errors.py: "Job submission to LRMS failed"
# (an unknown runtime environment), the queue the CE refuses, "LRMS error: (3)", the refused delegation.
ARC: tuple[CEError, ...] = (
    _e(1201, "arc", "Job submission to LRMS failed", "the CE could not hand the job to its batch system", True,
       r"Job submission to LRMS failed"),
    _e(1202, "arc", "Failed in data staging", "the CE could not fetch the job's input files", True,
       r"Failed in data staging|Failed in files download|pre-processing|Failed to (download|stage in)"),
    _e(1203, "arc", "Job was lost", "the CE's batch system lost the job", True,
       r"Job was lost|lost with unknown exit code"),
    _e(1204, "arc", "Job disappeared / missing from the LRMS", "the CE's batch system no longer knows the job",
       True, r"Job disappeared|Job missing from"),
    _e(1205, "arc", "LRMS error: Node fail", "a node of the CE's batch system failed", True,
       r"LRMS error: .*Node fail"),
    _e(1206, "arc", "New job submission is not allowed", "the CE accepts no new jobs (draining)", True,
       r"New job submission is not allowed|not accepting (new )?jobs"),
    _e(1207, "arc", "Failed in files upload", "the CE could not store the job's outputs (the job had run)",
       False, r"Failed in files upload|post-processing"),
    _e(1210, "arc", "LRMS error: job killed: wall", "walltime exceeded at the CE", False,
       r"job killed: wall|walltime"),
    _e(1211, "arc", "LRMS error: job killed: vmem", "memory exceeded at the CE", False,
       r"job killed: (vmem|pmem|mem)|memory limit"),
    _e(1212, "arc", "LRMS error: job killed: cput", "CPU time exceeded at the CE", False, r"job killed: cput"),
    _e(1213, "arc", "LRMS error: (N) Job finished with wrong exit code", "the pilot exited with an error", False,
       r"LRMS error: \(\d+\)|wrong exit code"),
    _e(1214, "arc", "Job is canceled by external request", "cancelled at the CE outside harvester-cli", False,
       r"canceled by external request|cancelled by"),
    _e(1215, "arc", "Failed to find valid session directory", "the CE's session directory is gone", True,
       r"session directory"),
    _e(1216, "arc", "delegation refused or expired", "the CE refused the proxy delegation, or it expired", True,
       r"delegation|has no credentials|proxy (has )?expired"),
    _e(1217, "arc", "Requested queue ... is not allowed", "the CE refuses this queue for this user", False,
       r"queue .*is not allowed|Requested queue|No queue"),
    _e(1218, "arc", "HTTP 401/403", "the CE refused the credentials (proxy not mapped, token refused)", True,
       r"refused the token|HTTP (401|403)|\b(401|403)\b.*(Forbidden|Unauthorized)"),
    _e(1219, "arc", "CE unreachable", "the CE did not answer", True,
       r"no ARC CE reachable|ARC CE unreachable|Connection refused|timed out"),
    _e(1220, "arc", "refused input", "the CE refused a job's input upload", True, r"refused input"),
    _e(1221, "arc", "refused the job", "the CE refused the job description (see the text)", False,
       r"refused the job"),
    _e(1299, "arc", "ARC job failed", "the ARC CE says the job failed (a message this table does not list)",
       False, r"^ARC job failed|^ARC "),
)

# -- Slurm -----------------------------------------------------------------------------------------
# Final job states (backends/_slurm_status.py writes "slurm <STATE>: ..."), sbatch's refusals, and the
# pending or held reasons a worker is killed for. Provoked for real in tests/integration/slurm: FAILED,
# CANCELLED, an invalid partition, a partition that is down, JobHeldUser.
SLURM: tuple[CEError, ...] = (
    _e(1070, "slurm", "TIMEOUT", "Slurm: walltime exceeded (TIMEOUT)", False, r"^slurm TIMEOUT"),
    _e(1071, "slurm", "OUT_OF_MEMORY", "Slurm: memory limit exceeded (OUT_OF_MEMORY)", False,
       r"^slurm OUT_OF_MEMORY"),
    _e(1072, "slurm", "NODE_FAIL", "Slurm: node failure (NODE_FAIL)", True, r"^slurm NODE_FAIL"),
    _e(1073, "slurm", "BOOT_FAIL", "Slurm: node failed to boot (BOOT_FAIL)", True, r"^slurm BOOT_FAIL"),
    _e(1074, "slurm", "DEADLINE", "Slurm: deadline reached before the job ran (DEADLINE)", False,
       r"^slurm DEADLINE"),
    _e(1075, "slurm", "PREEMPTED", "Slurm: preempted (PREEMPTED)", True, r"^slurm PREEMPTED"),
    _e(1076, "slurm", "FAILED", "Slurm: batch job failed (FAILED)", False, r"^slurm (FAILED|SPECIAL_EXIT)"),
    _e(1077, "slurm", "CANCELLED", "Slurm: cancelled outside the harvester (CANCELLED)", False,
       r"^slurm (CANCELLED|REVOKED)"),
    _e(1301, "slurm", "sbatch: Invalid partition name specified", "the partition does not exist", False,
       r"Invalid partition"),
    _e(1302, "slurm", "sbatch: Invalid account or account/partition combination",
       "the account may not use this partition", False, r"Invalid account"),
    _e(1303, "slurm", "sbatch: Invalid qos specification", "the QOS does not exist or may not be used", False,
       r"Invalid qos"),
    _e(1304, "slurm", "sbatch: Requested node configuration is not available",
       "no node of the partition has what the job asks for", False,
       r"node configuration is not available|Node count specification invalid"),
    _e(1305, "slurm", "sbatch: Job violates accounting/QOS policy", "a submission limit of the account or QOS is "
       "reached", True, r"violates accounting/QOS policy|QOSMaxSubmit|AssocMaxSubmit"),
    _e(1306, "slurm", "slurmctld unreachable", "the Slurm controller did not answer", True,
       r"Unable to contact slurm controller|Socket timed out|Zero Bytes were transmitted|did not answer within|"
       r"Transport endpoint is not connected|Communication connection failure"),
    _e(1307, "slurm", "partition down / inactive", "the partition accepts or runs no jobs now (maintenance)", True,
       r"partition is (down|drain|inact)|Partition in standby|PartitionDown|PartitionInactive"),
    _e(1308, "slurm", "sbatch: Requested time limit is invalid", "the walltime exceeds the partition's limit",
       False, r"time limit is invalid|PartitionTimeLimit"),
    _e(1309, "slurm", "sbatch: Invalid user id / not permitted",
       "this account may not submit to the partition (AllowGroups, DisableRootJobs)", False,
       r"Invalid user id|not permitted to use this partition|Access/permission denied|User's group not permitted"),
    _e(1310, "slurm", "sbatch: Invalid feature specification", "no node has the constraint's features", False,
       r"Invalid feature specification"),
    _e(1320, "slurm", "launch failed requeued held", "the job failed to launch on its node and was held", True,
       r"launch failed requeued held"),
    _e(1321, "slurm", "JobHeldAdmin", "held by a Slurm administrator", False, r"JobHeldAdmin"),
    _e(1322, "slurm", "JobHeldUser", "held with scontrol hold", False, r"JobHeldUser"),
    _e(1323, "slurm", "ReqNodeNotAvail", "the nodes the job needs are down or reserved", True, r"ReqNodeNotAvail"),
    _e(1324, "slurm", "pending reason that never clears", "the job can never start as submitted (limits, "
       "constraints, account)", False,
       r"PartitionConfig|PartitionNodeLimit|BadConstraints|InvalidAccount|InvalidQOS|QOSMax\w*PerJob"),
    _e(1329, "slurm", "sbatch refused the worker", "sbatch refused the job (a message this table does not list)",
       False, r"sbatch refused"),
)

TABLES: dict[str, tuple[CEError, ...]] = {"htcondor": HTCONDOR, "arc": ARC, "slurm": SLURM}
# diags that name no backend are tried against every table, most specific first
ORDER = ("htcondor", "slurm", "arc")


@cache
def _compiled(backend: str) -> tuple[tuple[re.Pattern, CEError], ...]:
    return tuple((re.compile(e.pattern, re.IGNORECASE), e) for e in TABLES[backend])


def match(diag: str | None, backend: str | None = None) -> CEError | None:
    """The table entry for a worker's diag: the backend's table if it has one, else each table in ORDER."""
    if not diag:
        return None
    for name in ([backend] if backend in TABLES else ORDER):
        for pattern, entry in _compiled(name):
            if pattern.search(diag):
                return entry
    return None


def by_code(code: int | None) -> CEError | None:
    for table in TABLES.values():
        for entry in table:
            if entry.code == code:
                return entry
    return None


def all_entries() -> list[CEError]:
    return [e for table in TABLES.values() for e in table]
