"""Redis: connections the server closes (CLIENT KILL) lose nothing and repeat nothing."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import dataqueue as dq
from dataqueue.backends.redis import backend as redis_backend


def _kill_clients(admin: Any, prefix_name: str) -> int:
    """Close every connection named ``prefix_name``* (the library's, not the admin's)."""
    killed = 0
    for client in admin.client_list():
        if client.get("name", "").startswith(prefix_name):
            killed += int(admin.client_kill_filter(_id=client["id"]))
    return killed


@pytest.fixture
def named_queue(redis_url: str, redis_prefix: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url, client_name="dq-fault-victim")
    queue = dq.init_job_queue(backend="redis", redis_client=client, key_prefix=redis_prefix)
    yield queue
    queue.close()
    client.close()


def test_killed_idle_connection_is_replaced_without_an_error(
    named_queue: dq.JobQueue, redis_client: Any
) -> None:
    first = named_queue.add_job("t", {})
    assert _kill_clients(redis_client, "dq-fault-victim") >= 1
    second = named_queue.add_job("t", {})  # the pooled connection is dead: retried
    assert second == first + 1
    assert named_queue.get_job(first) is not None
    assert [j.id for j in named_queue.get_all_jobs()] == [second, first]


def test_a_retried_add_jobs_call_returns_the_first_reply_and_writes_once(
    named_queue: dq.JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reply of the first run is lost (as when CLIENT KILL lands between the script
    # and its reply): the retry, with the same call token, must not add the jobs again.
    import redis

    real = redis_backend.retrying
    calls = []

    def lose_first_reply(call: Any) -> Any:
        def flaky() -> Any:
            reply = call()
            calls.append(reply)
            if len(calls) == 1:
                raise redis.ConnectionError("reply lost")
            return reply

        return real(flaky)

    monkeypatch.setattr(redis_backend, "retrying", lose_first_reply)
    ids = named_queue.add_jobs([{"job_type": "t", "payload": n} for n in range(3)])
    assert len(calls) == 2 and ids == [1, 2, 3]
    assert len(named_queue.get_all_jobs()) == 3
    edited = named_queue.edit_all_pending_jobs(payload={"x": 1})
    assert edited == 3
    assert [e.event_type for e in named_queue.get_job_events(1)] == ["added", "edited"]


def test_drain_and_enqueue_under_repeated_client_kills_lose_and_repeat_nothing(
    named_queue: dq.JobQueue, redis_client: Any
) -> None:
    runs: dict[int, int] = {}
    lock = threading.Lock()

    def handler(payload: Any, signal: Any, ctx: dq.JobContext) -> None:
        with lock:
            runs[ctx.job_id] = runs.get(ctx.job_id, 0) + 1

    processor = named_queue.create_processor(
        {"t": handler}, batch_size=20, concurrency=4, poll_interval=50
    )
    processor.start_in_background()
    added: list[int] = []
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        while not stop.is_set():
            kills[0] += _kill_clients(redis_client, "dq-fault-victim")
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        for n in range(100):
            added += named_queue.add_jobs(
                [{"job_type": "t", "payload": n * 10 + k} for k in range(10)]
            )
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        done = list(named_queue.get_jobs_by_status("completed", limit=2000))
        if len(done) >= len(added):
            break
        time.sleep(0.2)
    processor.stop_and_drain(10_000)
    assert kills[0] >= 10
    assert len(added) == len(set(added)) == 1000
    assert len(named_queue.get_all_jobs(limit=5000)) == 1000  # nothing added twice
    assert sorted(runs) == sorted(added)  # every job ran ...
    assert max(runs.values()) == 1  # ... once
    statuses = {j.status for j in named_queue.get_all_jobs(limit=5000)}
    assert statuses == {"completed"}
