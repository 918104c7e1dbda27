"""Workers by queue and end time: with free_resources, the planner counts a queue's workers that ended
recently (the slots that free up per cycle) on every submit, and without the index that count reads every
finished worker the retention keeps.

Revision ID: 0011_workers_end_index
Revises: 0010_free_resources
"""

from alembic import op

revision = "0011_workers_end_index"
down_revision = "0010_free_resources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_workers_queue_end", "workers", ["queue", "end_time"])


def downgrade() -> None:
    op.drop_index("ix_workers_queue_end", table_name="workers")
