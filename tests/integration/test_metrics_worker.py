"""``dataqueue worker --metrics-port``: metrics scraped over HTTP from a running worker."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import dataqueue as dq
from tests.integration.store_state import is_redis, status_counts
from tests.integration.worker_runner import WorkerProcess, fetch_metrics, free_port

pytestmark = pytest.mark.all_backends


def _worker(queue: dq.JobQueue, request: pytest.FixtureRequest, *args: str) -> WorkerProcess:
    """``dataqueue worker`` on the queue's store, running ``cli_handlers`` (``greet``)."""
    database_url: str = request.getfixturevalue("database_url")
    handlers = "tests.integration.cli_handlers:HANDLERS"
    if not is_redis(queue):
        return WorkerProcess(database_url, handlers, *args)
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    redis_url: str = request.getfixturevalue("redis_url")
    return WorkerProcess(database_url, handlers, *args, redis_url=redis_url, key_prefix=prefix)


def _scrape(port: int, worker: WorkerProcess) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of ``/metrics`` by name and labels (retried while the server starts)."""
    text = fetch_metrics(port, lambda: worker.poll() is None)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_worker_serves_processor_and_queue_metrics(
    queue: dq.JobQueue,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    queue.add_jobs([{"job_type": "greet", "payload": {"name": f"n{i}"}} for i in range(3)])
    queue.add_job("greet", {}, max_attempts=1)  # KeyError: 'name'
    port = free_port()
    if how == "flag":
        args: tuple[str, ...] = ("--metrics-port", str(port))
    else:
        monkeypatch.setenv("DATAQUEUE_METRICS_PORT", str(port))
        args = ()
    worker = _worker(queue, request, "--poll-interval", "50", "--metrics-host", "127.0.0.1", *args)
    try:
        deadline = time.monotonic() + 30
        while status_counts(queue) != {"completed": 3, "failed": 1}:
            assert time.monotonic() < deadline and worker.poll() is None, "jobs did not finish"
            time.sleep(0.05)
        samples = _scrape(port, worker)
    finally:
        code, stderr = worker.stop()
    assert code == 0, stderr
    assert f"serving Prometheus metrics on http://127.0.0.1:{port}/metrics" in stderr

    assert _value(samples, "dataqueue_jobs_started_total", job_type="greet") == 4
    assert _value(samples, "dataqueue_jobs_completed_total", job_type="greet") == 3
    failed = {"job_type": "greet", "reason": "handler_error", "will_retry": "false"}
    assert _value(samples, "dataqueue_jobs_failed_total", **failed) == 1
    run_count = "dataqueue_job_run_duration_seconds_count"
    assert _value(samples, run_count, job_type="greet", outcome="completed") == 3
    assert _value(samples, "dataqueue_jobs_per_claim_sum") == 4
    assert _value(samples, "dataqueue_claim_duration_seconds_count") >= 1
    assert _value(samples, "dataqueue_store_failures_total") == 0
    # The queue gauges (QueueCollector) and the default registry's process collector.
    assert _value(samples, "dataqueue_queue_stats_up") == 1
    assert _value(samples, "dataqueue_queue_jobs", job_type="greet", status="completed") == 3
    assert _value(samples, "dataqueue_queue_jobs", job_type="greet", status="failed") == 1
    assert _value(samples, "dataqueue_queue_failed_jobs", job_type="greet", will_retry="false") == 1
    assert _value(samples, "dataqueue_queue_oldest_due_job_age_seconds", job_type="greet") == 0
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


def test_worker_exits_2_when_the_metrics_port_is_taken(
    queue: dq.JobQueue, request: pytest.FixtureRequest
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = _worker(queue, request, "--metrics-host", "127.0.0.1", "--metrics-port", str(port))
        code, stderr = worker.wait(30)
    assert code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in stderr


def test_worker_rejects_a_bad_metrics_port(
    queue: dq.JobQueue, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAQUEUE_METRICS_PORT", "70000")
    code, stderr = _worker(queue, request).wait(30)
    assert code == 2 and "expected a port number 0-65535, got '70000'" in stderr
