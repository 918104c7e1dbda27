"""Workers by queue, state, CE and resource type, in place of queue and state alone: poll's history snapshot
counts a queue's workers per CE, resource type and state after every poll, and with the two columns in the
index it reads the index alone, not every worker's row (0.2 s of a poll of 200,000 workers on SQLite, 0.035 s
with it). Queries by queue and state use the index as before.

Revision ID: 0012_workers_status_shape_index
Revises: 0011_workers_end_index
"""

from alembic import op

revision = "0012_workers_status_shape_index"
down_revision = "0011_workers_end_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_workers_queue_status_shape", "workers",
                    ["queue", "status", "computing_element", "resource_type"])
    op.drop_index("ix_workers_queue_status", table_name="workers")


def downgrade() -> None:
    op.create_index("ix_workers_queue_status", "workers", ["queue", "status"])
    op.drop_index("ix_workers_queue_status_shape", table_name="workers")
