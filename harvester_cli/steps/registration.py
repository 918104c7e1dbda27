"""This instance's registration at its PanDA server, and the heartbeat that makes and keeps it.

The real server records which job ran in which worker (what its monitor shows as "job ran in worker N of
harvester X") only when a pilot's acquire_jobs names a harvester id the server already knows; it learns
an id from a heartbeat, and answers the very first heartbeat of an id with success:false. So nothing that
can put a worker in front of PanDA (submit, fetch-jobs) runs until the state database remembers a
heartbeat the server accepted, per PanDA URL and harvester id. That moment is also the instance's start
time, sent as startTime with every heartbeat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from harvester_cli import model
from harvester_cli.errors import PandaError, PandaUnreachable
from harvester_cli.instance import Instance
from harvester_cli.panda import updates
from harvester_cli.state import registrations

log = logging.getLogger(__name__)


@dataclass
class Registration:
    registered: float | None     # when PanDA first accepted a heartbeat of this instance (None: not yet)
    problem: str | None = None   # why this run could not register, one line


def registered_at(instance: Instance) -> float | None:
    return registrations.registered_at(instance.store, instance.config.panda.url, instance.config.harvester_id)


def _heartbeat_data(instance: Instance, start_time: float) -> dict:
    return updates.heartbeat_data(start_time, (q.site for q in instance.config.queues.values() if q.pilot_streaming))


def heartbeat(instance: Instance) -> Registration:
    """One heartbeat (two for an instance PanDA does not know yet: the first only registers it).
    The result says whether PanDA knows this instance now, and why not."""
    known = registered_at(instance)
    start = known if known is not None else model.now()
    answer = None
    for _ in range(1 if known is not None else 2):
        try:
            answer = instance.panda.heartbeat(_heartbeat_data(instance, start))
        except PandaUnreachable as exc:   # the client said why, once
            said = PandaUnreachable.SKIPPED if PandaUnreachable.SKIPPED in str(exc) else "PanDA did not answer"
            return Registration(known, f"heartbeat failed: {said}")
        except PandaError as exc:
            return Registration(known, f"heartbeat failed: {exc}")
        if answer.accepted:
            if known is None:
                log.info("registered harvester %s at %s", instance.config.harvester_id, instance.config.panda.url)
                known = registrations.remember(instance.store, instance.config.panda.url,
                                               instance.config.harvester_id, start)
            return Registration(known)
    refused = answer.message if answer is not None else None
    if known is not None:   # once registered, a refused heartbeat does not unregister the instance
        return Registration(known, f"heartbeat refused: {refused}")
    return Registration(None, f"PanDA refused the registration heartbeat twice: {refused}")


def ensure_registered(instance: Instance) -> Registration:
    """Registered already, or register now; asked once per run (a cycle's fetch and submit share it)."""
    cached = instance.registration
    if cached is not None and cached.registered is not None:
        return cached
    known = registered_at(instance)
    result = Registration(known) if known is not None else heartbeat(instance)
    instance.registration = result
    return result
