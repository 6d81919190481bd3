"""Fault tests with real ``dataqueue worker`` processes on PostgreSQL and on Redis.

Handlers (``fault_handlers.py``) write every run to a ledger table in PostgreSQL on
connections the tests never kill, whichever store holds the jobs, so "exactly once" is
counted by the handlers themselves. Killing the library's connections means
``pg_terminate_backend`` on PostgreSQL and ``CLIENT KILL`` on Redis.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql
from tests.integration.fault_handlers import LEDGER_DDL
from tests.integration.store_state import (
    event_counts,
    is_redis,
    kill_redis_connections,
    status_counts,
)
from tests.integration.worker_runner import WorkerProcess

pytestmark = pytest.mark.all_backends

HANDLERS = "tests.integration.fault_handlers:make_handlers"
KILL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name = 'dataqueue' AND datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


@pytest.fixture
def ledger(observer: sa.Engine) -> Iterator[None]:
    run_sql(observer, LEDGER_DDL)
    run_sql(observer, "TRUNCATE ledger")
    yield
    run_sql(observer, "DROP TABLE ledger")


@pytest.fixture
def observer(database_url: str) -> Iterator[sa.Engine]:
    """The test's own connections, outside the application name the tests kill."""
    eng = sa.create_engine(
        database_url, connect_args={"application_name": "observer"}, pool_pre_ping=True
    )
    yield eng
    eng.dispose()


@attrs.frozen
class Store:
    """Where the workers' jobs live, seen from the test."""

    #: A queue on the workers' store whose connections the tests never kill.
    queue: dq.JobQueue
    #: The ledger's database (and, on PostgreSQL, the workers' store).
    database_url: str
    #: Redis: the workers' URL, naming their connections so that they can be killed.
    redis_url: str | None
    key_prefix: str
    #: Closes the workers' store connections; returns how many.
    kill: Callable[[], int]

    def worker(self, *args: str) -> WorkerProcess:
        return WorkerProcess(
            self.database_url, HANDLERS, *args, redis_url=self.redis_url, key_prefix=self.key_prefix
        )


@pytest.fixture
def store(
    queue: dq.JobQueue, observer: sa.Engine, database_url: str, request: pytest.FixtureRequest
) -> Iterator[Store]:
    if not is_redis(queue):
        killer = sa.create_engine(
            database_url, connect_args={"application_name": "killer"}, poolclass=sa.NullPool
        )

        def kill_backends() -> int:
            with killer.connect() as conn:
                return int(conn.execute(sa.text(KILL)).scalar_one())

        watcher = dq.init_job_queue(engine=observer)
        yield Store(watcher, database_url, None, "dq:", kill_backends)
        watcher.close()
        killer.dispose()
        return
    admin = request.getfixturevalue("redis_client")
    redis_url: str = request.getfixturevalue("redis_url")
    name = f"dq-worker-{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in redis_url else "?"
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    yield Store(
        queue,
        database_url,
        f"{redis_url}{separator}client_name={name}",
        prefix,
        lambda: kill_redis_connections(admin, name),
    )


def _scalar(engine: sa.Engine, sql: str, **params: Any) -> int:
    return int(run_sql(engine, sql, **params)[0][0])


