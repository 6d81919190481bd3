"""Processor: handlers, outputs, events, retries, dead letters, timeouts, hooks, options.

Shared behaviour runs on PostgreSQL and Redis (the ``queue`` fixture); what only one
store can show (SQL-made states, a missing schema, a refusing Redis user) names its
backend's fixture.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql
from tests.integration.store_state import force_job, make_retry_due

pytestmark = pytest.mark.all_backends


def _job(queue: dq.JobQueue, job_id: int) -> dq.JobRecord:
    job = queue.get_job(job_id)
    assert job is not None
    return job


def _events(queue: dq.JobQueue, job_id: int) -> list[str]:
    return [e.event_type.value for e in queue.get_job_events(job_id)]


def _fail(payload: Any) -> None:
    raise ValueError(f"bad {payload}")


@pytest.fixture
def refusing_redis_queue(
    redis_url: str, redis_client: Any, redis_prefix: str
) -> Iterator[tuple[dq.JobQueue, Callable[[], None]]]:
    """A Redis queue whose client logs in as a user of its own, and a function that
    takes that user's right to run scripts away (every change is a script, so the
    store then refuses every write, as a read-only replica or a tightened ACL would)."""
    import redis

    user, password = f"dq-test-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    redis_client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    client = redis.Redis.from_url(redis_url, username=user, password=password)
    queue = dq.init_job_queue(backend="redis", redis_client=client, key_prefix=redis_prefix)

    def refuse() -> None:
        redis_client.execute_command("ACL", "SETUSER", user, "-evalsha", "-eval")

    try:
        yield queue, refuse
    finally:
        queue.close()
        client.close()
        redis_client.execute_command("ACL", "DELUSER", user)


def test_return_value_becomes_output(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs(
        [{"job_type": "echo", "payload": p} for p in ({"a": 1}, "simple string", 42, [1, 2, 3])]
    )
    processor = queue.create_processor({"echo": lambda payload: payload}, batch_size=10)
    assert processor.start() == 4
    assert [_job(queue, i).output for i in ids] == [{"a": 1}, "simple string", 42, [1, 2, 3]]
    assert all(_job(queue, i).status == "completed" for i in ids)
    assert _events(queue, ids[0]) == ["added", "processing", "completed"]


def test_set_output_wins_over_return_value(queue: dq.JobQueue) -> None:
    seen: list[Any] = []
    queue.on("job:output", seen.append)

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        ctx.set_output({"a": 1})
        return {"b": 2}

    job_id = queue.add_job("t", {})
    queue.create_processor({"t": handler}).start()
    assert _job(queue, job_id).output == {"a": 1}
    assert seen == [{"job_id": job_id, "output": {"a": 1}}]


def test_returning_none_stores_no_output(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {})
    queue.create_processor({"t": lambda payload: None}).start()
    job = _job(queue, job_id)
    assert job.status == "completed" and job.output is None and job.step_data is None


def test_handlers_receive_arguments_by_signature(queue: dq.JobQueue) -> None:
    calls: list[tuple[Any, ...]] = []

    def one(payload: Any) -> None:
        calls.append((payload,))

    def two(payload: Any, signal: dq.AbortSignal) -> None:
        calls.append((payload, type(signal).__name__))

    def three(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        calls.append((payload, ctx.job_type, ctx.attempts, ctx.job_id > 0))

    queue.add_jobs([{"job_type": t, "payload": t} for t in ("one", "two", "three")])
    queue.create_processor({"one": one, "two": two, "three": three}, concurrency=1).start()
    assert sorted(calls, key=str) == sorted(
        [("one",), ("two", "AbortSignal"), ("three", "three", 1, True)], key=str
    )


def _drain_one_by_one(queue: dq.JobQueue) -> list[Any]:
    order: list[Any] = []
    processor = queue.create_processor({"t": order.append}, batch_size=1, concurrency=1)
    while processor.start():
        pass
    return order


def test_claim_order_is_priority_then_age_then_id(queue: dq.JobQueue) -> None:
    queue.add_job("t", "low", priority=1)
    queue.add_job("t", "first", priority=5)
    queue.add_jobs([{"job_type": "t", "payload": f"b{i}", "priority": 5} for i in range(3)])
    queue.add_job("t", "high", priority=9)
    queue.add_job("t", "last", priority=5)
    queue.add_job("t", "negative", priority=-3)
    # A batch shares one created_at: its jobs go by id.
    assert _drain_one_by_one(queue) == [
        "high",
        "first",
        "b0",
        "b1",
        "b2",
        "last",
        "low",
        "negative",
    ]


def test_older_created_at_goes_before_a_smaller_id(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # PostgreSQL only: no Redis operation can give a job an older createdAt than a job
    # with a smaller id (both are drawn in the script that stamps createdAt with the
    # server's clock), so id order is creation order there.
    pg_queue.add_jobs([{"job_type": "t", "payload": f"b{i}", "priority": 5} for i in range(2)])
    old = pg_queue.add_job("t", "old", priority=5)
    run_sql(
        engine,
        "UPDATE job_queue SET created_at = created_at - interval '1 hour' WHERE id = :id",
        id=old,
    )
    assert _drain_one_by_one(pg_queue) == ["old", "b0", "b1"]


def test_claim_skips_future_and_exhausted_jobs(queue: dq.JobQueue) -> None:
    queue.add_job("t", {}, run_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    exhausted = queue.add_job("t", {})
    force_job(queue, exhausted, attempts=3)
    assert queue.create_processor({"t": lambda p: None}).start() == 0
    job = queue.get_job(exhausted)
    assert job is not None and (job.status, job.attempts) == ("pending", 3)


def test_failure_schedules_a_retry_with_the_legacy_formula(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", 1)
    queue.create_processor({"t": _fail}).start()
    job = _job(queue, job_id)
    assert (job.status, job.attempts, job.failure_reason) == ("failed", 1, "handler_error")
    assert job.error_history[0]["message"] == "bad 1"
    assert job.next_attempt_at is not None and job.last_failed_at is not None
    delay = (job.next_attempt_at - job.last_failed_at).total_seconds()
    assert 115 <= delay <= 125
    [event] = [e for e in queue.get_job_events(job_id) if e.event_type == "failed"]
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
    queue: dq.JobQueue, options: dict[str, Any], low: float, high: float
) -> None:
    job_id = queue.add_job("t", 1, **options)
    queue.create_processor({"t": _fail}).start()
    job = _job(queue, job_id)
    assert job.next_attempt_at is not None and job.last_failed_at is not None
    assert low <= (job.next_attempt_at - job.last_failed_at).total_seconds() <= high


def test_attempts_are_exhausted_after_max_attempts(queue: dq.JobQueue) -> None:
    failures: list[Any] = []
    queue.on("job:failed", failures.append)
    job_id = queue.add_job("t", 1, max_attempts=2)
    processor = queue.create_processor({"t": _fail})
    processor.start()
    make_retry_due(queue, job_id)
    assert processor.start() == 1
    job = _job(queue, job_id)
    assert (job.status, job.attempts, job.next_attempt_at) == ("failed", 2, None)
    assert len(job.error_history) == 2
    assert processor.start() == 0
    # W-EV-5: will_retry says what happened (upstream reported False for the first).
    assert [f["will_retry"] for f in failures] == [True, False]
    assert isinstance(failures[0]["error"], ValueError)


def test_final_failure_routes_to_dead_letter_job(queue: dq.JobQueue) -> None:
    job_id = queue.add_job(
        "email", {"to": "x"}, max_attempts=1, dead_letter_job_type="email_dead_letter"
    )
    queue.create_processor({"email": _fail}).start()
    source = _job(queue, job_id)
    assert source.status == "failed" and source.dead_lettered_at is not None
    assert source.dead_letter_job_id is not None
    dead = _job(queue, source.dead_letter_job_id)
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
    [added] = queue.get_job_events(dead.id)
    assert added.metadata == {
        "jobType": "email_dead_letter",
        "sourceJobId": job_id,
        "sourceJobType": "email",
    }
    failed = queue.get_job_events(job_id)[-1]
    assert failed.metadata is not None and failed.metadata["deadLetterJobId"] == dead.id


def test_missing_handler_fails_only_that_job(queue: dq.JobQueue) -> None:
    failures: list[Any] = []
    queue.on("job:failed", failures.append)
    unknown, other = queue.add_jobs(
        [{"job_type": "unknown", "payload": {}}, {"job_type": "unknown", "payload": {}}]
    )
    # Claiming types without a handler is an explicit opt-in ("*").
    processor = queue.create_processor({"known": lambda p: None}, batch_size=1, job_type="*")
    assert processor.start() == 1
    job = _job(queue, unknown)
    assert (job.status, job.failure_reason) == ("failed", "no_handler")
    assert job.error_history[0]["message"] == "No handler registered for job type: unknown"
    # W-UB-1: the other pending job of that type is untouched.
    untouched = _job(queue, other)
    assert (untouched.status, untouched.pending_reason) == ("pending", None)
    assert failures[0]["will_retry"] is True  # W-EV-5: it will be retried


def test_timeout_fails_job_and_aborts_signal(queue: dq.JobQueue) -> None:
    aborted = threading.Event()

    def slow(payload: Any, signal: dq.AbortSignal) -> None:
        if signal.wait(5):
            aborted.set()

    job_id = queue.add_job("slow", {}, timeout_ms=200)
    started = time.monotonic()
    queue.create_processor({"slow": slow}).start()
    assert time.monotonic() - started < 3
    job = _job(queue, job_id)
    assert (job.status, job.failure_reason) == ("failed", "timeout")
    assert job.error_history[0]["message"] == "Job timed out after 200 ms"
    assert aborted.wait(2)


def test_timed_out_handler_cannot_write_late(queue: dq.JobQueue) -> None:
    # W-TO-1: after the timeout the handler's writes no longer reach the job.
    finished = threading.Event()

    def late(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        ctx.set_progress(10)
        time.sleep(0.6)
        ctx.set_progress(90)
        ctx.set_output("late")
        finished.set()
        return "late"

    job_id = queue.add_job("late", {}, timeout_ms=200)
    queue.create_processor({"late": late}).start()
    assert finished.wait(3)
    time.sleep(0.1)
    job = _job(queue, job_id)
    assert (job.status, job.progress, job.output) == ("failed", 10, None)


def test_on_timeout_callback_extends_the_deadline(queue: dq.JobQueue) -> None:
    extensions: list[int] = []

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        def extend() -> int | None:
            extensions.append(1)
            return 300 if len(extensions) == 1 else None

        ctx.on_timeout(extend)
        time.sleep(0.35)
        return "done"

    job_id = queue.add_job("t", {}, timeout_ms=200)
    queue.create_processor({"t": handler}).start()
    job = _job(queue, job_id)
    assert (job.status, job.output) == ("completed", "done")
    assert extensions == [1]
    assert _events(queue, job_id) == ["added", "processing", "prolonged", "completed"]


def test_prolong_refreshes_lock_and_deadline(queue: dq.JobQueue) -> None:
    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        for _ in range(3):
            time.sleep(0.1)
            ctx.prolong(200)
        return "ok"

    job_id = queue.add_job("t", {}, timeout_ms=150)
    queue.create_processor({"t": handler}).start()
    assert _job(queue, job_id).status == "completed"
    assert _events(queue, job_id).count("prolonged") == 3


def test_set_progress_rounds_half_up_and_validates(queue: dq.JobQueue) -> None:
    progress: list[Any] = []
    errors: list[str] = []
    queue.on("job:progress", progress.append)

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        for bad in (-1, 101, float("nan")):
            try:
                ctx.set_progress(bad)
            except ValueError as exc:
                errors.append(str(exc))
        ctx.set_progress(33.7)
        ctx.set_progress(50.5)

    job_id = queue.add_job("t", {})
    queue.create_processor({"t": handler}).start()
    assert [p["progress"] for p in progress] == [34, 51]
    assert len(errors) == 3 and all("Progress must be between 0 and 100" in e for e in errors)
    assert _job(queue, job_id).progress == 51


@pytest.mark.parametrize(
    ("job_type", "expected"), [("a", {"a"}), (["a", "b"], {"a", "b"}), ([], set())]
)
def test_job_type_filter_restricts_claims(
    queue: dq.JobQueue, job_type: Any, expected: set[str]
) -> None:
    queue.add_jobs([{"job_type": t, "payload": {}} for t in ("a", "b", "c")])
    processor = queue.create_processor(
        {"a": lambda p: None, "b": lambda p: None, "c": lambda p: None}, job_type=job_type
    )
    processor.start()
    assert {j.job_type for j in queue.get_jobs_by_status("completed")} == expected


def test_background_processing_and_drain(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(60)])
    processor = queue.create_processor(
        {"t": lambda p: time.sleep(0.005)}, batch_size=7, concurrency=4, poll_interval=50
    )
    processor.start_in_background()
    processor.start_in_background()  # no-op while running
    assert processor.is_running()
    deadline = time.monotonic() + 20
    while len(queue.get_jobs_by_status("completed", limit=100)) < 60:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    processor.stop_and_drain(5000)
    assert not processor.is_running()
    assert all(_job(queue, i).status == "completed" for i in ids)
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith(f"dataqueue-processor-{processor.worker_id}") for n in names)


def test_stop_and_drain_leaves_no_job_processing(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "t", "payload": i} for i in range(6)])
    started = threading.Event()

    def handler(payload: Any) -> None:
        started.set()
        time.sleep(0.3)

    processor = queue.create_processor({"t": handler}, concurrency=3, poll_interval=10)
    processor.start_in_background()
    assert started.wait(5)
    assert processor.stop_and_drain(5000) == []
    jobs = queue.get_all_jobs()
    # Started jobs were drained; claimed jobs no thread had started were given back.
    assert {(j.status.value, j.attempts) for j in jobs} <= {("completed", 1), ("pending", 0)}
    assert any(j.status == "completed" for j in jobs)


def test_start_and_background_modes_are_independent(queue: dq.JobQueue) -> None:
    # W-API-9: a one-shot start() on a running processor does not stop the loop.
    processor = queue.create_processor({"t": lambda p: None}, poll_interval=20)
    processor.start_in_background()
    queue.add_job("t", 1)
    processor.start()
    assert processor.is_running()
    late = queue.add_job("t", 2)
    deadline = time.monotonic() + 5
    while _job(queue, late).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    processor.stop_and_drain()


def test_completion_of_a_job_this_worker_lost_is_dropped(queue: dq.JobQueue) -> None:
    # W-LOCK-1: after the job was reclaimed and claimed by another worker, the slow
    # original worker's result must not complete it.
    release = threading.Event()
    job_id = queue.add_job("t", {})

    def slow(payload: Any) -> str:
        release.wait(5)
        return "stale"

    first = queue.create_processor({"t": slow}, worker_id="first")
    runner = threading.Thread(target=first.start)
    runner.start()
    deadline = time.monotonic() + 5
    while _job(queue, job_id).status != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    force_job(queue, job_id, status="processing", locked_by="second")
    release.set()
    runner.join(5)
    job = _job(queue, job_id)
    assert (job.status, job.locked_by, job.output) == ("processing", "second", None)
    assert "completed" not in _events(queue, job_id)


def _store_refuses_completion(queue: dq.JobQueue, refuse: Callable[[], None]) -> list[Any]:
    """Run one job whose handler makes the store refuse writes (``refuse``) before it
    returns; return what on_error heard."""
    # W-CMP-1: the handler succeeded; storing that failed. on_error hears of it, the
    # job is not marked failed and stays for reclaim.
    errors: list[BaseException] = []
    failures: list[Any] = []
    queue.on("job:failed", failures.append)

    def handler(payload: Any) -> str:
        refuse()
        return "ok"

    queue.add_job("t", {})
    queue.create_processor(
        {"t": handler}, on_error=errors.append, heartbeat_interval=0.5, heartbeat_timeout=2
    ).start()
    assert failures == []
    return errors


def test_storage_error_on_completion_is_reported_not_a_failure(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    try:
        errors = _store_refuses_completion(
            pg_queue,
            lambda: run_sql(engine, "ALTER TABLE job_events RENAME TO job_events_hidden"),
        )
    finally:
        run_sql(engine, "ALTER TABLE job_events_hidden RENAME TO job_events")
    assert len(errors) == 1 and isinstance(errors[0], dq.SchemaNotReadyError)
    [job] = pg_queue.get_all_jobs()
    assert job.status == "processing"


def test_refused_redis_write_on_completion_is_reported_not_a_failure(
    refusing_redis_queue: tuple[dq.JobQueue, Callable[[], None]], redis_queue: dq.JobQueue
) -> None:
    import redis

    queue, refuse = refusing_redis_queue
    errors = _store_refuses_completion(queue, refuse)
    assert len(errors) == 1 and isinstance(errors[0], redis.exceptions.NoPermissionError)
    [job] = redis_queue.get_all_jobs()  # the same keys, read by an unrestricted client
    assert (job.status, job.output) == ("processing", None)


def test_raising_completed_listener_does_not_fail_the_job(queue: dq.JobQueue) -> None:
    failures: list[Any] = []

    def broken(payload: Any) -> None:
        raise RuntimeError("listener bug")

    queue.on("job:completed", broken)
    queue.on("job:failed", failures.append)
    job_id = queue.add_job("t", {})
    queue.create_processor({"t": lambda p: "ok"}).start()
    assert _job(queue, job_id).status == "completed" and failures == []


def _claim_errors(broken: dq.JobQueue) -> list[BaseException]:
    errors: list[BaseException] = []
    events: list[BaseException] = []
    broken.on("error", events.append)
    processor = broken.create_processor({"t": lambda p: None}, on_error=errors.append)
    assert processor.start() == 0
    # Both the cron step before the claim and the claim itself fail; each is reported.
    assert len(errors) == 2 and events == errors
    return errors


def test_claim_error_reaches_on_error_and_error_event(
    engine: sa.Engine, pg_queue: dq.JobQueue
) -> None:
    broken = dq.init_job_queue(engine=engine, schema="missing_schema")
    errors = _claim_errors(broken)
    assert all(isinstance(error, dq.SchemaNotReadyError) for error in errors)


def test_refused_redis_claim_reaches_on_error_and_error_event(
    refusing_redis_queue: tuple[dq.JobQueue, Callable[[], None]],
) -> None:
    import redis

    queue, refuse = refusing_redis_queue
    queue.add_job("t", {})
    refuse()
    errors = _claim_errors(queue)
    assert all(isinstance(e, redis.exceptions.NoPermissionError) for e in errors)


def test_hooks_fire_in_order_for_a_job(queue: dq.JobQueue) -> None:
    seen: list[tuple[str, int]] = []
    for name in ("job:added", "job:processing", "job:completed"):
        queue.on(name, lambda p, name=name: seen.append((name, p["job_id"])))
    job_id = queue.add_job("t", {})
    queue.create_processor({"t": lambda p: None}).start()
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
    queue: dq.JobQueue, options: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        queue.create_processor({"t": lambda p: None}, **options)


def test_non_callable_handler_is_rejected(queue: dq.JobQueue) -> None:
    with pytest.raises(TypeError, match="'not a function'"):
        queue.create_processor({"t": "not a function"})  # type: ignore[dict-item]


def test_one_shot_processor_leaves_no_thread_behind(queue: dq.JobQueue) -> None:
    # The dashboard's "Process jobs" creates a processor per click; none may leak.
    queue.add_job("t", {}, timeout_ms=5000)
    processor = queue.create_processor({"t": lambda p: None})
    assert processor.start() == 1
    prefix = f"dataqueue-timeouts-{processor.worker_id}"
    deadline = time.monotonic() + 10
    while any(t.name.startswith(prefix) for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the timeout watchdog thread never exited"
        time.sleep(0.1)
    queue.add_job("t", {}, timeout_ms=5000)
    assert processor.start() == 1  # and a new one starts when needed
