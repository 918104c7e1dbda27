"""What runs now, and why the last run failed (`status`): each command's runs from start to end
(running_commands), and the last failed run of each command on each host (command_runs.last_failure*).

Revision ID: 0007_running_commands
Revises: 0006_multihost
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_running_commands"
down_revision = "0006_multihost"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for the runs recorded before: their failures were not kept.
    op.add_column("command_runs", sa.Column("last_failure_at", sa.Double))
    op.add_column("command_runs", sa.Column("last_failure_exit", sa.Integer))
    op.add_column("command_runs", sa.Column("last_failure", sa.Text))
    op.create_table(
        "running_commands",
        sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("previous_start", sa.Double),
    )


def downgrade() -> None:
    op.drop_table("running_commands")
    # SQLite drops a column only by rebuilding the table (batch mode); the servers alter it in place.
    with op.batch_alter_table("command_runs") as batch:
        batch.drop_column("last_failure")
        batch.drop_column("last_failure_exit")
        batch.drop_column("last_failure_at")
