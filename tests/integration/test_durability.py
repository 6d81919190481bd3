"""Durability of the processor (in one process): outages, poison values, heartbeats,
reclaim, clean shutdown, and services sharing one table.

Shared behaviour runs on PostgreSQL and Redis. Killed connections: PostgreSQL's
backends are terminated (``pg_terminate_backend``), Redis's closed (``CLIENT KILL``).
The multi-process fault tests (killed connections, SIGKILL, SIGTERM) are in
``test_durability_processes.py``.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.errors import ConfigurationError
from tests.conftest import BACKENDS
from tests.integration.store_state import (
    force_job,
    is_redis,
    kill_redis_connections,
    make_lock_stale,
    registered_workers,
    status_counts,
)

pytestmark = pytest.mark.all_backends

KILL_DATAQUEUE_BACKENDS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name = 'dataqueue' AND datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


def _killer(database_url: str) -> sa.Engine:
    """An engine outside the library's application name, to kill the library's backends."""
    return sa.create_engine(
        database_url, connect_args={"application_name": "killer"}, poolclass=sa.NullPool
    )


@attrs.frozen
class Victim:
    """A queue whose connections a test can close under it, and a queue on the same
    store whose connections survive (to watch)."""

    queue: dq.JobQueue
    observer: dq.JobQueue
    #: Closes every connection of ``queue``'s store client; returns how many.
    kill: Callable[[], int]


@pytest.fixture(params=BACKENDS)
def victim(request: pytest.FixtureRequest) -> Iterator[Victim]:
    if request.param == "postgres":
        queue: dq.JobQueue = request.getfixturevalue("pg_queue")
        killer = _killer(request.getfixturevalue("database_url"))
        observer = dq.init_job_queue(engine=killer)

        def kill_backends() -> int:
            with killer.connect() as conn:
                return int(conn.execute(sa.text(KILL_DATAQUEUE_BACKENDS)).scalar_one())

        yield Victim(queue, observer, kill_backends)
        observer.close()
        killer.dispose()
        return
    import redis

    admin = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("redis_prefix")
    name = f"dq-victim-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"), client_name=name)
    queue = dq.init_job_queue(backend="redis", redis_client=client, key_prefix=prefix)
    observer = dq.init_job_queue(backend="redis", redis_client=admin, key_prefix=prefix)
    yield Victim(queue, observer, lambda: kill_redis_connections(admin, name))
    observer.close()
    queue.close()
    client.close()


def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- finished work survives a store that fails -------------------------------------------


def test_killed_connections_lose_no_completion_and_run_nothing_twice(victim: Victim) -> None:
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        with lock:
            runs[ctx.job_id] += 1
        time.sleep(0.002)

    queue, observer = victim.queue, victim.observer
    ids = queue.add_jobs([{"job_type": "t", "payload": {"i": i}} for i in range(600)])
    errors: list[BaseException] = []
    processor = queue.create_processor(
        {"t": handler},
        batch_size=20,
        concurrency=4,
        poll_interval=50,
        heartbeat_interval=0.3,
        heartbeat_timeout=1.5,
        on_error=errors.append,
    )
    processor.start_in_background()
    kills = 0
    try:
        for target in (100, 200, 300, 400, 500):
            _wait_until(lambda t=target: len(runs) >= t, 60, f"{target} runs")
            kills += victim.kill()
        _wait_until(lambda: status_counts(observer)["completed"] == len(ids), 90, "all completed")
    finally:
        left = processor.stop_and_drain(10_000)
    assert left == []
    assert kills >= 5
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1, "a job ran twice"
    assert status_counts(observer) == Counter({"completed": len(ids)})
    completed = [e for i in ids for e in observer.get_job_events(i) if e.event_type == "completed"]
    assert len(completed) == len(ids)


@pytest.mark.parametrize(
    "options",
    [
        {"database_url": "postgresql://postgres@127.0.0.1:1/nowhere"},
        {"redis_url": "redis://127.0.0.1:1/0"},
    ],
    ids=BACKENDS,
)
def test_unreachable_store_is_reported_once_and_retried_with_backoff(
    options: dict[str, str],
) -> None:
    queue = dq.init_job_queue(**options)
    errors: list[BaseException] = []
    processor = queue.create_processor(
        {"t": lambda p: None}, poll_interval=10, on_error=errors.append
    )
    processor.start_in_background()
    time.sleep(2.0)
    assert processor.is_running()
    processor.stop_and_drain(5000)
    queue.close()
    # 2 s of 10 ms polls would be ~200 reports without backoff.
    assert len(errors) == 1


# -- one poison value affects one job ---------------------------------------------------


def _poison_output_surrogate(payload: Any) -> Any:
    return {"s": "\ud800"} if payload["poison"] else {"ok": True}


def _poison_output_nul(payload: Any) -> Any:
    return {"s": "a\x00b"} if payload["poison"] else {"ok": True}


def _poison_output_key(payload: Any) -> Any:
    return {"\udfff": 1} if payload["poison"] else {"ok": True}


def _poison_error_nul(payload: Any) -> Any:
    if payload["poison"]:
        raise RuntimeError("bad\x00news")
    return {"ok": True}


def _poison_error_surrogate(payload: Any) -> Any:
    if payload["poison"]:
        raise RuntimeError("bad \ud800 news")
    return {"ok": True}


def _poison_set_output(payload: Any, signal: Any, ctx: dq.JobContext) -> Any:
    if payload["poison"]:
        ctx.set_output({"s": "\ud800"})
    return {"ok": True}


@pytest.mark.parametrize(
    ("handler", "message_part"),
    [
        (_poison_output_surrogate, "surrogate"),
        (_poison_output_nul, "NUL"),
        (_poison_output_key, "surrogate"),
        (_poison_error_nul, "bad\ufffdnews"),
        (_poison_error_surrogate, "bad \ufffd news"),
        (_poison_set_output, "surrogate"),
    ],
    ids=[
        "output-surrogate",
        "output-nul",
        "output-key",
        "error-nul",
        "error-surrogate",
        "set-output",
    ],
)
def test_poison_value_fails_only_its_job(
    queue: dq.JobQueue, handler: Any, message_part: str
) -> None:
    ids = queue.add_jobs(
        [{"job_type": "t", "payload": {"poison": i == 7}, "max_attempts": 1} for i in range(20)]
    )
    processor = queue.create_processor({"t": handler}, batch_size=20, concurrency=20)
    assert processor.start() == 20
    poison = queue.get_job(ids[7])
    assert poison is not None
    others = [queue.get_job(i) for i in ids if i != ids[7]]
    assert [job.status for job in others if job] == ["completed"] * 19
    assert status_counts(queue)["processing"] == 0
    assert poison.status == "failed"
    assert poison.failure_reason == "handler_error"
    assert message_part.lower() in poison.error_history[-1]["message"].lower()


# -- heartbeats and reclaim ---------------------------------------------------------------


def test_long_job_without_timeout_is_never_reclaimed(queue: dq.JobQueue) -> None:
    runs: list[int] = []

    def slow(payload: Any, signal: Any, ctx: dq.JobContext) -> str:
        runs.append(ctx.job_id)
        time.sleep(4)
        return "done"

    job_id = queue.add_job("slow", {})
    processor = queue.create_processor(
        {"slow": slow}, poll_interval=50, heartbeat_interval=0.2, heartbeat_timeout=0.8
    )
    # An aggressive supervisor: anything not heartbeating would be reclaimed at once.
    supervisor = queue.create_supervisor(interval_ms=100, stuck_jobs_timeout=0.1)
    other = queue.create_processor({"slow": slow}, poll_interval=20)
    processor.start_in_background()
    _wait_until(lambda: runs, 10, "the job to start")
    supervisor.start_in_background()
    other.start_in_background()
    _wait_until(lambda: (j := queue.get_job(job_id)) and j.status == "completed", 20, "done")
    for item in (processor, other, supervisor):
        item.stop_and_drain(5000)
    assert runs == [job_id]
    job = queue.get_job(job_id)
    assert job is not None and job.output == "done" and job.attempts == 1


def _claim_as(queue: dq.JobQueue, worker: str, count: int, *, register: bool) -> list[int]:
    """Claim jobs as a worker that then dies (never heartbeats again)."""
    backend = queue._backend
    if register:
        backend.heartbeat(worker, [], 1.0)
    _, claimed = backend.advance(worker, [], dq_claim(count))
    return [job.id for job in claimed]


def dq_claim(count: int) -> Any:
    from dataqueue.backends.base import ClaimRequest

    return ClaimRequest(limit=count)


def test_dead_workers_jobs_are_reclaimed_after_its_heartbeat_timeout(
    queue: dq.JobQueue,
) -> None:
    ids = queue.add_jobs([{"job_type": "t", "payload": {}} for _ in range(3)])
    assert sorted(_claim_as(queue, "dead-worker", 3, register=True)) == sorted(ids)
    # A long stuck timeout does not protect a registered worker's stale jobs.
    assert queue.reclaim_stuck_jobs(max_processing_time=dt.timedelta(hours=1)) == 0
    time.sleep(1.1)
    assert queue.reclaim_stuck_jobs(max_processing_time=dt.timedelta(hours=1)) == 3
    assert {j.status for j in map(queue.get_job, ids) if j} == {"pending"}
    done: list[int] = []
    processor = queue.create_processor({"t": lambda p, s, ctx: done.append(ctx.job_id)})
    assert processor.start() == 3
    assert sorted(done) == sorted(ids)


def test_processor_recovers_dead_workers_jobs_without_a_supervisor(
    queue: dq.JobQueue,
) -> None:
    ids = queue.add_jobs([{"job_type": "t", "payload": {}} for _ in range(2)])
    _claim_as(queue, "dead-worker", 2, register=True)
    done: list[int] = []
    processor = queue.create_processor(
        {"t": lambda p, s, ctx: done.append(ctx.job_id)},
        poll_interval=60_000,  # pickup after the reclaim must not wait for a poll
        heartbeat_interval=0.2,
        heartbeat_timeout=0.6,
    )
    started = time.monotonic()
    processor.start_in_background()
    _wait_until(lambda: len(done) == 2, 10, "the dead worker's jobs to run")
    assert time.monotonic() - started < 5
    processor.stop_and_drain(5000)
    assert sorted(done) == sorted(ids)


def test_unregistered_workers_jobs_keep_the_stuck_timeout(queue: dq.JobQueue) -> None:
    """A Node.js worker does not heartbeat: its jobs get upstream's rule, not ours."""
    [job_id] = queue.add_jobs([{"job_type": "t", "payload": {}}])
    _claim_as(queue, "node-worker", 1, register=False)
    make_lock_stale(queue, None, 30)
    assert queue.reclaim_stuck_jobs(max_processing_time=60) == 0
    assert queue.reclaim_stuck_jobs(max_processing_time=10) == 1
    job = queue.get_job(job_id)
    assert job is not None and job.status == "pending"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_processing_time_minutes": 0}, ConfigurationError),
        ({"max_processing_time_minutes": -1}, ConfigurationError),
        ({"max_processing_time": 0}, ConfigurationError),
        ({"max_processing_time": dt.timedelta(0)}, ConfigurationError),
        ({"max_processing_time": math.inf}, ConfigurationError),
        ({"max_processing_time": "10s"}, TypeError),
        ({"max_processing_time": 5, "max_processing_time_minutes": 1}, ConfigurationError),
    ],
)
def test_reclaim_rejects_limits_that_would_reclaim_live_work(
    queue: dq.JobQueue, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match="max_processing_time"):
        queue.reclaim_stuck_jobs(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"heartbeat_interval": math.nan}, "heartbeat_interval"),
        ({"heartbeat_timeout": math.inf}, "heartbeat_timeout"),
        ({"heartbeat_interval": 5, "heartbeat_timeout": 10}, "heartbeat_timeout"),
        ({"poll_interval": math.inf}, "poll_interval"),
        ({"poll_interval": math.nan}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
    ],
)
def test_bad_processor_intervals_are_rejected(
    queue: dq.JobQueue, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigurationError, match=name):
        queue.create_processor({"t": lambda p: None}, **kwargs)


