"""add_job(db=...) joins the caller's transaction: SQLAlchemy, Session, psycopg, Django."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import dataqueue as dq
from tests.conftest import run_sql


def _jobs_and_events(engine: sa.Engine) -> tuple[int, int]:
    row = run_sql(
        engine, "SELECT (SELECT count(*) FROM job_queue), (SELECT count(*) FROM job_events)"
    )[0]
    return int(row[0]), int(row[1])


def _libpq_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_sqlalchemy_connection_commit_keeps_job_and_event(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    with engine.begin() as conn:
        job_id = pg_queue.add_job("email", {"to": "a"}, db=conn)
        # Inside the transaction the job is visible to the caller, not to others.
        assert conn.execute(sa.text("SELECT count(*) FROM job_queue")).scalar() == 1
        assert pg_queue.get_job(job_id) is None
    assert _jobs_and_events(engine) == (1, 1)


def test_sqlalchemy_connection_rollback_removes_job_and_event(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    with engine.connect() as conn:
        conn.begin()
        pg_queue.add_jobs(
            [{"job_type": "a", "payload": {}}, {"job_type": "b", "payload": {}}], db=conn
        )
        conn.rollback()
    assert _jobs_and_events(engine) == (0, 0)


def test_queue_never_commits_the_callers_transaction(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    conn = engine.connect()
    try:
        conn.begin()
        pg_queue.add_job("a", {}, db=conn)
        assert conn.in_transaction()
        assert _jobs_and_events(engine) == (0, 0)
    finally:
        conn.close()  # closing without commit rolls back
    assert _jobs_and_events(engine) == (0, 0)


def test_session_commit_and_rollback(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    with Session(engine) as session:
        pg_queue.add_job("kept", {}, db=session)
        session.commit()
    with Session(engine) as session:
        pg_queue.add_job("dropped", {}, db=session)
        session.rollback()
    assert [j.job_type for j in pg_queue.get_all_jobs()] == ["kept"]


def test_psycopg_connection_commit_and_rollback(
    pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    with psycopg.connect(_libpq_url(database_url)) as raw:
        pg_queue.add_job("dropped", {}, db=raw, tags=["t"])
        raw.rollback()
        kept = pg_queue.add_job("kept", {"a": [1]}, db=raw, idempotency_key="k")
        again = pg_queue.add_job("kept", {"a": [1]}, db=raw, idempotency_key="k")
        raw.commit()
        assert not raw.closed
    assert kept == again
    assert [j.job_type for j in pg_queue.get_all_jobs()] == ["kept"]
    assert _jobs_and_events(engine) == (1, 1)


def test_failure_inside_callers_transaction_is_raised_not_swallowed(
    engine: sa.Engine, pg_queue: dq.JobQueue
) -> None:
    # W-TX-1: upstream swallowed the error and left the transaction aborted. Here a
    # statement failure reaches the caller, who decides to roll back.
    wrong_schema = dq.init_job_queue(engine=engine, schema="no_such_schema")
    with engine.connect() as conn:
        conn.begin()
        with pytest.raises(dq.SchemaNotReadyError, match="dataqueue migrate"):
            wrong_schema.add_job("a", {}, db=conn)
        conn.rollback()
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_validation_error_leaves_callers_transaction_usable(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    with engine.begin() as conn:
        with pytest.raises(dq.JobDependencyError):
            pg_queue.add_job("a", {}, depends_on={"job_ids": [424242]}, db=conn)
        job_id = pg_queue.add_job("b", {}, db=conn)
    assert pg_queue.get_job(job_id) is not None


@pytest.fixture
def django_connection(database_url: str) -> Iterator[Any]:
    import django
    from django.conf import settings

    url = make_url(database_url)
    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": url.database,
                    "USER": url.username or "",
                    "PASSWORD": url.password or "",
                    # pgserver's URL names its Unix socket folder in the query.
                    "HOST": url.host or str(url.query.get("host") or ""),
                    "PORT": str(url.port or ""),
                }
            },
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    from django.db import connection

    yield connection
    connection.close()


def test_django_connection_in_atomic_block(
    pg_queue: dq.JobQueue, engine: sa.Engine, django_connection: Any
) -> None:
    from django.db import transaction

    with transaction.atomic():
        pg_queue.add_job("kept", {}, db=django_connection)
    with pytest.raises(RuntimeError), transaction.atomic():
        pg_queue.add_job("dropped", {}, db=django_connection)
        raise RuntimeError("roll back")
    assert [j.job_type for j in pg_queue.get_all_jobs()] == ["kept"]
    assert _jobs_and_events(engine) == (1, 1)
