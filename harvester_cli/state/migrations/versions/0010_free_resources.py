"""What each queue's batch system last said can start now, per CE (free_resources): the planner's figures for
queues with free_resources, shown by plan, status and the metrics.

Revision ID: 0010_free_resources
Revises: 0009_downtimes
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_free_resources"
down_revision = "0009_downtimes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "free_resources",
        sa.Column("queue", sa.String(128), primary_key=True),
        sa.Column("computing_element", sa.String(255), primary_key=True),
        sa.Column("measured", sa.Double, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("workers", sa.Integer),
        sa.Column("window", sa.Integer),
        sa.Column("idle_nodes", sa.Integer),
        sa.Column("idle_cores", sa.Integer),
        sa.Column("total_cores", sa.Integer),
        sa.Column("waiting", sa.Integer),
        sa.Column("pool", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("free_resources")
