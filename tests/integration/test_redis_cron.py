"""Cron schedules on Redis: upstream's key layout, no ghost hashes (W-R-2), and the
compare-and-set that makes each occurrence enqueue once across processes (W-CRON-1).

The behaviour shared with PostgreSQL is tested in test_cron.py on both backends.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any

import dataqueue as dq
from dataqueue import cron
from dataqueue.backends.redis import codec
from tests.integration import cron_ticker
from tests.integration.store_state import make_cron_due

UTC = dt.timezone.utc


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _hash(client: Any, key: str) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in client.hgetall(key).items()}


def _members(client: Any, key: str) -> set[str]:
    return {_text(v) for v in client.smembers(key)}


def _due(client: Any, prefix: str) -> dict[str, int]:
    return {_text(m): int(s) for m, s in client.zrange(f"{prefix}cron_due", 0, -1, withscores=True)}


def _schedule(queue: dq.JobQueue, schedule_id: int) -> dq.CronScheduleRecord:
    record = queue.get_cron_job(schedule_id)
    assert record is not None
    return record


def test_a_schedule_is_stored_in_upstreams_key_layout(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    p = redis_prefix
    schedule_id = redis_queue.add_cron_job(
        "nightly", "0 3 * * *", "report", {"a": []}, tags=["x"], timeout_ms=50
    )
    record = _schedule(redis_queue, schedule_id)
    assert record.next_run_at is not None
    h = _hash(redis_client, f"{p}cron:{schedule_id}")
    assert h == {
        "id": str(schedule_id),
        "scheduleName": "nightly",
        "cronExpression": "0 3 * * *",
        "jobType": "report",
        "payload": '{"a":[]}',
        "maxAttempts": "3",
        "priority": "0",
        "timeoutMs": "50",
        "forceKillOnTimeout": "false",
        "tags": '["x"]',
        "timezone": "UTC",
        "allowOverlap": "false",
        "status": "active",
        "nextRunAt": str(codec.to_ms(record.next_run_at)),
        "createdAt": h["createdAt"],
        "updatedAt": h["createdAt"],
        "retryDelay": "null",
        "retryBackoff": "null",
        "retryDelayMax": "null",
        "deadLetterJobType": "null",
    }
    assert _text(redis_client.get(f"{p}cron_id_seq")) == str(schedule_id)
    assert _text(redis_client.get(f"{p}cron_name:nightly")) == str(schedule_id)
    assert _members(redis_client, f"{p}crons") == {str(schedule_id)}
    assert _members(redis_client, f"{p}cron_status:active") == {str(schedule_id)}
    assert _due(redis_client, p) == {str(schedule_id): codec.to_ms(record.next_run_at)}


def test_pause_resume_and_remove_keep_the_indexes_right(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    p = redis_prefix
    schedule_id = redis_queue.add_cron_job("s", "* * * * *", "t", {})
    next_ms = codec.to_ms(_schedule(redis_queue, schedule_id).next_run_at or dt.datetime.now(UTC))
    assert redis_queue.pause_cron_job(schedule_id)
    assert _due(redis_client, p) == {}  # only active schedules are due
    assert _members(redis_client, f"{p}cron_status:active") == set()
    assert _members(redis_client, f"{p}cron_status:paused") == {str(schedule_id)}
    assert redis_queue.resume_cron_job(schedule_id)
    assert _due(redis_client, p) == {str(schedule_id): next_ms}
    assert _members(redis_client, f"{p}cron_status:paused") == set()
    assert redis_queue.edit_cron_job(schedule_id, cron_expression="0 0 1 1 *")
    new_next = _schedule(redis_queue, schedule_id).next_run_at
    assert new_next is not None
    assert _due(redis_client, p) == {str(schedule_id): codec.to_ms(new_next)}
    assert redis_queue.remove_cron_job(schedule_id)
    leftovers = {_text(k) for k in redis_client.scan_iter(match="*cron*")} & {
        f"{p}cron:{schedule_id}",
        f"{p}cron_name:s",
        f"{p}crons",
        f"{p}cron_status:active",
        f"{p}cron_status:paused",
        f"{p}cron_due",
    }
    assert leftovers == set()


def test_changes_to_an_unknown_schedule_write_nothing(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    # W-R-2: upstream's pause HSET the status of any id, creating a ghost hash.
    assert redis_queue.pause_cron_job(77) is False
    assert redis_queue.resume_cron_job(77) is False
    assert redis_queue.edit_cron_job(77, priority=2) is False
    assert redis_queue.remove_cron_job(77) is False
    pattern = redis_prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    # Nothing but the reply a call keeps 60 s for its retry.
    assert [k for k in redis_client.scan_iter(match=pattern) if b":call:" not in k] == []


def test_an_edit_between_read_and_enqueue_is_never_half_applied(
    redis_queue: dq.JobQueue,
) -> None:
    # The edit keeps nextRunAt, so only the field check of the compare-and-set sees it:
    # the pass enqueues nothing rather than a job with the old payload.
    schedule_id = redis_queue.add_cron_job("s", "* * * * *", "t", {"v": 1})
    make_cron_due(redis_queue, schedule_id)

    def edit_then_next_run(expression: str, zone: str, now: dt.datetime) -> dt.datetime | None:
        redis_queue.edit_cron_job(schedule_id, payload={"v": 2})
        return cron.next_run(expression, zone, now)

    assert redis_queue._backend.enqueue_due_cron_jobs(edit_then_next_run) == 0
    assert redis_queue.get_all_jobs() == []
    assert redis_queue.enqueue_due_cron_jobs() == 1
    [job] = redis_queue.get_all_jobs()
    assert job.payload == {"v": 2}


def test_a_pause_or_remove_between_read_and_enqueue_wins(redis_queue: dq.JobQueue) -> None:
    paused = redis_queue.add_cron_job("paused", "* * * * *", "t", {})
    removed = redis_queue.add_cron_job("removed", "* * * * *", "t", {})
    make_cron_due(redis_queue, paused)
    make_cron_due(redis_queue, removed)

    def change_then_next_run(expression: str, zone: str, now: dt.datetime) -> dt.datetime | None:
        redis_queue.pause_cron_job(paused)
        redis_queue.remove_cron_job(removed)
        return cron.next_run(expression, zone, now)

    assert redis_queue._backend.enqueue_due_cron_jobs(change_then_next_run) == 0
    assert redis_queue.get_all_jobs() == []
    assert redis_queue.get_cron_job(removed) is None
    record = _schedule(redis_queue, paused)
    assert record.status == "paused" and record.last_enqueued_at is None


def test_processes_ticking_the_same_due_schedules_enqueue_each_occurrence_once(
    redis_queue: dq.JobQueue, redis_client: Any, redis_url: str, redis_prefix: str
) -> None:
    # W-CRON-1: four processes tick while ten schedules become due at the same instant,
    # round after round.
    ids = [
        redis_queue.add_cron_job(f"s{n}", "0 0 1 1 *", f"t{n}", {}, allow_overlap=True)
        for n in range(10)
    ]
    processes = cron_ticker.start([redis_url, redis_prefix], seconds=6, count=4)
    rounds = 0
    try:
        time.sleep(1.5)  # let the processes start ticking
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            now_s, now_us = redis_client.time()
            due_ms = int(now_s) * 1000 + int(now_us) // 1000 - 1000
            pipe = redis_client.pipeline(transaction=True)  # all due at once
            for schedule_id in ids:
                pipe.hset(f"{redis_prefix}cron:{schedule_id}", "nextRunAt", due_ms)
                pipe.zadd(f"{redis_prefix}cron_due", {str(schedule_id): due_ms})
            pipe.execute()
            rounds += 1
            while redis_client.zcount(f"{redis_prefix}cron_due", "-inf", due_ms):
                time.sleep(0.002)
    finally:
        assert [process.wait(30) for process in processes] == [0] * 4
    assert rounds > 10
    counts = Counter(job.job_type for job in redis_queue.get_all_jobs(limit=100_000))
    assert counts == {f"t{n}": rounds for n in range(10)}
    for schedule_id in ids:
        record = _schedule(redis_queue, schedule_id)
        assert record.next_run_at is not None and record.next_run_at > dt.datetime.now(UTC)
        assert record.last_job_id is not None


def test_a_cron_job_wakes_listening_processors_of_its_type(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    schedule_id = redis_queue.add_cron_job("s", "* * * * *", "report", {})
    make_cron_due(redis_queue, schedule_id)
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"{redis_prefix}wakeup")
    try:
        assert listener.get_message(timeout=1) is None
        assert redis_queue.enqueue_due_cron_jobs() == 1
        message = listener.get_message(timeout=2)
        assert message is not None and _text(message["data"]) == "report"
    finally:
        listener.close()
