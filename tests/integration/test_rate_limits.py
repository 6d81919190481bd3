"""Global rate limits (``rate_limits=``), enforced inside the claim, on every backend.

A start is a claim: the claim's time is the job's ``processing`` event (the same time
the store logs the start under). "Never more than the limit in any window" is checked
over every window of ``per``, closed at both ends, by the store's clock.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql
from tests.integration.rate_limit_handlers import LEDGER_DDL
from tests.integration.store_state import is_redis
from tests.integration.worker_runner import WorkerProcess

pytestmark = pytest.mark.all_backends

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


@pytest.fixture(autouse=True)
def _empty_rate_log(queue: dq.JobQueue, engine: sa.Engine) -> None:
    """PostgreSQL keeps the log in a table the suite's truncation does not know about."""
    if not is_redis(queue):
        run_sql(engine, "TRUNCATE dataqueue_rate_limit_starts")


def _micros(when: dt.datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def max_in_window(times: list[int], per: int) -> int:
    """The most of ``times`` in any closed window ``[t, t + per]`` (same unit)."""
    ordered = sorted(times)
    most, end = 0, 0
    for start, first in enumerate(ordered):
        while end < len(ordered) and ordered[end] <= first + per:
            end += 1
        most = max(most, end - start)
    return most


def claim_times(queue: dq.JobQueue, job_ids: list[int]) -> list[int]:
    """Microseconds since the epoch of every claim (``processing`` event) of the jobs."""
    return [
        _micros(event.created_at)
        for job_id in job_ids
        for event in queue.get_job_events(job_id)
        if event.event_type == "processing"
    ]


def _drain(processor: dq.Processor, queue: dq.JobQueue, ids: list[int], timeout: float) -> None:
    processor.start_in_background()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = [queue.get_job(i) for i in ids]
            if all(j is not None and j.status == "completed" for j in jobs):
                return
            time.sleep(0.02)
        raise AssertionError(f"jobs not completed within {timeout} s")
    finally:
        processor.stop_and_drain(5000)


# -- one processor ------------------------------------------------------------------


def test_a_claim_takes_no_more_than_the_limit(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(10)])
    processor = queue.create_processor(
        {"email": lambda payload: None},
        batch_size=10,
        rate_limits={"email": dq.RateLimit(3, per=60)},
    )
    assert processor.start() == 3
    assert processor.start() == 0  # the window still holds 3 starts
    assert len(queue.get_jobs_by_status("pending")) == 7


def test_the_limit_is_shared_by_processors(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(10)])
    limits = {"email": dq.RateLimit(4, per=60)}
    first = queue.create_processor({"email": lambda p: None}, batch_size=3, rate_limits=limits)
    second = queue.create_processor({"email": lambda p: None}, batch_size=3, rate_limits=limits)
    assert first.start() == 3
    assert second.start() == 1
    assert first.start() == 0 and second.start() == 0


def test_a_lower_limit_takes_nothing_while_the_window_holds_more(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(10)])
    higher = {"email": dq.RateLimit(5, per=60)}
    lower = {"email": dq.RateLimit(2, per=60)}
    assert queue.create_processor({"email": lambda p: None}, rate_limits=higher).start() == 5
    assert queue.create_processor({"email": lambda p: None}, rate_limits=lower).start() == 0
    assert queue.create_processor({"email": lambda p: None}, rate_limits=higher).start() == 0


def test_types_without_a_limit_are_claimed_beside_a_full_one(queue: dq.JobQueue) -> None:
    # The limited type's backlog comes first in claim order, and its limit is reached.
    queue.add_jobs([{"job_type": "email", "payload": {}, "priority": 10} for _ in range(50)])
    sms = queue.add_jobs([{"job_type": "sms", "payload": {}} for _ in range(25)])
    processor = queue.create_processor(
        {"email": lambda payload: None, "sms": lambda payload: None},
        batch_size=10,
        rate_limits={"email": dq.RateLimit(2, per=60)},
    )
    assert processor.start() == 10  # 2 email, 8 sms
    assert processor.start() == 10
    assert processor.start() == 7
    assert all(job.status == "completed" for job in map(queue.get_job, sms) if job)
    assert len(queue.get_jobs_by_status("completed")) == 25 + 2


def test_types_without_a_limit_are_not_slowed_by_a_full_one(queue: dq.JobQueue) -> None:
    """300 jobs drain beside a full type's backlog, never waiting for the (1 min) poll."""
    queue.add_jobs([{"job_type": "email", "payload": {}, "priority": 10} for _ in range(300)])
    sms = queue.add_jobs([{"job_type": "sms", "payload": {}} for _ in range(300)])
    processor = queue.create_processor(
        {"email": lambda payload: None, "sms": lambda payload: None},
        batch_size=20,
        concurrency=4,
        poll_interval=60_000,
        rate_limits={"email": dq.RateLimit(1, per=60)},
    )
    _drain(processor, queue, sms, timeout=10)
    completed = queue.get_jobs_by_status("completed", limit=1000)
    assert len(completed) == 301  # every sms job and the one email job the limit allows


