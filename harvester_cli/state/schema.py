"""The state database's tables (SQLAlchemy Core). The schema's history lives in `migrations/`: a change
here comes with a new migration script there, and HEAD names it (a test checks they agree).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

# Every migration in migrations/versions, oldest first; HEAD is what this code needs. Read by every command
# without importing Alembic (only `db upgrade` and friends pay for it).
REVISIONS = ("0001_base", "0002_worker_targets", "0003_alembic", "0004_panda_registration", "0005_status_history",
             "0006_multihost", "0007_running_commands", "0008_login_nodes", "0009_downtimes",
             "0010_free_resources", "0011_workers_end_index", "0012_workers_status_shape_index")
HEAD = REVISIONS[-1]
# Databases from before migrations carry meta.schema_version instead: the revision each one equals
# ("base": created but never versioned, so every migration runs and creates what is missing).
LEGACY_VERSIONS = {0: "base", 1: "0001_base", 2: "0002_worker_targets"}

# Epoch seconds need double precision (MariaDB's FLOAT is single: ~2 minutes of resolution today), and
# job dicts and updates outgrow MariaDB's 64 kB TEXT.
Epoch = Double


class LongText(TypeDecorator):
    """TEXT, LONGTEXT on MySQL/MariaDB. A type of its own rather than with_variant(): the MySQL dialect
    is imported only when it is the database (it costs every command ~8 ms of start-up otherwise)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import LONGTEXT

            return LONGTEXT()
        return Text()


metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255)),
    Column("ivalue", BigInteger),
)

locks = Table(
    "locks", metadata,
    Column("name", String(255), primary_key=True),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
)

