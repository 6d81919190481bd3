"""Concurrency claims with real threads and processes: exactly once, group caps, force kill.

The jobs live in the store under test (PostgreSQL or Redis); the handlers count what
they do in PostgreSQL tables either way (``worker_process.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql
from tests.integration import worker_process
from tests.integration.store_state import event_counts, is_redis, status_counts

pytestmark = pytest.mark.all_backends

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe_tables(engine: sa.Engine) -> Iterator[None]:
    run_sql(engine, "DROP TABLE IF EXISTS handled, probe_running")
    run_sql(engine, "CREATE TABLE handled (job_id int NOT NULL, worker text NOT NULL)")
    run_sql(
        engine,
        "CREATE TABLE probe_running (group_id text PRIMARY KEY, running int, max_running int)",
    )
    yield
    run_sql(engine, "DROP TABLE IF EXISTS handled, probe_running")


@pytest.fixture
def store_args(queue: dq.JobQueue, database_url: str, request: pytest.FixtureRequest) -> list[str]:
    """``worker_process`` arguments naming the queue's store and the ledger database."""
    if not is_redis(queue):
        return ["--url", database_url]
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    redis_url: str = request.getfixturevalue("redis_url")
    return ["--redis-url", redis_url, "--key-prefix", prefix, "--ledger-url", database_url]


