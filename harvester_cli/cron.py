"""harvester-cli-cron: one harvester-cli command per call, for cron; installed with the package.

    harvester-cli-cron [GLOBAL OPTIONS] COMMAND [ARGS...]      e.g.  harvester-cli-cron --queue Q cycle

- Never two runs of the same command at once on this host: harvester-cli is safe when they overlap, this
  only stops a slow PanDA or batch system from piling runs up. The lock is held by the command as well as
  the wrapper, so a wrapper killed alone (kill -9, an OOM kill) leaves it held until its command ends. A run
  that finds the previous one still going logs that it skipped and exits 0; when the previous one has been going longer than
  HARVESTER_CLI_CRON_STUCK_AFTER seconds (default 3600) it also says so on stderr (which cron mails)
  and exits 1, every minute until someone looks.
- The command's output is appended to <log_dir>/cron/<command>.log (rotated at 10 MB, 5 kept), between a
  start line and an end line with its exit code, so a quiet run still leaves a trace. A run that ends with
  exit 2 (a configuration or usage problem: it will fail the same way every minute until someone fixes
  it) also prints its error lines on stderr, which cron mails; a partial run (exit 1: retried by the next
  run, and shown by `status`) stays in the log, so an outage does not mail every minute.
- When a command keeps failing with the same exit code (every run exit 1 while PanDA is down, say) for
  longer than `[cron] alert_after` seconds (3600) after its first failing run ended, the run that passes it
  says so once on stderr, so cron mails one line and not one a minute; a success, or another exit code,
  starts over. One run, however long, is never a streak: a run that stays is what STUCK is for.
- SIGTERM and SIGINT (a shutdown, `kill`, Ctrl-C) are passed on to the command, and the wrapper waits for
  it to end, logs its exit code and exits with it (128 + the signal's number when the signal ended it).
  The command runs in a session of its own, so a Ctrl-C reaches it once, through the wrapper.
- It runs the harvester-cli of the same installation (this Python), whatever cron's PATH says.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
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


def settings(args: list[str]) -> tuple[Path, int]:
    """The instance's log_dir and [cron] alert_after, or the defaults when the configuration cannot be read
    (the command itself then says what is wrong with it, into the log)."""
    from harvester_cli.config import default_state_dir, load
    from harvester_cli.config.sections import CronConfig

    path = _option(args, "--config") or os.environ.get("HARVESTER_CLI_CONFIG")
    try:
        config = load(Path(path) if path else None)
    except Exception:   # any problem here is the command's to report
        return default_state_dir() / "logs", CronConfig().alert_after
    return config.logs, config.cron.alert_after


def _holder(lock_fd: int) -> dict:
    try:
        holder = json.loads(os.pread(lock_fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(lock_fd: int, holder: dict) -> None:
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, json.dumps(holder).encode(), 0)


def failing_streak(previous: dict | None, code: int, ended: float) -> dict | None:
    """The command's failing streak once a run that ended at `ended` exited with `code`: {"code", "since" (when
    the first run of the streak ended: the failure was known from then), "said" (whether the wrapper has told
    cron)}; None after a success."""
    if code == 0:
        return None
    if isinstance(previous, dict) and previous.get("code") == code and "since" in previous:
        return previous
    return {"code": code, "since": ended, "said": False}


MEANINGS = {1: "partial: something did not answer or some items failed, retried every run",
            2: "configuration or usage", 130: "interrupted"}


def _run(argv: list[str], log, lock_fd: int, started: float, previous: dict | None) -> int:
    """Run the command with its output in `log`; SIGTERM and SIGINT are passed on to it, and it is waited for.
    The command inherits the lock (`lock_fd`: an flock lives as long as any process holds the file open), and
    the lock file names it, the process to look at."""
    child: list[subprocess.Popen] = []

    def forward(signum, _frame) -> None:
        if child and child[0].returncode is None:
            try:
                child[0].send_signal(signum)
            except ProcessLookupError:
                pass

    handlers = {number: signal.signal(number, forward) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        child.append(subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                      start_new_session=True, pass_fds=(lock_fd,)))
        _write_holder(lock_fd, {"pid": child[0].pid, "wrapper": os.getpid(), "started": started, "failing": previous})
        code = child[0].wait()
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    return code if code >= 0 else 128 - code


def _open_log(path: Path):
    """The run log, appended to; never writable by group or others, whatever the umask."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640), "a", encoding="utf-8",
                     errors="backslashreplace")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = command_name(args)
    if command is None:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    from harvester_cli.site.logs import command_line, make_dirs, redact, rotate_if_full

    logs, alert_after = settings(args)
    make_dirs(logs / ".state", 0o700)
    make_dirs(logs / "cron")
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
        with _open_log(output) as log:
            log.write(note + "\n")
        if running > stuck_after:
            print(f"harvester-cli-cron: STUCK: {note.split(' skipped: ')[1]} (over {stuck_after:.0f} s): look at "
                  f"{output} and that process", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    previous = _holder(lock_fd).get("failing")
    _write_holder(lock_fd, {"pid": os.getpid(), "started": started, "failing": previous})
    rotate_if_full(output, MAX_BYTES, BACKUPS)
    with _open_log(output) as log:
        log.write(f"--- {stamp} harvester-cli {redact(command_line(args))}\n")
        log.flush()
        run_starts = log.tell()
        code = _run([sys.executable, "-m", "harvester_cli", *args], log, lock_fd, started, previous)
        log.write(f"--- exit {code} after {time.time() - started:.1f} s\n")
    streak = failing_streak(previous, code, time.time())
    alert = bool(streak and not streak["said"] and alert_after and time.time() - streak["since"] > alert_after)
    if alert:
        streak = {**streak, "said": True}
    _write_holder(lock_fd, {"pid": os.getpid(), "started": started, "failing": streak})
    if code == 2:
        _mail_errors(output, run_starts, command)
    if alert:
        _say_failing(command, streak, alert_after, output)
    sys.exit(code)


def _say_failing(command: str, streak: dict, alert_after: int, output: Path) -> None:
    from harvester_cli.model import duration

    code, since = streak["code"], streak["since"]
    print(f"harvester-cli-cron: `{command}` has exited {code} ({MEANINGS.get(code, 'failed')}) on every run for "
          f"{duration(time.time() - since)}, since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since))} "
          f"(longer than [cron] alert_after = {alert_after} s; said once, until it exits otherwise): look at "
          f"{output}", file=sys.stderr)


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
