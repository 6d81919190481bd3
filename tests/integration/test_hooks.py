"""Event hook registration: on, once, off, remove_all_listeners, isolation."""

from __future__ import annotations

from typing import Any

import pytest

import dataqueue as dq

pytestmark = pytest.mark.all_backends


def test_once_listener_fires_a_single_time(queue: dq.JobQueue) -> None:
    seen: list[Any] = []
    queue.once("job:added", seen.append)
    queue.add_job("a", {})
    queue.add_job("b", {})
    assert [p["job_type"] for p in seen] == ["a"]


def test_off_removes_exactly_that_listener(queue: dq.JobQueue) -> None:
    first: list[Any] = []
    second: list[Any] = []
    queue.on("job:added", first.append)
    queue.on("job:added", second.append)
    queue.off("job:added", first.append)  # a different bound-method object: no effect
    queue.add_job("a", {})
    listener = second.append
    queue.on("job:cancelled", listener)
    queue.off("job:cancelled", listener)
    job_id = queue.add_job("b", {})
    queue.cancel_job(job_id)
    assert len(first) == 2 and len(second) == 2


def test_remove_all_listeners(queue: dq.JobQueue) -> None:
    seen: list[Any] = []
    queue.on("job:added", seen.append)
    queue.on("job:cancelled", seen.append)
    queue.remove_all_listeners("job:added")
    job_id = queue.add_job("a", {})
    queue.cancel_job(job_id)
    assert seen == [{"job_id": job_id}]
    queue.remove_all_listeners()
    queue.cancel_job(queue.add_job("a", {}))
    assert len(seen) == 1


def test_raising_listener_is_isolated(queue: dq.JobQueue, caplog: Any) -> None:
    # W-EV-4: a listener that raises is logged; the call and later listeners go on.
    seen: list[Any] = []

    def broken(payload: Any) -> None:
        raise RuntimeError("listener bug")

    queue.on("job:added", broken)
    queue.on("job:added", seen.append)
    job_id = queue.add_job("a", {})
    assert queue.get_job(job_id) is not None
    assert seen == [{"job_id": job_id, "job_type": "a"}]
    assert "listener bug" in caplog.text
