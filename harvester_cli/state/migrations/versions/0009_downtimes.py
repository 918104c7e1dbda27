"""Downtimes and caps over several queues: the downtimes `downtime add` announces (every host sees them),
and each queue's last demand for the shared caps ([caps.NAME]).

Revision ID: 0009_downtimes
Revises: 0008_login_nodes
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_downtimes"
down_revision = "0008_login_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "downtimes",
        sa.Column("downtime_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(128)),
        sa.Column("computing_element", sa.String(255)),
        sa.Column("start_time", sa.Double, nullable=False),
        sa.Column("end_time", sa.Double, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("created_by", sa.String(255)),
    )
    op.create_index("ix_downtimes_end", "downtimes", ["end_time"])
    op.create_table(
        "queue_demand",
        sa.Column("queue", sa.String(128), primary_key=True),
        sa.Column("demand", sa.Double, nullable=False),
        sa.Column("queued_target", sa.Integer, nullable=False),
        sa.Column("running_target", sa.Integer, nullable=False),
        sa.Column("cores_target", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("updated", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("queue_demand")
    op.drop_index("ix_downtimes_end", "downtimes")
    op.drop_table("downtimes")
