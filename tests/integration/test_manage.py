"""retry, cancel, edit, bulk edit/cancel, cleanup and reclaim: effects, events, hooks.

Tests taking ``queue`` run on every backend; ``pg_queue`` tests are PostgreSQL's own
(reclaim is not implemented on Redis yet).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import StatementCounter
from tests.integration.store_state import age_events, force_job, is_redis

UTC = dt.timezone.utc

pytestmark = pytest.mark.all_backends


def _set(engine: sa.Engine, job_id: int, assignments: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE job_queue SET {assignments} WHERE id = :id"), {"id": job_id})


def _event_types(queue: dq.JobQueue, job_id: int) -> list[str]:
    return [e.event_type.value for e in queue.get_job_events(job_id)]


@pytest.fixture
def hooks(queue: dq.JobQueue) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    for name in ("job:cancelled", "job:retried"):
        queue.on(name, lambda payload, name=name: seen.append((name, payload)))
    return seen


def test_retry_job_puts_failed_job_back_to_pending(
    queue: dq.JobQueue, hooks: list[tuple[str, Any]]
) -> None:
    job_id = queue.add_job("t", {})
    force_job(queue, job_id, status="failed", attempts=1, locked_by="w")
    assert queue.retry_job(job_id) is True
    job = queue.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.max_attempts, job.locked_by) == ("pending", 1, 3, None)
    assert job.next_attempt_at is not None and job.last_retried_at is not None
    assert _event_types(queue, job_id) == ["added", "retried"]
    assert hooks == [("job:retried", {"job_id": job_id})]


def test_retry_job_on_pending_job_changes_nothing(
    queue: dq.JobQueue, hooks: list[tuple[str, Any]]
) -> None:
    # W-EV-1: upstream wrote a 'retried' event and fired the hook anyway.
    job_id = queue.add_job("t", {})
    assert queue.retry_job(job_id) is False
    assert _event_types(queue, job_id) == ["added"]
    assert hooks == []


def test_retry_of_exhausted_job_grants_one_more_attempt(queue: dq.JobQueue) -> None:
    # W-RT-1: upstream left it pending with attempts == max_attempts, never claimable.
    job_id = queue.add_job("t", {}, max_attempts=2)
    force_job(queue, job_id, status="failed", attempts=2)
    queue.retry_job(job_id)
    job = queue.get_job(job_id)
    assert job is not None and (job.status, job.attempts, job.max_attempts) == ("pending", 2, 3)


def test_cancelled_job_is_not_retryable(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {})
    queue.cancel_job(job_id)
    assert queue.retry_job(job_id) is False
    job = queue.get_job(job_id)
    assert job is not None and job.status == "cancelled"


def test_cancel_job_cancels_pending_job(queue: dq.JobQueue, hooks: list[tuple[str, Any]]) -> None:
    job_id = queue.add_job("t", {})
    assert queue.cancel_job(job_id) is True
    job = queue.get_job(job_id)
    assert job is not None and job.status == "cancelled" and job.last_cancelled_at is not None
    [_, cancelled] = queue.get_job_events(job_id)
    assert (cancelled.event_type, cancelled.metadata) == ("cancelled", None)
    assert hooks == [("job:cancelled", {"job_id": job_id})]


def test_cancel_job_clears_wait_fields_of_waiting_job(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {})
    force_job(queue, job_id, status="waiting", wait_days_ahead=1, wait_token_id="wp_x")
    assert queue.cancel_job(job_id) is True
    job = queue.get_job(job_id)
    assert job is not None and (job.status, job.wait_until, job.wait_token_id) == (
        "cancelled",
        None,
        None,
    )


@pytest.mark.parametrize("status", ["processing", "completed", "failed", "cancelled"])
def test_cancel_job_leaves_other_statuses_alone(
    queue: dq.JobQueue, hooks: list[tuple[str, Any]], status: str
) -> None:
    job_id = queue.add_job("t", {})
    force_job(queue, job_id, status=status)
    assert queue.cancel_job(job_id) is False
    job = queue.get_job(job_id)
    assert job is not None and job.status == status
    assert _event_types(queue, job_id) == ["added"]
    assert hooks == []


def test_edit_job_updates_fields_and_records_provided_keys(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {"v": 1}, tags=["a"], timeout_ms=100)
    when = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert queue.edit_job(
        job_id, payload={"v": 2}, priority=4, run_at=when, tags=None, timeout_ms=None
    )
    job = queue.get_job(job_id)
    assert job is not None
    assert (job.payload, job.priority, job.run_at, job.tags, job.timeout_ms) == (
        {"v": 2},
        4,
        when,
        None,
        None,
    )
    edited = queue.get_job_events(job_id)[-1]
    assert edited.event_type == "edited"
    assert edited.metadata == {
        "payload": {"v": 2},
        "priority": 4,
        "runAt": "2031-02-03T04:05:06.000Z",  # as JavaScript writes it
        "tags": None,
        "timeoutMs": None,
    }


def test_edit_job_tags_change_what_tag_queries_find(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {}, tags=["old", "kept"])
    assert queue.edit_job(job_id, tags=["kept", "new"])
    assert [j.id for j in queue.get_jobs_by_tags(["new"])] == [job_id]
    assert queue.get_jobs_by_tags(["old"]) == []
    assert [j.id for j in queue.get_jobs_by_tags(["new", "kept"], mode="exact")] == [job_id]
    assert queue.edit_job(job_id, tags=None)
    assert queue.get_jobs_by_tags(["kept"], mode="any") == []
    assert [j.id for j in queue.get_jobs_by_tags(["kept"], mode="none")] == [job_id]


def test_edit_job_run_at_none_means_now(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {}, run_at=dt.datetime(2040, 1, 1, tzinfo=UTC))
    queue.edit_job(job_id, run_at=None, retry_backoff=True, dead_letter_job_type="dlq")
    job = queue.get_job(job_id)
    assert job is not None and job.run_at <= dt.datetime.now(UTC)
    assert (job.retry_backoff, job.dead_letter_job_type) == (True, "dlq")
    assert queue.get_job_events(job_id)[-1].metadata == {
        "runAt": None,
        "retryBackoff": True,
        "deadLetterJobType": "dlq",
    }


def test_edit_job_without_fields_is_a_no_op(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {})
    assert queue.edit_job(job_id) is False
    assert _event_types(queue, job_id) == ["added"]


def test_edit_job_on_non_pending_job_writes_no_event(queue: dq.JobQueue) -> None:
    # W-EV-3: upstream wrote 'edited' even when nothing changed.
    job_id = queue.add_job("t", {})
    force_job(queue, job_id, status="processing")
    assert queue.edit_job(job_id, priority=9) is False
    job = queue.get_job(job_id)
    assert job is not None and job.priority == 0
    assert _event_types(queue, job_id) == ["added"]


def test_edit_all_pending_jobs_edits_matching_pending_jobs(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "bulk", "payload": i} for i in range(50)])
    other = queue.add_job("other", {})
    done = queue.add_job("bulk", {})
    force_job(queue, done, status="completed")
    assert queue.edit_all_pending_jobs({"job_type": "bulk"}, priority=3) == 50
    assert all(j.priority == 3 for j in queue.get_jobs({"job_type": "bulk"}) if j.id in ids)
    assert _event_types(queue, ids[0]) == ["added", "edited"]
    assert _event_types(queue, other) == ["added"]
    assert _event_types(queue, done) == ["added"]


def test_edit_all_pending_jobs_is_one_statement(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    # W-N1-1: one statement updates every row and writes every event.
    pg_queue.add_jobs([{"job_type": "bulk", "payload": i} for i in range(50)])
    with StatementCounter() as counter:
        changed = pg_queue.edit_all_pending_jobs({"job_type": "bulk"}, priority=3)
    assert changed == 50 and len(counter.statements) == 1


def test_edit_all_pending_jobs_without_updates_returns_zero(queue: dq.JobQueue) -> None:
    queue.add_job("t", {})
    assert queue.edit_all_pending_jobs() == 0


def test_cancel_all_upcoming_jobs_behaves_like_cancel_job(
    queue: dq.JobQueue, hooks: list[tuple[str, Any]]
) -> None:
    # W-API-4: upstream wrote no events, no last_cancelled_at and fired no hooks.
    future = queue.add_job("t", {}, run_at=dt.datetime(2040, 1, 1, tzinfo=UTC), tags=["x"])
    now = queue.add_job("t", {}, tags=["x"])
    untagged = queue.add_job("t", {})
    waiting = queue.add_job("t", {}, tags=["x"])
    force_job(queue, waiting, status="waiting")
    assert queue.cancel_all_upcoming_jobs({"tags": {"values": ["x"]}}) == 2
    for job_id in (future, now):
        job = queue.get_job(job_id)
        assert job is not None and job.status == "cancelled" and job.last_cancelled_at is not None
        assert _event_types(queue, job_id) == ["added", "cancelled"]
    assert {p["job_id"] for _, p in hooks} == {future, now}
    remaining = {j.id: j.status.value for j in queue.get_all_jobs()}
    assert (remaining[untagged], remaining[waiting]) == ("pending", "waiting")


def test_cleanup_old_jobs_deletes_old_finished_jobs_in_batches(queue: dq.JobQueue) -> None:
    # Finished: completed, cancelled, failed for good (W-UB-7); a job waiting for its
    # retry is kept, whatever its age.
    old = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(5)])
    recent = queue.add_job("t", {})
    old_failed = queue.add_job("t", {})
    old_cancelled = queue.add_job("t", {})
    retrying = queue.add_job("r", {}, retry_delay=3600)

    def boom(payload: Any) -> None:
        raise RuntimeError("boom")

    assert queue.create_processor({"r": boom}).start() == 1
    assert queue.cancel_job(old_cancelled)
    for job_id in old:
        force_job(queue, job_id, status="completed", updated_days_ago=31)
    force_job(queue, recent, status="completed")
    force_job(queue, old_failed, status="failed", updated_days_ago=90)
    force_job(queue, old_cancelled, updated_days_ago=40)
    force_job(queue, retrying, updated_days_ago=90)
    assert queue.cleanup_old_jobs(days_to_keep=30, batch_size=2) == 7
    assert {j.id for j in queue.get_all_jobs()} == {recent, retrying}
    assert queue.get_job_events(old[0]) == []  # events cascade
    assert queue.get_job_events(old_cancelled) == []


def test_cleanup_old_jobs_deletes_the_tokens_of_deleted_jobs(queue: dq.JobQueue) -> None:
    # PostgreSQL: waitpoints.job_id cascades; Redis keeps each job's tokens in
    # `P job_tokens:<id>` and deletes them with the job.
    created: dict[int, list[str]] = {}

    def make_tokens(payload: Any, signal: Any, ctx: Any) -> None:
        created[ctx.job_id] = [
            ctx.create_token(timeout="1h").id,
            ctx.create_token(tags=["t"]).id,
        ]

    old, recent = queue.add_job("mk", {}), queue.add_job("mk", {})
    free = queue.create_token(timeout="1h").id  # no job: never cleaned up with one
    assert queue.create_processor({"mk": make_tokens}, batch_size=2).start() == 2
    force_job(queue, old, updated_days_ago=31)

    assert queue.cleanup_old_jobs(days_to_keep=30) == 1
    assert [queue.get_token(t) for t in created[old]] == [None, None]
    assert all(queue.get_token(t) is not None for t in [*created[recent], free])
    assert queue.expire_timed_out_tokens() == 0  # nothing left behind to expire
    if is_redis(queue):
        client = queue.get_redis_client()
        prefix = queue._backend.prefix  # type: ignore[attr-defined]
        assert not client.exists(f"{prefix}job_tokens:{old}")
        assert client.exists(f"{prefix}job_tokens:{recent}")
        timeouts = {m.decode() for m in client.zrange(f"{prefix}waitpoint_timeout", 0, -1)}
        assert timeouts == {created[recent][0], free}


def test_cleanup_old_job_events_deletes_in_batches(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(5)])
    keep = queue.add_job("t", {})
    age_events(queue, ids, days=10)
    assert queue.cleanup_old_job_events(days_to_keep=7, batch_size=2) == 5
    assert queue.get_job_events(ids[0]) == []
    assert len(queue.get_job_events(keep)) == 1


def test_reclaim_respects_per_job_timeout(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    long_timeout = pg_queue.add_job("t", {}, timeout_ms=30 * 60_000)
    short_timeout = pg_queue.add_job("t", {}, timeout_ms=20 * 60_000)
    _set(
        engine,
        long_timeout,
        "status='processing', attempts=1, locked_by='w', locked_at=now() - interval '15 minutes'",
    )
    _set(
        engine,
        short_timeout,
        "status='processing', attempts=1, locked_by='w', locked_at=now() - interval '25 minutes'",
    )
    assert pg_queue.reclaim_stuck_jobs(10) == 1
    kept, released = pg_queue.get_job(long_timeout), pg_queue.get_job(short_timeout)
    assert kept is not None and kept.status == "processing"
    assert released is not None
    assert (released.status, released.locked_by, released.locked_at, released.attempts) == (
        "pending",
        None,
        None,
        1,
    )
    assert _event_types(pg_queue, short_timeout) == ["added"]


def test_reclaim_fails_job_on_its_last_attempt(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    # W-RT-1: upstream made it pending but unclaimable forever.
    job_id = pg_queue.add_job("t", {}, max_attempts=2)
    _set(
        engine,
        job_id,
        "status='processing', attempts=2, locked_by='w', locked_at=now() - interval '1 hour'",
    )
    assert pg_queue.reclaim_stuck_jobs(10) == 1
    job = pg_queue.get_job(job_id)
    assert job is not None
    assert (job.status, job.failure_reason, job.next_attempt_at) == ("failed", "timeout", None)
    assert len(job.error_history) == 1 and job.error_history[0]["timestamp"].endswith("Z")
    failed = pg_queue.get_job_events(job_id)[-1]
    assert failed.event_type == "failed"
    assert failed.metadata is not None and failed.metadata["failureReason"] == "timeout"


def test_reclaim_respects_job_timeouts_for_non_heartbeating_workers(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    no_timeout = pg_queue.add_job("t", {})
    with_timeout = pg_queue.add_job("t", {}, timeout_ms=60_000)
    for job_id in (no_timeout, with_timeout):
        _set(
            engine,
            job_id,
            "status='processing', attempts=1, locked_at=now() - interval '5 seconds'",
        )
    assert pg_queue.reclaim_stuck_jobs(max_processing_time=1) == 1
    job = pg_queue.get_job(no_timeout)
    assert job is not None and job.status == "pending"


def test_reclaim_with_zero_minutes_is_refused(pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    """Upstream accepts 0 and reclaims running jobs; we refuse it."""
    job_id = pg_queue.add_job("t", {})
    _set(engine, job_id, "status='processing', attempts=1, locked_at=now()")
    with pytest.raises(dq.ConfigurationError, match="max_processing_time_minutes"):
        pg_queue.reclaim_stuck_jobs(0)
    job = pg_queue.get_job(job_id)
    assert job is not None and job.status == "processing"


def test_raising_max_attempts_makes_an_exhausted_job_claimable_again(queue: dq.JobQueue) -> None:
    def boom(payload: Any) -> None:
        raise RuntimeError("boom")

    job_id = queue.add_job("t", {}, max_attempts=3, retry_delay=3600)
    assert queue.create_processor({"t": boom}).start() == 1  # attempt 1 fails
    assert queue.retry_job(job_id)  # pending again, 1 attempt used
    assert queue.edit_job(job_id, max_attempts=1)  # exhausted: never claimed
    assert queue.create_processor({"t": lambda p: "ran"}).start() == 0
    assert queue.edit_job(job_id, max_attempts=2)
    assert queue.create_processor({"t": lambda p: "ran"}).start() == 1
    job = queue.get_job(job_id)
    assert job is not None and (job.status, job.attempts, job.output) == ("completed", 2, "ran")
