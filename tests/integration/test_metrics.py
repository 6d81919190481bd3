"""Prometheus metrics of a processor (``PrometheusMetrics`` as its instrumentation).

Each test reads a registry of its own, so counts start at zero. Shared behaviour runs on
PostgreSQL and Redis; the store-outage test renames PostgreSQL's table under a running
processor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

import dataqueue as dq
from dataqueue.contrib.prometheus import PrometheusMetrics, QueueCollector
from tests.conftest import run_sql
from tests.integration.store_state import status_counts

pytestmark = pytest.mark.all_backends


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _fail(payload: Any) -> None:
    raise RuntimeError("boom")


def _slow(payload: Any) -> None:
    time.sleep(0.5)


def _park(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
    ctx.wait_for(hours=1)


def test_outcomes_are_counted_by_type_reason_and_retry(queue: dq.JobQueue) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    queue.add_jobs(
        [
            {"job_type": "ok", "payload": {}},
            {"job_type": "ok", "payload": {}},
            {"job_type": "fail", "payload": {}, "max_attempts": 2, "retry_delay": 0},
            {"job_type": "slow", "payload": {}, "max_attempts": 1, "timeout_ms": 50},
            {"job_type": "park", "payload": {}},
            {"job_type": "orphan", "payload": {}, "max_attempts": 1},
        ]
    )
    processor = queue.create_processor(
        {"ok": lambda p: None, "fail": _fail, "slow": _slow, "park": _park},
        job_type="*",
        poll_interval=20,
        instrumentation=metrics,
    )
    processor.start_in_background()
    try:
        _wait_until(
            lambda: status_counts(queue) == {"completed": 2, "failed": 3, "waiting": 1},
            30,
            "every job to settle",
        )
    finally:
        assert processor.stop_and_drain(10_000) == []

    assert _sample(registry, "dataqueue_jobs_started_total", job_type="ok") == 2
    assert _sample(registry, "dataqueue_jobs_started_total", job_type="fail") == 2
    assert _sample(registry, "dataqueue_jobs_completed_total", job_type="ok") == 2
    failed = "dataqueue_jobs_failed_total"
    assert (
        _sample(registry, failed, job_type="fail", reason="handler_error", will_retry="true") == 1
    )
    assert (
        _sample(registry, failed, job_type="fail", reason="handler_error", will_retry="false") == 1
    )
    assert _sample(registry, failed, job_type="slow", reason="timeout", will_retry="false") == 1
    assert (
        _sample(registry, failed, job_type="orphan", reason="no_handler", will_retry="false") == 1
    )
    assert _sample(registry, "dataqueue_jobs_waited_total", job_type="park") == 1
    run = "dataqueue_job_run_duration_seconds"
    assert _sample(registry, f"{run}_count", job_type="ok", outcome="completed") == 2
    # A timeout's run time is the time to its deadline (50 ms), not the handler's 0.5 s.
    slow_seconds = _sample(registry, f"{run}_sum", job_type="slow", outcome="failed")
    assert 0.04 < slow_seconds < 0.45
    # Every run was claimed by a counted claim: the claimed jobs add up to the runs.
    started = sum(
        _sample(registry, "dataqueue_jobs_started_total", job_type=t)
        for t in ("ok", "fail", "slow", "park", "orphan")
    )
    assert started == 7
    assert _sample(registry, "dataqueue_jobs_per_claim_sum") == started
    claims = _sample(registry, "dataqueue_claim_duration_seconds_count")
    assert claims == _sample(registry, "dataqueue_jobs_per_claim_count") >= 2
    assert _sample(registry, "dataqueue_store_failures_total") == 0


def test_wakeup_to_start_is_measured_for_jobs_a_wakeup_made_it_claim(queue: dq.JobQueue) -> None:
    registry = CollectorRegistry()
    started = threading.Event()
    processor = queue.create_processor(
        {"t": lambda p: started.set()},
        poll_interval=600_000,  # only a wake-up can start the job within the test
        instrumentation=PrometheusMetrics(registry),
    )
    processor.start_in_background()
    try:
        time.sleep(0.3)  # let the listener connect: the job must come by a notification
        queue.add_job("t", {})
        assert started.wait(10), "the wake-up did not start the job"
    finally:
        processor.stop_and_drain(10_000)
    latency = "dataqueue_wakeup_to_start_seconds"
    assert _sample(registry, f"{latency}_count", job_type="t") == 1
    assert 0 < _sample(registry, f"{latency}_sum", job_type="t") < 5


def test_one_shot_runs_are_counted_without_a_wakeup(queue: dq.JobQueue) -> None:
    registry = CollectorRegistry()
    queue.add_jobs([{"job_type": "t", "payload": {}} for _ in range(3)])
    processor = queue.create_processor(
        {"t": lambda p: None}, instrumentation=PrometheusMetrics(registry)
    )
    assert processor.start() == 3
    assert _sample(registry, "dataqueue_jobs_completed_total", job_type="t") == 3
    assert _sample(registry, "dataqueue_jobs_per_claim_sum") == 3
    assert _sample(registry, "dataqueue_claim_duration_seconds_count") == 1
    assert _sample(registry, "dataqueue_wakeup_to_start_seconds_count", job_type="t") == 0


def test_an_instrumentation_that_raises_never_fails_a_job(
    queue: dq.JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(PrometheusMetrics):
        def job_finished(self, *args: Any) -> None:
            raise RuntimeError("metrics bug")

    registry = CollectorRegistry()
    job_id = queue.add_job("t", {})
    processor = queue.create_processor({"t": lambda p: "done"}, instrumentation=Broken(registry))
    assert processor.start() == 1
    job = queue.get_job(job_id)
    assert job is not None and job.status == "completed"
    assert _sample(registry, "dataqueue_jobs_started_total", job_type="t") == 1
    assert any(
        getattr(r, "action", None) == "instrumentation_error" and r.method == "job_finished"  # type: ignore[attr-defined]
        for r in caplog.records
    )


def test_instrumentation_must_implement_the_protocol(queue: dq.JobQueue) -> None:
    with pytest.raises(TypeError, match="instrumentation must implement"):
        queue.create_processor({"t": lambda p: None}, instrumentation=object())  # type: ignore[arg-type]


# -- PostgreSQL: the store goes away under a running processor ---------------------------


def test_store_failures_and_retried_outcomes_are_counted(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    registry = CollectorRegistry()
    release = threading.Event()
    running = threading.Event()

    def blocked(payload: Any) -> str:
        running.set()
        assert release.wait(30)
        return "done"

    job_id = pg_queue.add_job("t", {})
    processor = pg_queue.create_processor(
        {"t": blocked},
        poll_interval=50,
        heartbeat_interval=0.2,
        heartbeat_timeout=30,
        instrumentation=PrometheusMetrics(registry),
    )
    processor.start_in_background()
    renamed = False
    try:
        assert running.wait(10)
        run_sql(engine, "ALTER TABLE job_queue RENAME TO job_queue_away")
        renamed = True
        release.set()  # its completion meets a store without the table: kept, retried
        _wait_until(lambda: _sample(registry, "dataqueue_store_retries_total") >= 1, 20, "a retry")
        run_sql(engine, "ALTER TABLE job_queue_away RENAME TO job_queue")
        renamed = False
        _wait_until(
            lambda: _sample(registry, "dataqueue_jobs_completed_total", job_type="t") == 1,
            30,
            "the completion to be stored",
        )
    finally:
        release.set()
        if renamed:
            run_sql(engine, "ALTER TABLE job_queue_away RENAME TO job_queue")
        processor.stop_and_drain(10_000)
    assert _sample(registry, "dataqueue_store_failures_total") >= 1
    job = pg_queue.get_job(job_id)
    assert job is not None and job.status == "completed" and job.output == "done"


# -- QueueCollector: gauges of queue.get_stats() ------------------------------------------


def test_queue_collector_reports_the_statistics_on_each_scrape(queue: dq.JobQueue) -> None:
    registry = CollectorRegistry()
    QueueCollector(queue).register(registry)
    assert _sample(registry, "dataqueue_queue_stats_up") == 1
    assert (
        registry.get_sample_value("dataqueue_queue_jobs", {"job_type": "a", "status": "pending"})
        is None
    )

    queue.add_jobs([{"job_type": "a", "payload": {}} for _ in range(3)])
    queue.add_job("b", {}, max_attempts=2, retry_delay=3600)
    queue.add_job("c", {}, max_attempts=1)
    processor = queue.create_processor({"b": _fail, "c": _fail})
    assert processor.start() == 2

    jobs = "dataqueue_queue_jobs"
    assert _sample(registry, jobs, job_type="a", status="pending") == 3
    assert _sample(registry, jobs, job_type="a", status="completed") == 0
    assert _sample(registry, jobs, job_type="b", status="failed") == 1
    assert _sample(registry, "dataqueue_queue_failed_jobs", job_type="b", will_retry="true") == 1
    assert _sample(registry, "dataqueue_queue_failed_jobs", job_type="c", will_retry="false") == 1
    assert _sample(registry, "dataqueue_queue_oldest_due_job_age_seconds", job_type="a") >= 0
    assert _sample(registry, "dataqueue_queue_recent_failed_attempts", job_type="c") == 1
    assert _sample(registry, "dataqueue_queue_stats_window_seconds") == 300
    assert _sample(registry, "dataqueue_queue_stats_up") == 1


def test_queue_collector_survives_a_store_that_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = dq.init_job_queue(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    registry = CollectorRegistry()
    PrometheusMetrics(registry)  # the processor metrics are still served
    QueueCollector(queue).register(registry)  # registering does not call get_stats
    try:
        with caplog.at_level(logging.DEBUG, logger="dataqueue.metrics"):
            text = generate_latest(registry).decode()  # what a scrape answers
            assert _sample(registry, "dataqueue_queue_stats_up") == 0
    finally:
        queue.close()
    assert "dataqueue_store_failures_total" in text
    assert "\ndataqueue_queue_jobs{" not in text
    failures = [r for r in caplog.records if getattr(r, "action", None) == "stats_failed"]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG]
