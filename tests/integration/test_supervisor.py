"""Supervisor: task order and results, isolation of failures, background loop, options."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql
from tests.integration.store_state import (
    age_events,
    force_job,
    make_lock_stale,
    make_token_due,
)

pytestmark = pytest.mark.all_backends


def _seed_maintenance_work(queue: dq.JobQueue) -> None:
    stuck, old_done, other = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(3)])
    force_job(queue, stuck, status="processing", attempts=1, locked_by="gone")
    make_lock_stale(queue, stuck, 3600)
    force_job(queue, old_done, status="completed", updated_days_ago=40)
    age_events(queue, [stuck, old_done, other], 40)
    token = queue.create_token(timeout="1h")
    make_token_due(queue, token.id)


def test_one_run_performs_every_task(queue: dq.JobQueue) -> None:
    _seed_maintenance_work(queue)
    result = queue.create_supervisor().start()
    # Job cleanup cascades the old job's event; the two remaining old events go next.
    assert result == dq.SupervisorRunResult(
        reclaimed_jobs=1, cleaned_up_jobs=1, cleaned_up_events=2, expired_tokens=1
    )
    assert queue.create_supervisor().start() == dq.SupervisorRunResult()


def test_disabled_tasks_do_nothing(queue: dq.JobQueue) -> None:
    _seed_maintenance_work(queue)
    supervisor = queue.create_supervisor(
        reclaim_stuck_jobs=False,
        cleanup_jobs_days_to_keep=0,
        cleanup_events_days_to_keep=-1,
        expire_timed_out_tokens=False,
    )
    assert supervisor.start() == dq.SupervisorRunResult()


def _run_with_failing_token_task(queue: dq.JobQueue) -> tuple[dq.SupervisorRunResult, Any]:
    errors: list[BaseException] = []
    events: list[BaseException] = []
    queue.on("error", events.append)
    result = queue.create_supervisor(on_error=errors.append).start()
    assert len(errors) == 1 and events == errors
    return result, errors[0]


def test_a_failing_task_does_not_stop_the_others(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    _seed_maintenance_work(pg_queue)
    run_sql(engine, "ALTER TABLE waitpoints RENAME TO waitpoints_hidden")
    try:
        result, error = _run_with_failing_token_task(pg_queue)
    finally:
        run_sql(engine, "ALTER TABLE waitpoints_hidden RENAME TO waitpoints")
    assert (result.reclaimed_jobs, result.expired_tokens) == (1, 0)
    assert isinstance(error, dq.SchemaNotReadyError)


def test_a_failing_task_does_not_stop_the_others_on_redis(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    import redis

    _seed_maintenance_work(redis_queue)
    # The token timeouts' index holds a value of the wrong type: Redis refuses to read
    # it (WRONGTYPE), so token expiry fails and the other tasks must still run.
    redis_client.delete(redis_prefix + "waitpoint_timeout")
    redis_client.set(redis_prefix + "waitpoint_timeout", "not a sorted set")
    result, error = _run_with_failing_token_task(redis_queue)
    assert result == dq.SupervisorRunResult(
        reclaimed_jobs=1, cleaned_up_jobs=1, cleaned_up_events=2, expired_tokens=0
    )
    assert isinstance(error, redis.ResponseError) and "WRONGTYPE" in str(error)


def test_background_loop_runs_repeatedly_and_stops(queue: dq.JobQueue) -> None:
    supervisor = queue.create_supervisor(interval_ms=50)
    supervisor.start_in_background()
    supervisor.start_in_background()  # no-op
    assert supervisor.is_running()
    stuck = queue.add_job("t", {})
    force_job(queue, stuck, status="processing", attempts=1)
    make_lock_stale(queue, stuck, 3600)
    deadline = time.monotonic() + 5
    while (job := queue.get_job(stuck)) is not None and job.status != "pending":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    supervisor.stop_and_drain(5000)
    assert not supervisor.is_running()


def test_several_supervisors_at_once_are_safe(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(200)])
    for job_id in ids:
        force_job(queue, job_id, status="completed", updated_days_ago=40)
    results: list[dq.SupervisorRunResult] = []
    supervisors = [queue.create_supervisor(cleanup_batch_size=7) for _ in range(4)]
    threads = [threading.Thread(target=lambda s=s: results.append(s.start())) for s in supervisors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.cleaned_up_jobs for r in results) == 200
    assert queue.get_all_jobs() == []


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"interval_ms": 0}, ValueError),
        ({"interval_ms": "60s"}, TypeError),
        ({"cleanup_batch_size": 0}, ValueError),
        ({"stuck_jobs_timeout_minutes": -1}, ValueError),
        ({"reclaim_stuck_jobs": "yes"}, TypeError),
        ({"on_error": 3}, TypeError),
    ],
)
def test_bad_supervisor_options(
    queue: dq.JobQueue, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match=repr(next(iter(options.values())))[:6]):
        queue.create_supervisor(**options)
