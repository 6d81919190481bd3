"""Supervisor: task order and results, isolation of failures, background loop, options."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql


def _seed_maintenance_work(queue: dq.JobQueue, engine: sa.Engine) -> None:
    stuck, old_done, _ = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(3)])
    run_sql(
        engine,
        "UPDATE job_queue SET status='processing', attempts=1, locked_by='gone',"
        " locked_at=now() - interval '1 hour' WHERE id=:id",
        id=stuck,
    )
    run_sql(
        engine,
        "UPDATE job_queue SET status='completed', updated_at=now() - interval '40 days'"
        " WHERE id=:id",
        id=old_done,
    )
    run_sql(engine, "UPDATE job_events SET created_at = now() - interval '40 days'")
    token = queue.create_token(timeout="1h")
    run_sql(
        engine,
        "UPDATE waitpoints SET timeout_at = now() - interval '1 second' WHERE id=:id",
        id=token.id,
    )


def test_one_run_performs_every_task(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    _seed_maintenance_work(pg_queue, engine)
    result = pg_queue.create_supervisor().start()
    # Job cleanup cascades the old job's event; the two remaining old events go next.
    assert result == dq.SupervisorRunResult(
        reclaimed_jobs=1, cleaned_up_jobs=1, cleaned_up_events=2, expired_tokens=1
    )
    assert pg_queue.create_supervisor().start() == dq.SupervisorRunResult()


def test_disabled_tasks_do_nothing(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    _seed_maintenance_work(pg_queue, engine)
    supervisor = pg_queue.create_supervisor(
        reclaim_stuck_jobs=False,
        cleanup_jobs_days_to_keep=0,
        cleanup_events_days_to_keep=-1,
        expire_timed_out_tokens=False,
    )
    assert supervisor.start() == dq.SupervisorRunResult()


def test_a_failing_task_does_not_stop_the_others(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    _seed_maintenance_work(pg_queue, engine)
    errors: list[BaseException] = []
    events: list[BaseException] = []
    pg_queue.on("error", events.append)
    run_sql(engine, "ALTER TABLE waitpoints RENAME TO waitpoints_hidden")
    try:
        result = pg_queue.create_supervisor(on_error=errors.append).start()
    finally:
        run_sql(engine, "ALTER TABLE waitpoints_hidden RENAME TO waitpoints")
    assert (result.reclaimed_jobs, result.expired_tokens) == (1, 0)
    assert len(errors) == 1 and events == errors


def test_background_loop_runs_repeatedly_and_stops(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    supervisor = pg_queue.create_supervisor(interval_ms=50)
    supervisor.start_in_background()
    supervisor.start_in_background()  # no-op
    assert supervisor.is_running()
    stuck = pg_queue.add_job("t", {})
    run_sql(
        engine,
        "UPDATE job_queue SET status='processing', attempts=1, locked_at=now() - interval '1 hour'"
        " WHERE id=:id",
        id=stuck,
    )
    deadline = time.monotonic() + 5
    while (job := pg_queue.get_job(stuck)) is not None and job.status != "pending":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    supervisor.stop_and_drain(5000)
    assert not supervisor.is_running()


def test_several_supervisors_at_once_are_safe(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    import threading

    ids = pg_queue.add_jobs([{"job_type": "t", "payload": i} for i in range(200)])
    run_sql(
        engine,
        "UPDATE job_queue SET status='completed', updated_at=now() - interval '40 days'"
        " WHERE id = ANY(:ids)",
        ids=ids,
    )
    results: list[dq.SupervisorRunResult] = []
    supervisors = [pg_queue.create_supervisor(cleanup_batch_size=7) for _ in range(4)]
    threads = [threading.Thread(target=lambda s=s: results.append(s.start())) for s in supervisors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.cleaned_up_jobs for r in results) == 200
    assert pg_queue.get_all_jobs() == []


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
    pg_queue: dq.JobQueue, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match=repr(next(iter(options.values())))[:6]):
        pg_queue.create_supervisor(**options)
