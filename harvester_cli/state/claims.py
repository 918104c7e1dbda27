"""Claims with leases: a run takes rows for itself (owner and expiry, one conditional UPDATE), works them,
and releases them. Another run skips claimed rows until the lease expires, or at once when the owner was
a process of this host that no longer exists (kill -9, a crash): the next cron run carries on where it
stopped. On PostgreSQL and MariaDB the candidates are picked FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, or_, select, update

from harvester_cli.state.store import Tx, chunks, key_match


def free(table: Table, at: float):
    """Condition: the row is not claimed, or its claim expired."""
    return or_(table.c.lock_owner.is_(None), table.c.lock_expires < at)


def owned(tx: Tx, table: Table):
    """Condition: the row is still claimed by this run (guards every update of a claimed row)."""
    return table.c.lock_owner == tx.owner


def owner_is_dead(owner: str | None, this_host: str | None = None) -> bool:
    """A claim owned by a process of this host that no longer exists can be taken over at once. Another
    host's claims wait for their lease: its processes cannot be seen from here."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != (this_host or socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def release_dead(tx: Tx, table: Table, where=None, *, every_time: bool = False) -> None:
    """Free the claims of this host's processes that died. Looked at once per table and process, unless
    `every_time` (crash repair must see a submission that died a moment ago)."""
    if not every_time:
        if table.name in tx.store.dead_checked:
            return
        tx.store.dead_checked.add(table.name)
    query = select(table.c.lock_owner).distinct().where(table.c.lock_owner.is_not(None), table.c.lock_owner != tx.owner)
    if where is not None:
        query = query.where(where)
    dead = [o for o in tx.scalars(query) if owner_is_dead(o, tx.host)]
    for chunk in chunks(dead, 500):
        tx.execute(update(table).where(table.c.lock_owner.in_(chunk)).values(lock_owner=None, lock_expires=None))


def claim(tx: Tx, table: Table, where, limit: int, order_by=None) -> list[Any]:
    """Claim up to `limit` unclaimed (or lease-expired) rows matching `where`; returns the rows we own."""
    release_dead(tx, table)
    key = list(table.primary_key.columns)
    at = tx.lease_now()
    query = select(*key).where(where, free(table, at)).limit(limit)
    if order_by is not None:
        query = query.order_by(order_by)
    if not tx.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    keys = [tuple(r) for r in tx.execute(query)]
    if not keys:
        return []
    match = key_match(key, keys)
    tx.execute(update(table).where(match, free(table, at))
               .values(lock_owner=tx.owner, lock_expires=at + tx.lease_seconds))
    return list(tx.execute(select(table).where(match, table.c.lock_owner == tx.owner)))


def _keys(keys: Iterable[Any]) -> list[tuple]:
    return [k if isinstance(k, tuple) else (k,) for k in keys]


def release(tx: Tx, table: Table, keys: Iterable[Any]) -> None:
    key = list(table.primary_key.columns)
    for chunk in chunks(_keys(keys), 500):
        tx.execute(update(table).where(key_match(key, chunk), owned(tx, table))
                   .values(lock_owner=None, lock_expires=None))


def renew(tx: Tx, table: Table, keys: Iterable[Any]) -> None:
    """Extend this run's claims (a long submission must not let another run take its rows over)."""
    key = list(table.primary_key.columns)
    for chunk in chunks(_keys(keys), 500):
        tx.execute(update(table).where(key_match(key, chunk), owned(tx, table))
                   .values(lock_expires=tx.lease_now() + tx.lease_seconds))
