"""This instance at each PanDA server (`panda_registrations`): registered by the first heartbeat the server
accepted, per PanDA URL and harvester id. That moment is also the instance's start time."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from harvester_cli.state.schema import panda_registrations
from harvester_cli.state.store import Store


def registered_at(store: Store, panda_url: str, harvester_id: str) -> float | None:
    with store.reading() as tx:
        return tx.scalar(select(panda_registrations.c.registered).where(
            panda_registrations.c.panda_url == panda_url, panda_registrations.c.harvester_id == harvester_id))


def remember(store: Store, panda_url: str, harvester_id: str, at: float) -> float:
    """Record the registration; returns the instance's start time (another run's, if it registered first)."""
    try:
        with store.transaction() as tx:
            tx.execute(panda_registrations.insert().values(panda_url=panda_url, harvester_id=harvester_id,
                                                           registered=at))
    except IntegrityError:
        pass
    return registered_at(store, panda_url, harvester_id) or at