@pytest.mark.parametrize("interval", [math.inf, math.nan, 0, -5])
def test_bad_supervisor_intervals_are_rejected(queue: dq.JobQueue, interval: float) -> None:
    with pytest.raises(ConfigurationError, match="interval_ms"):
        queue.create_supervisor(interval_ms=interval)


def test_heartbeat_settings_accept_timedelta(queue: dq.JobQueue) -> None:
    processor = queue.create_processor(
        {"t": lambda p: None},
        heartbeat_interval=dt.timedelta(seconds=2),
        heartbeat_timeout=dt.timedelta(seconds=10),
    )
    assert (processor.heartbeat_interval, processor.heartbeat_timeout) == (2.0, 10.0)


# -- clean shutdown -----------------------------------------------------------------------


def test_stop_gives_back_unstarted_jobs_with_their_attempt(queue: dq.JobQueue) -> None:
    started: list[int] = []
    release = threading.Event()

    def handler(payload: Any, signal: Any, ctx: dq.JobContext) -> None:
        if payload["slow"]:
            started.append(ctx.job_id)
            release.wait(10)

    quick = queue.add_jobs(
        [{"job_type": "t", "payload": {"slow": False}, "priority": 10} for _ in range(40)]
    )
    slow = queue.add_jobs([{"job_type": "t", "payload": {"slow": True}} for _ in range(20)])
    processor = queue.create_processor(
        {"t": handler}, batch_size=10, concurrency=2, poll_interval=20
    )
    processor.start_in_background()
    _wait_until(lambda: len(started) == 2, 20, "two slow jobs to start")
    held = processor.unfinished_job_ids()
    assert len(held) > 2, "the test needs jobs claimed ahead of the free slots"
    processor.stop()
    _wait_until(
        lambda: status_counts(queue)["processing"] == 2, 10, "unstarted jobs to be given back"
    )
    release.set()
    assert processor.stop_and_drain(10_000) == []
    jobs = {job.id: job for job in map(queue.get_job, slow) if job}
    running = set(started)
    for job_id, job in jobs.items():
        if job_id in running:
            assert job.status == "completed"
        else:
            assert (job.status, job.attempts, job.started_at) == ("pending", 0, None)
            assert job.failure_reason is None and job.error_history == []
    assert all(j and j.status == "completed" for j in map(queue.get_job, quick))