def _start_process(store: list[str], worker: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.worker_process",
            *store,
            "--worker",
            worker,
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _run_thread_processors(
    queue: dq.JobQueue, engine: sa.Engine, count: int, group_concurrency: int | None, pause: float
) -> list[dq.Processor]:
    processors = []
    for n in range(count):
        worker = f"thread-{n}"
        processor = queue.create_processor(
            {"work": worker_process.make_handler(engine, worker, pause)},
            worker_id=worker,
            batch_size=20,
            concurrency=4,
            group_concurrency=group_concurrency,
            poll_interval=20,
        )
        processor.start_in_background()
        processors.append(processor)
    return processors


def _wait_until_drained(queue: dq.JobQueue, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while worker_process.pending_work(queue) > 0:
        assert time.monotonic() < deadline, "jobs were not drained in time"
        time.sleep(0.05)


def test_every_job_is_handled_exactly_once_across_threads_and_processes(
    queue: dq.JobQueue, engine: sa.Engine, store_args: list[str], probe_tables: None
) -> None:
    total = 5000
    queue.add_jobs([{"job_type": "work", "payload": {"n": i}} for i in range(total)])
    processes = [_start_process(store_args, f"process-{n}") for n in range(2)]
    processors = _run_thread_processors(queue, engine, 4, None, 0.0)
    try:
        _wait_until_drained(queue, 240)
    finally:
        for processor in processors:
            processor.stop_and_drain(30_000)
        for process in processes:
            assert process.wait(120) == 0
    handled = run_sql(engine, "SELECT count(*), count(DISTINCT job_id) FROM handled")[0]
    assert tuple(handled) == (total, total)
    assert status_counts(queue) == {"completed": total}
    assert event_counts(queue) == {"added": total, "processing": total, "completed": total}
    workers = {row[0] for row in run_sql(engine, "SELECT DISTINCT worker FROM handled")}
    assert any(w.startswith("process-") for w in workers) and any(
        w.startswith("thread-") for w in workers
    )


def test_group_cap_holds_across_threads_and_processes(
    queue: dq.JobQueue, engine: sa.Engine, store_args: list[str], probe_tables: None
) -> None:
    # W-GRP-1: upstream's count-then-claim races; here the cap is never exceeded.
    groups = [f"tenant-{g}" for g in range(5)]
    for group in groups:
        run_sql(engine, "INSERT INTO probe_running VALUES (:g, 0, 0)", g=group)
    queue.add_jobs(
        [
            {
                "job_type": "work",
                "payload": {"group": groups[i % 5]},
                "group": {"id": groups[i % 5]},
            }
            for i in range(200)
        ]
    )
    process = _start_process(store_args, "process-0", "--group-concurrency", "2", "--pause", "0.02")
    processors = _run_thread_processors(queue, engine, 4, 2, 0.02)
    try:
        _wait_until_drained(queue, 240)
    finally:
        for processor in processors:
            processor.stop_and_drain(30_000)
        assert process.wait(120) == 0
    maxima = dict(run_sql(engine, "SELECT group_id, max_running FROM probe_running"))
    assert all(1 <= value <= 2 for value in maxima.values()), maxima
    assert max(maxima.values()) == 2  # the cap was reached, not just respected
    handled = run_sql(engine, "SELECT count(*), count(DISTINCT job_id) FROM handled")[0]
    assert tuple(handled) == (200, 200)


def test_group_limit_follows_upstream_vectors(queue: dq.JobQueue) -> None:
    release = threading.Event()
    started: list[int] = []

    def hold(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        started.append(ctx.job_id)
        release.wait(5)

    a1, a2, b1 = queue.add_jobs(
        [
            {"job_type": "t", "payload": {}, "group": {"id": "tenant-a"}},
            {"job_type": "t", "payload": {}, "group": {"id": "tenant-a"}},
            {"job_type": "t", "payload": {}, "group": {"id": "tenant-b"}},
        ]
    )
    first = queue.create_processor({"t": hold}, group_concurrency=1, batch_size=10, concurrency=10)
    runner = threading.Thread(target=first.start)
    runner.start()
    deadline = time.monotonic() + 5
    while len(started) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sorted(started) == [a1, b1]
    second = queue.create_processor({"t": hold}, group_concurrency=1)
    assert second.start() == 0
    release.set()
    runner.join(5)
    assert second.start() == 1
    assert started[-1] == a2


def test_group_limit_does_not_hold_back_ungrouped_jobs(queue: dq.JobQueue) -> None:
    queue.add_jobs(
        [{"job_type": "t", "payload": {}} for _ in range(2)]
        + [{"job_type": "t", "payload": {}, "group": {"id": "tenant-c"}} for _ in range(2)]
    )
    processor = queue.create_processor(
        {"t": lambda p: None}, group_concurrency=1, batch_size=10, concurrency=10
    )
    assert processor.start() == 3


def test_claim_is_an_ordered_index_scan(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    from dataqueue.backends.postgres import sql as pg_sql

    pg_queue.add_jobs([{"job_type": "t", "payload": {"i": i}} for i in range(3000)])
    run_sql(engine, "ANALYZE job_queue")
    sql = pg_sql.render_advance(None, type_filter=False, group_limit=False, scan_size=10)
    with engine.begin() as conn:
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                sa.text("EXPLAIN " + sql),
                {"worker_id": "w", "done_ids": [], "done_outputs": [], "claim_limit": 10},
            )
        )
    assert "Index Scan using idx_job_queue_claim_order" in plan
    assert "Seq Scan on job_queue j" not in plan


def test_next_scheduled_job_is_one_probe_of_the_pending_run_at_index(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    from dataqueue.backends.postgres import sql as pg_sql

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    pg_queue.add_jobs([{"job_type": "t", "payload": {}, "run_at": later} for _ in range(3000)])
    run_sql(engine, "ANALYZE job_queue")
    sql = pg_sql._NEXT_DUE_SQL.format(job_queue="job_queue", type_filter="")
    with engine.begin() as conn:
        plan = "\n".join(row[0] for row in conn.execute(sa.text("EXPLAIN " + sql)))
    assert "Index Scan using idx_job_queue_pending_run_at" in plan
    assert "Seq Scan" not in plan


def test_force_kill_runs_the_handler_in_a_child_and_kills_it(
    queue: dq.JobQueue, tmp_path: Path
) -> None:
    from tests.unit import isolated_handlers

    pid_file = tmp_path / "pid"
    stuck = queue.add_job(
        "stuck", {"pid_file": str(pid_file)}, timeout_ms=1500, force_kill_on_timeout=True
    )
    doubled = queue.add_job("double", {"n": 21}, timeout_ms=20_000, force_kill_on_timeout=True)
    processor = queue.create_processor(
        {"stuck": isolated_handlers.sleeps_forever, "double": isolated_handlers.double},
        concurrency=2,
    )
    assert processor.start() == 2
    job = queue.get_job(stuck)
    assert job is not None and (job.status, job.failure_reason) == ("failed", "timeout")
    assert "forcefully terminated" in job.error_history[0]["message"]
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    result = queue.get_job(doubled)
    assert result is not None and (result.status, result.output) == ("completed", 42)


def test_validate_handler_serializable_is_public() -> None:
    from tests.unit import isolated_handlers

    assert dq.validate_handler_serializable(isolated_handlers.double, "double").is_serializable
    check = dq.validate_handler_serializable(lambda p: p, "email")
    assert not check.is_serializable and check.error is not None and "lambda" in check.error


@pytest.mark.parametrize("mode", ["all", "any", "exact"])
def test_tag_filters_use_the_partial_gin_index(
    pg_queue: dq.JobQueue, engine: sa.Engine, mode: str
) -> None:
    from dataqueue.backends.postgres.backend import _tag_condition
    from dataqueue.enums import TagMatch
    from dataqueue.schema import job_queue

    pg_queue.add_jobs(
        [
            {"job_type": "t", "payload": {}, "tags": ["rare"] if i % 500 == 0 else None}
            for i in range(5000)
        ]
    )
    run_sql(engine, "ANALYZE job_queue")
    statement = sa.select(job_queue.c.id).where(_tag_condition(TagMatch(mode), ["rare"]))
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny table: prefer the index
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
    assert "idx_job_queue_tags" in plan, plan
