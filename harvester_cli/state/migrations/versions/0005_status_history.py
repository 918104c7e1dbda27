"""Monitoring: worker counts over time (history_series, status_history), each command's last run per host
(command_runs), and counters that outlive a process (metric_counters).

Revision ID: 0005_status_history
Revises: 0004_panda_registration
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_status_history"
down_revision = "0004_panda_registration"
branch_labels = None
depends_on = None

# Frozen here: a migration must not change when the code's tables do.
STATES = ("pending", "submitted", "running", "idle", "finished", "failed", "cancelled", "missed")


def upgrade() -> None:
    op.create_table(
        "history_series",
        sa.Column("series_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("computing_element", sa.String(255), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.UniqueConstraint("queue", "computing_element", "resource_type", name="uq_history_series"),
    )
    op.create_table(
        "status_history",
        sa.Column("taken", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("series_id", sa.Integer, primary_key=True, autoincrement=False),
        *(sa.Column(state, sa.Integer, nullable=False) for state in STATES),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "command_runs",
        sa.Column("command", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("last_start", sa.Double, nullable=False),
        sa.Column("last_end", sa.Double, nullable=False),
        sa.Column("last_exit", sa.Integer, nullable=False),
        sa.Column("last_items", sa.BigInteger),
        sa.Column("last_success", sa.Double),
        sa.Column("runs", sa.BigInteger, nullable=False),
        sa.Column("failed_runs", sa.BigInteger, nullable=False),
        sa.Column("items", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "metric_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("labels", sa.String(255), primary_key=True),
        sa.Column("value", sa.Double, nullable=False),
    )
