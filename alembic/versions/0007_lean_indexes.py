"""Leaner writes: drop four upstream indexes no query needs; GIN indexes skip NULLs.

Revision ID: 0007_lean_indexes
Revises: 0006_stats_indexes
Create Date: 2026-12-02

Every change of a job's status writes a new row version. ``status`` is indexed, so
PostgreSQL cannot make it a heap-only update: each claim and each completion adds an
entry to every index on ``job_queue`` whose predicate the new version matches. Four of
upstream's indexes are never the best path for any statement dataqueue or upstream
runs, and cost one entry per enqueue, claim and completion each:

- ``idx_job_queue_claimable`` (pending, ``priority DESC, created_at``) is a prefix of
  ``idx_job_queue_claim_order`` (same predicate, ``id`` added; revision 0002): every
  query that could use it can use that one, upstream's claim included.
- ``idx_job_queue_next_attempt`` (``next_attempt_at``, all rows): due retries are
  found through the partial ``idx_job_queue_failed_retry``, by us and by upstream.
- ``idx_job_queue_priority`` (``priority`` alone): no statement filters or sorts by
  priority alone.
- ``idx_job_queue_run_at`` (``run_at``, all rows): replaced by
  ``idx_job_queue_pending_run_at``, ``run_at`` of pending jobs only, which serves what
  it served (the next scheduled job, for timed wake-ups) and is left alone by claims
  and completions (their new row versions are not pending).

Upstream's two GIN indexes, ``idx_job_queue_tags`` and
``idx_job_queue_depends_on_job_ids``, keep their names and columns and become partial:
``WHERE tags IS NOT NULL`` and ``WHERE depends_on_job_ids IS NOT NULL``. A GIN index
stores an entry for a NULL array too, so every job without tags or prerequisites (most
jobs) paid two GIN insertions per enqueue, claim and completion. Every statement that
reads them (``@>``, ``&&``, by us and by upstream) is strict, so PostgreSQL proves the
predicate and keeps using them.

Measured on PostgreSQL 15 (2 cores), interleaved runs: ``add_jobs`` of 1,000 jobs per
call got 14% faster from the four dropped indexes and 9% more from the partial GIN
indexes; the bare claim-plus-complete writes of a drain (batches of 50, with their
events) 28% faster. ``idx_job_queue_status`` stays: listing jobs by status (ours and
upstream's) reads it.

A Node.js service on upstream dataqueue keeps working: its statements are unchanged
and each still has an index (its claim uses ``idx_job_queue_claim_order``). A filter
on ``run_at`` ranges in a job list reads the table instead of an index. Downgrading
recreates the four indexes and the full GIN indexes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0007_lean_indexes"
down_revision = "0006_stats_indexes"
branch_labels = None
depends_on = None

#: Upstream's indexes this revision drops: (name, columns, partial-index predicate).
_DROPPED: tuple[tuple[str, list[str | sa.TextClause], str | None], ...] = (
    ("idx_job_queue_claimable", [sa.text("priority DESC"), "created_at"], "status = 'pending'"),
    ("idx_job_queue_next_attempt", ["next_attempt_at"], None),
    ("idx_job_queue_priority", ["priority"], None),
    ("idx_job_queue_run_at", ["run_at"], None),
)

_PENDING_RUN_AT = "idx_job_queue_pending_run_at"

#: Upstream's GIN indexes, made partial: (name, column).
_GIN = (
    ("idx_job_queue_tags", "tags"),
    ("idx_job_queue_depends_on_job_ids", "depends_on_job_ids"),
)


def _gin(name: str, column: str, *, partial: bool) -> None:
    op.drop_index(name, table_name="job_queue", if_exists=True)
    op.create_index(
        name,
        "job_queue",
        [column],
        postgresql_using="gin",
        postgresql_where=sa.text(f"{column} IS NOT NULL") if partial else None,
    )


def _existing() -> set[str]:
    if context.is_offline_mode():
        return set()
    return {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("job_queue")}


def upgrade() -> None:
    if _PENDING_RUN_AT not in _existing():
        op.create_index(
            _PENDING_RUN_AT,
            "job_queue",
            ["run_at"],
            postgresql_where=sa.text("status = 'pending'"),
        )
    # IF EXISTS: a database adopted from upstream may lack some of them.
    for name, _, _ in _DROPPED:
        op.drop_index(name, table_name="job_queue", if_exists=True)
    for name, column in _GIN:
        _gin(name, column, partial=True)


def downgrade() -> None:
    existing = _existing()
    for name, columns, where in _DROPPED:
        if name not in existing:
            op.create_index(
                name,
                "job_queue",
                columns,
                postgresql_where=None if where is None else sa.text(where),
            )
    for name, column in _GIN:
        _gin(name, column, partial=False)
    op.drop_index(_PENDING_RUN_AT, table_name="job_queue")
