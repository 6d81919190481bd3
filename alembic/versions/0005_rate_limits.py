"""Global rate limits: ``dataqueue_rate_limit_starts``, the log of recent job starts.

Revision ID: 0005_rate_limits
Revises: 0004_upstream_bookkeeping
Create Date: 2026-12-01

A processor with ``rate_limits`` counts, inside its claim, the starts of each limited
job type in the last window and claims only what still fits; every job it claims of
such a type adds one row here (its type and the claim's time), and the same statement
deletes the rows older than the window. The table therefore holds at most about one
window of starts per limited type. Claims of types without a limit never touch it.
Upstream never reads it, so a Node.js service on the same database is unaffected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0005_rate_limits"
down_revision = "0004_upstream_bookkeeping"
branch_labels = None
depends_on = None

_TABLE = "dataqueue_rate_limit_starts"
_INDEX = "idx_dataqueue_rate_limit_starts_type_time"


def _exists() -> bool:
    if context.is_offline_mode():
        return False
    return sa.inspect(op.get_bind()).has_table(_TABLE)


def upgrade() -> None:
    if _exists():
        return
    op.create_table(
        _TABLE,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("job_type", sa.String(255), nullable=False),
        sa.Column("started_at", sa.TIMESTAMP(timezone=True), nullable=False),
    )
    op.create_index(_INDEX, _TABLE, ["job_type", "started_at"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
    op.drop_table(_TABLE)
