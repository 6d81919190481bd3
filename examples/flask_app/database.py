"""The example's tables and the process's queue (whose engine the app shares)."""

from __future__ import annotations

import threading

import sqlalchemy as sa

import dataqueue as dq

metadata = sa.MetaData()

#: The application's own table, written in the same transaction as the job.
signups = sa.Table(
    "signups",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

#: What the ``send_welcome`` handler "sent": one row per job run, with the worker's pid.
welcome_emails = sa.Table(
    "welcome_emails",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("signup_id", sa.BigInteger),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("worker_pid", sa.Integer, nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# Any constant works; it keeps concurrent create_tables() calls (gunicorn workers
# starting together) from racing on CREATE TABLE.
_CREATE_TABLES_LOCK_KEY = 0x5167_6E75

_lock = threading.Lock()
_queue: dq.JobQueue | None = None


def get_queue() -> dq.JobQueue:
    """The process's queue, created on first use from ``DATAQUEUE_DATABASE_URL``.

    The app runs its own queries on ``get_queue().get_engine()``, so a process has one
    connection pool. The queue is fork-safe: a gunicorn worker forked after the queue
    was created (``preload_app``) opens its own connections.
    """
    global _queue  # noqa: PLW0603 - one queue per process, made on first use
    with _lock:
        if _queue is None:
            _queue = dq.init_job_queue()
        return _queue


def set_queue(queue: dq.JobQueue | None) -> None:
    """Use ``queue`` as the process's queue (tests, or apps that configure it themselves)."""
    global _queue  # noqa: PLW0603
    with _lock:
        _queue = queue


def create_tables(engine: sa.Engine) -> None:
    """Create the example's tables if missing (the dataqueue tables come from migrate)."""
    with engine.begin() as conn:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_TABLES_LOCK_KEY)))
        metadata.create_all(conn)
