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
    if not tx.execute(update(meta).where(meta.c.key == key).values(ivalue=ivalue)).rowcount:
        tx.execute(meta.insert().values(key=key, ivalue=ivalue))


def allocate_worker_ids(store: Store, count: int, floor: int = 0) -> list[int]:
    """Reserve `count` new worker ids, never reused; `floor` is the highest id PanDA has seen. A COMMIT whose
    answer never came reserves again: ids left unused are a gap, never a reuse."""
    if count <= 0:
        return []

    def locked(tx: Tx):
        # FOR UPDATE: two submits for different queues on PostgreSQL/MariaDB must not read the same value.
        return tx.execute(select(meta.c.ivalue).where(meta.c.key == LAST_WORKER_ID).with_for_update()).first()

    def reserve(tx: Tx) -> int:
        row = locked(tx)
        if row is None:   # the first ids ever: two hosts' first submits both find no row to lock
            try:
                with tx.conn.begin_nested():
                    tx.execute(meta.insert().values(key=LAST_WORKER_ID, ivalue=0))
            except IntegrityError:   # the other host's row came first (this insert waited for its COMMIT)
                pass
            row = locked(tx)
        last = max(int(row[0]), floor)
        put(tx, LAST_WORKER_ID, last + count)
        return last

    last = store.retrying(reserve, rerun_unknown=True)
    return list(range(last + 1, last + count + 1))