def test_stop_gives_back_a_resumed_wait_as_waiting(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {})
    backend = queue._backend
    backend.heartbeat("w", [], 5.0)
    backend.advance("w", [], dq_claim(1))
    assert backend.wait_job("w", job_id, dt.datetime.now(dt.timezone.utc), None, "{}")
    _, [claimed] = backend.advance("w", [], dq_claim(1))
    assert claimed.resumed
    assert backend.release_jobs("w", [claimed]) == [job_id]
    job = queue.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == ("waiting", 1)


def test_drain_timeout_returns_the_jobs_left_running(queue: dq.JobQueue) -> None:
    release = threading.Event()
    job_id = queue.add_job("t", {})
    processor = queue.create_processor({"t": lambda p: release.wait(10)}, poll_interval=20)
    processor.start_in_background()
    _wait_until(lambda: processor.unfinished_job_ids() == [job_id], 10, "the job to start")
    assert processor.stop_and_drain(200) == [job_id]
    release.set()
    assert processor.stop_and_drain(5000) == []
    job = queue.get_job(job_id)
    assert job is not None and job.status == "completed"


# -- loop robustness ----------------------------------------------------------------------


class _Fatal(BaseException):
    pass


def test_dead_loop_reports_and_is_not_running(
    queue: dq.JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    processor = queue.create_processor({"t": lambda p: None}, on_error=errors.append)

    def explode(*args: Any) -> Any:
        raise _Fatal("boom")

    monkeypatch.setattr(processor._store, "store", explode)
    processor.start_in_background()
    _wait_until(lambda: not processor.is_running(), 5, "is_running() to turn False")
    assert any(isinstance(e, _Fatal) for e in errors)


def test_first_call_after_idle_connections_were_killed_succeeds(victim: Victim) -> None:
    first = victim.queue.add_job("t", {})  # fills the pool with a used connection
    assert victim.kill() >= 1
    time.sleep(0.1)
    assert victim.queue.add_job("t", {}) == first + 1
    assert [j.id for j in victim.observer.get_all_jobs()] == [first + 1, first]


# -- services sharing one table ------------------------------------------------------------


def test_processors_claim_only_their_handlers_types(queue: dq.JobQueue) -> None:
    mine = queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(5)])
    theirs = queue.add_jobs([{"job_type": "invoice", "payload": {}} for _ in range(5)])
    done: dict[str, list[int]] = {"email": [], "invoice": []}
    email = queue.create_processor(
        {"email": lambda p, s, ctx: done["email"].append(ctx.job_id)}, poll_interval=20
    )
    email.start_in_background()
    _wait_until(lambda: len(done["email"]) == 5, 10, "email jobs")
    time.sleep(0.2)
    # The other service's jobs were not touched.
    for job in map(queue.get_job, theirs):
        assert job is not None and (job.status, job.attempts, job.pending_reason) == (
            "pending",
            0,
            None,
        )
    invoice = queue.create_processor(
        {"invoice": lambda p, s, ctx: done["invoice"].append(ctx.job_id)}, poll_interval=20
    )
    invoice.start_in_background()
    _wait_until(lambda: len(done["invoice"]) == 5, 10, "invoice jobs")
    email.stop_and_drain(5000)
    invoice.stop_and_drain(5000)
    assert sorted(done["email"]) == sorted(mine) and sorted(done["invoice"]) == sorted(theirs)


