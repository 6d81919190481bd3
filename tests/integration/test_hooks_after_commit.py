"""``job:added`` hooks fire for jobs that exist: after the caller's commit, never after
a rollback, never for idempotent duplicates (issue 13 item 5)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import dataqueue as dq
from tests.conftest import libpq_url
from tests.integration.test_transactional_enqueue import django_connection  # noqa: F401


def _recorder(queue: dq.JobQueue) -> list[int]:
    seen: list[int] = []
    queue.on("job:added", lambda event: seen.append(event["job_id"]))
    return seen


@pytest.mark.all_backends
def test_no_hook_for_idempotent_duplicates(queue: dq.JobQueue) -> None:
    seen = _recorder(queue)
    first = queue.add_job("t", {}, idempotency_key="k")
    assert queue.add_job("t", {}, idempotency_key="k") == first
    ids = queue.add_jobs(
        [
            {"job_type": "t", "payload": 1, "idempotency_key": "k"},  # exists
            {"job_type": "t", "payload": 2, "idempotency_key": "new"},
            {"job_type": "t", "payload": 3, "idempotency_key": "new"},  # repeats in batch
            {"job_type": "t", "payload": 4},
        ]
    )
    assert ids[0] == first and ids[1] == ids[2]
    assert seen == [first, ids[1], ids[3]]


def test_sqlalchemy_connection_fires_after_commit_only(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    seen = _recorder(pg_queue)
    with engine.connect() as conn:
        kept = pg_queue.add_job("t", {}, db=conn)
        assert seen == []  # not yet: the transaction is open
        conn.commit()
        assert seen == [kept]
        dropped = pg_queue.add_jobs([{"job_type": "t", "payload": n} for n in range(3)], db=conn)
        conn.rollback()
    assert seen == [kept]
    assert all(pg_queue.get_job(i) is None for i in dropped)


def test_savepoint_rollback_drops_only_its_jobs(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    seen = _recorder(pg_queue)
    with engine.begin() as conn:
        outer = pg_queue.add_job("t", {}, db=conn)
        nested = conn.begin_nested()
        pg_queue.add_job("t", {}, db=conn)
        nested.rollback()
        with conn.begin_nested():
            inner = pg_queue.add_job("t", {}, db=conn)
        assert seen == []
    assert seen == [outer, inner]


def test_session_fires_after_commit_and_not_after_rollback(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    seen = _recorder(pg_queue)
    with Session(engine) as session:
        rolled_back = pg_queue.add_job("t", {}, db=session)
        session.rollback()
        kept = pg_queue.add_job("t", {}, db=session)
        assert seen == []
        session.commit()
    assert seen == [kept]
    assert pg_queue.get_job(rolled_back) is None


def test_autocommit_connection_fires_at_once(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    seen = _recorder(pg_queue)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        job_id = pg_queue.add_job("t", {}, db=conn)
        assert seen == [job_id]


def test_raw_psycopg_connection_fires_when_add_job_returns(
    pg_queue: dq.JobQueue, database_url: str
) -> None:
    # No DB-API driver has a commit hook: documented as firing on return.
    seen = _recorder(pg_queue)
    with psycopg.connect(libpq_url(database_url)) as raw:
        job_id = pg_queue.add_job("t", {}, db=raw)
        assert seen == [job_id]
        raw.commit()


def test_django_on_commit(
    pg_queue: dq.JobQueue,
    django_connection: Any,  # noqa: F811
) -> None:
    from django.db import transaction

    seen = _recorder(pg_queue)
    with pytest.raises(RuntimeError), transaction.atomic():
        pg_queue.add_job("t", {}, db=django_connection)
        raise RuntimeError("roll back")
    with transaction.atomic():
        kept = pg_queue.add_job("t", {}, db=django_connection)
        assert seen == []
    assert seen == [kept]


def test_a_failing_hook_does_not_break_the_commit(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError("listener bug")

    pg_queue.on("job:added", broken)
    with engine.begin() as conn:
        job_id = pg_queue.add_job("t", {}, db=conn)
    assert pg_queue.get_job(job_id) is not None
