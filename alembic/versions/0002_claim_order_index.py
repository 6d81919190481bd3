"""Claim-order index: pending jobs by (priority DESC, created_at, id).

Revision ID: 0002_claim_order_index
Revises: 0001_baseline
Create Date: 2026-11-23

dataqueue claims in ``priority DESC, created_at, id`` order (``id`` breaks the tie
between jobs of one ``add_jobs`` call, W-ORD-1). Upstream's
``idx_job_queue_claimable`` lacks ``id``, which makes PostgreSQL sort every pending
row on each claim. This index keeps the claim an ordered index scan that stops after
``batch_size`` rows, whatever the backlog (W-PLAN-1). Upstream's index is kept, so a
Node.js service on the same database is unaffected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002_claim_order_index"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

_NAME = "idx_job_queue_claim_order"


def _exists() -> bool:
    if context.is_offline_mode():
        return False
    return any(ix["name"] == _NAME for ix in sa.inspect(op.get_bind()).get_indexes("job_queue"))


def upgrade() -> None:
    if _exists():
        return
    op.create_index(
        _NAME,
        "job_queue",
        [sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name="job_queue")
