"""Indexes for ``queue.get_stats()``: counts by type and status, oldest due job, failures.

Revision ID: 0006_stats_indexes
Revises: 0005_rate_limits
Create Date: 2026-12-01

``get_stats`` counts jobs by (job type, status), finds the oldest due pending job of
each type, and counts the failed attempts of the last minutes. Measured on 1,000,000
jobs (89% completed; ``bench/stats.py``), without these indexes the counts are a
sequential scan of the whole table (about 250 ms, both cores), and the failures are
found through every ``failed`` event ever kept:

- ``idx_job_queue_stats_active`` on ``(job_type, status, run_at)`` of the jobs that
  are not completed: the counts of those statuses are an index-only scan of the
  (usually few) active, failed and cancelled jobs, and the oldest due pending job of
  a type is one probe (``min(run_at)``).
- ``idx_job_queue_stats_completed`` on ``job_type`` of the completed jobs: their counts
  are an index-only scan of a small, deduplicated index (about 6 MB per million).
- ``idx_job_events_failed_recent`` on ``created_at`` of the ``failed`` events: the
  failures within the window are a range scan of just those.

Each row version lands in one of the two ``job_queue`` indexes, so a write adds one
index entry. Upstream never reads them, so a Node.js service on the same database is
unaffected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0006_stats_indexes"
down_revision = "0005_rate_limits"
branch_labels = None
depends_on = None

#: (name, table, columns, partial-index predicate)
_INDEXES = (
    (
        "idx_job_queue_stats_active",
        "job_queue",
        ["job_type", "status", "run_at"],
        "status <> 'completed'",
    ),
    (
        "idx_job_queue_stats_completed",
        "job_queue",
        ["job_type", "completed_at"],
        "status = 'completed'",
    ),
    ("idx_job_events_failed_recent", "job_events", ["created_at"], "event_type = 'failed'"),
)


def _existing(table: str) -> set[str]:
    if context.is_offline_mode():
        return set()
    return {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    for name, table, columns, where in _INDEXES:
        if name not in _existing(table):
            op.create_index(name, table, columns, postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, table, _, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
