"""queue.get_stats(): counts by status and type, oldest due job, recent window, run times.

Every test runs on both backends against known fixtures. States a processor would take
long to reach are forced with the store_state helpers; run times and ages of finished
jobs are set with the helpers below (on Redis they also rewrite the recent-activity
keys the scripts keep, as those record the store's clock at completion).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

import dataqueue as dq
from tests.conftest import run_sql
from tests.integration.store_state import age_events, delete_job, force_job, is_redis

pytestmark = pytest.mark.all_backends

UTC = dt.timezone.utc


def _ok(payload: Any) -> None:
    return None


def _boom(payload: Any) -> None:
    raise RuntimeError("boom")


def _process(queue: dq.JobQueue, job_type: str, handler: Any = _ok) -> int:
    """Run one batch of ``job_type`` jobs with ``handler``; return how many ran."""
    return queue.create_processor({job_type: handler}, batch_size=50, concurrency=1).start()


def _finish(queue: dq.JobQueue, job_id: int, run_seconds: float, seconds_ago: float = 1) -> None:
    """Make a completed job's run ``run_seconds`` long, ending ``seconds_ago`` ago."""
    if not is_redis(queue):
        run_sql(
            queue.get_engine(),
            "UPDATE job_queue SET completed_at = now() - make_interval(secs => :ago),"
            " updated_at = now() - make_interval(secs => :ago),"
            " started_at = now() - make_interval(secs => :ago + :run) WHERE id = :id",
            id=job_id,
            ago=seconds_ago,
            run=run_seconds,
        )
        return
    client = queue.get_redis_client()
    prefix = queue._backend.prefix  # type: ignore[attr-defined]
    seconds, micros = client.time()
    done = int(seconds) * 1000 + int(micros) // 1000 - round(seconds_ago * 1000)
    key = f"{prefix}job:{job_id}"
    client.hset(key, mapping={"completedAt": done, "startedAt": done - round(run_seconds * 1000)})
    _redo_recent(queue, client.hget(key, "jobType").decode())


def _redo_recent(queue: dq.JobQueue, job_type: str) -> None:
    """Redis: rewrite the recent-activity keys of ``job_type`` from its jobs' hashes and
    events, as the scripts would have written them at those times."""
    client = queue.get_redis_client()
    prefix = queue._backend.prefix  # type: ignore[attr-defined]
    times: dict[str, list[int]] = {"completed": [], "failed": []}
    runs: list[tuple[int, int]] = []
    for member in client.smembers(f"{prefix}type:{job_type}"):
        job_id = member.decode()
        status, started, completed = (
            None if v is None else v.decode()
            for v in client.hmget(f"{prefix}job:{job_id}", "status", "startedAt", "completedAt")
        )
        if status == "completed" and started and completed:
            times["completed"].append(int(completed))
            runs.append((int(completed), int(completed) - int(started)))
        for entry in client.lrange(f"{prefix}events:{job_id}", 0, -1):
            event = json.loads(entry)
            if event["eventType"] == "failed":
                times["failed"].append(event["createdAt"])
    client.delete(f"{prefix}stats:runs:{job_type}")
    for done_at, run_ms in sorted(runs):
        client.lpush(f"{prefix}stats:runs:{job_type}", f"{done_at}:{run_ms}")
    for kind, moments in times.items():
        key, marks = f"{prefix}stats:{kind}:{job_type}", f"{prefix}stats:{kind}_at:{job_type}"
        client.delete(key, marks)
        for n, moment in enumerate(sorted(moments)):
            second = moment // 1000
            if client.zadd(marks, {str(second): second}, nx=True):
                client.hset(key, f"b{second}", n)
        client.hset(key, "n", len(moments))


def _type(stats: dq.QueueStats, job_type: str) -> dq.JobTypeStats:
    return stats.job_types[job_type]


def _counts(stats: dq.JobTypeStats) -> dict[str, int]:
    names = ("pending", "processing", "waiting", "completed", "cancelled")
    return {
        **{name: getattr(stats, name) for name in names},
        "failed_retrying": stats.failed_retrying,
        "failed_final": stats.failed_final,
    }


# -- counts ---------------------------------------------------------------------------


