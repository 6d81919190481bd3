"""Test set-up that reaches under the queue: put a job in a state, age its data.

Shared behaviour tests use these instead of SQL so that they run on every backend.
PostgreSQL: statements on the queue's engine. Redis: the job hash and the indexes a
state change would have touched (status sets, ready/delayed sets), with times from the
Redis server's clock.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import dataqueue as dq
from tests.conftest import run_sql

_DAY_MS = 86_400_000


def _is_redis(queue: dq.JobQueue) -> bool:
    try:
        queue.get_redis_client()
    except dq.UnsupportedOperationError:
        return False
    return True


def is_redis(queue: dq.JobQueue) -> bool:
    """True if ``queue`` stores its jobs in Redis (else PostgreSQL)."""
    return _is_redis(queue)


def _redis_now_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def force_job(
    queue: dq.JobQueue,
    job_id: int,
    *,
    status: str | None = None,
    attempts: int | None = None,
    locked_by: str | None = None,
    updated_days_ago: float | None = None,
    wait_days_ahead: float | None = None,
    wait_token_id: str | None = None,
) -> None:
    """Set the given fields of a job directly in the store (no events, no checks)."""
    if _is_redis(queue):
        _force_redis(
            queue,
            job_id,
            status=status,
            attempts=attempts,
            locked_by=locked_by,
            updated_days_ago=updated_days_ago,
            wait_days_ahead=wait_days_ahead,
            wait_token_id=wait_token_id,
        )
        return
    sets: list[str] = []
    params: dict[str, Any] = {"id": job_id}
    for column, value in (
        ("status", status),
        ("attempts", attempts),
        ("locked_by", locked_by),
        ("wait_token_id", wait_token_id),
    ):
        if value is not None:
            sets.append(f"{column} = :{column}")
            params[column] = value
    if updated_days_ago is not None:
        sets.append("updated_at = now() - make_interval(secs => :updated_secs)")
        params["updated_secs"] = updated_days_ago * 86_400
    if wait_days_ahead is not None:
        sets.append("wait_until = now() + make_interval(secs => :wait_secs)")
        params["wait_secs"] = wait_days_ahead * 86_400
    run_sql(queue.get_engine(), f"UPDATE job_queue SET {', '.join(sets)} WHERE id = :id", **params)


def _force_redis(
    queue: dq.JobQueue,
    job_id: int,
    *,
    status: str | None,
    attempts: int | None,
    locked_by: str | None,
    updated_days_ago: float | None,
    wait_days_ahead: float | None,
    wait_token_id: str | None,
) -> None:
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    key = f"{prefix}job:{job_id}"
    now = _redis_now_ms(client)
    fields: dict[str, Any] = {}
    if status is not None:
        old = client.hget(key, "status")
        old = old.decode() if isinstance(old, bytes) else old
        client.srem(f"{prefix}status:{old}", job_id)
        client.sadd(f"{prefix}status:{status}", job_id)
        if status != "pending":
            job_type = client.hget(key, "jobType")
            job_type = job_type.decode() if isinstance(job_type, bytes) else job_type
            client.zrem(f"{prefix}queue:{job_type}", f"{job_id:020d}")
            client.zrem(f"{prefix}delayed", job_id)
        fields["status"] = status
    if attempts is not None:
        fields["attempts"] = attempts
    if locked_by is not None:
        fields["lockedBy"] = locked_by
    if wait_token_id is not None:
        fields["waitTokenId"] = wait_token_id
    if updated_days_ago is not None:
        fields["updatedAt"] = now - int(updated_days_ago * _DAY_MS)
    if wait_days_ahead is not None:
        fields["waitUntil"] = now + int(wait_days_ahead * _DAY_MS)
    client.hset(key, mapping=fields)


def age_events(queue: dq.JobQueue, job_ids: list[int], days: float) -> None:
    """Make every event of ``job_ids`` ``days`` days older."""
    if not _is_redis(queue):
        run_sql(
            queue.get_engine(),
            "UPDATE job_events SET created_at = created_at - make_interval(secs => :secs)"
            " WHERE job_id = ANY(:ids)",
            secs=days * 86_400,
            ids=job_ids,
        )
        return
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    for job_id in job_ids:
        key = f"{prefix}events:{job_id}"
        entries = [json.loads(e) for e in client.lrange(key, 0, -1)]
        for entry in entries:
            entry["createdAt"] -= int(days * _DAY_MS)
        client.delete(key)
        if entries:
            client.rpush(key, *[json.dumps(e, separators=(",", ":")) for e in entries])


def make_wait_due(queue: dq.JobQueue, job_id: int) -> None:
    """Move a time-based wait's ``wait_until`` one second into the past, so that the
    next claim resumes the job (Redis: also re-scores it in ``P waiting``)."""
    if not _is_redis(queue):
        run_sql(
            queue.get_engine(),
            "UPDATE job_queue SET wait_until = now() - interval '1 second' WHERE id = :id",
            id=job_id,
        )
        return
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    due = _redis_now_ms(client) - 1000
    client.hset(f"{prefix}job:{job_id}", "waitUntil", due)
    client.zadd(f"{prefix}waiting", {str(job_id): due})


def make_token_due(queue: dq.JobQueue, token_id: str) -> None:
    """Move a token's ``timeout_at`` one second into the past, so that the next
    ``expire_timed_out_tokens`` times it out (Redis: also re-scores it in
    ``P waitpoint_timeout``)."""
    if not _is_redis(queue):
        run_sql(
            queue.get_engine(),
            "UPDATE waitpoints SET timeout_at = now() - interval '1 second' WHERE id = :id",
            id=token_id,
        )
        return
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    due = _redis_now_ms(client) - 1000
    client.hset(f"{prefix}waitpoint:{token_id}", "timeoutAt", due)
    client.zadd(f"{prefix}waitpoint_timeout", {token_id: due})


def make_cron_due(queue: dq.JobQueue, schedule_id: int, seconds_ago: float = 1.0) -> None:
    """Move a cron schedule's ``next_run_at`` ``seconds_ago`` into the past, so that the
    next ``enqueue_due_cron_jobs`` finds it due (Redis: also re-scores it in
    ``P cron_due`` when it is active, in one MULTI)."""
    if not _is_redis(queue):
        run_sql(
            queue.get_engine(),
            "UPDATE cron_schedules SET next_run_at = now() - make_interval(secs => :secs)"
            " WHERE id = :id",
            id=schedule_id,
            secs=seconds_ago,
        )
        return
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    due = _redis_now_ms(client) - round(seconds_ago * 1000)
    key = f"{prefix}cron:{schedule_id}"
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, "nextRunAt", due)
    if client.hget(key, "status") in (b"active", "active"):
        pipe.zadd(f"{prefix}cron_due", {str(schedule_id): due})
    pipe.execute()


def delete_job(queue: dq.JobQueue, job_id: int) -> None:
    """Delete a job and its events from the store, whatever its status (no checks)."""
    if not _is_redis(queue):
        run_sql(queue.get_engine(), "DELETE FROM job_events WHERE job_id = :id", id=job_id)
        run_sql(queue.get_engine(), "DELETE FROM job_queue WHERE id = :id", id=job_id)
        return
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    key = f"{prefix}job:{job_id}"
    status, job_type = (
        v.decode() if isinstance(v, bytes) else v for v in client.hmget(key, "status", "jobType")
    )
    for tag in client.smembers(f"{key}:tags"):
        tag_text = tag.decode() if isinstance(tag, bytes) else tag
        client.srem(f"{prefix}tag:{tag_text}", job_id)
        client.srem(f"{prefix}active_tag:{tag_text}", job_id)
    client.srem(f"{prefix}status:{status}", job_id)
    client.srem(f"{prefix}type:{job_type}", job_id)
    client.zrem(f"{prefix}queue:{job_type}", f"{job_id:020d}")
    for index in ("delayed", "retry", "waiting", "all"):
        client.zrem(f"{prefix}{index}", job_id)
    client.delete(key, f"{key}:tags", f"{prefix}events:{job_id}")


# -- processing states and counts (processor, durability and supervisor tests) ---------


def make_retry_due(queue: dq.JobQueue, job_id: int) -> None:
    """Move a failed job's ``next_attempt_at`` one second into the past, so that the
    next claim retries it (Redis: also re-scores it in ``P retry``)."""
    if not _is_redis(queue):
        run_sql(
            queue.get_engine(),
            "UPDATE job_queue SET next_attempt_at = now() - interval '1 second' WHERE id = :id",
            id=job_id,
        )
        return
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    due = _redis_now_ms(client) - 1000
    client.hset(f"{prefix}job:{job_id}", "nextAttemptAt", due)
    client.zadd(f"{prefix}retry", {str(job_id): due})


def make_lock_stale(queue: dq.JobQueue, job_id: int | None, seconds: float) -> None:
    """Set ``locked_at`` ``seconds`` into the past, of one job or (None) of every
    processing job: as if its worker had stopped refreshing the lock."""
    if not _is_redis(queue):
        sql = "UPDATE job_queue SET locked_at = now() - make_interval(secs => :secs) WHERE "
        if job_id is None:
            run_sql(queue.get_engine(), sql + "status = 'processing'", secs=seconds)
        else:
            run_sql(queue.get_engine(), sql + "id = :id", id=job_id, secs=seconds)
        return
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    locked_at = _redis_now_ms(client) - round(seconds * 1000)
    ids = [job_id] if job_id is not None else list(client.smembers(f"{prefix}status:processing"))
    for one in ids:
        member = one.decode() if isinstance(one, bytes) else one
        client.hset(f"{prefix}job:{member}", "lockedAt", locked_at)


def _all_job_ids(client: Any, prefix: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in client.zrange(f"{prefix}all", 0, -1)]


def status_counts(queue: dq.JobQueue) -> Counter[str]:
    """How many jobs have each status (read from every job, not from an index)."""
    if not _is_redis(queue):
        rows = run_sql(queue.get_engine(), "SELECT status, count(*) FROM job_queue GROUP BY status")
        return Counter(dict(rows))
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    pipe = client.pipeline(transaction=False)
    for job_id in _all_job_ids(client, prefix):
        pipe.hget(f"{prefix}job:{job_id}", "status")
    return Counter(s.decode() if isinstance(s, bytes) else s for s in pipe.execute() if s)


def event_counts(queue: dq.JobQueue) -> Counter[str]:
    """How many events of each type the jobs have, all jobs together."""
    if not _is_redis(queue):
        rows = run_sql(
            queue.get_engine(), "SELECT event_type, count(*) FROM job_events GROUP BY event_type"
        )
        return Counter(dict(rows))
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    pipe = client.pipeline(transaction=False)
    for job_id in _all_job_ids(client, prefix):
        pipe.lrange(f"{prefix}events:{job_id}", 0, -1)
    return Counter(json.loads(e)["eventType"] for events in pipe.execute() for e in events)


def registered_workers(queue: dq.JobQueue) -> int:
    """How many workers the store's registry holds (heartbeating processors)."""
    if not _is_redis(queue):
        return int(run_sql(queue.get_engine(), "SELECT count(*) FROM dataqueue_workers")[0][0])
    client = queue.get_redis_client()
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    return int(client.hlen(f"{prefix}workers"))


def kill_redis_connections(admin: Any, name: str) -> int:
    """Close every Redis connection whose client name is ``name`` (``CLIENT KILL``), as
    a failover or a proxy would; return how many. ``admin`` is a client of another name."""
    killed = 0
    for client in admin.client_list():
        if client.get("name") == name:
            killed += int(admin.client_kill_filter(_id=client["id"]))
    return killed
