"""Cron schedules: CRUD, enqueueing, overlap, pause/resume, processor tick, exactly once."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parents[2]


def _make_due(engine: sa.Engine, schedule_id: int) -> None:
    run_sql(
        engine,
        "UPDATE cron_schedules SET next_run_at = now() - interval '1 second' WHERE id = :id",
        id=schedule_id,
    )


def _schedule(queue: dq.JobQueue, schedule_id: int) -> dq.CronScheduleRecord:
    record = queue.get_cron_job(schedule_id)
    assert record is not None
    return record


def test_add_cron_job_stores_the_schedule(pg_queue: dq.JobQueue) -> None:
    schedule_id = pg_queue.add_cron_job(
        "nightly-report",
        "0 3 * * *",
        "report",
        {"kind": "daily"},
        timezone="Europe/Berlin",
        priority=4,
        tags=["reports"],
        retry_delay=5,
        dead_letter_job_type="report_dlq",
    )
    record = _schedule(pg_queue, schedule_id)
    assert (record.schedule_name, record.cron_expression, record.timezone) == (
        "nightly-report",
        "0 3 * * *",
        "Europe/Berlin",
    )
    assert (record.status, record.allow_overlap, record.max_attempts) == ("active", False, 3)
    assert record.next_run_at is not None and record.next_run_at > dt.datetime.now(UTC)
    assert record.next_run_at.astimezone(dt.timezone(dt.timedelta(hours=1))).hour in (3, 4)
    assert pg_queue.get_cron_job_by_name("nightly-report") == record
    assert pg_queue.get_cron_job_by_name("missing") is None


def test_duplicate_schedule_name_is_rejected(pg_queue: dq.JobQueue) -> None:
    pg_queue.add_cron_job("once", "* * * * *", "t", {})
    with pytest.raises(dq.DuplicateScheduleError, match='"once" already exists'):
        pg_queue.add_cron_job("once", "*/5 * * * *", "t", {})
    assert len(pg_queue.list_cron_jobs()) == 1


@pytest.mark.parametrize(
    ("expression", "timezone", "pattern"),
    [
        ("0 0 * * * *", "UTC", "0 0 \\* \\* \\* \\*"),
        ("garbage", "UTC", "garbage"),
        ("0 0 30 2 *", "UTC", "never fires"),
        ("0 0 * * *", "Mars/Olympus", "Mars/Olympus"),
    ],
)
def test_invalid_schedules_are_rejected_and_nothing_is_written(
    pg_queue: dq.JobQueue, expression: str, timezone: str, pattern: str
) -> None:
    with pytest.raises(dq.InvalidCronExpressionError, match=pattern):
        pg_queue.add_cron_job("bad", expression, "t", {}, timezone=timezone)
    assert pg_queue.list_cron_jobs() == []


def test_due_schedule_enqueues_a_job_with_its_fields(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    added: list[Any] = []
    pg_queue.on("job:added", added.append)
    schedule_id = pg_queue.add_cron_job(
        "s",
        "*/5 * * * *",
        "report",
        {"a": 1},
        max_attempts=5,
        priority=2,
        timeout_ms=1000,
        tags=["cron"],
        retry_delay=7,
        retry_backoff=False,
        retry_delay_max=60,
        dead_letter_job_type="dlq",
    )
    assert pg_queue.enqueue_due_cron_jobs() == 0  # not due yet
    _make_due(engine, schedule_id)
    assert pg_queue.enqueue_due_cron_jobs() == 1
    [job] = pg_queue.get_all_jobs()
    assert (job.job_type, job.payload, job.max_attempts, job.priority, job.timeout_ms) == (
        "report",
        {"a": 1},
        5,
        2,
        1000,
    )
    assert (job.tags, job.retry_delay, job.retry_backoff, job.retry_delay_max) == (
        ["cron"],
        7,
        False,
        60,
    )
    assert job.dead_letter_job_type == "dlq" and job.idempotency_key is None
    assert [e.event_type for e in pg_queue.get_job_events(job.id)] == ["added"]
    assert added == []  # no job:added hook for cron jobs, as upstream
    record = _schedule(pg_queue, schedule_id)
    assert record.last_job_id == job.id and record.last_enqueued_at is not None
    assert record.next_run_at is not None and record.next_run_at > dt.datetime.now(UTC)


def test_overlap_is_skipped_unless_allowed(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    strict = pg_queue.add_cron_job("strict", "* * * * *", "t", {})
    relaxed = pg_queue.add_cron_job("relaxed", "* * * * *", "u", {}, allow_overlap=True)
    for _ in range(2):
        _make_due(engine, strict)
        _make_due(engine, relaxed)
        pg_queue.enqueue_due_cron_jobs()
    counts = dict(run_sql(engine, "SELECT job_type, count(*) FROM job_queue GROUP BY job_type"))
    assert counts == {"t": 1, "u": 2}
    skipped = _schedule(pg_queue, strict)
    assert skipped.next_run_at is not None and skipped.next_run_at > dt.datetime.now(UTC)


def test_pause_resume_and_remove(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    schedule_id = pg_queue.add_cron_job("p", "* * * * *", "t", {})
    assert pg_queue.pause_cron_job(schedule_id)
    _make_due(engine, schedule_id)
    assert pg_queue.enqueue_due_cron_jobs() == 0
    assert [s.id for s in pg_queue.list_cron_jobs("paused")] == [schedule_id]
    assert pg_queue.list_cron_jobs("active") == []
    assert pg_queue.resume_cron_job(schedule_id)
    assert pg_queue.enqueue_due_cron_jobs() == 1  # the missed occurrence fires once
    assert pg_queue.enqueue_due_cron_jobs() == 0
    assert pg_queue.remove_cron_job(schedule_id) is True
    assert pg_queue.remove_cron_job(schedule_id) is False
    assert len(pg_queue.get_all_jobs()) == 1  # enqueued jobs stay


def test_edit_recomputes_next_run_when_expression_or_timezone_change(pg_queue: dq.JobQueue) -> None:
    schedule_id = pg_queue.add_cron_job("e", "0 0 1 1 *", "t", {})
    before = _schedule(pg_queue, schedule_id).next_run_at
    assert pg_queue.edit_cron_job(schedule_id, priority=3, payload={"v": 2}, tags=None)
    unchanged = _schedule(pg_queue, schedule_id)
    assert (unchanged.priority, unchanged.payload, unchanged.next_run_at) == (3, {"v": 2}, before)
    assert pg_queue.edit_cron_job(schedule_id, cron_expression="*/5 * * * *")
    soon = _schedule(pg_queue, schedule_id).next_run_at
    assert soon is not None and soon - dt.datetime.now(UTC) <= dt.timedelta(minutes=5)
    assert pg_queue.edit_cron_job(schedule_id, timezone="Asia/Tokyo")
    assert _schedule(pg_queue, schedule_id).timezone == "Asia/Tokyo"
    with pytest.raises(TypeError, match="schedule_name"):
        pg_queue.edit_cron_job(schedule_id, schedule_name="x")
    with pytest.raises(dq.InvalidCronExpressionError):
        pg_queue.edit_cron_job(schedule_id, cron_expression="0 0 31 2 *")
    assert pg_queue.edit_cron_job(987654, priority=1) is False


def test_processor_enqueues_due_schedules_before_claiming(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ran: list[Any] = []
    schedule_id = pg_queue.add_cron_job("tick", "* * * * *", "tick", {"n": 1})
    _make_due(engine, schedule_id)
    assert pg_queue.create_processor({"tick": ran.append}).start() == 1
    assert ran == [{"n": 1}]


def test_concurrent_tickers_enqueue_each_occurrence_exactly_once(
    pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    # W-CRON-1: upstream's lock ended with its SELECT, so simultaneous ticks duplicated.
    schedule_id = pg_queue.add_cron_job("race", "0 0 1 1 *", "t", {}, allow_overlap=True)
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            pg_queue.enqueue_due_cron_jobs()

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.cron_ticker", database_url, "6"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    occurrences = 0
    try:
        time.sleep(1.0)  # let the second process start ticking
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            _make_due(engine, schedule_id)
            occurrences += 1
            while (
                _schedule(pg_queue, schedule_id).next_run_at or dt.datetime.max.replace(tzinfo=UTC)
            ) <= dt.datetime.now(UTC):
                time.sleep(0.002)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        assert process.wait(30) == 0
    assert occurrences > 20
    assert len(pg_queue.get_all_jobs(limit=10_000)) == occurrences
