"""Crash points for crash-safety tests: `HARVESTER_CLI_CRASH_AT=<name>` ends the process at that point as
`kill -9` would, so a test can prove the next run repairs what was left half done."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def fault_point(name: str) -> None:
    if os.environ.get("HARVESTER_CLI_CRASH_AT") == name:
        log.warning("crashing at %s (HARVESTER_CLI_CRASH_AT)", name)
        os._exit(99)
