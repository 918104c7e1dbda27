"""Pilot streaming (schema version 2): PanDA's SET_N_WORKERS_JOBTYPE numbers still to submit.

Revision ID: 0002_worker_targets
Revises: 0001_base
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_worker_targets"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_targets",
        sa.Column("site", sa.String(128), primary_key=True),
        sa.Column("job_type", sa.String(64), primary_key=True),
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("command_id", sa.BigInteger),
        sa.Column("updated", sa.Double, nullable=False),
    )