def _wait_until(predicate: Any, timeout: float, what: str, *workers: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for worker in workers:
            if worker.poll() is not None:
                pytest.fail(f"a worker exited early: {worker.wait(10)[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stop(worker: WorkerProcess, timeout: float = 60) -> tuple[int, str]:
    return worker.stop(timeout=timeout)


def test_two_workers_with_killed_connections_run_every_job_exactly_once(
    ledger: None, store: Store, observer: sa.Engine
) -> None:
    jobs = 3000
    store.queue.add_jobs([{"job_type": "ledger", "payload": {}} for _ in range(jobs)])
    options = ("--poll-interval", "50", "--concurrency", "4", "--batch-size", "20")
    beats = ("--heartbeat-interval", "1", "--heartbeat-timeout", "4")
    workers = [store.worker(*options, *beats) for _ in range(2)]
    killed = 0
    try:
        for step in range(1, 6):
            target = step * jobs // 6
            _wait_until(
                lambda t=target: _scalar(observer, "SELECT count(*) FROM ledger") >= t,
                120,
                f"{target} runs",
                *workers,
            )
            killed += store.kill()
        _wait_until(
            lambda: status_counts(store.queue)["completed"] == jobs,
            120,
            "every job completed",
            *workers,
        )
    finally:
        results = [_stop(worker) for worker in workers]
    assert [code for code, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    assert killed >= 10  # both workers lost their connections each time
    runs = _scalar(observer, "SELECT count(*) FROM ledger")
    stranded = status_counts(store.queue)["processing"]
    print(
        f"fault figures: {jobs} jobs, {killed} connections killed in 5 rounds, {runs} runs, "
        f"{runs - jobs} duplicates, {stranded} stranded"
    )
    assert runs == jobs, "a handler ran twice"
    assert _scalar(observer, "SELECT count(DISTINCT job_id) FROM ledger") == jobs
    assert stranded == 0
    assert event_counts(store.queue)["completed"] == jobs


def test_sigkilled_workers_jobs_run_elsewhere_within_30_seconds_with_defaults(
    ledger: None, store: Store, observer: sa.Engine
) -> None:
    ids = store.queue.add_jobs(
        [{"job_type": "started", "payload": {"sleep": 120}} for _ in range(2)]
    )
    first = store.worker("--concurrency", "2", "--poll-interval", "50")
    _wait_until(
        lambda: _scalar(observer, "SELECT count(*) FROM ledger") == 2,
        30,
        "both jobs to start",
        first,
    )
    first.stop(signal.SIGKILL, timeout=10)
    killed_at = time.monotonic()
    second = store.worker("--concurrency", "2")  # every setting at its default
    try:
        _wait_until(
            lambda: _scalar(observer, "SELECT count(*) FROM ledger") == 4,
            40,
            "the jobs to start again",
            second,
        )
        recovered_after = time.monotonic() - killed_at
    finally:
        code, stderr = _stop_with_drain_timeout(second)
    print(f"fault figures: SIGKILLed worker's jobs started again after {recovered_after:.1f} s")
    assert recovered_after < 30, f"recovery took {recovered_after:.1f} s"
    runs = run_sql(observer, "SELECT job_id, count(*) FROM ledger GROUP BY job_id ORDER BY 1")
    assert runs == [(ids[0], 2), (ids[1], 2)]
    # The second worker's drain timed out with both jobs running: exit 1, ids named.
    assert code == 1
    assert "still running" in stderr and str(ids[0]) in stderr and str(ids[1]) in stderr


def _stop_with_drain_timeout(worker: WorkerProcess) -> tuple[int, str]:
    # The default drain timeout is 30 s; these jobs sleep for 120 s.
    return _stop(worker, timeout=60)


def test_long_healthy_job_runs_once_beside_an_aggressive_supervisor(
    ledger: None, store: Store, observer: sa.Engine
) -> None:
    job_id = store.queue.add_job("started", {"sleep": 8})  # no timeout_ms
    beats = ("--heartbeat-interval", "0.5", "--heartbeat-timeout", "1.5")
    runner = store.worker("--poll-interval", "50", "--no-supervisor", *beats)
    _wait_until(lambda: _scalar(observer, "SELECT count(*) FROM ledger") == 1, 30, "start", runner)
    supervisor = store.worker(
        "--poll-interval",
        "50",
        "--supervisor-interval",
        "100",
        "--stuck-timeout",
        "0.1",
        *beats,
    )
    try:
        _wait_until(
            lambda: (job := store.queue.get_job(job_id)) is not None and job.status == "completed",
            30,
            "completion",
            runner,
            supervisor,
        )
    finally:
        results = [_stop(runner), _stop(supervisor)]
    assert [code for code, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    assert _scalar(observer, "SELECT count(*) FROM ledger") == 1, "the live job was started twice"
    job = store.queue.get_job(job_id)
    assert job is not None and job.attempts == 1


def test_sigterm_gives_back_claimed_ahead_jobs_that_never_started(
    ledger: None, store: Store, observer: sa.Engine
) -> None:
    quick = [{"job_type": "ledger", "payload": {}, "priority": 10} for _ in range(60)]
    store.queue.add_jobs(quick)
    slow = store.queue.add_jobs(
        [{"job_type": "started", "payload": {"sleep": 3}} for _ in range(20)]
    )
    worker = store.worker("--concurrency", "2", "--batch-size", "10", "--poll-interval", "50")
    try:
        _wait_until(
            lambda: (
                _scalar(observer, "SELECT count(*) FROM ledger WHERE job_id = ANY(:ids)", ids=slow)
                >= 2
            ),
            60,
            "two slow jobs to start",
            worker,
        )
        held = sum(
            1 for job in map(store.queue.get_job, slow) if job and job.status == "processing"
        )
    finally:
        code, stderr = _stop(worker)
    assert code == 0, stderr[-2000:]
    assert held > 2, "the test needs jobs claimed ahead of the free slots"
    started = {
        row[0]
        for row in run_sql(observer, "SELECT job_id FROM ledger WHERE job_id = ANY(:ids)", ids=slow)
    }
    assert status_counts(store.queue)["processing"] == 0
    for job in map(store.queue.get_job, slow):
        assert job is not None
        if job.id in started:
            assert job.status == "completed"
        else:
            assert (job.status, job.attempts, job.error_history) == ("pending", 0, [])
