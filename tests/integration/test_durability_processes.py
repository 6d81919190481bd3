"""Fault tests with real ``dataqueue worker`` processes on real PostgreSQL.

Handlers (``fault_handlers.py``) write every run to a ledger table on connections the
tests never kill, so "exactly once" is counted by the handlers themselves.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql
from tests.integration.fault_handlers import LEDGER_DDL
from tests.integration.worker_runner import WorkerProcess

HANDLERS = "tests.integration.fault_handlers:make_handlers"
KILL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name = 'dataqueue' AND datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


@pytest.fixture
def ledger(engine: sa.Engine, pg_queue: dq.JobQueue) -> Iterator[None]:
    run_sql(engine, LEDGER_DDL)
    run_sql(engine, "TRUNCATE ledger")
    yield
    run_sql(engine, "DROP TABLE ledger")


@pytest.fixture
def observer(database_url: str) -> Iterator[sa.Engine]:
    """The test's own connections, outside the application name the tests kill."""
    eng = sa.create_engine(
        database_url, connect_args={"application_name": "observer"}, pool_pre_ping=True
    )
    yield eng
    eng.dispose()


def _worker(database_url: str, *args: str) -> WorkerProcess:
    return WorkerProcess(database_url, HANDLERS, *args)


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


def test_two_workers_with_killed_backends_run_every_job_exactly_once(
    ledger: None, pg_queue: dq.JobQueue, observer: sa.Engine, database_url: str
) -> None:
    engine = observer
    jobs = 3000
    pg_queue.add_jobs([{"job_type": "ledger", "payload": {}} for _ in range(jobs)])
    options = ("--poll-interval", "50", "--concurrency", "4", "--batch-size", "20")
    beats = ("--heartbeat-interval", "1", "--heartbeat-timeout", "4")
    workers = [_worker(database_url, *options, *beats) for _ in range(2)]
    killer = sa.create_engine(
        database_url, connect_args={"application_name": "killer"}, poolclass=sa.NullPool
    )
    killed = 0
    try:
        for step in range(1, 6):
            target = step * jobs // 6
            _wait_until(
                lambda t=target: _scalar(engine, "SELECT count(*) FROM ledger") >= t,
                120,
                f"{target} runs",
                *workers,
            )
            with killer.connect() as conn:
                killed += conn.execute(sa.text(KILL)).scalar_one()
        _wait_until(
            lambda: (
                _scalar(engine, "SELECT count(*) FROM job_queue WHERE status = 'completed'") == jobs
            ),
            120,
            "every job completed",
            *workers,
        )
    finally:
        results = [_stop(worker) for worker in workers]
        killer.dispose()
    assert [code for code, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    assert killed >= 10  # both workers lost their connections each time
    runs = _scalar(engine, "SELECT count(*) FROM ledger")
    stranded = _scalar(engine, "SELECT count(*) FROM job_queue WHERE status = 'processing'")
    print(
        f"fault figures: {jobs} jobs, {killed} backends killed in 5 rounds, {runs} runs, "
        f"{runs - jobs} duplicates, {stranded} stranded"
    )
    assert runs == jobs, "a handler ran twice"
    assert _scalar(engine, "SELECT count(DISTINCT job_id) FROM ledger") == jobs
    assert _scalar(engine, "SELECT count(*) FROM job_queue WHERE status = 'processing'") == 0
    completed_events = "SELECT count(*) FROM job_events WHERE event_type = 'completed'"
    assert _scalar(engine, completed_events) == jobs


def test_sigkilled_workers_jobs_run_elsewhere_within_30_seconds_with_defaults(
    ledger: None, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    ids = pg_queue.add_jobs([{"job_type": "started", "payload": {"sleep": 120}} for _ in range(2)])
    first = _worker(database_url, "--concurrency", "2", "--poll-interval", "50")
    _wait_until(
        lambda: _scalar(engine, "SELECT count(*) FROM ledger") == 2, 30, "both jobs to start", first
    )
    first.stop(signal.SIGKILL, timeout=10)
    killed_at = time.monotonic()
    second = _worker(database_url, "--concurrency", "2")  # every setting at its default
    try:
        _wait_until(
            lambda: _scalar(engine, "SELECT count(*) FROM ledger") == 4,
            40,
            "the jobs to start again",
            second,
        )
        recovered_after = time.monotonic() - killed_at
    finally:
        code, stderr = _stop_with_drain_timeout(second)
    print(f"fault figures: SIGKILLed worker's jobs started again after {recovered_after:.1f} s")
    assert recovered_after < 30, f"recovery took {recovered_after:.1f} s"
    runs = run_sql(engine, "SELECT job_id, count(*) FROM ledger GROUP BY job_id ORDER BY 1")
    assert runs == [(ids[0], 2), (ids[1], 2)]
    # The second worker's drain timed out with both jobs running: exit 1, ids named.
    assert code == 1
    assert "still running" in stderr and str(ids[0]) in stderr and str(ids[1]) in stderr


def _stop_with_drain_timeout(worker: WorkerProcess) -> tuple[int, str]:
    # The default drain timeout is 30 s; these jobs sleep for 120 s.
    return _stop(worker, timeout=60)


def test_long_healthy_job_runs_once_beside_an_aggressive_supervisor(
    ledger: None, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    job_id = pg_queue.add_job("started", {"sleep": 8})  # no timeout_ms
    beats = ("--heartbeat-interval", "0.5", "--heartbeat-timeout", "1.5")
    runner = _worker(database_url, "--poll-interval", "50", "--no-supervisor", *beats)
    _wait_until(lambda: _scalar(engine, "SELECT count(*) FROM ledger") == 1, 30, "start", runner)
    supervisor = _worker(
        database_url,
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
            lambda: (job := pg_queue.get_job(job_id)) is not None and job.status == "completed",
            30,
            "completion",
            runner,
            supervisor,
        )
    finally:
        results = [_stop(runner), _stop(supervisor)]
    assert [code for code, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    assert _scalar(engine, "SELECT count(*) FROM ledger") == 1, "the live job was started twice"
    job = pg_queue.get_job(job_id)
    assert job is not None and job.attempts == 1


def test_sigterm_gives_back_claimed_ahead_jobs_that_never_started(
    ledger: None, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    quick = [{"job_type": "ledger", "payload": {}, "priority": 10} for _ in range(60)]
    pg_queue.add_jobs(quick)
    slow = pg_queue.add_jobs([{"job_type": "started", "payload": {"sleep": 3}} for _ in range(20)])
    worker = _worker(
        database_url, "--concurrency", "2", "--batch-size", "10", "--poll-interval", "50"
    )
    try:
        _wait_until(
            lambda: (
                _scalar(engine, "SELECT count(*) FROM ledger WHERE job_id = ANY(:ids)", ids=slow)
                >= 2
            ),
            60,
            "two slow jobs to start",
            worker,
        )
        held = _scalar(
            engine,
            "SELECT count(*) FROM job_queue WHERE status = 'processing' AND id = ANY(:ids)",
            ids=slow,
        )
    finally:
        code, stderr = _stop(worker)
    assert code == 0, stderr[-2000:]
    assert held > 2, "the test needs jobs claimed ahead of the free slots"
    started = {
        row[0]
        for row in run_sql(engine, "SELECT job_id FROM ledger WHERE job_id = ANY(:ids)", ids=slow)
    }
    assert _scalar(engine, "SELECT count(*) FROM job_queue WHERE status = 'processing'") == 0
    for job in map(pg_queue.get_job, slow):
        assert job is not None
        if job.id in started:
            assert job.status == "completed"
        else:
            assert (job.status, job.attempts, job.error_history) == ("pending", 0, [])
