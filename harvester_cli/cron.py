"""harvester-cli-cron: one harvester-cli command per call, for cron; installed with the package.

    harvester-cli-cron [GLOBAL OPTIONS] COMMAND [ARGS...]      e.g.  harvester-cli-cron --queue Q cycle

- Never two runs of the same command at once on this host: harvester-cli is safe when they overlap, this
  only stops a slow PanDA or batch system from piling runs up. A run that finds the previous one still
  going logs that it skipped and exits 0; when the previous one has been going longer than
  HARVESTER_CLI_CRON_STUCK_AFTER seconds (default 3600) it also says so on stderr (which cron mails)
  and exits 1, every minute until someone looks.
- The command's output is appended to <log_dir>/cron/<command>.log (rotated at 10 MB, 5 kept), between a
  start line and an end line with its exit code, so a quiet run still leaves a trace. A run that ends with
  exit 2 (a configuration or usage problem: it will fail the same way every minute until someone fixes
  it) also prints its error lines on stderr, which cron mails; a partial run (exit 1: retried by the next
  run, and shown by `status`) stays in the log, so an outage does not mail every minute.
- It runs the harvester-cli of the same installation (this Python), whatever cron's PATH says.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Global options that take a value (the command name is the first argument that is neither an option
# nor such a value).
_VALUED = {"--config", "--state", "--queue"}
USAGE = "usage: harvester-cli-cron [GLOBAL OPTIONS] COMMAND [ARGS...]   e.g. harvester-cli-cron cycle"
MAX_BYTES, BACKUPS = 10 * 1024 * 1024, 5


def command_name(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def log_dir(args: list[str]) -> Path:
    """The instance's log_dir, or the default one when the configuration cannot be read (the command
    itself then says what is wrong with it, into the log)."""
    from harvester_cli.config import default_state_dir, load

    path = _option(args, "--config") or os.environ.get("HARVESTER_CLI_CONFIG")
    try:
        return load(Path(path) if path else None).logs
    except Exception:   # any problem here is the command's to report
        return default_state_dir() / "logs"


def _holder(lock_fd: int) -> dict:
    try:
        return json.loads(os.pread(lock_fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = command_name(args)
    if command is None:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    from harvester_cli.site.logs import redact, rotate_if_full

    logs = log_dir(args)
    (logs / ".state").mkdir(parents=True, exist_ok=True, mode=0o700)
    (logs / "cron").mkdir(parents=True, exist_ok=True)
    output = logs / "cron" / f"{command}.log"
    lock_fd = os.open(logs / ".state" / f"cron-{command}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    started = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(lock_fd)
        running = started - float(holder.get("started", started))
        note = (f"{stamp} skipped: the previous `{command}` (pid {holder.get('pid', '?')}) has been running for "
                f"{running:.0f} s")
        stuck_after = float(os.environ.get("HARVESTER_CLI_CRON_STUCK_AFTER", 3600))
        with output.open("a") as log:
            log.write(note + "\n")
        if running > stuck_after:
            print(f"harvester-cli-cron: STUCK: {note.split(' skipped: ')[1]} (over {stuck_after:.0f} s): look at "
                  f"{output} and that process", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, json.dumps({"pid": os.getpid(), "started": started}).encode(), 0)
    rotate_if_full(output, MAX_BYTES, BACKUPS)
    with output.open("a") as log:
        log.write(f"--- {stamp} harvester-cli {redact(' '.join(args))}\n")
        log.flush()
        run_starts = log.tell()
        code = subprocess.call([sys.executable, "-m", "harvester_cli", *args], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
        log.write(f"--- exit {code} after {time.time() - started:.1f} s\n")
    if code == 2:
        _mail_errors(output, run_starts, command)
    sys.exit(code)


def _mail_errors(output: Path, run_starts: int, command: str) -> None:
    """The error lines of the run that just ended, on stderr for cron to mail."""
    with output.open("rb") as log:
        log.seek(run_starts)
        lines = log.read().decode("utf-8", "replace").splitlines()
    errors = [line for line in lines if line.startswith(("harvester-cli: error:", "Error:", "Usage:"))]
    for line in errors or lines[-5:]:
        print(line, file=sys.stderr)
    print(f"harvester-cli-cron: `{command}` exited 2 (configuration or usage): the whole output is in {output}",
          file=sys.stderr)
