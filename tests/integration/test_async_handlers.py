"""``async def`` handlers run natively, next to sync ones, on every backend."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import Any

import pytest

import dataqueue as dq

pytestmark = pytest.mark.all_backends


def _wait_until(predicate: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_async_and_sync_handlers_mix_in_one_processor(queue: dq.JobQueue) -> None:
    async def fetch(payload: dict[str, Any], signal: Any, ctx: dq.JobContext) -> dict[str, Any]:
        ctx.set_progress(50)  # context methods work from async code
        await asyncio.sleep(0.01)
        return {"fetched": payload["n"], "loop": asyncio.get_running_loop() is not None}

    def plain(payload: dict[str, Any]) -> str:
        return f"plain {payload['n']}"

    ids = queue.add_jobs(
        [{"job_type": "fetch", "payload": {"n": 1}}, {"job_type": "plain", "payload": {"n": 2}}]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert queue.create_processor({"fetch": fetch, "plain": plain}).start() == 2
        gc.collect()  # an un-awaited coroutine warns when collected
    assert not [w for w in caught if "never awaited" in str(w.message)]
    first, second = (queue.get_job(i) for i in ids)
    assert first is not None and first.status == "completed"
    assert first.output == {"fetched": 1, "loop": True} and first.progress == 50
    assert second is not None and second.output == "plain 2"


def test_concurrency_counts_async_jobs(queue: dq.JobQueue) -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    async def slow(payload: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        await asyncio.sleep(0.15)
        with lock:
            running -= 1

    queue.add_jobs([{"job_type": "slow", "payload": n} for n in range(6)])
    processor = queue.create_processor(
        {"slow": slow}, concurrency=2, batch_size=6, poll_interval=50
    )
    processor.start_in_background()
    _wait_until(lambda: len(queue.get_jobs_by_status("completed")) == 6)
    processor.stop_and_drain(5000)
    assert most == 2  # never more than concurrency, and they did overlap


def test_timeout_cancels_the_task(queue: dq.JobQueue) -> None:
    cancelled = threading.Event()

    async def stuck(payload: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = queue.add_job("stuck", {}, timeout_ms=200, max_attempts=1)
    started = time.monotonic()
    processor = queue.create_processor({"stuck": stuck}, poll_interval=50)
    processor.start_in_background()
    _wait_until(lambda: (j := queue.get_job(job_id)) is not None and j.status == "failed")
    assert cancelled.wait(10)
    processor.stop_and_drain(5000)
    assert time.monotonic() - started < 20  # the thread came back, not after 30 s
    job = queue.get_job(job_id)
    assert job is not None and job.failure_reason == "timeout"
    assert "timed out after 200 ms" in job.error_history[-1]["message"]


def test_async_errors_fail_the_job_and_retry(queue: dq.JobQueue) -> None:
    calls = []

    async def flaky(payload: Any, signal: Any, ctx: dq.JobContext) -> str:
        calls.append(ctx.job_id)
        if len(calls) == 1:
            raise ValueError("first attempt fails")
        return "second attempt ok"

    job_id = queue.add_job("flaky", {}, retry_delay=0)
    processor = queue.create_processor({"flaky": flaky})
    assert processor.start() == 1
    job = queue.get_job(job_id)
    assert job is not None and job.status == "failed" and job.failure_reason == "handler_error"
    assert job.error_history[-1]["message"] == "first attempt fails"
    _wait_until(lambda: processor.start() == 1)
    job = queue.get_job(job_id)
    assert job is not None and (job.status, job.output) == ("completed", "second attempt ok")


def test_async_handler_can_wait_and_resume(queue: dq.JobQueue) -> None:
    steps: list[str] = []

    async def onboarding(payload: Any, signal: Any, ctx: dq.JobContext) -> str:
        steps.append("run")
        ctx.wait_for(seconds=0.2)
        await asyncio.sleep(0)
        return "done"

    job_id = queue.add_job("onboarding", {})
    processor = queue.create_processor({"onboarding": onboarding}, poll_interval=50)
    processor.start_in_background()
    _wait_until(lambda: (j := queue.get_job(job_id)) is not None and j.status == "completed")
    processor.stop_and_drain(5000)
    job = queue.get_job(job_id)
    assert job is not None and job.output == "done" and job.attempts == 1
    assert steps == ["run", "run"]


async def isolated_async_handler(payload: Any, signal: Any) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"isolated": payload["n"]}


def test_async_handler_with_force_kill_runs_in_its_child_process(queue: dq.JobQueue) -> None:
    job_id = queue.add_job(
        "iso", {"n": 7}, timeout_ms=20_000, force_kill_on_timeout=True, max_attempts=1
    )
    assert queue.create_processor({"iso": isolated_async_handler}).start() == 1
    job = queue.get_job(job_id)
    assert job is not None and (job.status, job.output) == ("completed", {"isolated": 7})