def test_empty_store_has_no_job_types(queue: dq.JobQueue) -> None:
    stats = queue.get_stats()
    assert stats.job_types == {}
    assert (stats.total, stats.pending, stats.completed, stats.failed) == (0, 0, 0, 0)
    assert stats.oldest_pending_age is None
    assert stats.window == 300.0
    assert abs((dt.datetime.now(UTC) - stats.collected_at).total_seconds()) < 5


def test_counts_jobs_by_status_and_type(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(5)])
    assert _process(queue, "email") == 5
    queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(3)])
    cancelled = queue.add_job("email", {})
    queue.cancel_job(cancelled)
    report_ids = queue.add_jobs([{"job_type": "report", "payload": {"n": n}} for n in range(4)])
    force_job(queue, report_ids[0], status="processing", locked_by="w")
    force_job(queue, report_ids[1], status="waiting", wait_days_ahead=1)

    stats = queue.get_stats()
    assert list(stats.job_types) == ["email", "report"]
    assert _counts(_type(stats, "email")) == {
        "pending": 3,
        "processing": 0,
        "waiting": 0,
        "completed": 5,
        "cancelled": 1,
        "failed_retrying": 0,
        "failed_final": 0,
    }
    assert _counts(_type(stats, "report")) == {
        "pending": 2,
        "processing": 1,
        "waiting": 1,
        "completed": 0,
        "cancelled": 0,
        "failed_retrying": 0,
        "failed_final": 0,
    }
    assert _type(stats, "email").total == 9 and _type(stats, "report").total == 4


def test_totals_are_the_sums_over_job_types(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": t, "payload": {}} for t in ("a", "a", "b", "c")])
    _process(queue, "a")
    stats = queue.get_stats()
    assert (stats.pending, stats.completed, stats.total) == (2, 2, 4)
    assert stats.by_status() == {
        dq.JobStatus.PENDING: 2,
        dq.JobStatus.PROCESSING: 0,
        dq.JobStatus.COMPLETED: 2,
        dq.JobStatus.FAILED: 0,
        dq.JobStatus.CANCELLED: 0,
        dq.JobStatus.WAITING: 0,
    }


def test_failed_jobs_are_split_into_awaiting_retry_and_final(queue: dq.JobQueue) -> None:
    queue.add_job("sync", {"retry": True}, max_attempts=3)
    queue.add_job("sync", {"retry": False}, max_attempts=1)
    queue.add_job("sync", {"retry": False}, max_attempts=1)
    assert _process(queue, "sync", _boom) == 3
    stats = queue.get_stats()
    sync = _type(stats, "sync")
    assert (sync.failed_retrying, sync.failed_final, sync.failed) == (1, 2, 3)
    assert (stats.failed_retrying, stats.failed_final) == (1, 2)


def test_retried_and_reclaimed_failures_move_between_counts(queue: dq.JobQueue) -> None:
    final = queue.add_job("sync", {}, max_attempts=1)
    _process(queue, "sync", _boom)
    assert _type(queue.get_stats(), "sync").failed_final == 1
    queue.retry_job(final)
    sync = _type(queue.get_stats(), "sync")
    assert (sync.pending, sync.failed_final, sync.failed_retrying) == (1, 0, 0)
    _process(queue, "sync", _boom)  # its one more attempt fails for good again
    sync = _type(queue.get_stats(), "sync")
    assert (sync.pending, sync.failed_final) == (0, 1)


def test_cleanup_takes_deleted_jobs_out_of_the_counts(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(3)])
    _process(queue, "email")
    queue.get_stats()  # counting has started before the jobs are deleted
    for job_id in ids[:2]:
        force_job(queue, job_id, updated_days_ago=40)
    assert queue.cleanup_old_jobs(days_to_keep=30) == 2
    assert _type(queue.get_stats(), "email").completed == 1


def test_counts_follow_changes_made_outside_the_queue(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(3)])
    assert _type(queue.get_stats(), "email").pending == 3
    force_job(queue, ids[0], status="processing", locked_by="w")
    delete_job(queue, ids[1])
    email = _type(queue.get_stats(), "email")
    assert (email.pending, email.processing) == (1, 1)


# -- oldest due pending job ------------------------------------------------------------


