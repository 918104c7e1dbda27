"""Fault points for the fault suite: `HARVESTER_CLI_CRASH_AT=<name>` ends the process at that point as
`kill -9` would, so a test can prove the next run repairs what was left half done;
`HARVESTER_CLI_INTERRUPT_AT=<name>` raises KeyboardInterrupt there, as an operator's Ctrl-C would; and
`HARVESTER_CLI_STOP_AT=<name>` stops the process there (SIGSTOP, as a debugger's breakpoint), so that a test
can change the world under it (fail the state database over) and let it go on with SIGCONT."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


def fault_point(name: str) -> None:
    if os.environ.get("HARVESTER_CLI_CRASH_AT") == name:
        log.warning("crashing at %s (HARVESTER_CLI_CRASH_AT)", name)
        os._exit(99)
    if os.environ.get("HARVESTER_CLI_INTERRUPT_AT") == name:
        raise KeyboardInterrupt
    if os.environ.get("HARVESTER_CLI_STOP_AT") == name:
        log.info("stopping at %s (HARVESTER_CLI_STOP_AT): SIGCONT goes on", name)
        os.kill(os.getpid(), signal.SIGSTOP)
