"""Record upstream's migrations as applied, so a Node.js service can share the database.

Revision ID: 0004_upstream_bookkeeping
Revises: 0003_workers
Create Date: 2026-11-30

Upstream dataqueue (Node.js) migrates with node-pg-migrate, which keeps the names of
the migrations it applied in ``dataqueuedev_migrations`` (``id serial``, ``name
varchar(255)``, ``run_on timestamp``). On a database our migrations created, that
table did not exist, so ``dataqueue-cli migrate`` tried to apply upstream's
migrations again and failed on the first column that already existed. The tables
revision 0001 creates are those upstream's 16 migrations leave behind, so this
revision records those 16 names (any already there are kept, none is repeated), in
the schema of the dataqueue tables. ``dataqueue-cli migrate`` of any upstream version
up to the one with these 16 migrations then has nothing to run.

A later upstream migration is not recorded here: ``dataqueue-cli migrate`` applies it
(upstream's migrations use ``IF NOT EXISTS``), and a later revision of ours adopts it.
Downgrading below this revision removes these names again (and the table, if nothing
else is left in it): the tables are about to be dropped, or no longer match.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0004_upstream_bookkeeping"
down_revision = "0003_workers"
branch_labels = None
depends_on = None

TABLE = "dataqueuedev_migrations"

#: Upstream's migrations, in the order node-pg-migrate applies them (file names
#: without ``.sql``).
UPSTREAM_MIGRATIONS = (
    "1751131910823_initial",
    "1751131910825_add_timeout_seconds_to_job_queue",
    "1751186053000_add_job_events_table",
    "1751984773000_add_tags_to_job_queue",
    "1765809419000_add_force_kill_on_timeout_to_job_queue",
    "1771100000000_add_idempotency_key_to_job_queue",
    "1781200000000_add_wait_support",
    "1781200000001_create_waitpoints_table",
    "1781200000002_add_performance_indexes",
    "1781200000003_add_progress_to_job_queue",
    "1781200000004_create_cron_schedules_table",
    "1781200000005_add_retry_config_to_job_queue",
    "1781200000006_add_output_to_job_queue",
    "1781200000007_add_group_fields_to_job_queue",
    "1781200000008_add_dead_letter_columns",
    "1781200000009_add_depends_on_to_job_queue",
)


def _table() -> sa.Table:
    return sa.Table(
        TABLE,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("run_on", sa.TIMESTAMP(timezone=False), nullable=False),
    )


def _exists() -> bool:
    if context.is_offline_mode():
        return False
    return sa.inspect(op.get_bind()).has_table(TABLE)


def upgrade() -> None:
    table = _table()
    if not _exists():
        op.create_table(
            TABLE,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(255), nullable=False),
            sa.Column("run_on", sa.TIMESTAMP(timezone=False), nullable=False),
        )
        recorded: set[str] = set()
    else:
        recorded = {row[0] for row in op.get_bind().execute(sa.select(table.c.name))}
    missing = [name for name in UPSTREAM_MIGRATIONS if name not in recorded]
    if missing:
        # One statement, in order: ids (and so node-pg-migrate's order) follow the list.
        op.execute(table.insert().values([{"name": n, "run_on": sa.func.now()} for n in missing]))


def downgrade() -> None:
    table = _table()
    if not context.is_offline_mode() and not _exists():
        return
    op.execute(table.delete().where(table.c.name.in_(UPSTREAM_MIGRATIONS)))
    if context.is_offline_mode():
        return
    left = op.get_bind().execute(sa.select(sa.func.count()).select_from(table)).scalar()
    if not left:
        op.drop_table(TABLE)
