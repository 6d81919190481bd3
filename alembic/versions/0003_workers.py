"""Worker registry for heartbeats: ``dataqueue_workers``.

Revision ID: 0003_workers
Revises: 0002_claim_order_index
Create Date: 2026-11-30

A running processor refreshes ``job_queue.locked_at`` of every job it holds every few
seconds and its own row here. A job locked by a registered worker whose heartbeat is
older than that worker's ``heartbeat_timeout_ms`` is abandoned (the process died) and
is reclaimed at once; a live job of any length is never reclaimed. Jobs locked by a
worker that is not registered (upstream's Node.js processor) keep upstream's rule.
Upstream never reads this table, so a Node.js service on the same database is
unaffected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0003_workers"
down_revision = "0002_claim_order_index"
branch_labels = None
depends_on = None

_TABLE = "dataqueue_workers"


def _exists() -> bool:
    if context.is_offline_mode():
        return False
    return sa.inspect(op.get_bind()).has_table(_TABLE)


def upgrade() -> None:
    if _exists():
        return
    op.create_table(
        _TABLE,
        sa.Column("worker_id", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column(
            "started_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column(
            "heartbeat_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column("heartbeat_timeout_ms", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table(_TABLE)