def test_oldest_pending_age_is_the_longest_wait_since_run_at(queue: dq.JobQueue) -> None:
    now = dt.datetime.now(UTC)
    queue.add_job("email", {}, run_at=now - dt.timedelta(seconds=90))
    queue.add_job("email", {}, run_at=now - dt.timedelta(seconds=30), priority=5)
    queue.add_job("email", {}, run_at=now + dt.timedelta(hours=1))  # not due
    queue.add_job("report", {}, run_at=now - dt.timedelta(seconds=10))
    stats = queue.get_stats()
    email_age = _type(stats, "email").oldest_pending_age
    report_age = _type(stats, "report").oldest_pending_age
    assert email_age is not None and 90 <= email_age < 100
    assert report_age is not None and 10 <= report_age < 20
    assert stats.oldest_pending_age == email_age


def test_job_that_became_due_before_any_claim_counts(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("email", {}, run_at=dt.datetime.now(UTC) + dt.timedelta(hours=1))
    assert _type(queue.get_stats(), "email").oldest_pending_age is None
    _move_run_at(queue, job_id, seconds_ago=45)
    age = _type(queue.get_stats(), "email").oldest_pending_age
    assert age is not None and 45 <= age < 55


def _move_run_at(queue: dq.JobQueue, job_id: int, seconds_ago: float) -> None:
    """Set a scheduled job's run_at into the past, as time passing would (no claim)."""
    if not is_redis(queue):
        run_sql(
            queue.get_engine(),
            "UPDATE job_queue SET run_at = now() - make_interval(secs => :ago) WHERE id = :id",
            id=job_id,
            ago=seconds_ago,
        )
        return
    client = queue.get_redis_client()
    prefix = queue._backend.prefix  # type: ignore[attr-defined]
    seconds, micros = client.time()
    due = int(seconds) * 1000 + int(micros) // 1000 - round(seconds_ago * 1000)
    client.hset(f"{prefix}job:{job_id}", "runAt", due)
    client.zadd(f"{prefix}delayed", {str(job_id): due})


def test_types_without_due_pending_jobs_have_no_age(queue: dq.JobQueue) -> None:
    queue.add_job("email", {})
    _process(queue, "email")
    queue.add_job("report", {}, run_at=dt.datetime.now(UTC) + dt.timedelta(minutes=5))
    stats = queue.get_stats()
    assert _type(stats, "email").oldest_pending_age is None
    assert _type(stats, "report").oldest_pending_age is None
    assert stats.oldest_pending_age is None


# -- recent window ----------------------------------------------------------------------


def test_window_counts_completions_and_failed_attempts(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(3)])
    _process(queue, "email")
    queue.add_job("sync", {}, max_attempts=3, retry_delay=0)
    _process(queue, "sync", _boom)
    _process(queue, "sync", _boom)  # the same job fails a second time
    stats = queue.get_stats(window=60)
    assert (_type(stats, "email").completed_recent, _type(stats, "email").failed_recent) == (3, 0)
    assert (_type(stats, "sync").completed_recent, _type(stats, "sync").failed_recent) == (0, 2)
    assert (stats.completed_recent, stats.failed_recent) == (3, 2)
    assert stats.window == 60.0


def test_activity_before_the_window_is_left_out(queue: dq.JobQueue) -> None:
    old, _recent = queue.add_jobs([{"job_type": "email", "payload": {}} for _ in range(2)])
    _process(queue, "email")
    _finish(queue, old, run_seconds=1, seconds_ago=600)
    failing = queue.add_job("sync", {}, max_attempts=1)
    _process(queue, "sync", _boom)
    age_events(queue, [failing], days=1)
    if is_redis(queue):
        _redo_recent(queue, "sync")
    stats = queue.get_stats(window=dt.timedelta(minutes=5))
    assert _type(stats, "email").completed_recent == 1
    assert _type(stats, "email").completed == 2
    assert _type(stats, "sync").failed_recent == 0
    assert _type(stats, "sync").failed_final == 1
    assert queue.get_stats(window=3600).job_types["email"].completed_recent == 2