jobs = Table(
    "jobs", metadata,
    Column("panda_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("sub_status", String(32), nullable=False),
    Column("attempt_nr", Integer),
    Column("resource_type", String(64)),
    Column("core_count", Integer),
    Column("submit_attempts", Integer, nullable=False, default=0),
    Column("job_json", LongText, nullable=False),   # the PanDA job dict, verbatim
    Column("diag", Text),
    Column("pilot_log_sent", Boolean),              # PanDA stores every pilot_log it gets: send it once
    Column("created", Epoch, nullable=False),
    Column("modified", Epoch, nullable=False),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
    Index("ix_jobs_queue_sub", "queue", "sub_status"),
)

workers = Table(
    "workers", metadata,
    Column("worker_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue", String(128), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("mode", String(8), nullable=False),
    Column("resource_type", String(64)),
    Column("job_type", String(64)),
    Column("n_core", Integer),
    Column("memory_mb", Integer),
    Column("status", String(16), nullable=False),
    Column("batch_id", String(255)),
    Column("submission_host", String(255)),
    Column("computing_element", String(255)),
    Column("native_status", String(64)),
    Column("native_exit_code", Integer),
    Column("diag", Text),
    Column("error_code", Integer),
    Column("log_dir", Text),
    Column("stdout_url", Text),
    Column("stderr_url", Text),
    Column("batch_log_url", Text),
    Column("submit_time", Epoch),
    Column("start_time", Epoch),
    Column("end_time", Epoch),
    Column("kill_reason", Text),
    Column("created", Epoch, nullable=False),
    Column("modified", Epoch, nullable=False),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
    # The harvester host ([instance] host) that made the worker: with a host-bound backend only it works it.
    Column("harvester_host", String(255)),
    # by queue and state; with the CE and resource type, poll's history snapshot counts from the index alone
    Index("ix_workers_queue_status_shape", "queue", "status", "computing_element", "resource_type"),
    # poll and sweep page through a queue's workers by id: without it every page rescans the queue
    Index("ix_workers_queue_id", "queue", "worker_id"),
    # the per-cycle cap over all hosts counts a queue's workers made within the last cycle interval
    Index("ix_workers_queue_created", "queue", "created"),
    # with free_resources the planner counts a queue's workers that ended recently (its turnover)
    Index("ix_workers_queue_end", "queue", "end_time"),
)

job_workers = Table(
    "job_workers", metadata,
    Column("panda_id", BigInteger, ForeignKey("jobs.panda_id", ondelete="CASCADE"), primary_key=True),
    Column("worker_id", BigInteger, ForeignKey("workers.worker_id", ondelete="CASCADE"), primary_key=True),
    Index("ix_job_workers_worker", "worker_id"),
)

commands = Table(
    "panda_commands", metadata,
    Column("command_id", BigInteger, primary_key=True, autoincrement=False),
    Column("command", String(255), nullable=False),
    Column("params", Text),
    Column("ack_requested", Boolean, nullable=False, default=False),
    Column("queue", String(128)),
    Column("status", String(16), nullable=False),   # new, applied, acked, rejected
    Column("diag", Text),
    Column("received", Epoch, nullable=False),
    Column("applied", Epoch),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
)

# What still has to reach PanDA: one row per job or worker. A newer update of the same item bumps the
# version; after PanDA's success only the version that was sent is deleted, so nothing newer is lost.
reports = Table(
    "pending_reports", metadata,
    Column("kind", String(8), primary_key=True),        # job | worker
    Column("key", BigInteger, primary_key=True, autoincrement=False),
    Column("queue", String(128), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("payload", LongText),                             # jobs: the update; workers: built when sent
    Column("final", Boolean, nullable=False, default=False),
    Column("created", Epoch, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("lock_owner", String(128)),
    Column("lock_expires", Epoch),
)


# Pilot streaming: PanDA's SET_N_WORKERS_JOBTYPE numbers still to submit, per PanDA queue, job type and
# resource type. A newer command replaces a queue's rows; submit consumes them.
worker_targets = Table(
    "worker_targets", metadata,
    Column("site", String(128), primary_key=True),
    Column("job_type", String(64), primary_key=True),
    Column("resource_type", String(64), primary_key=True),
    Column("remaining", Integer, nullable=False),
    Column("command_id", BigInteger),
    Column("updated", Epoch, nullable=False),
)

# This instance at each PanDA server: registered by the first heartbeat the server accepted. PanDA records
# which job ran in which worker only for a registered instance, so nothing reaches pilots before this row.
panda_registrations = Table(
    "panda_registrations", metadata,
    Column("panda_url", String(255), primary_key=True),
    Column("harvester_id", String(128), primary_key=True),
    Column("registered", Epoch, nullable=False),   # also the instance's start time in every heartbeat
)


# Downtimes announced with `harvester-cli downtime add`: every host sharing the database sees them. A whole
# queue (no computing_element), a CE for every queue that submits to it (no queue), or both.
downtimes = Table(
    "downtimes", metadata,
    Column("downtime_id", Integer, primary_key=True, autoincrement=True),
    Column("queue", String(128)),
    Column("computing_element", String(255)),
    Column("start_time", Epoch, nullable=False),
    Column("end_time", Epoch, nullable=False),
    Column("severity", String(16), nullable=False),   # OUTAGE | AT_RISK
    Column("reason", Text),
    Column("created", Epoch, nullable=False),
    Column("created_by", String(255)),                # the host it was added on
    Index("ix_downtimes_end", "end_time"),
)

# Shared caps ([caps.NAME]): what each queue wanted when a host last planned it, so that a host splits a cap
# by the demand of queues only other hosts run. Targets are the levels the queue would reach (workers
# queued, workers queued or running, their cores), not additions: they stay true while others submit.
queue_demand = Table(
    "queue_demand", metadata,
    Column("queue", String(128), primary_key=True),
    Column("demand", Double, nullable=False),
    Column("queued_target", Integer, nullable=False),
    Column("running_target", Integer, nullable=False),
    Column("cores_target", Integer, nullable=False),
    Column("host", String(255)),
    Column("updated", Epoch, nullable=False),
)


# -- monitoring (status, metrics, the status page) ------------------------------------------------

# Worker counts over time. A series is one (queue, CE, resource type); its names are stored once here, so
# a snapshot row is a few small integers. "" stands for an unknown CE or resource type.
history_series = Table(
    "history_series", metadata,
    Column("series_id", Integer, primary_key=True, autoincrement=True),
    Column("queue", String(128), nullable=False),
    Column("computing_element", String(255), nullable=False),
    Column("resource_type", String(64), nullable=False),
    UniqueConstraint("queue", "computing_element", "resource_type", name="uq_history_series"),
)

# One row per series and snapshot (every poll run takes one), workers per state; sweep trims it to
# [sweep] history_retention. Keyed by time first: the status page reads the last day, sweep deletes the
# oldest. Without a rowid on SQLite the key is the table, not a second index beside it.
HISTORY_STATES = ("pending", "submitted", "running", "idle", "finished", "failed", "cancelled", "missed")
status_history = Table(
    "status_history", metadata,
    Column("taken", BigInteger, primary_key=True, autoincrement=False),    # epoch seconds
    Column("series_id", Integer, primary_key=True, autoincrement=False),
    *(Column(state, Integer, nullable=False, default=0) for state in HISTORY_STATES),
    sqlite_with_rowid=False,
)

# The last run of each command on each host (a stale cron shows here), and its totals.
command_runs = Table(
    "command_runs", metadata,
    Column("command", String(32), primary_key=True),
    Column("host", String(255), primary_key=True),
    Column("last_start", Epoch, nullable=False),
    Column("last_end", Epoch, nullable=False),
    Column("last_exit", Integer, nullable=False),
    Column("last_items", BigInteger),
    Column("last_success", Epoch),             # the end of the last run that exited 0
    Column("runs", BigInteger, nullable=False, default=0),
    Column("failed_runs", BigInteger, nullable=False, default=0),
    Column("items", BigInteger, nullable=False, default=0),
    # The last run that did not exit 0: when it ended, its exit code and the first line of why.
    Column("last_failure_at", Epoch),
    Column("last_failure_exit", Integer),
    Column("last_failure", Text),
)

# The commands running now: a row from a run's start to its end (then its command_runs row is written in
# the same transaction). A run killed outright leaves its row; the next run of any command on that host
# forgets the rows of processes that are gone.
running_commands = Table(
    "running_commands", metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("command", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", Epoch, nullable=False),
    Column("previous_start", Epoch),   # the command's start before this one on this host: about its interval
)

# What each queue's backend reached through a remote place, per harvester host (`status`): for a Slurm queue
# behind login nodes, each login node tried, when it last answered, and why it did not the last time it failed.
login_nodes = Table(
    "login_nodes", metadata,
    Column("queue", String(128), primary_key=True),
    Column("host", String(255), primary_key=True),   # the harvester host that tried
    Column("node", String(255), primary_key=True),   # the login node
    Column("tried", Epoch, nullable=False),          # the last attempt
    Column("answered", Epoch),                       # the last attempt it answered (NULL: never)
    Column("problem", Text),                         # why the last attempt failed (NULL: it answered)
)

# What each queue's batch system last said can start now, per CE (free_resources): the planner's figures, and
# what `status` and the metrics show. A queue's rows are replaced whole each time its backend is asked.
free_resources = Table(
    "free_resources", metadata,
    Column("queue", String(128), primary_key=True),
    Column("computing_element", String(255), primary_key=True),
    Column("measured", Epoch, nullable=False),   # when the batch system was asked
    Column("source", Text, nullable=False),      # how: its commands, or why it could not tell
    Column("workers", Integer),                  # workers of the queue's shape that would start now (NULL: unknown)
    Column("window", Integer),                   # seconds such a worker could run (the walltime, a backfill window)
    Column("idle_nodes", Integer),
    Column("idle_cores", Integer),
    Column("total_cores", Integer),
    Column("waiting", Integer),                  # jobs of every user waiting there
    Column("pool", Text),                        # the nodes it draws on: CEs of one pool are counted once
)

# Counters that outlive a process (Prometheus counters must not go back): PanDA call errors per endpoint,
# submission failures per CE, ... `labels` is a JSON object with sorted keys.
metric_counters = Table(
    "metric_counters", metadata,
    Column("name", String(64), primary_key=True),
    Column("host", String(255), primary_key=True),
    Column("labels", String(255), primary_key=True),
    Column("value", Double, nullable=False),
)
