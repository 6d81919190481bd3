"""Wake-ups: pushed on enqueue (PostgreSQL LISTEN/NOTIFY, Redis pub/sub) and timed for
scheduled jobs.

Tests that take the ``queue`` fixture run on both backends; the PostgreSQL mechanics
(NOTIFY payloads, channels, ``schema=``, poolers) use ``pg_queue``, and the Redis ones
live in ``test_redis_wakeups.py``. Real servers, real threads and processes. Every
processor here polls once a minute, so a job that starts within a second was started
by a wake-up, not by a poll. The bounds are generous (the machine is shared);
``bench/pickup.py`` measures tight figures.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.backends.postgres.notify import DEFAULT_CHANNEL, default_channel
from tests.conftest import libpq_url, run_sql
from tests.integration.worker_runner import WorkerProcess

pytestmark = pytest.mark.all_backends

MINUTE_MS = 60_000
#: A wake-up must beat a one-minute poll by far; scheduled starts must be close to time.
PICKUP_BOUND = 1.0
SCHEDULE_BOUND = 0.2

_LISTENERS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND query = 'LISTEN \"dataqueue\"' AND pid <> pg_backend_pid()"
)


class Starts:
    """Handlers that record when each job (payload ``{"n": ...}``) started."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.times: dict[int, float] = {}

    def record(self, payload: dict[str, Any]) -> None:
        with self._cond:
            self.times[payload["n"]] = time.time()
            self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> float | None:
        """When job ``n`` started (epoch seconds), or None if not within ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: n in self.times, timeout)
            return self.times.get(n)


@pytest.fixture
def starts() -> Starts:
    return Starts()


def _listening_pids(engine: sa.Engine) -> list[int]:
    return [row[0] for row in run_sql(engine, _LISTENERS)]


def _wait_for_listener(engine: sa.Engine, other_than: int | None = None) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [pid for pid in _listening_pids(engine) if pid != other_than]
        if pids:
            return pids[0]
        time.sleep(0.02)
    pytest.fail("no processor is listening")


def _is_redis(queue: dq.JobQueue) -> bool:
    try:
        queue.get_redis_client()
    except dq.UnsupportedOperationError:
        return False
    return True


def _listeners(queue: dq.JobQueue) -> int:
    """How many connections listen for the wake-ups of ``queue``'s store."""
    if not _is_redis(queue):
        return len(_listening_pids(queue.get_engine()))
    client = queue.get_redis_client()
    channel = queue._backend.keys.wakeup  # type: ignore[attr-defined]
    [(_, count)] = client.pubsub_numsub(channel)
    return int(count)


def _wait_for_listeners(queue: dq.JobQueue) -> None:
    deadline = time.monotonic() + 10
    while not _listeners(queue):
        if time.monotonic() > deadline:
            pytest.fail("no processor is listening")
        time.sleep(0.02)


@pytest.fixture
def processor(queue: dq.JobQueue, starts: Starts) -> Iterator[dq.Processor]:
    """A listening processor that polls once a minute, started and listening."""
    proc = queue.create_processor({"t": starts.record}, poll_interval=MINUTE_MS)
    proc.start_in_background()
    _wait_for_listeners(queue)
    yield proc
    proc.stop_and_drain(5000)


@pytest.fixture
def pg_processor(
    pg_queue: dq.JobQueue, engine: sa.Engine, starts: Starts
) -> Iterator[dq.Processor]:
    """:func:`processor` on PostgreSQL only (for the tests of LISTEN connections)."""
    proc = pg_queue.create_processor({"t": starts.record}, poll_interval=MINUTE_MS)
    proc.start_in_background()
    _wait_for_listener(engine)
    yield proc
    proc.stop_and_drain(5000)


@pytest.fixture
def raw_listener(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The test's own LISTEN connection on the default channel."""
    conn = psycopg.connect(libpq_url(database_url), autocommit=True)
    conn.execute(f'LISTEN "{DEFAULT_CHANNEL}"')
    yield conn
    conn.close()


def _notifications(conn: psycopg.Connection[Any], timeout: float = 0.3) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=timeout)]


def test_enqueue_in_a_transaction_notifies_on_commit(
    pg_queue: dq.JobQueue, engine: sa.Engine, raw_listener: psycopg.Connection[Any]
) -> None:
    with engine.begin() as conn:
        pg_queue.add_job("t", {"n": 1}, db=conn)
        assert _notifications(raw_listener) == []  # not before the commit
    assert _notifications(raw_listener) == ["t"]


def test_rolled_back_enqueue_notifies_nobody(
    pg_queue: dq.JobQueue, engine: sa.Engine, raw_listener: psycopg.Connection[Any]
) -> None:
    with engine.connect() as conn:
        pg_queue.add_jobs([{"job_type": "t", "payload": {"n": n}} for n in range(3)], db=conn)
        conn.rollback()
    assert _notifications(raw_listener, timeout=0.5) == []


