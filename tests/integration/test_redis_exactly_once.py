"""Redis: many processors in threads and processes run every job exactly once, and a
group limit holds across all of them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import dataqueue as dq

SCRIPT = Path(__file__).with_name("redis_worker_script.py")
ROOT = Path(__file__).resolve().parents[2]


def _start_processes(redis_url: str, prefix: str, count: int, *extra: str) -> list[Any]:
    return [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), redis_url, prefix, "120", *extra],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def _run_everywhere(
    redis_url: str,
    redis_client: Any,
    prefix: str,
    queue: dq.JobQueue,
    total: int,
    *,
    group_limit: int | None = None,
) -> tuple[Counter[int], list[int]]:
    """4 processors in this process (threads) and 2 worker processes until ``total`` runs."""
    extra = [] if group_limit is None else [str(group_limit)]
    processes = _start_processes(redis_url, prefix, 2, *extra)
    runs_key = prefix + "test:runs"
    deadline = time.monotonic() + 60
    while redis_client.hlen(prefix + "workers") < 2:  # both processes heartbeat
        assert time.monotonic() < deadline, "the worker processes did not start"
        time.sleep(0.05)

    def handler(payload: Any, signal: Any, ctx: dq.JobContext) -> None:
        group = payload.get("group") if isinstance(payload, dict) else None
        if group:
            running = redis_client.incr(f"{prefix}test:active:{group}")
            redis_client.rpush(f"{prefix}test:seen:{group}", running)
            time.sleep(0.01)
            redis_client.decr(f"{prefix}test:active:{group}")
        redis_client.rpush(runs_key, ctx.job_id)

    processors = [
        queue.create_processor(
            {"t": handler},
            batch_size=10,
            concurrency=4,
            poll_interval=50,
            group_concurrency=group_limit,
        )
        for _ in range(4)
    ]
    for processor in processors:
        processor.start_in_background()
    try:
        deadline = time.monotonic() + 240
        while redis_client.llen(runs_key) < total and time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), "a worker process died"
            time.sleep(0.1)
        time.sleep(0.5)  # a job run twice would show up now
    finally:
        redis_client.set(prefix + "test:stop", 1)
        for processor in processors:
            processor.stop_and_drain(30_000)
        for process in processes:
            assert process.wait(60) == 0
    runs = Counter(int(v) for v in redis_client.lrange(runs_key, 0, -1))
    seen = [int(v) for v in redis_client.lrange(prefix + "test:seen:g", 0, -1)]
    return runs, seen


def test_5000_jobs_run_exactly_once_across_threads_and_processes(
    redis_url: str, redis_client: Any, redis_prefix: str, redis_queue: dq.JobQueue
) -> None:
    ids = redis_queue.add_jobs([{"job_type": "t", "payload": {"n": n}} for n in range(5000)])
    runs, _ = _run_everywhere(redis_url, redis_client, redis_prefix, redis_queue, 5000)
    assert sorted(runs) == sorted(ids)
    assert max(runs.values()) == 1
    assert len(redis_queue.get_jobs_by_status("completed", limit=10_000)) == 5000
    # Everyone took part: jobs keep lockedBy when completed.
    workers = {j.locked_by for j in redis_queue.get_jobs_by_status("completed", limit=10_000)}
    assert len(workers) >= 3


@pytest.mark.parametrize("limit", [1, 3])
def test_group_limit_holds_across_processes(
    redis_url: str, redis_client: Any, redis_prefix: str, redis_queue: dq.JobQueue, limit: int
) -> None:
    grouped = [
        {"job_type": "t", "payload": {"group": "g"}, "group": {"id": "g"}} for _ in range(300)
    ]
    plain = [{"job_type": "t", "payload": {}} for _ in range(300)]
    redis_queue.add_jobs([job for pair in zip(grouped, plain, strict=True) for job in pair])
    runs, seen = _run_everywhere(
        redis_url, redis_client, redis_prefix, redis_queue, 600, group_limit=limit
    )
    assert len(runs) == 600 and max(runs.values()) == 1
    assert len(seen) == 300
    assert max(seen) <= limit  # never more of the group at once, whichever process
    assert max(seen) == limit  # and the limit is used, not undercut to one
    assert redis_client.hget(redis_prefix + "group:active", "g") is None