def test_all_types_claims_honour_the_limit(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(5)])
    queue.add_jobs([{"job_type": "other", "payload": {}} for _ in range(3)])
    processor = queue.create_processor(
        {"email": lambda payload: None, "other": lambda payload: None},
        job_type=dq.ALL_JOB_TYPES,
        batch_size=10,
        rate_limits={"email": dq.RateLimit(2, per=60)},
    )
    assert processor.start() == 5
    assert processor.start() == 0


def test_group_limits_and_rate_limits_apply_together(queue: dq.JobQueue) -> None:
    queue.add_jobs(
        [{"job_type": "email", "payload": {}, "group": {"id": "g"}} for _ in range(6)]
        + [{"job_type": "email", "payload": {}} for _ in range(6)]
    )
    processor = queue.create_processor(
        {"email": lambda payload: None},
        batch_size=10,
        group_concurrency=1,
        rate_limits={"email": dq.RateLimit(4, per=60)},
    )
    assert processor.start() == 4
    assert processor.start() == 0


def test_the_processor_claims_again_when_room_frees_up(queue: dq.JobQueue) -> None:
    """No poll for a minute: only the claim's "room again in" wakes the processor."""
    ids = queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(6)])
    processor = queue.create_processor(
        {"email": lambda payload: None},
        batch_size=10,
        poll_interval=60_000,
        rate_limits={"email": dq.RateLimit(2, per=0.5)},
    )
    started = time.monotonic()
    _drain(processor, queue, ids, timeout=10)
    elapsed = time.monotonic() - started
    times = sorted(claim_times(queue, ids))
    assert max_in_window(times, 500_000) <= 2
    assert times[2] - times[0] > 500_000 and times[4] - times[2] > 500_000
    assert 1.0 <= elapsed < 3.0, elapsed  # three windows, woken at each


def test_a_retry_counts_as_a_start(queue: dq.JobQueue) -> None:
    runs: list[int] = []

    def flaky(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        runs.append(ctx.attempts)
        if ctx.attempts == 1:
            raise RuntimeError("first try fails")

    job_id = queue.add_job("email", {}, max_attempts=2, retry_delay=0)
    processor = queue.create_processor(
        {"email": flaky}, rate_limits={"email": dq.RateLimit(1, per=0.6)}
    )
    assert processor.start() == 1
    assert processor.start() == 0  # the retry is due, but the window is full
    time.sleep(0.7)
    assert processor.start() == 1
    assert runs == [1, 2]
    first, second = claim_times(queue, [job_id])
    assert second - first >= 600_000


def test_a_resumed_wait_counts_as_a_start(queue: dq.JobQueue) -> None:
    def waits(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.wait_until(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))  # due at once

    job_id = queue.add_job("email", {})
    processor = queue.create_processor(
        {"email": waits}, rate_limits={"email": dq.RateLimit(1, per=0.6)}
    )
    assert processor.start() == 1
    assert queue.get_job(job_id).status == "waiting"  # type: ignore[union-attr]
    assert processor.start() == 0
    time.sleep(0.7)
    assert processor.start() == 1
    assert queue.get_job(job_id).status == "completed"  # type: ignore[union-attr]


def test_concurrent_processors_never_exceed_the_limit_in_any_window(queue: dq.JobQueue) -> None:
    """Four processors (threads) on one store, 5 starts per 0.25 s, for 2 s."""
    ids = queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(200)])
    processors = [
        queue.create_processor(
            {"email": lambda payload: None},
            batch_size=3,
            concurrency=3,
            poll_interval=60_000,
            rate_limits={"email": dq.RateLimit(5, per=0.25)},
        )
        for _ in range(4)
    ]
    for processor in processors:
        processor.start_in_background()
    time.sleep(2.0)
    for processor in processors:
        processor.stop_and_drain(5000)
    times = sorted(claim_times(queue, ids))
    assert max_in_window(times, 250_000) <= 5
    in_two_seconds = [t for t in times if t < times[0] + 2_000_000]
    assert len(in_two_seconds) >= 30  # 40 at the exact rate, less a late wake-up or two


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ([("email", dq.RateLimit(1))], TypeError),
        ({"email": 20}, TypeError),
        ({"email": (20, 1.0)}, TypeError),
        ({1: dq.RateLimit(1)}, TypeError),
        ({"": dq.RateLimit(1)}, TypeError),
        ({"sms": dq.RateLimit(1)}, dq.ConfigurationError),
    ],
)
def test_bad_rate_limits_options_are_refused(
    queue: dq.JobQueue, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="rate_limits"):
        queue.create_processor({"email": lambda payload: None}, rate_limits=value)


