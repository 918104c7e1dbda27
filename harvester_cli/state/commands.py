"""PanDA's commands as received (`panda_commands`): stored once, applied once over every host (each new
command is claimed by one run, applied and marked in that run's transaction), acknowledged once."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select, update

from harvester_cli.state import claims
from harvester_cli.state.schema import commands
from harvester_cli.state.store import Tx

NEW, APPLIED, REJECTED, ACKED = "new", "applied", "rejected", "acked"


def record_received(tx: Tx, received: Sequence, at: float) -> int:
    """Store the commands (objects with command_id, command, target, params, ack_requested) not stored yet;
    returns how many were new."""
    known = set(tx.scalars(select(commands.c.command_id).where(
        commands.c.command_id.in_([c.command_id for c in received]))))
    new = [c for c in received if c.command_id not in known]
    if new:
        tx.execute(commands.insert(), [{
            "command_id": c.command_id, "command": c.command, "params": json.dumps(c.params),
            "ack_requested": c.ack_requested, "queue": c.target or None, "status": NEW, "received": at}
            for c in new])
    return len(new)


def claim_new(tx: Tx, limit: int = 100) -> list:
    """Claim commands not applied yet, oldest first; each row's params are JSON text."""
    return claims.claim(tx, commands, commands.c.status == NEW, limit, order_by=commands.c.command_id)


def record_outcome(tx: Tx, command_id: int, status: str, diag: str | None, at: float) -> None:
    tx.execute(update(commands).where(commands.c.command_id == command_id, claims.owned(tx, commands))
               .values(status=status, diag=diag, applied=at, lock_owner=None, lock_expires=None))


def claim_to_acknowledge(tx: Tx, limit: int = 500) -> list[int]:
    """Claim applied commands that asked to be acknowledged (one host acknowledges each)."""
    return [r.command_id for r in claims.claim(tx, commands, (commands.c.status == APPLIED)
                                               & commands.c.ack_requested.is_(True), limit)]


def release(tx: Tx, command_ids: Sequence[int]) -> None:
    claims.release(tx, commands, command_ids)


def record_acknowledged(tx: Tx, command_ids: Sequence[int]) -> None:
    tx.execute(update(commands).where(commands.c.command_id.in_(list(command_ids)), claims.owned(tx, commands))
               .values(status=ACKED, lock_owner=None, lock_expires=None))
