"""Baseline: the dataqueue tables as left by upstream dataqueue's 16 SQL migrations.

Revision ID: 0001_baseline
Revises:
Create Date: 2025-01-01

Frozen copy of ``dataqueue/schema.py`` at the time of writing; later schema changes get
their own revision. A database the upstream Node.js library already migrated is adopted:
tables, columns and indexes that exist are kept (missing columns of an older upstream
schema are added), so on such a database this revision only records the version.
In ``--sql`` mode nothing can be inspected and everything is emitted.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

_NOW = sa.text("CURRENT_TIMESTAMP")


def _tz() -> sa.TIMESTAMP:
    return sa.TIMESTAMP(timezone=True)


def _job_queue_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_type", sa.String(255), nullable=False),
        sa.Column("payload", pg.JSONB(), nullable=False),
        sa.Column("status", sa.String(50), server_default=sa.text("'pending'")),
        sa.Column("created_at", _tz(), server_default=_NOW),
        sa.Column("updated_at", _tz(), server_default=_NOW),
        sa.Column("locked_at", _tz()),
        sa.Column("locked_by", sa.String(255)),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3")),
        sa.Column("next_attempt_at", _tz()),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0")),
        sa.Column("run_at", _tz(), server_default=_NOW),
        sa.Column("pending_reason", sa.Text()),
        sa.Column("error_history", pg.JSONB(), server_default=sa.text("'[]'::jsonb")),
        sa.Column("timeout_ms", sa.Integer()),
        sa.Column("failure_reason", sa.String()),
        sa.Column("completed_at", _tz()),
        sa.Column("started_at", _tz()),
        sa.Column("last_retried_at", _tz()),
        sa.Column("last_failed_at", _tz()),
        sa.Column("last_cancelled_at", _tz()),
        sa.Column("tags", pg.ARRAY(sa.Text())),
        sa.Column("force_kill_on_timeout", sa.Boolean(), server_default=sa.text("false")),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("wait_until", _tz()),
        sa.Column("wait_token_id", sa.String(255)),
        sa.Column("step_data", pg.JSONB(), server_default=sa.text("'{}'::jsonb")),
        sa.Column("progress", sa.Integer()),
        sa.Column("retry_delay", sa.Integer()),
        sa.Column("retry_backoff", sa.Boolean()),
        sa.Column("retry_delay_max", sa.Integer()),
        sa.Column("output", pg.JSONB()),
        sa.Column("group_id", sa.String(255)),
        sa.Column("group_tier", sa.String(255)),
        sa.Column("dead_letter_job_type", sa.String(255)),
        sa.Column("dead_lettered_at", _tz()),
        sa.Column("dead_letter_job_id", sa.Integer()),
        sa.Column("depends_on_job_ids", pg.ARRAY(sa.Integer())),
        sa.Column("depends_on_tags", pg.ARRAY(sa.Text())),
    ]


def _job_queue_constraints() -> list[sa.Constraint]:
    return [sa.PrimaryKeyConstraint("id", name="job_queue_pkey")]


def _job_events_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("created_at", _tz(), server_default=sa.text("now()")),
        sa.Column("metadata", pg.JSONB()),
    ]


def _job_events_constraints() -> list[sa.Constraint]:
    return [
        sa.PrimaryKeyConstraint("id", name="job_events_pkey"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job_queue.id"], name="fk_job_events_job_queue", ondelete="CASCADE"
        ),
    ]


def _waitpoints_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Integer()),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'waiting'")),
        sa.Column("output", pg.JSONB()),
        sa.Column("timeout_at", _tz()),
        sa.Column("created_at", _tz(), server_default=sa.text("now()")),
        sa.Column("completed_at", _tz()),
        sa.Column("tags", pg.ARRAY(sa.Text())),
    ]


def _waitpoints_constraints() -> list[sa.Constraint]:
    return [
        sa.PrimaryKeyConstraint("id", name="waitpoints_pkey"),
        # PostgreSQL's default name, which upstream's inline REFERENCES clause also gets.
        sa.ForeignKeyConstraint(
            ["job_id"], ["job_queue.id"], name="waitpoints_job_id_fkey", ondelete="CASCADE"
        ),
    ]


def _cron_schedules_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("schedule_name", sa.String(255), nullable=False),
        sa.Column("cron_expression", sa.String(255), nullable=False),
        sa.Column("job_type", sa.String(255), nullable=False),
        sa.Column("payload", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3")),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0")),
        sa.Column("timeout_ms", sa.Integer()),
        sa.Column("force_kill_on_timeout", sa.Boolean(), server_default=sa.text("false")),
        sa.Column("tags", pg.ARRAY(sa.Text())),
        sa.Column("timezone", sa.String(100), server_default=sa.text("'UTC'")),
        sa.Column("allow_overlap", sa.Boolean(), server_default=sa.text("false")),
        sa.Column("status", sa.String(50), server_default=sa.text("'active'")),
        sa.Column("last_enqueued_at", _tz()),
        sa.Column("last_job_id", sa.Integer()),
        sa.Column("next_run_at", _tz()),
        sa.Column("created_at", _tz(), server_default=_NOW),
        sa.Column("updated_at", _tz(), server_default=_NOW),
        sa.Column("retry_delay", sa.Integer()),
        sa.Column("retry_backoff", sa.Boolean()),
        sa.Column("retry_delay_max", sa.Integer()),
        sa.Column("dead_letter_job_type", sa.String(255)),
    ]


def _cron_schedules_constraints() -> list[sa.Constraint]:
    return [
        sa.PrimaryKeyConstraint("id", name="cron_schedules_pkey"),
        # PostgreSQL's default name for an inline UNIQUE, as upstream creates it.
        sa.UniqueConstraint("schedule_name", name="cron_schedules_schedule_name_key"),
    ]


#: (table, columns, constraints) in creation order: job_queue first, the FKs point at it.
_TABLES: list[tuple[str, Callable[[], list[sa.Column]], Callable[[], list[sa.Constraint]]]] = [
    ("job_queue", _job_queue_columns, _job_queue_constraints),
    ("job_events", _job_events_columns, _job_events_constraints),
    ("waitpoints", _waitpoints_columns, _waitpoints_constraints),
    ("cron_schedules", _cron_schedules_columns, _cron_schedules_constraints),
]

#: (name, table, columns or expressions, keyword arguments for ``op.create_index``)
_INDEXES: list[tuple[str, str, list[str | sa.TextClause], dict[str, object]]] = [
    ("idx_job_queue_status", "job_queue", ["status"], {}),
    ("idx_job_queue_next_attempt", "job_queue", ["next_attempt_at"], {}),
    ("idx_job_queue_run_at", "job_queue", ["run_at"], {}),
    ("idx_job_queue_priority", "job_queue", ["priority"], {}),
    ("idx_job_queue_tags", "job_queue", ["tags"], {"postgresql_using": "gin"}),
    (
        "idx_job_queue_idempotency_key",
        "job_queue",
        ["idempotency_key"],
        {"unique": True, "postgresql_where": sa.text("idempotency_key IS NOT NULL")},
    ),
    (
        "idx_job_queue_wait_until",
        "job_queue",
        ["wait_until"],
        {"postgresql_where": sa.text("status = 'waiting' AND wait_until IS NOT NULL")},
    ),
    (
        "idx_job_queue_claimable",
        "job_queue",
        [sa.text("priority DESC"), sa.text("created_at ASC")],
        {"postgresql_where": sa.text("status = 'pending'")},
    ),
    (
        "idx_job_queue_failed_retry",
        "job_queue",
        [sa.text("next_attempt_at ASC")],
        {"postgresql_where": sa.text("status = 'failed' AND next_attempt_at IS NOT NULL")},
    ),
    (
        "idx_job_queue_stuck",
        "job_queue",
        [sa.text("locked_at ASC")],
        {"postgresql_where": sa.text("status = 'processing'")},
    ),
    (
        "idx_job_queue_cleanup",
        "job_queue",
        [sa.text("updated_at ASC")],
        {"postgresql_where": sa.text("status = 'completed'")},
    ),
    (
        "idx_job_queue_processing_group_id",
        "job_queue",
        ["group_id"],
        {"postgresql_where": sa.text("status = 'processing' AND group_id IS NOT NULL")},
    ),
    (
        "idx_job_queue_depends_on_job_ids",
        "job_queue",
        ["depends_on_job_ids"],
        {"postgresql_using": "gin"},
    ),
    ("idx_job_events_job_id", "job_events", ["job_id"], {}),
    ("idx_job_events_event_type", "job_events", ["event_type"], {}),
    ("idx_job_events_created_at", "job_events", [sa.text("created_at ASC")], {}),
    ("idx_waitpoints_job_id", "waitpoints", ["job_id"], {}),
    ("idx_waitpoints_status", "waitpoints", ["status"], {}),
    (
        "idx_waitpoints_timeout",
        "waitpoints",
        ["timeout_at"],
        {"postgresql_where": sa.text("status = 'waiting'")},
    ),
    ("idx_cron_schedules_status", "cron_schedules", ["status"], {}),
    ("idx_cron_schedules_next_run_at", "cron_schedules", ["next_run_at"], {}),
    ("idx_cron_schedules_name", "cron_schedules", ["schedule_name"], {}),
]


class _ExistingSchema:
    """What the database already has; empty in ``--sql`` mode, where nothing is inspected."""

    def __init__(self) -> None:
        self._columns: dict[str, set[str]] = {}
        self._indexes: dict[str, set[str]] = {}
        if context.is_offline_mode():
            return
        inspector = sa.inspect(op.get_bind())
        for table, _, _ in _TABLES:
            if inspector.has_table(table):
                self._columns[table] = {c["name"] for c in inspector.get_columns(table)}
                self._indexes[table] = {
                    i["name"] for i in inspector.get_indexes(table) if i["name"]
                }

    def has_table(self, table: str) -> bool:
        return table in self._columns

    def has_column(self, table: str, column: str) -> bool:
        return column in self._columns.get(table, set())

    def has_index(self, table: str, index: str) -> bool:
        return index in self._indexes.get(table, set())


def upgrade() -> None:
    existing = _ExistingSchema()
    for table, columns, constraints in _TABLES:
        if not existing.has_table(table):
            op.create_table(table, *columns(), *constraints())
            continue
        # Adopting an upstream database migrated by an older upstream release.
        for column in columns():
            if not existing.has_column(table, column.name):
                op.add_column(table, column)
    for name, table, expressions, options in _INDEXES:
        if not existing.has_index(table, name):
            op.create_index(name, table, expressions, **options)


def downgrade() -> None:
    # Dropping a table drops its indexes, constraints and SERIAL sequences with it.
    for table, _, _ in reversed(_TABLES):
        op.drop_table(table)
