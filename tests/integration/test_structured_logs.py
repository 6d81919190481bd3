"""Structured logs: the processor's records carry their facts in ``extra`` under stable
keys, and ``dataqueue worker --log-format json`` writes them as JSON lines."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

import dataqueue as dq
from tests.integration.store_state import is_redis, status_counts
from tests.integration.worker_runner import WorkerProcess

pytestmark = pytest.mark.all_backends

JOB_KEYS = {"action", "worker_id", "job_id", "job_type", "attempt"}


def _fail(payload: Any) -> None:
    raise ValueError("no luck")


def _records(caplog: pytest.LogCaptureFixture, action: str) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


def test_processor_records_carry_job_worker_and_duration_keys(
    queue: dq.JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    ok_id = queue.add_job("ok", {})
    bad_id = queue.add_job("bad", {}, max_attempts=1)
    processor = queue.create_processor(
        {"ok": lambda p: None, "bad": _fail}, worker_id="w-logs", verbose=True
    )
    with caplog.at_level(logging.DEBUG, logger="dataqueue"):
        processor.start_in_background()
        deadline = time.monotonic() + 30
        while status_counts(queue) != {"completed": 1, "failed": 1}:
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.02)
        assert processor.stop_and_drain(10_000) == []

    dataqueue_records = [r for r in caplog.records if r.name.startswith("dataqueue")]
    assert dataqueue_records
    assert all(isinstance(getattr(r, "action", None), str) for r in dataqueue_records)

    started = {r.job_id: r for r in _records(caplog, "job_started")}
    assert set(started) == {ok_id, bad_id}
    assert all(vars(r).keys() >= JOB_KEYS for r in started.values())
    assert started[ok_id].attempt == 1 and started[ok_id].worker_id == "w-logs"

    (completed,) = _records(caplog, "job_completed")
    assert JOB_KEYS | {"duration_ms"} <= vars(completed).keys()
    assert (completed.job_id, completed.job_type) == (ok_id, "ok")
    assert isinstance(completed.duration_ms, float) and completed.duration_ms >= 0

    (failed,) = _records(caplog, "job_failed")
    assert failed.reason == "handler_error" and failed.will_retry is False
    assert failed.job_id == bad_id and "duration_ms" in vars(failed)

    (raised,) = _records(caplog, "handler_raised")
    assert raised.levelno == logging.ERROR and raised.exc_info is not None
    assert vars(raised).keys() >= JOB_KEYS and raised.job_id == bad_id

    for action in ("processor_started", "processor_stopped"):
        (record,) = _records(caplog, action)
        assert record.worker_id == "w-logs"


def test_job_records_are_not_built_when_their_level_is_off(
    queue: dq.JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue.add_job("ok", {})
    with caplog.at_level(logging.INFO, logger="dataqueue"):
        assert queue.create_processor({"ok": lambda p: None}).start() == 1
    assert not _records(caplog, "job_started") and not _records(caplog, "job_completed")


# -- dataqueue worker --log-format json --------------------------------------------------


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line must be one JSON object


def _worker(queue: dq.JobQueue, request: pytest.FixtureRequest, *args: str) -> WorkerProcess:
    """``dataqueue worker`` on the queue's store, running ``cli_handlers`` (``greet``)."""
    database_url: str = request.getfixturevalue("database_url")
    handlers = "tests.integration.cli_handlers:HANDLERS"
    if not is_redis(queue):
        return WorkerProcess(database_url, handlers, *args)
    prefix: str = queue._backend.prefix
    redis_url: str = request.getfixturevalue("redis_url")
    return WorkerProcess(database_url, handlers, *args, redis_url=redis_url, key_prefix=prefix)


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every non-empty line of ``stderr`` as a JSON object (fails on any other line)."""
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all(isinstance(record, dict) for record in records)
    return records


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_worker_logs_json_lines_with_the_keys(
    queue: dq.JobQueue,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    good = queue.add_job("greet", {"name": "ada"})
    bad = queue.add_job("greet", {}, max_attempts=1)  # KeyError: 'name'
    if how == "flag":
        args: tuple[str, ...] = ("--log-format", "json")
    else:
        monkeypatch.setenv("DATAQUEUE_LOG_FORMAT", "JSON")
        args = ()
    worker = _worker(queue, request, "--verbose", "--poll-interval", "50", *args)
    deadline = time.monotonic() + 30
    while status_counts(queue) != {"completed": 1, "failed": 1}:
        assert time.monotonic() < deadline and worker.poll() is None, "jobs did not finish"
        time.sleep(0.05)
    code, stderr = worker.stop()
    assert code == 0, stderr

    records = _json_lines(stderr)
    assert all({"timestamp", "level", "logger", "message", "action"} <= r.keys() for r in records)
    assert all(r["timestamp"].endswith("Z") for r in records)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_action.setdefault(record["action"], []).append(record)
    (completed,) = by_action["job_completed"]
    assert completed["job_id"] == good and completed["job_type"] == "greet"
    assert completed["attempt"] == 1 and completed["worker_id"].startswith("worker-")
    assert completed["duration_ms"] >= 0 and completed["logger"] == "dataqueue.processor"
    (raised,) = by_action["handler_raised"]
    assert raised["job_id"] == bad and raised["level"] == "ERROR"
    assert "KeyError: 'name'" in raised["exception"]
    assert {"worker_started", "signal_received", "worker_stopped"} <= by_action.keys()


def test_worker_rejects_an_unknown_log_format(
    queue: dq.JobQueue, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAQUEUE_LOG_FORMAT", "xml")
    code, stderr = _worker(queue, request).wait(30)
    assert code == 2 and "invalid log format 'xml'" in stderr
