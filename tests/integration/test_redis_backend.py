"""Redis-specific behaviour: configuration, key layout, ordering, atomicity, isolation.

Shared behaviour (enqueue, reads, management, hooks) runs on both backends in the other
modules; these tests look at what only Redis has: its keys, its scripts, its client.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from typing import Any

import pytest
import redis

import dataqueue as dq
from dataqueue.validation import INT4_MAX, INT4_MIN
from tests.conftest import delete_prefix
from tests.integration.store_state import age_events, force_job

UTC = dt.timezone.utc


def _keys(client: Any, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=prefix + "*", count=1000)}


def _queue_ids(client: Any, prefix: str) -> list[int]:
    """Ids in the ready queues of every job type, in claim order."""
    entries: list[tuple[float, bytes]] = []
    for job_type in client.smembers(prefix + "queue_types"):
        key = prefix + "queue:" + job_type.decode()
        entries += [(score, member) for member, score in client.zrange(key, 0, -1, withscores=True)]
    return [int(member) for _, member in sorted(entries)]


# -- configuration ----------------------------------------------------------------------


def test_callers_client_is_never_closed(redis_client: Any, redis_prefix: str) -> None:
    with dq.init_job_queue(
        backend="redis", redis_client=redis_client, key_prefix=redis_prefix
    ) as queue:
        assert queue.get_redis_client() is redis_client
        queue.add_job("t", {})
    assert redis_client.ping() is True


def test_queue_built_from_url_closes_its_client(
    redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    name = "dq-test-" + redis_prefix.strip("{}:")
    separator = "&" if "?" in redis_url else "?"
    queue = dq.init_job_queue(
        redis_url=f"{redis_url}{separator}client_name={name}", key_prefix=redis_prefix
    )
    assert isinstance(queue.get_redis_client(), redis.Redis)
    job_id = queue.add_job("t", {})
    assert queue.get_job(job_id) is not None

    def connections() -> int:
        return sum(1 for c in redis_client.client_list() if c.get("name") == name)

    assert connections() == 1
    queue.close()
    assert connections() == 0


def test_redis_config_builds_the_client_and_takes_the_prefix(
    redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    kwargs = redis_client.connection_pool.connection_kwargs
    config: dict[str, Any] = {"key_prefix": redis_prefix, "db": kwargs.get("db", 0)}
    if "host" in kwargs:  # a TCP server: host and port
        config.update(host=kwargs["host"], port=kwargs["port"])
    else:  # the embedded server listens on a unix socket, which only a URL can name
        config.update(url=redis_url)
    with dq.init_job_queue(backend="redis", redis_config=config, key_prefix="ignored:") as queue:
        job_id = queue.add_job("t", {})
    assert redis_client.exists(f"{redis_prefix}job:{job_id}") == 1
    assert not _keys(redis_client, "ignored:")


def test_redis_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    for name in ("DATAQUEUE_DATABASE_URL", "PG_DATAQUEUE_DATABASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATAQUEUE_REDIS_URL", redis_url)
    with dq.init_job_queue(key_prefix=redis_prefix) as queue:
        job_id = queue.add_job("t", {})
        with pytest.raises(dq.UnsupportedOperationError, match="PostgreSQL"):
            queue.get_engine()
    assert redis_client.exists(f"{redis_prefix}job:{job_id}") == 1


def test_db_option_is_unsupported_and_writes_nothing(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    with pytest.raises(dq.UnsupportedOperationError, match="db option is not supported"):
        redis_queue.add_job("t", {}, db=object())
    with pytest.raises(dq.UnsupportedOperationError, match="only available with PostgreSQL"):
        redis_queue.add_jobs([{"job_type": "t", "payload": {}}], db=object())
    assert not _keys(redis_client, redis_prefix)


def test_add_jobs_with_empty_list_does_not_touch_redis() -> None:
    queue = dq.init_job_queue(redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    assert queue.add_jobs([]) == []
    queue.close()


# -- key layout and encoding ------------------------------------------------------------


def test_job_hash_and_events_use_upstreams_encoding(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    job_id = redis_queue.add_job("email", {"to": "a"}, tags=["x"], idempotency_key="k")
    raw = {
        k.decode(): v.decode()
        for k, v in redis_client.hgetall(f"{redis_prefix}job:{job_id}").items()
    }
    assert raw["jobType"] == "email" and json.loads(raw["payload"]) == {"to": "a"}
    assert raw["status"] == "pending" and raw["attempts"] == "0" and raw["maxAttempts"] == "3"
    assert raw["errorHistory"] == "[]" and raw["tags"] == '["x"]'
    # NULL fields are left out: a missing field reads as NULL (upstream's rule too).
    assert "lockedBy" not in raw and "groupId" not in raw and "timeoutMs" not in raw
    record = redis_queue.get_job(job_id)
    assert record is not None and record.locked_by is None and record.group_id is None
    assert raw["createdAt"].isdigit() and raw["runAt"] == raw["createdAt"]
    assert raw["forceKillOnTimeout"] == "false" and raw["idempotencyKey"] == "k"
    assert redis_client.get(f"{redis_prefix}idempotency:k") == str(job_id).encode()
    assert redis_client.smembers(f"{redis_prefix}tag:x") == {str(job_id).encode()}
    assert redis_client.sismember(f"{redis_prefix}status:pending", job_id)
    assert redis_client.sismember(f"{redis_prefix}type:email", job_id)
    [entry] = redis_client.lrange(f"{redis_prefix}events:{job_id}", 0, -1)
    event = json.loads(entry)
    assert set(event) == {"id", "jobId", "eventType", "createdAt", "metadata"}
    assert (event["jobId"], event["eventType"]) == (job_id, "added")


def test_every_key_has_the_prefix_and_one_cluster_slot(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    from redis.crc import key_slot

    first = redis_queue.add_job("a", {}, tags=["t1"], idempotency_key="k1")
    redis_queue.add_jobs(
        [
            {"job_type": "b", "payload": 1, "depends_on": {"job_ids": [first], "tags": ["t1"]}},
            {"job_type": "c", "payload": 2, "run_at": dt.datetime(2040, 1, 1, tzinfo=UTC)},
        ]
    )
    redis_queue.edit_all_pending_jobs({"job_type": "b"}, priority=3, tags=["t2"])
    redis_queue.cancel_job(first)
    everything = {k.decode() for k in redis_client.scan_iter(count=1000)}
    ours = _keys(redis_client, redis_prefix)
    assert ours and all(k.startswith(redis_prefix) for k in ours)
    assert len({key_slot(k.encode()) for k in ours}) == 1
    assert ours <= everything


def test_two_prefixes_on_one_redis_do_not_see_each_other(
    redis_client: Any, redis_prefix: str
) -> None:
    other_prefix = redis_prefix.replace("}", "-other}")
    try:
        one = dq.init_job_queue(backend="redis", redis_client=redis_client, key_prefix=redis_prefix)
        two = dq.init_job_queue(backend="redis", redis_client=redis_client, key_prefix=other_prefix)
        a = one.add_job("t", {"q": 1}, idempotency_key="same", tags=["x"])
        b = two.add_job("t", {"q": 2}, idempotency_key="same", tags=["x"])
        assert a == b == 1  # each prefix has its own id sequence
        assert [j.payload for j in one.get_all_jobs()] == [{"q": 1}]
        assert [j.payload for j in two.get_jobs_by_tags(["x"])] == [{"q": 2}]
        assert one.cancel_all_upcoming_jobs() == 1
        job = two.get_job(b)
        assert job is not None and job.status == "pending"
    finally:
        delete_prefix(redis_client, other_prefix)


# -- ordering (W-R-1) -------------------------------------------------------------------


def test_queue_orders_by_priority_then_id_at_the_int4_extremes(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    priorities = [0, INT4_MAX, INT4_MIN, INT4_MAX - 1, INT4_MIN + 1, -1, 1, INT4_MAX, INT4_MIN, 0]
    ids = [redis_queue.add_job("t", {}, priority=p) for p in priorities]
    expected = [
        i
        for _, i in sorted(zip(priorities, ids, strict=True), key=lambda pair: (-pair[0], pair[1]))
    ]
    assert _queue_ids(redis_client, redis_prefix) == expected


def test_thousand_jobs_in_one_millisecond_keep_their_order(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    rng = random.Random(7)
    priorities = [rng.choice([INT4_MIN, -5, 0, 5, INT4_MAX]) for _ in range(1000)]
    ids = redis_queue.add_jobs(
        [{"job_type": "t", "payload": n, "priority": p} for n, p in enumerate(priorities)]
    )
    assert len({j.created_at for j in redis_queue.get_all_jobs(limit=1000)}) == 1
    expected = [
        i
        for _, i in sorted(zip(priorities, ids, strict=True), key=lambda pair: (-pair[0], pair[1]))
    ]
    assert _queue_ids(redis_client, redis_prefix) == expected
    newest_first = list(reversed(ids))
    assert [j.id for j in redis_queue.get_all_jobs(limit=1000)] == newest_first
    for offset in (0, 1, 9, 10, 499, 995):
        page = redis_queue.get_all_jobs(limit=10, offset=offset)
        assert [j.id for j in page] == newest_first[offset : offset + 10]


def test_lists_across_milliseconds_are_newest_first(redis_queue: dq.JobQueue) -> None:
    ids: list[int] = []
    for n in range(30):
        ids += redis_queue.add_jobs(
            [{"job_type": "t", "payload": n}, {"job_type": "t", "payload": n}]
        )
    newest_first = list(reversed(ids))
    pages = [redis_queue.get_all_jobs(limit=7, offset=o) for o in range(0, 60, 7)]
    assert [j.id for page in pages for j in page] == newest_first
    assert [j.id for j in redis_queue.get_jobs({"job_type": "t"}, limit=60)] == newest_first


# -- atomicity and idempotency ----------------------------------------------------------


def test_batch_with_an_invalid_prerequisite_writes_nothing(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    existing = redis_queue.add_job("a", {}, idempotency_key="kept")
    before = {k: redis_client.dump(k) for k in _keys(redis_client, redis_prefix)}
    with pytest.raises(dq.JobDependencyError, match="do not exist \\(777\\)"):
        redis_queue.add_jobs(
            [
                {"job_type": "b", "payload": {}, "idempotency_key": "new", "tags": ["x"]},
                {"job_type": "c", "payload": {}, "depends_on": {"job_ids": [existing]}},
                {"job_type": "d", "payload": {}, "depends_on": {"job_ids": [777]}},
            ]
        )
    after = {k: redis_client.dump(k) for k in _keys(redis_client, redis_prefix)}
    assert after == before


def test_concurrent_batches_with_shared_keys_create_each_job_once(
    redis_queue: dq.JobQueue,
) -> None:
    keys = [f"k{n}" for n in range(50)]
    barrier = threading.Barrier(8)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def add(seed: int) -> None:
        order = keys[:]
        random.Random(seed).shuffle(order)
        try:
            barrier.wait()
            ids = redis_queue.add_jobs(
                [{"job_type": "t", "payload": k, "idempotency_key": k} for k in order]
            )
            results.append(dict(zip(order, ids, strict=True)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 8
    assert all(r == results[0] for r in results)
    jobs = redis_queue.get_all_jobs(limit=1000)
    assert len(jobs) == 50
    assert all(len(redis_queue.get_job_events(j.id)) == 1 for j in jobs)
    assert {j.idempotency_key: j.id for j in jobs} == results[0]


# -- management specifics ---------------------------------------------------------------


def test_edit_moves_jobs_between_queue_and_delayed_at_once(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    # W-R-2: upstream left the job where it was until the old run_at.
    later = dt.datetime(2040, 1, 1, tzinfo=UTC)
    job_id = redis_queue.add_job("t", {}, run_at=later)
    assert redis_client.zscore(redis_prefix + "delayed", job_id) is not None
    assert _queue_ids(redis_client, redis_prefix) == []
    redis_queue.edit_job(job_id, run_at=None)
    assert _queue_ids(redis_client, redis_prefix) == [job_id]
    assert redis_client.zscore(redis_prefix + "delayed", job_id) is None
    other = redis_queue.add_job("t", {})
    redis_queue.edit_job(job_id, priority=INT4_MIN)
    assert _queue_ids(redis_client, redis_prefix) == [other, job_id]
    assert redis_queue.edit_all_pending_jobs({"priority": INT4_MIN}, run_at=later) == 1
    assert _queue_ids(redis_client, redis_prefix) == [other]
    assert redis_client.zscore(redis_prefix + "delayed", job_id) == later.timestamp() * 1000


def test_retry_and_cancel_keep_the_indexes_consistent(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    job_id = redis_queue.add_job("t", {})
    force_job(redis_queue, job_id, status="failed", attempts=1)
    assert redis_queue.retry_job(job_id)
    assert _queue_ids(redis_client, redis_prefix) == [job_id]
    assert redis_client.smembers(redis_prefix + "status:failed") == set()
    assert redis_queue.cancel_job(job_id)
    assert _queue_ids(redis_client, redis_prefix) == []
    assert redis_client.smembers(redis_prefix + "status:pending") == set()
    assert redis_client.smembers(redis_prefix + "status:cancelled") == {str(job_id).encode()}


def test_cleanup_of_jobs_leaves_no_keys_or_memberships_behind(
    redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str
) -> None:
    # W-UB-7: upstream left dep:* members and other index entries forever.
    before = _keys(redis_client, redis_prefix)
    prerequisite = redis_queue.add_job("a", {}, tags=["x", "y"], idempotency_key="k")
    job_id = redis_queue.add_job(
        "b", {}, tags=["x"], depends_on={"job_ids": [prerequisite], "tags": ["z"]}
    )
    for n in (prerequisite, job_id):
        force_job(redis_queue, n, status="completed", updated_days_ago=40)
    assert redis_queue.cleanup_old_jobs(30) == 2
    # Left: counters, the set of job types, and the replies kept 60 s for retries.
    left = {k for k in _keys(redis_client, redis_prefix) - before if ":call:" not in k}
    assert left == {redis_prefix + k for k in ("id_seq", "event_id_seq", "queue_types")}
    # The key is free again.
    assert redis_queue.add_job("a", {}, idempotency_key="k") not in (prerequisite, job_id)


def test_event_cleanup_trims_only_old_events(redis_queue: dq.JobQueue) -> None:
    job_id = redis_queue.add_job("t", {})
    redis_queue.edit_job(job_id, priority=1)
    age_events(redis_queue, [job_id], days=10)
    redis_queue.edit_job(job_id, priority=2)  # appended after the old ones
    assert redis_queue.cleanup_old_job_events(days_to_keep=7, batch_size=1) == 2
    events = redis_queue.get_job_events(job_id)
    assert [(e.event_type, e.metadata) for e in events] == [("edited", {"priority": 2})]


def test_status_and_type_pages_agree_with_the_full_list(redis_queue: dq.JobQueue) -> None:
    # A common status is paged by walking `P all`, a rare one through its set; both
    # must give the order of the full list, across jobs created in one millisecond.
    ids: list[int] = []
    for _ in range(6):
        ids += redis_queue.add_jobs(
            [{"job_type": "ab"[k % 2], "payload": k, "tags": ["x"]} for k in range(50)]
        )
    for job_id in ids[::15]:
        redis_queue.cancel_job(job_id)
    everything = redis_queue.get_all_jobs(limit=1000)
    backend: Any = redis_queue._backend
    calls: list[str] = []
    original = backend._scripts["page_scan"]
    backend._scripts["page_scan"] = lambda **kw: calls.append("scan") or original(**kw)
    for status in ("pending", "cancelled"):
        expected = [j.id for j in everything if j.status == status]
        for offset in (0, 3, 49, 100):
            page = redis_queue.get_jobs_by_status(status, limit=10, offset=offset)
            assert [j.id for j in page] == expected[offset : offset + 10]
    expected = [j.id for j in everything if j.job_type == "a"]
    page = redis_queue.get_jobs({"job_type": "a", "tags": {"values": ["x"]}}, limit=20)
    assert [j.id for j in page] == expected[:20]
    assert "scan" in calls


def test_client_that_decodes_responses_works_too(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        queue = dq.init_job_queue(backend="redis", redis_client=client, key_prefix=redis_prefix)
        first = queue.add_job("t", {"a": 1}, tags=["x"], idempotency_key="k")
        assert queue.add_jobs([{"job_type": "t", "payload": 2, "idempotency_key": "k"}]) == [first]
        assert [j.id for j in queue.get_all_jobs()] == [first]
        assert [j.id for j in queue.get_jobs_by_tags(["x"], mode="exact")] == [first]
        assert queue.cancel_job(first)
        assert [e.event_type for e in queue.get_job_events(first)] == ["added", "cancelled"]
        force_job(queue, first, status="completed", updated_days_ago=40)
        assert queue.cleanup_old_job_events(days_to_keep=30) == 0
        assert queue.cleanup_old_jobs(days_to_keep=30) == 1
    finally:
        client.close()


def test_queue_keeps_working_after_reset_after_fork(redis_queue: dq.JobQueue) -> None:
    job_id = redis_queue.add_job("t", {})
    redis_queue.reset_after_fork()
    assert redis_queue.get_job(job_id) is not None


def test_huge_limits_and_offsets_are_accepted(redis_queue: dq.JobQueue) -> None:
    from dataqueue.validation import INT8_MAX

    job_id = redis_queue.add_job("t", {}, tags=["x"])
    for filters in (None, {"job_type": "t"}, {"priority": 0}):
        assert [j.id for j in redis_queue.get_jobs(filters, limit=INT8_MAX)] == [job_id]
        assert redis_queue.get_jobs(filters, limit=INT8_MAX, offset=INT8_MAX) == []
    assert len(redis_queue.get_jobs_by_status("pending", limit=INT8_MAX, offset=0)) == 1


def test_scripts_are_reloaded_after_a_script_flush(
    redis_queue: dq.JobQueue, redis_client: Any
) -> None:
    first = redis_queue.add_job("t", {})
    redis_client.script_flush()  # as after a server restart: EVALSHA finds nothing
    second = redis_queue.add_job("t", {})
    assert second == first + 1
    assert [j.id for j in redis_queue.get_all_jobs()] == [second, first]


def test_a_job_type_named_null_is_a_name_not_null(redis_queue: dq.JobQueue) -> None:
    # The hash encodes NULL as the text "null"; a required text field keeps it as text.
    job_id = redis_queue.add_job("null", {})
    job = redis_queue.get_job(job_id)
    assert job is not None and job.job_type == "null"
    assert redis_queue.create_processor({"null": lambda p: "ran"}).start() == 1
    job = redis_queue.get_job(job_id)
    assert job is not None and (job.status, job.output) == ("completed", "ran")
