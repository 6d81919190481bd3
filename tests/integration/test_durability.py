"""Durability of the processor (in one process): outages, poison values, heartbeats,
reclaim, clean shutdown, and services sharing one table.

The multi-process fault tests (killed backends, SIGKILL, SIGTERM) are in
``test_durability_processes.py``.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.errors import ConfigurationError
from tests.conftest import run_sql

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


def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _status_counts(engine: sa.Engine) -> Counter[str]:
    return Counter(dict(run_sql(engine, "SELECT status, count(*) FROM job_queue GROUP BY status")))


# -- finished work survives a store that fails -------------------------------------------


def test_killed_backends_lose_no_completion_and_run_nothing_twice(
    pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        with lock:
            runs[ctx.job_id] += 1
        time.sleep(0.002)

    ids = pg_queue.add_jobs([{"job_type": "t", "payload": {"i": i}} for i in range(600)])
    errors: list[BaseException] = []
    processor = pg_queue.create_processor(
        {"t": handler},
        batch_size=20,
        concurrency=4,
        poll_interval=50,
        heartbeat_interval=0.3,
        heartbeat_timeout=1.5,
        on_error=errors.append,
    )
    killer = _killer(database_url)  # also reads: the queue's own connections get killed
    processor.start_in_background()
    kills = 0
    try:
        for target in (100, 200, 300, 400, 500):
            _wait_until(lambda t=target: len(runs) >= t, 60, f"{target} runs")
            with killer.connect() as conn:
                kills += conn.execute(sa.text(KILL_DATAQUEUE_BACKENDS)).scalar_one()
        _wait_until(lambda: _status_counts(killer)["completed"] == len(ids), 90, "all completed")
    finally:
        left = processor.stop_and_drain(10_000)
        killer.dispose()
    assert left == []
    assert kills >= 5
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1, "a job ran twice"
    assert _status_counts(engine) == Counter({"completed": len(ids)})
    events = run_sql(engine, "SELECT count(*) FROM job_events WHERE event_type = 'completed'")
    assert events[0][0] == len(ids)


def test_unreachable_store_is_reported_once_and_retried_with_backoff() -> None:
    queue = dq.init_job_queue("postgresql://postgres@127.0.0.1:1/nowhere")
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
    pg_queue: dq.JobQueue, engine: sa.Engine, handler: Any, message_part: str
) -> None:
    ids = pg_queue.add_jobs(
        [{"job_type": "t", "payload": {"poison": i == 7}, "max_attempts": 1} for i in range(20)]
    )
    processor = pg_queue.create_processor({"t": handler}, batch_size=20, concurrency=20)
    assert processor.start() == 20
    poison = pg_queue.get_job(ids[7])
    assert poison is not None
    assert poison.status == "failed"
    assert poison.failure_reason == "handler_error"
    assert message_part.lower() in poison.error_history[-1]["message"].lower()
    others = [pg_queue.get_job(i) for i in ids if i != ids[7]]
    assert [job.status for job in others if job] == ["completed"] * 19
    assert _status_counts(engine)["processing"] == 0


# -- heartbeats and reclaim ---------------------------------------------------------------


def test_long_job_without_timeout_is_never_reclaimed(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    runs: list[int] = []

    def slow(payload: Any, signal: Any, ctx: dq.JobContext) -> str:
        runs.append(ctx.job_id)
        time.sleep(4)
        return "done"

    job_id = pg_queue.add_job("slow", {})
    processor = pg_queue.create_processor(
        {"slow": slow}, poll_interval=50, heartbeat_interval=0.2, heartbeat_timeout=0.8
    )
    # An aggressive supervisor: anything not heartbeating would be reclaimed at once.
    supervisor = pg_queue.create_supervisor(interval_ms=100, stuck_jobs_timeout=0.1)
    other = pg_queue.create_processor({"slow": slow}, poll_interval=20)
    processor.start_in_background()
    _wait_until(lambda: runs, 10, "the job to start")
    supervisor.start_in_background()
    other.start_in_background()
    _wait_until(lambda: (j := pg_queue.get_job(job_id)) and j.status == "completed", 20, "done")
    for item in (processor, other, supervisor):
        item.stop_and_drain(5000)
    assert runs == [job_id]
    job = pg_queue.get_job(job_id)
    assert job is not None and job.output == "done" and job.attempts == 1


def _claim_as(pg_queue: dq.JobQueue, worker: str, count: int, *, register: bool) -> list[int]:
    """Claim jobs as a worker that then dies (never heartbeats again)."""
    backend = pg_queue._backend
    if register:
        backend.heartbeat(worker, [], 1.0)
    _, claimed = backend.advance(worker, [], dq_claim(count))
    return [job.id for job in claimed]


def dq_claim(count: int) -> Any:
    from dataqueue.backends.base import ClaimRequest

    return ClaimRequest(limit=count)


def test_dead_workers_jobs_are_reclaimed_after_its_heartbeat_timeout(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ids = pg_queue.add_jobs([{"job_type": "t", "payload": {}} for _ in range(3)])
    assert sorted(_claim_as(pg_queue, "dead-worker", 3, register=True)) == sorted(ids)
    # A long stuck timeout does not protect a registered worker's stale jobs.
    assert pg_queue.reclaim_stuck_jobs(max_processing_time=dt.timedelta(hours=1)) == 0
    time.sleep(1.1)
    assert pg_queue.reclaim_stuck_jobs(max_processing_time=dt.timedelta(hours=1)) == 3
    assert {j.status for j in map(pg_queue.get_job, ids) if j} == {"pending"}
    done: list[int] = []
    processor = pg_queue.create_processor({"t": lambda p, s, ctx: done.append(ctx.job_id)})
    assert processor.start() == 3
    assert sorted(done) == sorted(ids)


def test_processor_recovers_dead_workers_jobs_without_a_supervisor(
    pg_queue: dq.JobQueue,
) -> None:
    ids = pg_queue.add_jobs([{"job_type": "t", "payload": {}} for _ in range(2)])
    _claim_as(pg_queue, "dead-worker", 2, register=True)
    done: list[int] = []
    processor = pg_queue.create_processor(
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


def test_unregistered_workers_jobs_keep_the_stuck_timeout(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    """A Node.js worker does not heartbeat: its jobs get upstream's rule, not ours."""
    [job_id] = pg_queue.add_jobs([{"job_type": "t", "payload": {}}])
    _claim_as(pg_queue, "node-worker", 1, register=False)
    run_sql(engine, "UPDATE job_queue SET locked_at = now() - interval '30 seconds'")
    assert pg_queue.reclaim_stuck_jobs(max_processing_time=60) == 0
    assert pg_queue.reclaim_stuck_jobs(max_processing_time=10) == 1
    job = pg_queue.get_job(job_id)
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
    pg_queue: dq.JobQueue, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match="max_processing_time"):
        pg_queue.reclaim_stuck_jobs(**kwargs)


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
    pg_queue: dq.JobQueue, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigurationError, match=name):
        pg_queue.create_processor({"t": lambda p: None}, **kwargs)


