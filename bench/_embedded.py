"""Shared helpers for the benchmarks in ``bench/``: a migrated scratch database.

``bench_database(url)`` yields the URL of an empty, migrated dataqueue database:

- ``url`` None (and ``DATAQUEUE_BENCH_DATABASE_URL`` unset, see :func:`resolve_database_url`):
  an embedded PostgreSQL from ``pgserver`` in a temporary directory, stopped and deleted
  afterwards;
- otherwise ``url`` names an existing server where we may ``CREATE DATABASE``: a scratch
  database ``dq_bench_<random>`` is created there, migrated, and dropped afterwards.

Nothing here asserts anything about timing; benchmarks only print figures.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: Environment variable naming an existing server to benchmark against.
DATABASE_URL_ENV = "DATAQUEUE_BENCH_DATABASE_URL"

#: Every dataqueue table, for :func:`truncate_tables`.
TRUNCATE_SQL = (
    "TRUNCATE job_events, waitpoints, cron_schedules, job_queue, dataqueue_workers,"
    " dataqueue_rate_limit_starts"
    " RESTART IDENTITY CASCADE"
)

#: Server settings worth printing next to the figures (they decide commit cost).
REPORTED_SETTINGS = ("fsync", "synchronous_commit", "shared_buffers", "jit")


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--database-url`` (default: ``$DATAQUEUE_BENCH_DATABASE_URL``, else embedded)."""
    parser.add_argument(
        "--database-url",
        default=None,
        help=(
            "existing PostgreSQL server to use (a scratch database is created and dropped), "
            f"e.g. postgresql://postgres@127.0.0.1:5432/postgres; default ${DATABASE_URL_ENV}, "
            "else an embedded pgserver PostgreSQL in a temporary directory"
        ),
    )


def resolve_database_url(url: str | None) -> str | None:
    """``url``, else ``$DATAQUEUE_BENCH_DATABASE_URL``, else None (meaning: embedded)."""
    if url:
        return url
    return os.environ.get(DATABASE_URL_ENV, "").strip() or None


def psycopg_url(url: str) -> str:
    """A SQLAlchemy URL on psycopg 3 for any libpq URL (``postgres://`` included).

    pgserver's ``postgresql://postgres:@/postgres?host=/tmp/...`` (Unix socket in the
    query) is kept as is apart from the driver name.
    """
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def _create_scratch_database(admin_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_scratch_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def _migrate(url: str) -> None:
    from dataqueue.migrate import upgrade

    upgrade(url)


@contextmanager
def bench_database(url: str | None = None, *, prefix: str = "dq_bench") -> Iterator[str]:
    """Yield the URL of an empty, migrated dataqueue database; clean up afterwards.

    ``url`` None: embedded pgserver PostgreSQL (its ``postgres`` database is used; the
    whole server is thrown away). Otherwise a scratch database ``<prefix>_<random>`` is
    created on the server ``url`` points to and dropped at the end (``WITH (FORCE)``, so
    connections a benchmark forgot to close do not block it). Pass the result of
    :func:`resolve_database_url` to honour ``$DATAQUEUE_BENCH_DATABASE_URL``.
    """
    if url is not None:
        admin_url = psycopg_url(url)
        scratch_url = _create_scratch_database(admin_url, prefix)
        try:
            _migrate(scratch_url)
            yield scratch_url
        finally:
            _drop_scratch_database(admin_url, scratch_url)
        return

    from dataqueue.embedded import embedded_postgres

    with embedded_postgres() as server_url:
        embedded_url = psycopg_url(server_url)
        _migrate(embedded_url)
        yield embedded_url


def truncate_tables(engine: sa.Engine) -> None:
    """Empty every dataqueue table and restart the id sequences."""
    with engine.begin() as conn:
        conn.exec_driver_sql(TRUNCATE_SQL)


def server_info(engine: sa.Engine) -> dict[str, str]:
    """``server_version`` (short form), the full ``version()``, :data:`REPORTED_SETTINGS` and
    ``jit_available`` (``pg_jit_available()``: pgserver's build has no LLVM, so its ``jit=on``
    never compiles anything, unlike most packaged servers)."""
    with engine.connect() as conn:
        info = {
            "server_version": str(conn.exec_driver_sql("SHOW server_version").scalar()),
            "version": str(conn.exec_driver_sql("SELECT version()").scalar()),
        }
        for name in REPORTED_SETTINGS:
            info[name] = str(conn.exec_driver_sql(f"SHOW {name}").scalar())
        # pg_jit_available() is false whenever jit is off, as dataqueue's engines set it
        # per connection: ask with jit on for this transaction only.
        conn.exec_driver_sql("SELECT set_config('jit', 'on', true)")
        available = conn.exec_driver_sql("SELECT pg_jit_available()").scalar()
        conn.rollback()
        info["jit_available"] = "yes" if available else "no"
    return info


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
