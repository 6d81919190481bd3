"""The database schema of dataqueue, as SQLAlchemy Core tables.

This module is the single source of truth for table, column, index and constraint
names. The Alembic revisions create exactly this metadata, and every query in
:mod:`dataqueue.backends.postgres` is built from these ``Table`` objects.

Names match the upstream Node.js library exactly, so a database created by either
implementation can be used by the other.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()

_NOW = sa.text("CURRENT_TIMESTAMP")
_TZ = sa.TIMESTAMP(timezone=True)

job_queue = sa.Table(
    "job_queue",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_type", sa.String(255), nullable=False),
    sa.Column("payload", pg.JSONB, nullable=False),
    sa.Column("status", sa.String(50), server_default=sa.text("'pending'")),
    sa.Column("created_at", _TZ, server_default=_NOW),
    sa.Column("updated_at", _TZ, server_default=_NOW),
    sa.Column("locked_at", _TZ),
    sa.Column("locked_by", sa.String(255)),
    sa.Column("attempts", sa.Integer, server_default=sa.text("0")),
    sa.Column("max_attempts", sa.Integer, server_default=sa.text("3")),
    sa.Column("next_attempt_at", _TZ),
    sa.Column("priority", sa.Integer, server_default=sa.text("0")),
    sa.Column("run_at", _TZ, server_default=_NOW),
    sa.Column("pending_reason", sa.Text),
    sa.Column("error_history", pg.JSONB, server_default=sa.text("'[]'::jsonb")),
    sa.Column("timeout_ms", sa.Integer),
    sa.Column("failure_reason", sa.String),
    sa.Column("completed_at", _TZ),
    sa.Column("started_at", _TZ),
    sa.Column("last_retried_at", _TZ),
    sa.Column("last_failed_at", _TZ),
    sa.Column("last_cancelled_at", _TZ),
    sa.Column("tags", pg.ARRAY(sa.Text)),
    sa.Column("force_kill_on_timeout", sa.Boolean, server_default=sa.text("false")),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("wait_until", _TZ),
    sa.Column("wait_token_id", sa.String(255)),
    sa.Column("step_data", pg.JSONB, server_default=sa.text("'{}'::jsonb")),
    sa.Column("progress", sa.Integer),
    sa.Column("retry_delay", sa.Integer),
    sa.Column("retry_backoff", sa.Boolean),
    sa.Column("retry_delay_max", sa.Integer),
    sa.Column("output", pg.JSONB),
    sa.Column("group_id", sa.String(255)),
    sa.Column("group_tier", sa.String(255)),
    sa.Column("dead_letter_job_type", sa.String(255)),
    sa.Column("dead_lettered_at", _TZ),
    sa.Column("dead_letter_job_id", sa.Integer),
    sa.Column("depends_on_job_ids", pg.ARRAY(sa.Integer)),
    sa.Column("depends_on_tags", pg.ARRAY(sa.Text)),
)

_status = job_queue.c.status
sa.Index("idx_job_queue_status", job_queue.c.status)
# Upstream's idx_job_queue_next_attempt, idx_job_queue_run_at, idx_job_queue_priority
# and idx_job_queue_claimable are dropped by revision 0007 (no query needs them; each
# cost an index entry per enqueue, claim and completion).
# Upstream's GIN indexes, partial since revision 0007: a GIN index stores an entry for
# a NULL array too, which every job without tags or prerequisites paid on each write.
sa.Index(
    "idx_job_queue_tags",
    job_queue.c.tags,
    postgresql_using="gin",
    postgresql_where=job_queue.c.tags.isnot(None),
)
sa.Index(
    "idx_job_queue_idempotency_key",
    job_queue.c.idempotency_key,
    unique=True,
    postgresql_where=job_queue.c.idempotency_key.isnot(None),
)
sa.Index(
    "idx_job_queue_wait_until",
    job_queue.c.wait_until,
    postgresql_where=sa.and_(_status == "waiting", job_queue.c.wait_until.isnot(None)),
)
# Not in upstream: the next scheduled job (timed wake-ups); claims and completions
# leave it alone, their new row versions not being pending (revision 0007).
sa.Index(
    "idx_job_queue_pending_run_at",
    job_queue.c.run_at,
    postgresql_where=_status == "pending",
)
# Not in upstream: the claim's full order including the id tiebreak (W-ORD-1, W-PLAN-1).
sa.Index(
    "idx_job_queue_claim_order",
    job_queue.c.priority.desc(),
    job_queue.c.created_at.asc(),
    job_queue.c.id.asc(),
    postgresql_where=_status == "pending",
)
sa.Index(
    "idx_job_queue_failed_retry",
    job_queue.c.next_attempt_at.asc(),
    postgresql_where=sa.and_(_status == "failed", job_queue.c.next_attempt_at.isnot(None)),
)
sa.Index(
    "idx_job_queue_stuck",
    job_queue.c.locked_at.asc(),
    postgresql_where=_status == "processing",
)
sa.Index(
    "idx_job_queue_cleanup",
    job_queue.c.updated_at.asc(),
    postgresql_where=_status == "completed",
)
sa.Index(
    "idx_job_queue_processing_group_id",
    job_queue.c.group_id,
    postgresql_where=sa.and_(_status == "processing", job_queue.c.group_id.isnot(None)),
)
sa.Index(
    "idx_job_queue_depends_on_job_ids",
    job_queue.c.depends_on_job_ids,
    postgresql_using="gin",
    postgresql_where=job_queue.c.depends_on_job_ids.isnot(None),
)
# Not in upstream: queue.get_stats() counts by (job type, status) with index-only
# scans, the active part and the completed part apart (each row version is in one of
# them), finds the oldest due pending job of a type with one probe, and reads a type's
# completions of the last minutes as one range.
sa.Index(
    "idx_job_queue_stats_active",
    job_queue.c.job_type,
    job_queue.c.status,
    job_queue.c.run_at,
    postgresql_where=_status != "completed",
)
sa.Index(
    "idx_job_queue_stats_completed",
    job_queue.c.job_type,
    job_queue.c.completed_at,
    postgresql_where=_status == "completed",
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "job_id",
        sa.Integer,
        sa.ForeignKey("job_queue.id", ondelete="CASCADE", name="fk_job_events_job_queue"),
        nullable=False,
    ),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("created_at", _TZ, server_default=sa.func.now()),
    sa.Column("metadata", pg.JSONB),
)
sa.Index("idx_job_events_job_id", job_events.c.job_id)
sa.Index("idx_job_events_event_type", job_events.c.event_type)
sa.Index("idx_job_events_created_at", job_events.c.created_at.asc())
# Not in upstream: the failed attempts of get_stats()'s recent window.
sa.Index(
    "idx_job_events_failed_recent",
    job_events.c.created_at,
    postgresql_where=job_events.c.event_type == "failed",
)

waitpoints = sa.Table(
    "waitpoints",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("job_queue.id", ondelete="CASCADE")),
    sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'waiting'")),
    sa.Column("output", pg.JSONB),
    sa.Column("timeout_at", _TZ),
    sa.Column("created_at", _TZ, server_default=sa.func.now()),
    sa.Column("completed_at", _TZ),
    sa.Column("tags", pg.ARRAY(sa.Text)),
)
sa.Index("idx_waitpoints_job_id", waitpoints.c.job_id)
sa.Index("idx_waitpoints_status", waitpoints.c.status)
sa.Index(
    "idx_waitpoints_timeout",
    waitpoints.c.timeout_at,
    postgresql_where=waitpoints.c.status == "waiting",
)

cron_schedules = sa.Table(
    "cron_schedules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("schedule_name", sa.String(255), nullable=False, unique=True),
    sa.Column("cron_expression", sa.String(255), nullable=False),
    sa.Column("job_type", sa.String(255), nullable=False),
    sa.Column("payload", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("max_attempts", sa.Integer, server_default=sa.text("3")),
    sa.Column("priority", sa.Integer, server_default=sa.text("0")),
    sa.Column("timeout_ms", sa.Integer),
    sa.Column("force_kill_on_timeout", sa.Boolean, server_default=sa.text("false")),
    sa.Column("tags", pg.ARRAY(sa.Text)),
    sa.Column("timezone", sa.String(100), server_default=sa.text("'UTC'")),
    sa.Column("allow_overlap", sa.Boolean, server_default=sa.text("false")),
    sa.Column("status", sa.String(50), server_default=sa.text("'active'")),
    sa.Column("last_enqueued_at", _TZ),
    sa.Column("last_job_id", sa.Integer),
    sa.Column("next_run_at", _TZ),
    sa.Column("created_at", _TZ, server_default=_NOW),
    sa.Column("updated_at", _TZ, server_default=_NOW),
    sa.Column("retry_delay", sa.Integer),
    sa.Column("retry_backoff", sa.Boolean),
    sa.Column("retry_delay_max", sa.Integer),
    sa.Column("dead_letter_job_type", sa.String(255)),
)
sa.Index("idx_cron_schedules_status", cron_schedules.c.status)
sa.Index("idx_cron_schedules_next_run_at", cron_schedules.c.next_run_at)
sa.Index("idx_cron_schedules_name", cron_schedules.c.schedule_name)

# Not in upstream: the processors that heartbeat the jobs they hold. A job locked by a
# registered worker is abandoned once its ``locked_at`` (the heartbeat) is older than
# that worker's ``heartbeat_timeout_ms``; jobs locked by anything else (a Node.js
# worker on the same table) keep upstream's reclaim rule. Upstream never reads it.
dataqueue_workers = sa.Table(
    "dataqueue_workers",
    metadata,
    sa.Column("worker_id", sa.String(255), primary_key=True),
    sa.Column("hostname", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("started_at", _TZ, nullable=False, server_default=_NOW),
    sa.Column("heartbeat_at", _TZ, nullable=False, server_default=_NOW),
    sa.Column("heartbeat_timeout_ms", sa.Integer, nullable=False),
)

# Not in upstream: the log of recent starts of rate-limited job types. A claim of a
# processor with ``rate_limits`` counts the rows of each limited type in the last
# window, adds one row per job it claims of such a type, and deletes the rows older
# than the window, under a per-type advisory lock. About one window of starts per
# limited type is kept. Upstream never reads it.
dataqueue_rate_limit_starts = sa.Table(
    "dataqueue_rate_limit_starts",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("job_type", sa.String(255), nullable=False),
    sa.Column("started_at", _TZ, nullable=False),
)
sa.Index(
    "idx_dataqueue_rate_limit_starts_type_time",
    dataqueue_rate_limit_starts.c.job_type,
    dataqueue_rate_limit_starts.c.started_at,
)

#: Every table dataqueue owns, in creation order.
ALL_TABLES = (
    job_queue,
    job_events,
    waitpoints,
    cron_schedules,
    dataqueue_workers,
    dataqueue_rate_limit_starts,
)
