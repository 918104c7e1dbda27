"""Named leases ("submit:QUEUE", "fetch:QUEUE"): one run at a time, over every host, works a queue's
submission or fetch. A lease expires, so a host that died or was cut off does not hold it for ever."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from harvester_cli.errors import CommitUnknown, StateUnreachable
from harvester_cli.state.claims import free, owner_is_dead
from harvester_cli.state.schema import locks
from harvester_cli.state.store import Store, Tx, server_gone

log = logging.getLogger(__name__)


@contextmanager
def lease(store: Store, name: str) -> Iterator[bool]:
    """Hold the named lease for the block; yields False (and holds nothing) if another live run holds it."""
    with store.transaction() as tx:
        at = tx.lease_now()
        holder = tx.execute(select(locks.c.lock_owner).where(locks.c.name == name)).first()
        available = free(locks, at)
        if holder is not None and owner_is_dead(holder[0], store.host):
            available = available | (locks.c.lock_owner == holder[0])
        got = tx.execute(update(locks).where(locks.c.name == name, available)
                         .values(lock_owner=store.owner, lock_expires=at + store.lease_seconds)).rowcount
        if holder is None:
            try:
                with tx.conn.begin_nested():   # another host may create the same lock at this moment
                    tx.execute(locks.insert().values(name=name, lock_owner=store.owner,
                                                     lock_expires=at + store.lease_seconds))
                got = 1
            except IntegrityError:
                got = 0
    store.leases_busy += not got
    try:
        yield bool(got)
    finally:
        if got:
            try:
                with store.transaction() as tx:
                    tx.execute(update(locks).where(locks.c.name == name, locks.c.lock_owner == store.owner)
                               .values(lock_owner=None, lock_expires=None))
            except (DBAPIError, StateUnreachable, CommitUnknown) as exc:
                # The server went away (a failover): the lease expires after lease_seconds (at once for this
                # host's next run, its owner being gone); what the block did or raised is what counts.
                if isinstance(exc, DBAPIError) and not server_gone(exc.orig):
                    raise
                log.info("lease %s not released: %s", name, str(exc).splitlines()[0][:200])


def holds(tx: Tx, name: str) -> bool:
    """Whether this run still holds the named lease (renewed if so). A host that stalled past its lease
    (cut off, frozen) must not act on what it planned under it: another host may have planned since."""
    at = tx.lease_now()
    return tx.execute(update(locks).where(locks.c.name == name, locks.c.lock_owner == tx.owner,
                                          locks.c.lock_expires >= at)
                      .values(lock_expires=at + tx.lease_seconds)).rowcount == 1


def renew(tx: Tx, name: str) -> None:
    tx.execute(update(locks).where(locks.c.name == name, locks.c.lock_owner == tx.owner)
               .values(lock_expires=tx.lease_now() + tx.lease_seconds))
