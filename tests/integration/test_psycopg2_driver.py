"""A queue on an engine of another driver (psycopg2, common in Django projects).

``init_job_queue(engine=...)`` accepts any SQLAlchemy PostgreSQL engine. The hot paths
(single ``add_job``, the processor's store-and-claim cycle, pipelined batches) run on
psycopg 3 connections directly; with another driver they go through SQLAlchemy, and
the processor polls, as it cannot LISTEN there. These tests run every such fallback on
a real server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import dataqueue as dq
from dataqueue.backends.postgres import enqueue as pg_enqueue
from dataqueue.errors import InvalidJobError
from tests.conftest import libpq_url, run_sql, truncate_all


@pytest.fixture
def psycopg2_engine(database_url: str, engine: sa.Engine) -> Iterator[sa.Engine]:
    truncate_all(engine)
    url = make_url(database_url).set(drivername="postgresql+psycopg2")
    eng = sa.create_engine(url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture
def queue2(psycopg2_engine: sa.Engine) -> Iterator[dq.JobQueue]:
    queue = dq.init_job_queue(engine=psycopg2_engine)
    yield queue
    queue.close()


def _counts(engine: sa.Engine) -> tuple[int, int]:
    row = run_sql(
        engine, "SELECT (SELECT count(*) FROM job_queue), (SELECT count(*) FROM job_events)"
    )[0]
    return int(row[0]), int(row[1])


def _wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_enqueue_and_reads_on_a_psycopg2_engine(
    queue2: dq.JobQueue, psycopg2_engine: sa.Engine
) -> None:
    single = queue2.add_job("email", {"to": "a"}, tags=["t1"], priority=5)
    batch = queue2.add_jobs([{"job_type": "email", "payload": {"n": i}} for i in range(3)])
    # More than one pipelined chunk: psycopg2 cannot pipeline, so it is one statement.
    big = queue2.add_jobs(
        [{"job_type": "bulk", "payload": {"n": i}} for i in range(pg_enqueue.PIPELINE_CHUNK + 7)]
    )

    assert batch == [single + 1, single + 2, single + 3]
    assert len(big) == pg_enqueue.PIPELINE_CHUNK + 7 and big == sorted(big)
    record = queue2.get_job(single)
    assert record is not None
    assert (record.job_type, record.payload, record.priority, record.tags) == (
        "email",
        {"to": "a"},
        5,
        ["t1"],
    )
    assert [j.id for j in queue2.get_jobs_by_tags(["t1"])] == [single]
    total = 4 + pg_enqueue.PIPELINE_CHUNK + 7
    assert _counts(psycopg2_engine) == (total, total)  # each job with its added event


def test_processor_on_a_psycopg2_engine_completes_retries_and_polls(
    queue2: dq.JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def work(payload: dict[str, int]) -> dict[str, int]:
        with lock:
            ran.append(payload["n"])
        return {"double": payload["n"] * 2}

    def broken(payload: Any) -> None:
        raise RuntimeError("no luck")

    ids = queue2.add_jobs([{"job_type": "work", "payload": {"n": i}} for i in range(25)])
    bad = queue2.add_job("broken", {}, max_attempts=1)
    caplog.set_level(logging.INFO, logger="dataqueue")
    processor = queue2.create_processor(
        {"work": work, "broken": broken}, batch_size=10, concurrency=4, poll_interval=100
    )
    processor.start_in_background()
    try:
        _wait_until(lambda: all(queue2.get_job(i).status == "completed" for i in ids))  # type: ignore[union-attr]
        _wait_until(lambda: queue2.get_job(bad).status == "failed")  # type: ignore[union-attr]
        # A job added while the processor runs is found by polling (no LISTEN here).
        late = queue2.add_job("work", {"n": 100})
        _wait_until(lambda: queue2.get_job(late).status == "completed")  # type: ignore[union-attr]
    finally:
        assert processor.stop_and_drain(10_000) == []

    assert sorted(ran) == [*range(25), 100]  # each job ran once
    done = queue2.get_job(ids[3])
    assert done is not None and done.output == {"double": 6} and done.attempts == 1
    failed = queue2.get_job(bad)
    assert failed is not None
    assert failed.error_history[-1]["message"] == "no luck"
    assert [e.event_type for e in queue2.get_job_events(ids[0])] == [
        "added",
        "processing",
        "completed",
    ]
    assert any("polling only" in r.getMessage() for r in caplog.records)


def test_db_with_a_psycopg2_connection_follows_the_callers_transaction(
    queue2: dq.JobQueue, psycopg2_engine: sa.Engine, database_url: str
) -> None:
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        queue2.add_job("email", {"n": "rolled back"}, db=conn)
        queue2.add_jobs([{"job_type": "email", "payload": {"n": i}} for i in range(3)], db=conn)
        conn.rollback()
        assert _counts(psycopg2_engine) == (0, 0)

        kept = queue2.add_job("email", {"n": "kept"}, db=conn)
        assert queue2.get_job(kept) is None  # not visible before the caller commits
        conn.commit()
        assert queue2.get_job(kept) is not None
        assert _counts(psycopg2_engine) == (1, 1)

        # Invalid input raises before anything is written; the transaction stays usable.
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        with pytest.raises(InvalidJobError, match="max_attempts"):
            queue2.add_jobs(
                [
                    {"job_type": "email", "payload": {}},
                    {"job_type": "email", "payload": {}, "max_attempts": 0},
                ],
                db=conn,
            )
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM job_queue")
            assert cur.fetchone() == (1,)
        conn.commit()
    finally:
        conn.close()
    assert _counts(psycopg2_engine) == (1, 1)


def test_db_with_a_sqlalchemy_psycopg2_connection(
    queue2: dq.JobQueue, psycopg2_engine: sa.Engine
) -> None:
    with psycopg2_engine.connect() as conn:
        with conn.begin():
            queue2.add_job("email", {"n": 1}, db=conn)
            queue2.add_jobs([{"job_type": "email", "payload": {"n": i}} for i in range(2)], db=conn)
        with conn.begin() as tx:
            queue2.add_job("email", {"n": "gone"}, db=conn)
            tx.rollback()
    assert _counts(psycopg2_engine) == (3, 3)
