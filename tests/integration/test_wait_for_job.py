"""JobRecord.is_final and queue.wait_for_job."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import dataqueue as dq


def test_failed_job_awaiting_retry_is_not_final(pg_queue: dq.JobQueue) -> None:
    def boom(payload: Any) -> None:
        raise RuntimeError("try again")

    retrying, exhausted = pg_queue.add_jobs(
        [
            {"job_type": "t", "payload": {}, "max_attempts": 2, "retry_delay": 60},
            {"job_type": "t", "payload": {}, "max_attempts": 1},
        ]
    )
    pg_queue.create_processor({"t": boom}).start()
    awaiting = pg_queue.get_job(retrying)
    failed_for_good = pg_queue.get_job(exhausted)
    assert awaiting is not None and failed_for_good is not None
    assert (awaiting.status, awaiting.is_final) == ("failed", False)
    assert (failed_for_good.status, failed_for_good.is_final) == ("failed", True)


def test_final_states(pg_queue: dq.JobQueue) -> None:
    done, cancelled, pending = pg_queue.add_jobs(
        [{"job_type": "t", "payload": {}} for _ in range(3)]
    )
    pg_queue.cancel_job(cancelled)
    pg_queue.create_processor({"t": lambda p: None}, batch_size=1).start()
    finals = {job_id: pg_queue.get_job(job_id) for job_id in (done, cancelled, pending)}
    assert finals[done] is not None and finals[done].status == "completed"
    assert [j.is_final for j in finals.values() if j] == [True, True, False]


def test_wait_for_job_returns_the_final_record(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {"n": 2})
    processor = pg_queue.create_processor({"t": lambda p: p["n"] * 21}, poll_interval=20)
    threading.Timer(0.2, processor.start_in_background).start()
    try:
        job = pg_queue.wait_for_job(job_id, timeout=20)
    finally:
        time.sleep(0.25)
        processor.stop_and_drain(5000)
    assert (job.status, job.output) == ("completed", 42)


def test_wait_for_job_times_out(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"job {job_id} is still pending"):
        pg_queue.wait_for_job(job_id, timeout=0.3)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("timeout", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError)]
)
def test_wait_for_job_rejects_bad_timeouts(
    pg_queue: dq.JobQueue, timeout: Any, error: type[Exception]
) -> None:
    job_id = pg_queue.add_job("t", {})
    with pytest.raises(error, match="timeout"):
        pg_queue.wait_for_job(job_id, timeout=timeout)


def test_wait_for_unknown_job_raises(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(dq.InvalidJobError, match="no job with id 999999"):
        pg_queue.wait_for_job(999_999, timeout=1)