def test_batch_sends_one_notification_for_any_type(
    pg_queue: dq.JobQueue, raw_listener: psycopg.Connection[Any]
) -> None:
    pg_queue.add_jobs([{"job_type": f"t{n % 2}", "payload": {}} for n in range(2500)])
    assert _notifications(raw_listener) == [""]


def test_retry_and_token_completion_notify(
    pg_queue: dq.JobQueue, engine: sa.Engine, raw_listener: psycopg.Connection[Any]
) -> None:
    job_id = pg_queue.add_job("t", {})
    run_sql(engine, "UPDATE job_queue SET status = 'failed' WHERE id = :id", id=job_id)
    _notifications(raw_listener)
    assert pg_queue.retry_job(job_id)
    assert _notifications(raw_listener) == [""]
    token = pg_queue.create_token()
    run_sql(
        engine,
        "UPDATE job_queue SET status = 'waiting', wait_token_id = :token WHERE id = :id",
        token=token.id,
        id=job_id,
    )
    assert pg_queue.complete_token(token.id, {"ok": True})
    assert _notifications(raw_listener) == [""]


def test_cron_enqueue_notifies_with_the_job_type(
    pg_queue: dq.JobQueue, engine: sa.Engine, raw_listener: psycopg.Connection[Any]
) -> None:
    pg_queue.add_cron_job("every-minute", "* * * * *", "report", {})
    run_sql(engine, "UPDATE cron_schedules SET next_run_at = now() - interval '1 second'")
    assert pg_queue.enqueue_due_cron_jobs() == 1
    assert _notifications(raw_listener) == ["report"]


def test_dead_letter_notifies(pg_queue: dq.JobQueue, raw_listener: psycopg.Connection[Any]) -> None:
    def fail(payload: Any) -> None:
        raise RuntimeError("boom")

    pg_queue.add_job("t", {}, max_attempts=1, dead_letter_job_type="dead")
    _notifications(raw_listener)
    assert pg_queue.create_processor({"t": fail}, listen=False).start() == 1
    assert _notifications(raw_listener) == [""]


def test_commit_wakes_a_listening_processor(
    pg_queue: dq.JobQueue, engine: sa.Engine, pg_processor: dq.Processor, starts: Starts
) -> None:
    with engine.begin() as conn:
        pg_queue.add_job("t", {"n": 1}, db=conn)
        time.sleep(0.3)
        assert starts.wait(1, 0) is None  # not visible before the commit
        committed = time.time()
    started = starts.wait(1, PICKUP_BOUND)
    assert started is not None, "the processor was not woken by the commit"
    assert started - committed < PICKUP_BOUND


def test_poll_interval_of_a_minute_still_picks_up_at_once(
    queue: dq.JobQueue, processor: dq.Processor, starts: Starts
) -> None:
    for n in range(5):
        added = time.time()
        queue.add_job("t", {"n": n})
        started = starts.wait(n, PICKUP_BOUND)
        assert started is not None, f"job {n} was not picked up"
        assert started - added < PICKUP_BOUND


def test_run_at_a_second_ahead_starts_on_time(
    queue: dq.JobQueue, processor: dq.Processor, starts: Starts
) -> None:
    # The job is scheduled while the processor idles: the enqueue's wake-up makes it ask
    # for the next due time again (both backends wake on a scheduled job too).
    run_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    queue.add_job("t", {"n": 1}, run_at=run_at)
    started = starts.wait(1, 5)
    assert started is not None, "the scheduled job did not start"
    lateness = started - run_at.timestamp()
    assert -0.01 < lateness < SCHEDULE_BOUND


def test_retry_starts_at_its_next_attempt_time(queue: dq.JobQueue) -> None:
    attempts: list[float] = []
    done = threading.Event()

    def flaky(payload: Any) -> None:
        attempts.append(time.time())
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        done.set()

    proc = queue.create_processor({"t": flaky}, poll_interval=MINUTE_MS, listen=False)
    job_id = queue.add_job("t", {}, retry_delay=1, retry_backoff=False)
    proc.start_in_background()
    try:
        assert done.wait(5), "the retry did not start"
    finally:
        proc.stop_and_drain(5000)
    job = queue.get_job(job_id)
    assert job is not None and job.last_failed_at is not None
    lateness = attempts[1] - (job.last_failed_at.timestamp() + 1)
    assert lateness < SCHEDULE_BOUND