@pytest.mark.parametrize("interval", [math.inf, math.nan, 0, -5])
def test_bad_supervisor_intervals_are_rejected(pg_queue: dq.JobQueue, interval: float) -> None:
    with pytest.raises(ConfigurationError, match="interval_ms"):
        pg_queue.create_supervisor(interval_ms=interval)


def test_heartbeat_settings_accept_timedelta(pg_queue: dq.JobQueue) -> None:
    processor = pg_queue.create_processor(
        {"t": lambda p: None},
        heartbeat_interval=dt.timedelta(seconds=2),
        heartbeat_timeout=dt.timedelta(seconds=10),
    )
    assert (processor.heartbeat_interval, processor.heartbeat_timeout) == (2.0, 10.0)


# -- clean shutdown -----------------------------------------------------------------------


def test_stop_gives_back_unstarted_jobs_with_their_attempt(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    started: list[int] = []
    release = threading.Event()

    def handler(payload: Any, signal: Any, ctx: dq.JobContext) -> None:
        if payload["slow"]:
            started.append(ctx.job_id)
            release.wait(10)

    quick = pg_queue.add_jobs(
        [{"job_type": "t", "payload": {"slow": False}, "priority": 10} for _ in range(40)]
    )
    slow = pg_queue.add_jobs([{"job_type": "t", "payload": {"slow": True}} for _ in range(20)])
    processor = pg_queue.create_processor(
        {"t": handler}, batch_size=10, concurrency=2, poll_interval=20
    )
    processor.start_in_background()
    _wait_until(lambda: len(started) == 2, 20, "two slow jobs to start")
    held = processor.unfinished_job_ids()
    assert len(held) > 2, "the test needs jobs claimed ahead of the free slots"
    processor.stop()
    _wait_until(
        lambda: _status_counts(engine)["processing"] == 2, 10, "unstarted jobs to be given back"
    )
    release.set()
    assert processor.stop_and_drain(10_000) == []
    jobs = {job.id: job for job in map(pg_queue.get_job, slow) if job}
    running = set(started)
    for job_id, job in jobs.items():
        if job_id in running:
            assert job.status == "completed"
        else:
            assert (job.status, job.attempts, job.started_at) == ("pending", 0, None)
            assert job.failure_reason is None and job.error_history == []
    assert all(j and j.status == "completed" for j in map(pg_queue.get_job, quick))


def test_stop_gives_back_a_resumed_wait_as_waiting(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    backend = pg_queue._backend
    backend.heartbeat("w", [], 5.0)
    backend.advance("w", [], dq_claim(1))
    assert backend.wait_job("w", job_id, dt.datetime.now(dt.timezone.utc), None, "{}")
    _, [claimed] = backend.advance("w", [], dq_claim(1))
    assert claimed.resumed
    assert backend.release_jobs("w", [claimed]) == [job_id]
    job = pg_queue.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == ("waiting", 1)


def test_drain_timeout_returns_the_jobs_left_running(pg_queue: dq.JobQueue) -> None:
    release = threading.Event()
    job_id = pg_queue.add_job("t", {})
    processor = pg_queue.create_processor({"t": lambda p: release.wait(10)}, poll_interval=20)
    processor.start_in_background()
    _wait_until(lambda: processor.unfinished_job_ids() == [job_id], 10, "the job to start")
    assert processor.stop_and_drain(200) == [job_id]
    release.set()
    assert processor.stop_and_drain(5000) == []
    job = pg_queue.get_job(job_id)
    assert job is not None and job.status == "completed"


# -- loop robustness ----------------------------------------------------------------------


class _Fatal(BaseException):
    pass


def test_dead_loop_reports_and_is_not_running(
    pg_queue: dq.JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    processor = pg_queue.create_processor({"t": lambda p: None}, on_error=errors.append)

    def explode(*args: Any) -> Any:
        raise _Fatal("boom")

    monkeypatch.setattr(processor._store, "store", explode)
    processor.start_in_background()
    _wait_until(lambda: not processor.is_running(), 5, "is_running() to turn False")
    assert any(isinstance(e, _Fatal) for e in errors)


def test_first_call_after_idle_connections_were_killed_succeeds(
    pg_queue: dq.JobQueue, database_url: str
) -> None:
    pg_queue.add_job("t", {})  # fills the pool with a used connection
    with _killer(database_url).connect() as conn:
        assert conn.execute(sa.text(KILL_DATAQUEUE_BACKENDS)).scalar_one() >= 1
    time.sleep(0.1)
    assert pg_queue.add_job("t", {}) > 0


# -- services sharing one table ------------------------------------------------------------


def test_processors_claim_only_their_handlers_types(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    mine = pg_queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(5)])
    theirs = pg_queue.add_jobs([{"job_type": "invoice", "payload": {}} for _ in range(5)])
    done: dict[str, list[int]] = {"email": [], "invoice": []}
    email = pg_queue.create_processor(
        {"email": lambda p, s, ctx: done["email"].append(ctx.job_id)}, poll_interval=20
    )
    email.start_in_background()
    _wait_until(lambda: len(done["email"]) == 5, 10, "email jobs")
    time.sleep(0.2)
    # The other service's jobs were not touched.
    for job in map(pg_queue.get_job, theirs):
        assert job is not None and (job.status, job.attempts, job.pending_reason) == (
            "pending",
            0,
            None,
        )
    invoice = pg_queue.create_processor(
        {"invoice": lambda p, s, ctx: done["invoice"].append(ctx.job_id)}, poll_interval=20
    )
    invoice.start_in_background()
    _wait_until(lambda: len(done["invoice"]) == 5, 10, "invoice jobs")
    email.stop_and_drain(5000)
    invoice.stop_and_drain(5000)
    assert sorted(done["email"]) == sorted(mine) and sorted(done["invoice"]) == sorted(theirs)


def test_worker_unregisters_after_a_clean_stop(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    processor = pg_queue.create_processor({"t": lambda p: None}, poll_interval=20)
    processor.start_in_background()
    _wait_until(
        lambda: run_sql(engine, "SELECT count(*) FROM dataqueue_workers")[0][0] == 1,
        5,
        "registration",
    )
    processor.stop_and_drain(5000)
    assert run_sql(engine, "SELECT count(*) FROM dataqueue_workers")[0][0] == 0


def test_store_isolates_a_value_the_database_refuses(pg_queue: dq.JobQueue) -> None:
    """Even a value that slipped past validation fails only its own job."""
    from dataqueue.processing.invoke import Outcome
    from dataqueue.processing.storing import OutcomeStore

    ids = pg_queue.add_jobs([{"job_type": "t", "payload": {}, "max_attempts": 1} for _ in range(5)])
    backend = pg_queue._backend
    backend.heartbeat("w", [], 5.0)
    _, claimed = backend.advance("w", [], dq_claim(5))
    events: list[tuple[str, Any]] = []
    settled: list[int] = []
    store = OutcomeStore(backend, "w", lambda e, p: events.append((e, p)), settled.append)
    outcomes = [
        Outcome.completed(job, '{"s": "\\ud800"}' if job.id == ids[2] else '{"ok": 1}')
        for job in claimed
    ]
    result = store.store(outcomes, None)
    assert result.retry == []
    assert sorted(settled) == sorted(ids)
    poison = pg_queue.get_job(ids[2])
    assert poison is not None and (poison.status, poison.failure_reason) == (
        "failed",
        "handler_error",
    )
    assert "could not be stored" in poison.error_history[-1]["message"]
    others = [pg_queue.get_job(i) for i in ids if i != ids[2]]
    assert [(j.status, j.output) for j in others if j] == [("completed", {"ok": 1})] * 4
    assert sum(1 for e, _ in events if e == "job:completed") == 4


def test_handler_is_told_when_its_lock_was_taken_away(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    """After a stall longer than the heartbeat timeout another worker may own the job:
    the next heartbeat sees it and aborts the handler's signal; its result is dropped."""
    reasons: list[str | None] = []

    def handler(payload: Any, signal: dq.AbortSignal) -> str:
        signal.wait(10)
        reasons.append(signal.reason)
        return "late"

    job_id = pg_queue.add_job("t", {})
    processor = pg_queue.create_processor(
        {"t": handler}, poll_interval=20, heartbeat_interval=0.2, heartbeat_timeout=0.6
    )
    processor.start_in_background()
    _wait_until(lambda: processor.unfinished_job_ids() == [job_id], 10, "the job to start")
    run_sql(engine, "UPDATE job_queue SET locked_by = 'someone-else' WHERE id = :id", id=job_id)
    _wait_until(lambda: reasons, 10, "the handler to be aborted")
    assert processor.stop_and_drain(5000) == []
    assert reasons == ["lock lost"]
    job = pg_queue.get_job(job_id)
    assert job is not None and (job.status, job.locked_by, job.output) == (
        "processing",
        "someone-else",
        None,
    )