def test_worker_unregisters_after_a_clean_stop(queue: dq.JobQueue) -> None:
    processor = queue.create_processor({"t": lambda p: None}, poll_interval=20)
    processor.start_in_background()
    _wait_until(lambda: registered_workers(queue) == 1, 5, "registration")
    processor.stop_and_drain(5000)
    assert registered_workers(queue) == 0


def test_store_isolates_a_value_the_database_refuses(queue: dq.JobQueue) -> None:
    """Even a value that slipped past validation fails only its own job."""
    from dataqueue.processing.invoke import Outcome
    from dataqueue.processing.storing import OutcomeStore

    ids = queue.add_jobs([{"job_type": "t", "payload": {}, "max_attempts": 1} for _ in range(5)])
    backend = queue._backend
    backend.heartbeat("w", [], 5.0)
    _, claimed = backend.advance("w", [], dq_claim(5))
    events: list[tuple[str, Any]] = []
    settled: list[int] = []
    store = OutcomeStore(backend, "w", lambda e, p: events.append((e, p)), settled.append)
    # PostgreSQL refuses the escaped lone surrogate in jsonb; Redis stores any text, so
    # only text that cannot be encoded (a lone surrogate itself) is refused there.
    refused = '{"s": "\ud800"}' if is_redis(queue) else '{"s": "\\ud800"}'
    outcomes = [
        Outcome.completed(job, refused if job.id == ids[2] else '{"ok": 1}') for job in claimed
    ]
    result = store.store(outcomes, None)
    assert result.retry == []
    assert sorted(settled) == sorted(ids)
    poison = queue.get_job(ids[2])
    assert poison is not None and (poison.status, poison.failure_reason) == (
        "failed",
        "handler_error",
    )
    assert "could not be stored" in poison.error_history[-1]["message"]
    others = [queue.get_job(i) for i in ids if i != ids[2]]
    assert [(j.status, j.output) for j in others if j] == [("completed", {"ok": 1})] * 4
    assert sum(1 for e, _ in events if e == "job:completed") == 4


def test_handler_is_told_when_its_lock_was_taken_away(queue: dq.JobQueue) -> None:
    """After a stall longer than the heartbeat timeout another worker may own the job:
    the next heartbeat sees it and aborts the handler's signal; its result is dropped."""
    reasons: list[str | None] = []

    def handler(payload: Any, signal: dq.AbortSignal) -> str:
        signal.wait(10)
        reasons.append(signal.reason)
        return "late"

    job_id = queue.add_job("t", {})
    processor = queue.create_processor(
        {"t": handler}, poll_interval=20, heartbeat_interval=0.2, heartbeat_timeout=0.6
    )
    processor.start_in_background()
    _wait_until(lambda: processor.unfinished_job_ids() == [job_id], 10, "the job to start")
    force_job(queue, job_id, locked_by="someone-else")
    _wait_until(lambda: reasons, 10, "the handler to be aborted")
    assert processor.stop_and_drain(5000) == []
    assert reasons == ["lock lost"]
    job = queue.get_job(job_id)
    assert job is not None and (job.status, job.locked_by, job.output) == (
        "processing",
        "someone-else",
        None,
    )
