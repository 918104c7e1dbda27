"""Single values the instance keeps (the `meta` table): the last worker id handed out, when this host last
sent its service metrics. Worker ids are never reused, over every host."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from harvester_cli.state.schema import meta
from harvester_cli.state.store import Store, Tx

LAST_WORKER_ID = "last_worker_id"


def get(store: Store, key: str) -> int | None:
    with store.reading() as tx:
        row = tx.execute(select(meta.c.ivalue).where(meta.c.key == key)).first()
        return None if row is None else int(row[0])


def put(tx: Tx, key: str, ivalue: int) -> None:
    change = update(meta).where(meta.c.key == key).values(ivalue=ivalue)
    # When another run created the row meanwhile, ours is the newer value.
    if not tx.execute(change).rowcount and not _create(tx, key, ivalue):
        tx.execute(change)


def _create(tx: Tx, key: str, ivalue: int) -> bool:
    """Insert the key's row; False when another run's transaction inserted it first (PostgreSQL and MariaDB
    make the insert wait for that transaction, then refuse it as a duplicate)."""
    try:
        with tx.conn.begin_nested():
            tx.execute(meta.insert().values(key=key, ivalue=ivalue))
        return True
    except IntegrityError:
        return False


def allocate_worker_ids(store: Store, count: int, floor: int = 0) -> list[int]:
    """Reserve `count` new worker ids, never reused; `floor` is the highest id PanDA has seen. A COMMIT whose
    answer never came reserves again: ids left unused are a gap, never a reuse."""
    if count <= 0:
        return []
    last_id = select(meta.c.ivalue).where(meta.c.key == LAST_WORKER_ID).with_for_update()

    def allocate(tx: Tx) -> int:
        # FOR UPDATE: two submits for different queues on PostgreSQL/MariaDB must not read the same value.
        row = tx.execute(last_id).first()
        if row is None:
            # The first ids of a new database: FOR UPDATE locked no row, so two first submits would both start
            # from 0. The row is created first (one of them waits for the other's, then reads it, locked).
            _create(tx, LAST_WORKER_ID, 0)
            row = tx.execute(last_id).first()
        last = max(int(row[0]), floor)
        put(tx, LAST_WORKER_ID, last + count)
        return last

    # Run again whole when it lost a deadlock: InnoDB keeps the lock a refused duplicate insert took, and two
    # of three first submits can deadlock on it.
    last = store.retrying(allocate, rerun_unknown=True)
    return list(range(last + 1, last + count + 1))