def test_run_time_percentiles_of_the_window(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "report", "payload": {"n": n}} for n in range(11)])
    _process(queue, "report")
    for seconds, job_id in enumerate(ids[:10], start=1):
        _finish(queue, job_id, run_seconds=seconds)
    _finish(queue, ids[10], run_seconds=500, seconds_ago=900)  # before the window
    report = _type(queue.get_stats(window=300), "report")
    assert report.completed_recent == 10
    assert report.run_time_p50 == pytest.approx(5.5)
    assert report.run_time_p95 == pytest.approx(9.55)


def test_types_without_completions_in_the_window_have_no_run_times(queue: dq.JobQueue) -> None:
    queue.add_job("email", {})
    email = _type(queue.get_stats(), "email")
    assert (email.completed_recent, email.run_time_p50, email.run_time_p95) == (0, None, None)


@pytest.mark.parametrize("window", [0, -1, 3601, dt.timedelta(hours=2), float("nan")])
def test_window_out_of_range_is_refused(queue: dq.JobQueue, window: Any) -> None:
    with pytest.raises(dq.ConfigurationError, match="window"):
        queue.get_stats(window=window)


@pytest.mark.parametrize("window", ["300", True, None])
def test_window_of_another_type_is_refused(queue: dq.JobQueue, window: Any) -> None:
    with pytest.raises(TypeError, match="window"):
        queue.get_stats(window=window)


# -- the record -------------------------------------------------------------------------


def test_to_dict_is_json_ready_with_job_types_in_order(queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": t, "payload": {}} for t in ("b", "a")])
    data = queue.get_stats().to_dict(camel_case=True)
    json.dumps(data)
    assert [t["jobType"] for t in data["jobTypes"]] == ["a", "b"]
    assert data["pending"] == 2 and data["failed"] == 0
    assert set(data["jobTypes"][0]) >= {"failedRetrying", "oldestPendingAge", "runTimeP95"}
    assert data["collectedAt"].endswith("Z")


# -- Redis: counting the jobs stored before the first call -------------------------------


def _forget_counts(queue: dq.JobQueue) -> None:
    """Delete the counters, as on a store written by a dataqueue without them."""
    client = queue.get_redis_client()
    prefix = queue._backend.prefix  # type: ignore[attr-defined]
    client.delete(*(f"{prefix}stats:{k}" for k in ("counts", "retrying", "tracking", "offsets")))


def test_redis_counts_jobs_stored_before_counting_in_steps(
    redis_queue: dq.JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataqueue.backends.redis import stats as redis_stats

    monkeypatch.setattr(redis_stats, "REBUILD_STEP", 3)
    redis_queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(7)])
    redis_queue.add_job("sync", {}, max_attempts=2)
    _process(redis_queue, "sync", _boom)
    _process(redis_queue, "email")
    redis_queue.add_job("email", {})
    _forget_counts(redis_queue)
    stats = redis_queue.get_stats()
    assert _counts(_type(stats, "email"))["completed"] == 7
    assert _type(stats, "email").pending == 1
    assert _type(stats, "sync").failed_retrying == 1


def test_redis_jobs_changing_while_they_are_counted_are_counted_once(
    redis_queue: dq.JobQueue,
) -> None:
    backend: Any = redis_queue._backend
    ids = redis_queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(6)])
    _forget_counts(redis_queue)
    assert backend._run("stats_rebuild", "start", 3) == [3, 6]  # ids 1-3 counted
    redis_queue.cancel_job(ids[1])  # counted: its counts move now
    redis_queue.cancel_job(ids[4])  # not yet: counted as cancelled by the next step
    redis_queue.add_job("email", {})  # new: counted at once
    assert backend._run("stats_rebuild", "step", 3) == [0, 0]
    email = _type(redis_queue.get_stats(), "email")
    assert (email.pending, email.cancelled) == (5, 2)


def test_redis_run_times_kept_per_type_are_bounded(redis_queue: dq.JobQueue) -> None:
    redis_queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(1150)])
    processor = redis_queue.create_processor({"email": _ok}, batch_size=500, concurrency=1)
    while processor.start():
        pass
    client = redis_queue.get_redis_client()
    prefix = redis_queue._backend.prefix  # type: ignore[attr-defined]
    assert 1000 <= client.llen(f"{prefix}stats:runs:email") < 1100
    email = _type(redis_queue.get_stats(), "email")
    assert (email.completed, email.completed_recent) == (1150, 1150)
    assert email.run_time_p50 is not None
