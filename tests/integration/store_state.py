"""Test set-up that reaches under the queue: put a job in a state, age its data.

Shared behaviour tests use these instead of SQL so that they run on every backend.
PostgreSQL: statements on the queue's engine. Redis: the job hash and the indexes a
state change would have touched (status sets, ready/delayed sets), with times from the
Redis server's clock.
"""

from __future__ import annotations

import json
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
