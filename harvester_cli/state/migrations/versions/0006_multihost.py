"""Several hosts on one database: the harvester host that made each worker (host-bound backends: only it
polls, kills and cleans the worker), and an index for the workers a queue got within the last cycle
interval (the per-cycle cap, counted over all hosts).

Revision ID: 0006_multihost
Revises: 0005_status_history
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_multihost"
down_revision = "0005_status_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for the workers made before: one host had them all, and any host may work them.
    op.add_column("workers", sa.Column("harvester_host", sa.String(255)))
    op.create_index("ix_workers_queue_created", "workers", ["queue", "created"])


def downgrade() -> None:
    op.drop_index("ix_workers_queue_created", "workers")
    op.drop_column("workers", "harvester_host")
