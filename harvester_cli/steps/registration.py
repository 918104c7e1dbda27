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

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from harvester_cli import __version__, model
from harvester_cli.errors import PandaError
from harvester_cli.state.schema import panda_registrations
from harvester_cli.steps.instance import Instance

log = logging.getLogger(__name__)


@dataclass
class Registration:
    registered: float | None     # when PanDA first accepted a heartbeat of this instance (None: not yet)
    problem: str | None = None   # why this run could not register, one line


def registered_at(instance: Instance) -> float | None:
    with instance.store.read() as conn:
        return conn.scalar(select(panda_registrations.c.registered).where(
            panda_registrations.c.panda_url == instance.config.panda.url,
            panda_registrations.c.harvester_id == instance.config.harvester_id))


def heartbeat_data(instance: Instance, start_time: float) -> dict:
    data = {"startTime": model.panda_time(start_time), "sw_version": f"harvester-cli {__version__}",
            "commit_stamp": __version__}
    streaming = sorted({q.site for q in instance.config.queues.values() if q.pilot_streaming})
    if streaming:   # subscribe to PanDA's pilot-streaming commands for these queues
        data["commands"] = [{"command": command, "computingSite": site, "resourceType": "ANY"}
                            for site in streaming for command in ("SET_N_WORKERS_JOBTYPE", "REPORT_WORKER_STATS")]
    return data


def _remember(instance: Instance, at: float) -> float:
    store = instance.store
    try:
        with store.write() as conn:
            conn.execute(panda_registrations.insert().values(panda_url=instance.config.panda.url,
                                                             harvester_id=instance.config.harvester_id,
                                                             registered=at))
    except IntegrityError:   # another run registered first: its time is the instance's start
        pass
    return registered_at(instance) or at


def heartbeat(instance: Instance) -> Registration:
    """One heartbeat (two for an instance PanDA does not know yet: the first only registers it).
    The result says whether PanDA knows this instance now, and why not."""
    known = registered_at(instance)
    start = known if known is not None else model.now()
    refused = None
    for _ in range(1 if known is not None else 2):
        try:
            refused = instance.panda.heartbeat(heartbeat_data(instance, start))
        except PandaError as exc:
            return Registration(known, f"heartbeat failed: {exc}")
        if refused is None:
            if known is None:
                log.info("registered harvester %s at %s", instance.config.harvester_id, instance.config.panda.url)
            return Registration(known if known is not None else _remember(instance, start))
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