def test_wait_resumes_at_its_time(queue: dq.JobQueue) -> None:
    runs: list[float] = []
    done = threading.Event()

    def waits(payload: Any, signal: Any, ctx: Any) -> None:
        runs.append(time.time())
        ctx.wait_for(seconds=1)
        done.set()

    proc = queue.create_processor({"w": waits}, poll_interval=MINUTE_MS)
    proc.start_in_background()
    try:
        queue.add_job("w", {})
        assert done.wait(5), "the wait did not resume"
    finally:
        proc.stop_and_drain(5000)
    assert runs[1] - runs[0] < 1 + SCHEDULE_BOUND + 0.1


def test_terminated_listening_connection_is_reopened(
    pg_queue: dq.JobQueue, engine: sa.Engine, pg_processor: dq.Processor, starts: Starts
) -> None:
    [old] = _listening_pids(engine)
    run_sql(engine, "SELECT pg_terminate_backend(:pid)", pid=old)
    new = _wait_for_listener(engine, other_than=old)
    assert new != old
    assert pg_processor.is_running()
    added = time.time()
    pg_queue.add_job("t", {"n": 1})
    started = starts.wait(1, PICKUP_BOUND)
    assert started is not None, "no wake-up after the listener reconnected"
    assert started - added < PICKUP_BOUND


def test_jobs_enqueued_while_the_listener_was_away_are_claimed_on_reconnect(
    pg_queue: dq.JobQueue, engine: sa.Engine, pg_processor: dq.Processor, starts: Starts
) -> None:
    [old] = _listening_pids(engine)
    # Terminated and the job added at once: its notification finds nobody listening.
    run_sql(engine, "SELECT pg_terminate_backend(:pid)", pid=old)
    pg_queue.add_job("t", {"n": 1})
    assert starts.wait(1, 5) is not None


def test_with_listen_off_polling_still_works(queue: dq.JobQueue, starts: Starts) -> None:
    proc = queue.create_processor({"t": starts.record}, poll_interval=100, listen=False)
    proc.start_in_background()
    try:
        queue.add_job("t", {"n": 1})
        assert starts.wait(1, 5) is not None
        assert _listeners(queue) == 0
    finally:
        proc.stop_and_drain(5000)


def test_stopped_processor_leaves_no_listener_behind(
    queue: dq.JobQueue, processor: dq.Processor
) -> None:
    processor.stop_and_drain(5000)
    assert not [t for t in threading.enumerate() if t.name.startswith("dataqueue-listener-")]
    deadline = time.monotonic() + 5
    while _listeners(queue):
        assert time.monotonic() < deadline, "the listening connection was not closed"
        time.sleep(0.02)


def test_worker_process_is_woken_by_another_process(
    pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    worker = WorkerProcess(
        database_url,
        "tests.integration.cli_handlers:HANDLERS",
        "--poll-interval",
        str(MINUTE_MS),
        "--no-supervisor",
    )
    try:
        _wait_for_listener(engine)
        job_id = pg_queue.add_job("greet", {"name": "x"})
        added = time.monotonic()
        while (job := pg_queue.get_job(job_id)) is None or job.status != "completed":
            assert time.monotonic() - added < PICKUP_BOUND, "the worker was not woken"
            assert worker.poll() is None, worker.stop()[1][-3000:]
            time.sleep(0.005)
    finally:
        code, stderr = worker.stop()
    assert code == 0, stderr[-3000:]


def test_schemas_get_their_own_channels() -> None:
    assert default_channel(None) == "dataqueue"
    assert default_channel("tenant_a") == "dataqueue.tenant_a"
    assert default_channel("tenant_a") != default_channel("tenant_b")
    assert default_channel('we"ird schema').startswith("dataqueue.")


def test_init_job_queue_can_turn_notifications_off(
    database_url: str, pg_queue: dq.JobQueue, raw_listener: psycopg.Connection[Any]
) -> None:
    """For pgbouncer in transaction mode: no NOTIFY at all, processors poll."""
    with dq.init_job_queue(database_url, notify=False) as quiet:
        quiet.add_job("t", {})
    assert _notifications(raw_listener) == []
    with dq.init_job_queue(database_url) as loud:
        loud.add_job("t", {})
    assert _notifications(raw_listener) == ["t"]


def test_init_job_queue_takes_a_channel(database_url: str, pg_queue: dq.JobQueue) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute('LISTEN "orders_jobs"')
        with dq.init_job_queue(database_url, notify_channel="orders_jobs") as queue:
            queue.add_job("t", {})
        assert [n.payload for n in conn.notifies(timeout=1, stop_after=1)] == ["t"]
    with pytest.raises(dq.ConfigurationError, match="channel"):
        dq.init_job_queue(database_url, notify_channel="bad channel; drop")
    with pytest.raises(dq.ConfigurationError, match="notify"):
        dq.init_job_queue(database_url, notify="yes")  # type: ignore[arg-type]
