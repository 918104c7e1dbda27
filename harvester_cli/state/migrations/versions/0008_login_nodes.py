"""Which login node answered (`status`): per queue, harvester host and login node, the last attempt, the last
time it answered and why the last attempt failed (login_nodes).

Revision ID: 0008_login_nodes
Revises: 0007_running_commands
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_login_nodes"
down_revision = "0007_running_commands"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_nodes",
        sa.Column("queue", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("node", sa.String(255), primary_key=True),
        sa.Column("tried", sa.Double, nullable=False),
        sa.Column("answered", sa.Double),
        sa.Column("problem", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("login_nodes")