def test_a_rate_limit_for_an_unclaimed_type_names_it(queue: dq.JobQueue) -> None:
    with pytest.raises(dq.ConfigurationError, match=r"'sms'.*does not claim"):
        queue.create_processor({"email": lambda p: None}, rate_limits={"sms": dq.RateLimit(1)})


# -- three worker processes ---------------------------------------------------------


@pytest.fixture
def ledger(database_url: str) -> Iterator[sa.Engine]:
    """The handlers' ledger of start times, in PostgreSQL whichever store holds jobs."""
    eng = sa.create_engine(database_url, poolclass=sa.NullPool)
    run_sql(eng, LEDGER_DDL)
    run_sql(eng, "TRUNCATE rate_ledger")
    yield eng
    run_sql(eng, "DROP TABLE rate_ledger")
    eng.dispose()


def _worker(queue: dq.JobQueue, database_url: str, request: Any, *args: str) -> WorkerProcess:
    handlers = "tests.integration.rate_limit_handlers:make_handlers"
    if not is_redis(queue):
        return WorkerProcess(database_url, handlers, *args)
    redis_url: str = request.getfixturevalue("redis_url")
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    return WorkerProcess(database_url, handlers, *args, redis_url=redis_url, key_prefix=prefix)


def _ledger(ledger: sa.Engine, job_type: str) -> list[tuple[int, int, int]]:
    """(job id, handler start in microseconds, pid) of every run of ``job_type``."""
    rows = run_sql(
        ledger,
        "SELECT job_id, started_at, pid FROM rate_ledger WHERE job_type = :t",
        t=job_type,
    )
    return [(row[0], _micros(row[1]), row[2]) for row in rows]


def test_three_processes_share_the_limit_exactly(
    queue: dq.JobQueue, ledger: sa.Engine, database_url: str, request: pytest.FixtureRequest
) -> None:
    """20/s for 5 s over 3 worker processes: no 1 s window holds more than 20 starts,
    and the first 5 s hold at least 90 (ideally 100).

    A start is a claim (its ``processing`` event, the time the store logged). Each
    handler also writes when it began to a ledger: it begins a few milliseconds after
    its claim (the batch is handed to threads, the ledger write waits for a CPU), so
    at handler entry the bound holds for every window shorter than 1 s by that delay.
    """
    ids = queue.add_jobs(
        [{"job_type": "limited", "payload": {"type": "limited"}} for _ in range(400)]
    )
    free = queue.add_jobs([{"job_type": "free", "payload": {"type": "free"}} for _ in range(200)])
    args = ("--rate-limit", "limited=20/1", "--concurrency", "10", "--batch-size", "10")
    flags = (*args, "--no-supervisor", "--poll-interval", "60000")
    workers = [_worker(queue, database_url, request, *flags) for _ in range(3)]
    try:
        deadline = time.monotonic() + 60
        while not _ledger(ledger, "limited"):
            assert time.monotonic() < deadline, "no worker started a job"
            assert all(w.poll() is None for w in workers), [w.wait(5) for w in workers]
            time.sleep(0.05)
        time.sleep(5.5)
    finally:
        results = [w.stop() for w in workers]
    assert all(code == 0 for code, _ in results), results
    claims = sorted(claim_times(queue, ids))
    in_five_seconds = [t for t in claims if t < claims[0] + 5_000_000]
    runs = _ledger(ledger, "limited")
    claimed_at = {job_id: claim_times(queue, [job_id])[-1] for job_id, _, _ in runs}
    lag = max(started - claimed_at[job_id] for job_id, started, _ in runs)
    starts = [started for _, started, _ in runs]
    report = (
        f"claims: {len(claims)}, in the first 5 s: {len(in_five_seconds)}, most in a 1 s "
        f"window: {max_in_window(claims, 1_000_000)}; handler starts: {len(starts)}, most "
        f"in a 1 s window: {max_in_window(starts, 1_000_000)}, in a (1 s - {lag} us) "
        f"window: {max_in_window(starts, 1_000_000 - lag)}; "
        f"processes: {sorted(Counter(pid for _, _, pid in runs).values())}"
    )
    print(report)
    assert max_in_window(claims, 1_000_000) <= 20, report
    assert len(in_five_seconds) >= 90, report
    assert 0 <= lag < 250_000, report
    assert max_in_window(starts, 1_000_000 - lag) <= 20, report
    assert len({pid for _, _, pid in runs}) >= 2, report  # the limit was shared
    # The type without a limit drained meanwhile.
    assert all(job.status == "completed" for job in map(queue.get_job, free) if job), report


def test_the_worker_command_refuses_a_bad_rate_limit(
    queue: dq.JobQueue, ledger: sa.Engine, database_url: str, request: pytest.FixtureRequest
) -> None:
    worker = _worker(queue, database_url, request, "--rate-limit", "limited=20/0")
    code, stderr = worker.wait(30)
    assert code == 2
    assert "limited=20/0" in stderr and "RateLimit per" in stderr
