"""Worker sizes per resource type, from PanDA's definitions (metaconfig/get_resource_types), cached."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from harvester_cli.config import QueueConfig
from harvester_cli.errors import PandaError
from harvester_cli.site.logs import make_dirs

log = logging.getLogger(__name__)

CACHE_SECONDS = 24 * 3600

# What PanDA defines today; used when it cannot be asked and nothing is cached.
DEFAULTS = {
    "SCORE": {"mincore": 1, "maxcore": 1, "minrampercore": None, "maxrampercore": 2000},
    "MCORE": {"mincore": 2, "maxcore": None, "minrampercore": None, "maxrampercore": 2000},
    "SCORE_HIMEM": {"mincore": 1, "maxcore": 1, "minrampercore": 2001, "maxrampercore": None},
    "MCORE_HIMEM": {"mincore": 2, "maxcore": None, "minrampercore": 2001, "maxrampercore": None},
}


def definitions(panda, cache: Path) -> dict[str, dict]:
    """Resource type -> {mincore, maxcore, minrampercore, maxrampercore} from the PanDA client `panda`,
    kept in the file `cache` for a day."""
    try:
        if time.time() - cache.stat().st_mtime < CACHE_SECONDS:
            return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    try:
        answer = panda.get_resource_types()
        defs = {d["resource_name"]: {k: d.get(k) for k in ("mincore", "maxcore", "minrampercore", "maxrampercore")}
                for d in answer if isinstance(d, dict) and d.get("resource_name")}
    except PandaError as exc:
        log.info("resource types from PanDA unavailable (%s): using cached or built-in definitions", exc)
        try:
            return json.loads(cache.read_text())
        except (OSError, ValueError):
            return DEFAULTS
    make_dirs(cache.parent)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(defs))
    os.replace(tmp, cache)
    return defs


def worker_size(queue: QueueConfig, resource_type: str, defs: dict[str, dict]) -> tuple[int, int]:
    """(cores, memory MB) of a pull worker of this resource type on this queue."""
    d = defs.get(resource_type)
    if d is None:
        cores = 1 if resource_type.startswith("SCORE") else queue.core_count
        return cores, cores * queue.memory_mb_per_core
    cores = 1 if d.get("maxcore") == 1 else max(queue.core_count, d.get("mincore") or 1)
    if d.get("maxcore"):
        cores = min(cores, d["maxcore"])
    per_core = queue.memory_mb_per_core
    if d.get("minrampercore"):
        per_core = max(per_core, d["minrampercore"])
    if d.get("maxrampercore"):
        per_core = min(per_core, d["maxrampercore"])
    return cores, cores * per_core
