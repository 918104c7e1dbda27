"""Fault points for the fault suite: `HARVESTER_CLI_CRASH_AT=<name>` ends the process at that point as
`kill -9` would, so a test can prove the next run repairs what was left half done; and
`HARVESTER_CLI_INTERRUPT_AT=<name>` raises KeyboardInterrupt there, as an operator's Ctrl-C would."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def fault_point(name: str) -> None:
    if os.environ.get("HARVESTER_CLI_CRASH_AT") == name:
        log.warning("crashing at %s (HARVESTER_CLI_CRASH_AT)", name)
        os._exit(99)
    if os.environ.get("HARVESTER_CLI_INTERRUPT_AT") == name:
        raise KeyboardInterrupt
