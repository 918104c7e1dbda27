"""PanDA fidelity: the instance's registration at each PanDA server (the first heartbeat it accepted, also
the instance's start time), and whether a job's pilot log URL reached PanDA (sent once per job).

Revision ID: 0004_panda_registration
Revises: 0003_alembic
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_panda_registration"
down_revision = "0003_alembic"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "panda_registrations",
        sa.Column("panda_url", sa.String(255), primary_key=True),
        sa.Column("harvester_id", sa.String(128), primary_key=True),
        sa.Column("registered", sa.Double, nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("pilot_log_sent", sa.Boolean))
