"""Alembic keeps the schema's version from here on. meta.schema_version becomes 3, so a harvester-cli from
before migrations (which knows versions 1 and 2) refuses this database instead of writing to it.

Revision ID: 0003_alembic
Revises: 0002_worker_targets
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_alembic"
down_revision = "0002_worker_targets"
branch_labels = None
depends_on = None

meta = sa.table("meta", sa.column("key", sa.String), sa.column("ivalue", sa.BigInteger))


def upgrade() -> None:
    op.execute(meta.delete().where(meta.c.key == "schema_version"))
    op.bulk_insert(meta, [{"key": "schema_version", "ivalue": 3}])
