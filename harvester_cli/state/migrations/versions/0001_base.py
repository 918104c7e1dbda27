"""The first schema (schema version 1): jobs, workers, their bindings, PanDA commands, the report outbox.

Frozen as it was shipped: later changes go into later revisions, never here.

Revision ID: 0001_base
Revises:
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0001_base"
down_revision = None
branch_labels = None
depends_on = None

Epoch = sa.Double
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def create_table(name, *columns):
    """A database created but never versioned (meta.schema_version 0) may hold some tables already."""
    if not context.is_offline_mode() and sa.inspect(op.get_bind()).has_table(name):
        return
    op.create_table(name, *columns)


def create_index(name, table, columns):
    if not context.is_offline_mode() and name in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}:
        return
    op.create_index(name, table, columns)


def lease():
    return [sa.Column("lock_owner", sa.String(128)), sa.Column("lock_expires", Epoch)]


def upgrade() -> None:
    create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255)),
        sa.Column("ivalue", sa.BigInteger),
    )
    create_table("locks", sa.Column("name", sa.String(255), primary_key=True), *lease())
    create_table(
        "jobs",
        sa.Column("panda_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("sub_status", sa.String(32), nullable=False),
        sa.Column("attempt_nr", sa.Integer),
        sa.Column("resource_type", sa.String(64)),
        sa.Column("core_count", sa.Integer),
        sa.Column("submit_attempts", sa.Integer, nullable=False),
        sa.Column("job_json", LongText, nullable=False),
        sa.Column("diag", sa.Text),
        sa.Column("created", Epoch, nullable=False),
        sa.Column("modified", Epoch, nullable=False),
        *lease(),
    )
    create_index("ix_jobs_queue_sub", "jobs", ["queue", "sub_status"])
    create_table(
        "workers",
        sa.Column("worker_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("resource_type", sa.String(64)),
        sa.Column("job_type", sa.String(64)),
        sa.Column("n_core", sa.Integer),
        sa.Column("memory_mb", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(255)),
        sa.Column("submission_host", sa.String(255)),
        sa.Column("computing_element", sa.String(255)),
        sa.Column("native_status", sa.String(64)),
        sa.Column("native_exit_code", sa.Integer),
        sa.Column("diag", sa.Text),
        sa.Column("error_code", sa.Integer),
        sa.Column("log_dir", sa.Text),
        sa.Column("stdout_url", sa.Text),
        sa.Column("stderr_url", sa.Text),
        sa.Column("batch_log_url", sa.Text),
        sa.Column("submit_time", Epoch),
        sa.Column("start_time", Epoch),
        sa.Column("end_time", Epoch),
        sa.Column("kill_reason", sa.Text),
        sa.Column("created", Epoch, nullable=False),
        sa.Column("modified", Epoch, nullable=False),
        *lease(),
    )
    create_index("ix_workers_queue_status", "workers", ["queue", "status"])
    create_index("ix_workers_queue_id", "workers", ["queue", "worker_id"])
    create_table(
        "job_workers",
        sa.Column("panda_id", sa.BigInteger, sa.ForeignKey("jobs.panda_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("worker_id", sa.BigInteger, sa.ForeignKey("workers.worker_id", ondelete="CASCADE"),
                  primary_key=True),
    )
    create_index("ix_job_workers_worker", "job_workers", ["worker_id"])
    create_table(
        "panda_commands",
        sa.Column("command_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("command", sa.String(255), nullable=False),
        sa.Column("params", sa.Text),
        sa.Column("ack_requested", sa.Boolean, nullable=False),
        sa.Column("queue", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("diag", sa.Text),
        sa.Column("received", Epoch, nullable=False),
        sa.Column("applied", Epoch),
        *lease(),
    )
    create_table(
        "pending_reports",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("payload", LongText),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("created", Epoch, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        *lease(),
    )
