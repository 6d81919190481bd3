"""Processor: handlers, outputs, events, retries, dead letters, timeouts, hooks, options."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql


def _set(engine: sa.Engine, job_id: int, assignments: str) -> None:
    run_sql(engine, f"UPDATE job_queue SET {assignments} WHERE id = :id", id=job_id)


def _job(queue: dq.JobQueue, job_id: int) -> dq.JobRecord:
    job = queue.get_job(job_id)
    assert job is not None
    return job


def _events(queue: dq.JobQueue, job_id: int) -> list[str]:
    return [e.event_type.value for e in queue.get_job_events(job_id)]


def _fail(payload: Any) -> None:
    raise ValueError(f"bad {payload}")


def test_return_value_becomes_output(pg_queue: dq.JobQueue) -> None:
    ids = pg_queue.add_jobs(
        [{"job_type": "echo", "payload": p} for p in ({"a": 1}, "simple string", 42, [1, 2, 3])]
    )
    processor = pg_queue.create_processor({"echo": lambda payload: payload}, batch_size=10)
    assert processor.start() == 4
    assert [_job(pg_queue, i).output for i in ids] == [{"a": 1}, "simple string", 42, [1, 2, 3]]
    assert all(_job(pg_queue, i).status == "completed" for i in ids)
    assert _events(pg_queue, ids[0]) == ["added", "processing", "completed"]


def test_set_output_wins_over_return_value(pg_queue: dq.JobQueue) -> None:
    seen: list[Any] = []
    pg_queue.on("job:output", seen.append)

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        ctx.set_output({"a": 1})
        return {"b": 2}

    job_id = pg_queue.add_job("t", {})
    pg_queue.create_processor({"t": handler}).start()
    assert _job(pg_queue, job_id).output == {"a": 1}
    assert seen == [{"job_id": job_id, "output": {"a": 1}}]


def test_returning_none_stores_no_output(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    pg_queue.create_processor({"t": lambda payload: None}).start()
    job = _job(pg_queue, job_id)
    assert job.status == "completed" and job.output is None and job.step_data is None


def test_handlers_receive_arguments_by_signature(pg_queue: dq.JobQueue) -> None:
    calls: list[tuple[Any, ...]] = []

    def one(payload: Any) -> None:
        calls.append((payload,))

    def two(payload: Any, signal: dq.AbortSignal) -> None:
        calls.append((payload, type(signal).__name__))

    def three(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        calls.append((payload, ctx.job_type, ctx.attempts, ctx.job_id > 0))

    pg_queue.add_jobs([{"job_type": t, "payload": t} for t in ("one", "two", "three")])
    pg_queue.create_processor({"one": one, "two": two, "three": three}, concurrency=1).start()
    assert sorted(calls, key=str) == sorted(
        [("one",), ("two", "AbortSignal"), ("three", "three", 1, True)], key=str
    )


def test_claim_order_is_priority_then_age_then_id(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    low = pg_queue.add_job("t", "low", priority=1)
    batch = pg_queue.add_jobs(
        [{"job_type": "t", "payload": f"b{i}", "priority": 5} for i in range(3)]
    )
    high = pg_queue.add_job("t", "high", priority=9)
    old = pg_queue.add_job("t", "old", priority=5)
    _set(engine, old, "created_at = created_at - interval '1 hour'")
    order: list[Any] = []
    processor = pg_queue.create_processor({"t": order.append}, batch_size=1, concurrency=1)
    while processor.start():
        pass
    assert order == ["high", "old", "b0", "b1", "b2", "low"]
    assert [low, high] and len(batch) == 3


def test_claim_skips_future_and_exhausted_jobs(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    pg_queue.add_job("t", {}, run_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    exhausted = pg_queue.add_job("t", {})
    _set(engine, exhausted, "attempts = 3")
    assert pg_queue.create_processor({"t": lambda p: None}).start() == 0


def test_failure_schedules_a_retry_with_the_legacy_formula(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", 1)
    pg_queue.create_processor({"t": _fail}).start()
    job = _job(pg_queue, job_id)
    assert (job.status, job.attempts, job.failure_reason) == ("failed", 1, "handler_error")
    assert job.error_history[0]["message"] == "bad 1"
    assert job.next_attempt_at is not None and job.last_failed_at is not None
    delay = (job.next_attempt_at - job.last_failed_at).total_seconds()
    assert 115 <= delay <= 125
    [event] = [e for e in pg_queue.get_job_events(job_id) if e.event_type == "failed"]
    assert event.metadata == {
        "message": "bad 1",
        "failureReason": "handler_error",
        "deadLetterJobId": None,
    }


@pytest.mark.parametrize(
    ("options", "low", "high"),
    [
        ({"retry_delay": 10, "retry_backoff": False}, 9, 11),
        ({"retry_delay": 5, "retry_backoff": True}, 4, 11),
        ({"retry_delay": 100, "retry_backoff": True, "retry_delay_max": 30}, 14, 31),
    ],
)
def test_failure_uses_the_configured_retry_strategy(
    pg_queue: dq.JobQueue, options: dict[str, Any], low: float, high: float
) -> None:
    job_id = pg_queue.add_job("t", 1, **options)
    pg_queue.create_processor({"t": _fail}).start()
    job = _job(pg_queue, job_id)
    assert job.next_attempt_at is not None and job.last_failed_at is not None
    assert low <= (job.next_attempt_at - job.last_failed_at).total_seconds() <= high


def test_attempts_are_exhausted_after_max_attempts(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    failures: list[Any] = []
    pg_queue.on("job:failed", failures.append)
    job_id = pg_queue.add_job("t", 1, max_attempts=2)
    processor = pg_queue.create_processor({"t": _fail})
    processor.start()
    _set(engine, job_id, "next_attempt_at = now() - interval '1 second'")
    assert processor.start() == 1
    job = _job(pg_queue, job_id)
    assert (job.status, job.attempts, job.next_attempt_at) == ("failed", 2, None)
    assert len(job.error_history) == 2
    assert processor.start() == 0
    # W-EV-5: will_retry says what happened (upstream reported False for the first).
    assert [f["will_retry"] for f in failures] == [True, False]
    assert isinstance(failures[0]["error"], ValueError)


def test_final_failure_routes_to_dead_letter_job(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job(
        "email", {"to": "x"}, max_attempts=1, dead_letter_job_type="email_dead_letter"
    )
    pg_queue.create_processor({"email": _fail}).start()
    source = _job(pg_queue, job_id)
    assert source.status == "failed" and source.dead_lettered_at is not None
    assert source.dead_letter_job_id is not None
    dead = _job(pg_queue, source.dead_letter_job_id)
    assert (dead.job_type, dead.status, dead.max_attempts, dead.priority) == (
        "email_dead_letter",
        "pending",
        1,
        0,
    )
    assert dead.payload == {
        "originalJob": {"id": job_id, "jobType": "email", "attempts": 1, "maxAttempts": 1},
        "originalPayload": {"to": "x"},
        "failure": {
            "message": "bad {'to': 'x'}",
            "reason": "handler_error",
            "failedAt": source.error_history[0]["timestamp"],
        },
    }
    [added] = pg_queue.get_job_events(dead.id)
    assert added.metadata == {
        "jobType": "email_dead_letter",
        "sourceJobId": job_id,
        "sourceJobType": "email",
    }
    failed = pg_queue.get_job_events(job_id)[-1]
    assert failed.metadata is not None and failed.metadata["deadLetterJobId"] == dead.id


def test_missing_handler_fails_only_that_job(pg_queue: dq.JobQueue) -> None:
    failures: list[Any] = []
    pg_queue.on("job:failed", failures.append)
    unknown, other = pg_queue.add_jobs(
        [{"job_type": "unknown", "payload": {}}, {"job_type": "unknown", "payload": {}}]
    )
    # Claiming types without a handler is an explicit opt-in ("*").
    processor = pg_queue.create_processor({"known": lambda p: None}, batch_size=1, job_type="*")
    assert processor.start() == 1
    job = _job(pg_queue, unknown)
    assert (job.status, job.failure_reason) == ("failed", "no_handler")
    assert job.error_history[0]["message"] == "No handler registered for job type: unknown"
    # W-UB-1: the other pending job of that type is untouched.
    untouched = _job(pg_queue, other)
    assert (untouched.status, untouched.pending_reason) == ("pending", None)
    assert failures[0]["will_retry"] is True  # W-EV-5: it will be retried


def test_timeout_fails_job_and_aborts_signal(pg_queue: dq.JobQueue) -> None:
    aborted = threading.Event()

    def slow(payload: Any, signal: dq.AbortSignal) -> None:
        if signal.wait(5):
            aborted.set()

    job_id = pg_queue.add_job("slow", {}, timeout_ms=200)
    started = time.monotonic()
    pg_queue.create_processor({"slow": slow}).start()
    assert time.monotonic() - started < 3
    job = _job(pg_queue, job_id)
    assert (job.status, job.failure_reason) == ("failed", "timeout")
    assert job.error_history[0]["message"] == "Job timed out after 200 ms"
    assert aborted.wait(2)


def test_timed_out_handler_cannot_write_late(pg_queue: dq.JobQueue) -> None:
    # W-TO-1: after the timeout the handler's writes no longer reach the job.
    finished = threading.Event()

    def late(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        ctx.set_progress(10)
        time.sleep(0.6)
        ctx.set_progress(90)
        ctx.set_output("late")
        finished.set()
        return "late"

    job_id = pg_queue.add_job("late", {}, timeout_ms=200)
    pg_queue.create_processor({"late": late}).start()
    assert finished.wait(3)
    time.sleep(0.1)
    job = _job(pg_queue, job_id)
    assert (job.status, job.progress, job.output) == ("failed", 10, None)


def test_on_timeout_callback_extends_the_deadline(pg_queue: dq.JobQueue) -> None:
    extensions: list[int] = []

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        def extend() -> int | None:
            extensions.append(1)
            return 300 if len(extensions) == 1 else None

        ctx.on_timeout(extend)
        time.sleep(0.35)
        return "done"

    job_id = pg_queue.add_job("t", {}, timeout_ms=200)
    pg_queue.create_processor({"t": handler}).start()
    job = _job(pg_queue, job_id)
    assert (job.status, job.output) == ("completed", "done")
    assert extensions == [1]
    assert _events(pg_queue, job_id) == ["added", "processing", "prolonged", "completed"]


def test_prolong_refreshes_lock_and_deadline(pg_queue: dq.JobQueue) -> None:
    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        for _ in range(3):
            time.sleep(0.1)
            ctx.prolong(200)
        return "ok"

    job_id = pg_queue.add_job("t", {}, timeout_ms=150)
    pg_queue.create_processor({"t": handler}).start()
    assert _job(pg_queue, job_id).status == "completed"
    assert _events(pg_queue, job_id).count("prolonged") == 3


def test_set_progress_rounds_half_up_and_validates(pg_queue: dq.JobQueue) -> None:
    progress: list[Any] = []
    errors: list[str] = []
    pg_queue.on("job:progress", progress.append)

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        for bad in (-1, 101, float("nan")):
            try:
                ctx.set_progress(bad)
            except ValueError as exc:
                errors.append(str(exc))
        ctx.set_progress(33.7)
        ctx.set_progress(50.5)

    job_id = pg_queue.add_job("t", {})
    pg_queue.create_processor({"t": handler}).start()
    assert [p["progress"] for p in progress] == [34, 51]
    assert len(errors) == 3 and all("Progress must be between 0 and 100" in e for e in errors)
    assert _job(pg_queue, job_id).progress == 51


@pytest.mark.parametrize(
    ("job_type", "expected"), [("a", {"a"}), (["a", "b"], {"a", "b"}), ([], set())]
)
def test_job_type_filter_restricts_claims(
    pg_queue: dq.JobQueue, job_type: Any, expected: set[str]
) -> None:
    pg_queue.add_jobs([{"job_type": t, "payload": {}} for t in ("a", "b", "c")])
    processor = pg_queue.create_processor(
        {"a": lambda p: None, "b": lambda p: None, "c": lambda p: None}, job_type=job_type
    )
    processor.start()
    assert {j.job_type for j in pg_queue.get_jobs_by_status("completed")} == expected


def test_background_processing_and_drain(pg_queue: dq.JobQueue) -> None:
    ids = pg_queue.add_jobs([{"job_type": "t", "payload": i} for i in range(60)])
    processor = pg_queue.create_processor(
        {"t": lambda p: time.sleep(0.005)}, batch_size=7, concurrency=4, poll_interval=50
    )
    processor.start_in_background()
    processor.start_in_background()  # no-op while running
    assert processor.is_running()
    deadline = time.monotonic() + 20
    while len(pg_queue.get_jobs_by_status("completed", limit=100)) < 60:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    processor.stop_and_drain(5000)
    assert not processor.is_running()
    assert all(_job(pg_queue, i).status == "completed" for i in ids)
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith(f"dataqueue-processor-{processor.worker_id}") for n in names)


def test_stop_and_drain_leaves_no_job_processing(pg_queue: dq.JobQueue) -> None:
    pg_queue.add_jobs([{"job_type": "t", "payload": i} for i in range(6)])
    started = threading.Event()

    def handler(payload: Any) -> None:
        started.set()
        time.sleep(0.3)

    processor = pg_queue.create_processor({"t": handler}, concurrency=3, poll_interval=10)
    processor.start_in_background()
    assert started.wait(5)
    assert processor.stop_and_drain(5000) == []
    jobs = pg_queue.get_all_jobs()
    # Started jobs were drained; claimed jobs no thread had started were given back.
    assert {(j.status.value, j.attempts) for j in jobs} <= {("completed", 1), ("pending", 0)}
    assert any(j.status == "completed" for j in jobs)


def test_start_and_background_modes_are_independent(pg_queue: dq.JobQueue) -> None:
    # W-API-9: a one-shot start() on a running processor does not stop the loop.
    processor = pg_queue.create_processor({"t": lambda p: None}, poll_interval=20)
    processor.start_in_background()
    pg_queue.add_job("t", 1)
    processor.start()
    assert processor.is_running()
    late = pg_queue.add_job("t", 2)
    deadline = time.monotonic() + 5
    while _job(pg_queue, late).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    processor.stop_and_drain()


def test_completion_of_a_job_this_worker_lost_is_dropped(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # W-LOCK-1: after the job was reclaimed and claimed by another worker, the slow
    # original worker's result must not complete it.
    release = threading.Event()
    job_id = pg_queue.add_job("t", {})

    def slow(payload: Any) -> str:
        release.wait(5)
        return "stale"

    first = pg_queue.create_processor({"t": slow}, worker_id="first")
    runner = threading.Thread(target=first.start)
    runner.start()
    deadline = time.monotonic() + 5
    while _job(pg_queue, job_id).status != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _set(engine, job_id, "status='processing', locked_by='second'")
    release.set()
    runner.join(5)
    job = _job(pg_queue, job_id)
    assert (job.status, job.locked_by, job.output) == ("processing", "second", None)
    assert "completed" not in _events(pg_queue, job_id)


def test_storage_error_on_completion_is_reported_not_a_failure(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # W-CMP-1: the handler succeeded; storing that failed. on_error hears of it, the
    # job is not marked failed and stays for reclaim.
    errors: list[BaseException] = []
    failures: list[Any] = []
    pg_queue.on("job:failed", failures.append)

    def handler(payload: Any) -> str:
        run_sql(engine, "ALTER TABLE job_events RENAME TO job_events_hidden")
        return "ok"

    job_id = pg_queue.add_job("t", {})
    try:
        pg_queue.create_processor({"t": handler}, on_error=errors.append).start()
    finally:
        run_sql(engine, "ALTER TABLE job_events_hidden RENAME TO job_events")
    assert len(errors) == 1 and isinstance(errors[0], dq.SchemaNotReadyError)
    assert failures == []
    assert _job(pg_queue, job_id).status == "processing"


def test_raising_completed_listener_does_not_fail_the_job(pg_queue: dq.JobQueue) -> None:
    failures: list[Any] = []

    def broken(payload: Any) -> None:
        raise RuntimeError("listener bug")

    pg_queue.on("job:completed", broken)
    pg_queue.on("job:failed", failures.append)
    job_id = pg_queue.add_job("t", {})
    pg_queue.create_processor({"t": lambda p: "ok"}).start()
    assert _job(pg_queue, job_id).status == "completed" and failures == []


def test_claim_error_reaches_on_error_and_error_event(
    engine: sa.Engine, pg_queue: dq.JobQueue
) -> None:
    broken = dq.init_job_queue(engine=engine, schema="missing_schema")
    errors: list[BaseException] = []
    events: list[BaseException] = []
    broken.on("error", events.append)
    processor = broken.create_processor({"t": lambda p: None}, on_error=errors.append)
    assert processor.start() == 0
    # Both the cron step before the claim and the claim itself fail; each is reported.
    assert len(errors) == 2 and events == errors
    assert all(isinstance(error, dq.SchemaNotReadyError) for error in errors)


def test_hooks_fire_in_order_for_a_job(pg_queue: dq.JobQueue) -> None:
    seen: list[tuple[str, int]] = []
    for name in ("job:added", "job:processing", "job:completed"):
        pg_queue.on(name, lambda p, name=name: seen.append((name, p["job_id"])))
    job_id = pg_queue.add_job("t", {})
    pg_queue.create_processor({"t": lambda p: None}).start()
    assert seen == [("job:added", job_id), ("job:processing", job_id), ("job:completed", job_id)]


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"batch_size": 0}, ValueError, "batch_size.*0"),
        ({"concurrency": "3"}, TypeError, "concurrency.*'3'"),
        ({"concurrency": 2.5}, TypeError, "2.5"),
        ({"group_concurrency": 0}, ValueError, "group_concurrency.*0"),
        ({"poll_interval": -1}, ValueError, "poll_interval.*-1"),
        ({"job_type": 5}, TypeError, "job_type.*5"),
        ({"on_error": "log"}, TypeError, "on_error.*'log'"),
    ],
)
def test_bad_processor_options_are_rejected(
    pg_queue: dq.JobQueue, options: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        pg_queue.create_processor({"t": lambda p: None}, **options)


def test_non_callable_handler_is_rejected(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(TypeError, match="'not a function'"):
        pg_queue.create_processor({"t": "not a function"})  # type: ignore[dict-item]


def test_one_shot_processor_leaves_no_thread_behind(pg_queue: dq.JobQueue) -> None:
    # The dashboard's "Process jobs" creates a processor per click; none may leak.
    pg_queue.add_job("t", {}, timeout_ms=5000)
    processor = pg_queue.create_processor({"t": lambda p: None})
    assert processor.start() == 1
    prefix = f"dataqueue-timeouts-{processor.worker_id}"
    deadline = time.monotonic() + 10
    while any(t.name.startswith(prefix) for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the timeout watchdog thread never exited"
        time.sleep(0.1)
    pg_queue.add_job("t", {}, timeout_ms=5000)
    assert processor.start() == 1  # and a new one starts when needed
