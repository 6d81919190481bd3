"""Tokens on Redis: the stored layout and the cases the shared waits tests do not reach.

The behaviour shared with PostgreSQL is tested in ``test_waits.py`` (on both backends).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import dataqueue as dq
from dataqueue.backends.redis import backend as redis_backend
from dataqueue.backends.redis import tokens
from tests.integration.store_state import force_job, make_token_due

_WAITPOINT_FIELDS = {
    "id",
    "jobId",
    "status",
    "output",
    "timeoutAt",
    "createdAt",
    "completedAt",
    "tags",
}


def _prefix(queue: dq.JobQueue) -> str:
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    return prefix


def _hash(client: Any, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}


def _server_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _members(client: Any, key: str) -> set[str]:
    return {m.decode() for m in client.smembers(key)}


def _wait_on_payload_token(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
    return ctx.wait_for_token(payload["token"]).output


def _parked_on(queue: dq.JobQueue, token_id: str) -> tuple[int, dq.Processor]:
    """A job of type ``flow`` waiting on ``token_id``, and the processor that ran it."""
    job_id = queue.add_job("flow", {"token": token_id}, max_attempts=1)
    processor = queue.create_processor({"flow": _wait_on_payload_token})
    assert processor.start() == 1
    return job_id, processor


def test_created_token_is_stored_in_upstreams_layout(redis_queue: dq.JobQueue) -> None:
    client = redis_queue.get_redis_client()
    before = _server_ms(client)
    token = redis_queue.create_token(timeout="1h", tags=["a", "b"])
    after = _server_ms(client)
    p = _prefix(redis_queue)
    stored = _hash(client, f"{p}waitpoint:{token.id}")
    assert set(stored) == _WAITPOINT_FIELDS
    assert {k: stored[k] for k in ("id", "jobId", "status", "output", "completedAt")} == {
        "id": token.id,
        "jobId": "null",
        "status": "waiting",
        "output": "null",
        "completedAt": "null",
    }
    assert json.loads(stored["tags"]) == ["a", "b"]
    created = int(stored["createdAt"])
    assert before <= created <= after  # the Redis server's clock
    assert int(stored["timeoutAt"]) == created + 3_600_000
    assert client.zscore(f"{p}waitpoint_timeout", token.id) == created + 3_600_000


def test_token_without_timeout_is_not_indexed_for_expiry(redis_queue: dq.JobQueue) -> None:
    client = redis_queue.get_redis_client()
    token = redis_queue.create_token()
    p = _prefix(redis_queue)
    stored = _hash(client, f"{p}waitpoint:{token.id}")
    assert (stored["timeoutAt"], stored["tags"]) == ("null", "null")
    assert client.zscore(f"{p}waitpoint_timeout", token.id) is None


def test_duplicate_token_id_is_refused_and_keeps_the_existing_token(
    redis_queue: dq.JobQueue,
) -> None:
    backend = redis_queue._backend
    backend.create_token("wp_same", None, None, ["first"])
    original = redis_queue.get_token("wp_same")
    redis_queue.complete_token("wp_same", {"kept": True})
    with pytest.raises(dq.InvalidJobError, match="already exists"):
        backend.create_token("wp_same", None, None, ["second"])
    again = redis_queue.get_token("wp_same")
    assert original is not None and again is not None
    assert (again.status, again.output, again.tags) == ("completed", {"kept": True}, ["first"])
    assert again.created_at == original.created_at


def test_token_for_an_unknown_job_is_refused(redis_queue: dq.JobQueue) -> None:
    with pytest.raises(dq.InvalidJobError, match="no job 999"):
        redis_queue._backend.create_token("wp_orphan", 999, None, None)
    assert redis_queue.get_token("wp_orphan") is None


def test_token_created_in_a_handler_records_its_job(redis_queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.wait_for_token(ctx.run("t", lambda: ctx.create_token().id))

    job_id = redis_queue.add_job("flow", {})
    redis_queue.create_processor({"flow": flow}).start()
    job = redis_queue.get_job(job_id)
    assert job is not None and job.wait_token_id is not None
    stored = _hash(
        redis_queue.get_redis_client(), f"{_prefix(redis_queue)}waitpoint:{job.wait_token_id}"
    )
    assert stored["jobId"] == str(job_id)


def test_completion_stores_output_text_as_given(redis_queue: dq.JobQueue) -> None:
    # Lua's cjson would turn [] into {} and 2**63 into a float: the text is stored as is.
    client = redis_queue.get_redis_client()
    token = redis_queue.create_token(timeout="1h")
    redis_queue._backend.complete_token(token.id, '{"list": [], "big": 9223372036854775807}')
    p = _prefix(redis_queue)
    stored = _hash(client, f"{p}waitpoint:{token.id}")
    assert stored["output"] == '{"list": [], "big": 9223372036854775807}'
    assert stored["status"] == "completed"
    assert int(stored["completedAt"]) >= int(stored["createdAt"])
    assert client.zscore(f"{p}waitpoint_timeout", token.id) is None  # nothing to expire


def test_completion_resumes_waiters_into_their_ready_queue(redis_queue: dq.JobQueue) -> None:
    client = redis_queue.get_redis_client()
    p = _prefix(redis_queue)
    token = redis_queue.create_token()
    job_id, processor = _parked_on(redis_queue, token.id)
    assert _members(client, f"{p}token_waiters:{token.id}") == {str(job_id)}
    assert client.zscore(f"{p}queue:flow", f"{job_id:020d}") is None
    before = _server_ms(client)
    redis_queue.complete_token(token.id, "go")
    stored = _hash(client, f"{p}job:{job_id}")
    assert (stored["status"], stored["waitTokenId"]) == ("waiting", "null")
    assert int(stored["waitUntil"]) == int(stored["updatedAt"]) >= before
    assert client.zscore(f"{p}queue:flow", f"{job_id:020d}") is not None
    assert not client.exists(f"{p}token_waiters:{token.id}")
    assert str(job_id) in _members(client, f"{p}status:waiting")
    assert processor.start() == 1
    job = redis_queue.get_job(job_id)
    assert job is not None and (job.status, job.attempts, job.output) == ("completed", 1, "go")


def test_completion_before_the_wait_makes_the_job_due_at_once(redis_queue: dq.JobQueue) -> None:
    # W-TOK-2: the token completes between the handler's check and wait_job.
    client = redis_queue.get_redis_client()
    p = _prefix(redis_queue)
    token = redis_queue.create_token()
    job_id = redis_queue.add_job("flow", {"token": token.id}, max_attempts=1)
    force_job(redis_queue, job_id, status="processing", locked_by="w1", attempts=1)
    assert redis_queue.complete_token(token.id, {"late": True}) is True
    step_data = json.dumps({"__wait_0": {"type": "token", "tokenId": token.id, "completed": False}})
    assert redis_queue._backend.wait_job("w1", job_id, None, token.id, step_data)
    assert not client.exists(f"{p}token_waiters:{token.id}")
    assert client.zscore(f"{p}queue:flow", f"{job_id:020d}") is not None
    processor = redis_queue.create_processor({"flow": _wait_on_payload_token})
    assert processor.start() == 1
    job = redis_queue.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.output) == ("completed", 1, {"late": True})


def test_expiry_before_the_wait_makes_the_job_due_at_once(redis_queue: dq.JobQueue) -> None:
    token = redis_queue.create_token(timeout="1h")
    job_id = redis_queue.add_job("flow", {"token": token.id}, max_attempts=1)
    force_job(redis_queue, job_id, status="processing", locked_by="w1", attempts=1)
    make_token_due(redis_queue, token.id)
    assert redis_queue.expire_timed_out_tokens() == 1
    step_data = json.dumps({"__wait_0": {"type": "token", "tokenId": token.id, "completed": False}})
    assert redis_queue._backend.wait_job("w1", job_id, None, token.id, step_data)

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        return ctx.wait_for_token(payload["token"]).error

    assert redis_queue.create_processor({"flow": flow}).start() == 1
    job = redis_queue.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.output) == ("completed", 1, "Token timed out")


def test_expiry_resumes_waiters_and_drops_the_waiter_set(redis_queue: dq.JobQueue) -> None:
    client = redis_queue.get_redis_client()
    p = _prefix(redis_queue)
    token = redis_queue.create_token(timeout="1h")
    job_id, processor = _parked_on(redis_queue, token.id)
    make_token_due(redis_queue, token.id)
    assert redis_queue.expire_timed_out_tokens() == 1
    assert not client.exists(f"{p}token_waiters:{token.id}")
    assert client.zscore(f"{p}waitpoint_timeout", token.id) is None
    assert client.zscore(f"{p}queue:flow", f"{job_id:020d}") is not None
    stored = _hash(client, f"{p}waitpoint:{token.id}")
    assert (stored["status"], stored["completedAt"], stored["output"]) == (
        "timed_out",
        "null",
        "null",
    )
    assert processor.start() == 1


def test_expiry_works_through_due_tokens_in_batches(
    redis_queue: dq.JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "EXPIRE_BATCH", 2)
    client = redis_queue.get_redis_client()
    p = _prefix(redis_queue)
    due = [redis_queue.create_token(timeout="1h").id for _ in range(5)]
    later = redis_queue.create_token(timeout="1h").id
    for token_id in due:
        make_token_due(redis_queue, token_id)
    client.zadd(f"{p}waitpoint_timeout", {"wp_deleted": 0})  # an entry without a hash
    assert redis_queue.expire_timed_out_tokens() == 5
    assert client.zrange(f"{p}waitpoint_timeout", 0, -1) == [later.encode()]
    statuses = [t.status for t in (redis_queue.get_token(i) for i in due) if t]
    assert statuses == ["timed_out"] * 5


def test_waiter_known_only_through_the_tokens_job_is_resumed(redis_queue: dq.JobQueue) -> None:
    # Data written by upstream's Redis backend has no `token_waiters` set: the token's
    # jobId is enough when that job waits on the token.
    client = redis_queue.get_redis_client()
    p = _prefix(redis_queue)
    token = redis_queue.create_token()
    job_id, processor = _parked_on(redis_queue, token.id)
    client.delete(f"{p}token_waiters:{token.id}")
    assert _hash(client, f"{p}waitpoint:{token.id}")["jobId"] == str(job_id)
    redis_queue.complete_token(token.id, "go")
    assert processor.start() == 1
    job = redis_queue.get_job(job_id)
    assert job is not None and (job.status, job.output) == ("completed", "go")


def test_stale_waiters_are_left_alone(redis_queue: dq.JobQueue) -> None:
    # Members of `token_waiters` that were cancelled, or that now wait on another token,
    # are not resumed.
    client = redis_queue.get_redis_client()
    p = _prefix(redis_queue)
    token = redis_queue.create_token()
    other = redis_queue.create_token()
    cancelled, processor = _parked_on(redis_queue, token.id)
    moved = redis_queue.add_job("flow", {"token": other.id})
    assert processor.start() == 1
    redis_queue.cancel_job(cancelled)
    client.sadd(f"{p}token_waiters:{token.id}", str(moved))
    redis_queue.complete_token(token.id)
    assert not client.exists(f"{p}token_waiters:{token.id}")
    job = redis_queue.get_job(moved)
    assert job is not None and (job.status, job.wait_token_id) == ("waiting", other.id)
    assert client.zscore(f"{p}queue:flow", f"{moved:020d}") is None
    assert client.zscore(f"{p}queue:flow", f"{cancelled:020d}") is None
    assert processor.start() == 0


def test_unknown_token_completion_writes_nothing(redis_queue: dq.JobQueue) -> None:
    client = redis_queue.get_redis_client()
    assert redis_queue._backend.complete_token("wp_nope", "null") is None
    assert not client.exists(f"{_prefix(redis_queue)}waitpoint:wp_nope")


def test_calls_retried_after_a_lost_reply_report_the_first_outcome(
    redis_queue: dq.JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first run's reply is lost (CLIENT KILL between script and reply); the retry
    # must not report the token it just created as taken, nor as already completed.
    import redis

    real = redis_backend.retrying
    replies: list[Any] = []

    def lose_first_reply(call: Any) -> Any:
        lost = [False]

        def flaky() -> Any:
            reply = call()
            replies.append(reply)
            if not lost[0]:
                lost[0] = True
                raise redis.ConnectionError("reply lost")
            return reply

        return real(flaky)

    monkeypatch.setattr(redis_backend, "retrying", lose_first_reply)
    token = redis_queue.create_token(timeout="1h")
    assert redis_queue.complete_token(token.id, "once") is True
    other = redis_queue.create_token(timeout="1h")
    monkeypatch.setattr(redis_backend, "retrying", real)
    make_token_due(redis_queue, other.id)
    monkeypatch.setattr(redis_backend, "retrying", lose_first_reply)
    assert redis_queue.expire_timed_out_tokens() == 1
    assert len(replies) == 8  # each of the four calls ran twice
    record = redis_queue.get_token(token.id)
    assert record is not None and (record.status, record.output) == ("completed", "once")
