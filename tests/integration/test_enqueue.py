"""add_job / add_jobs: defaults, options, events, idempotency, batches, hooks.

Tests taking ``queue`` run on every backend; ``pg_queue`` tests are PostgreSQL's own.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.backends.postgres.enqueue import PIPELINE_CHUNK
from tests.conftest import StatementCounter, run_sql

UTC = dt.timezone.utc

pytestmark = pytest.mark.all_backends


def _count_jobs(queue: dq.JobQueue) -> int:
    return len(queue.get_all_jobs(limit=10_000))


def test_add_job_stores_defaults(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("email", {"to": "a@x.com"})
    job = queue.get_job(job_id)
    assert job is not None
    assert (job.job_type, job.payload, job.status) == ("email", {"to": "a@x.com"}, "pending")
    assert (job.attempts, job.max_attempts, job.priority) == (0, 3, 0)
    assert job.tags is None and job.idempotency_key is None and job.timeout_ms is None
    assert job.force_kill_on_timeout is False
    assert job.run_at.tzinfo is not None and job.run_at == job.created_at
    assert job.step_data == {} and job.error_history == []


def test_add_job_stores_every_option(queue: dq.JobQueue) -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    prerequisite = queue.add_job("first", {})
    job_id = queue.add_job(
        "email",
        [1, "two"],
        max_attempts=5,
        priority=7,
        run_at=when,
        timeout_ms=1500,
        force_kill_on_timeout=True,
        tags=["b", "a", "b"],
        idempotency_key="key-1",
        retry_delay=4,
        retry_backoff=False,
        retry_delay_max=60,
        dead_letter_job_type="email_dlq",
        group=dq.JobGroup("tenant-1", tier="gold"),
        depends_on={"job_ids": [prerequisite, prerequisite], "tags": ["x"]},
    )
    job = queue.get_job(job_id)
    assert job is not None
    assert job.payload == [1, "two"]
    assert (job.max_attempts, job.priority, job.run_at) == (5, 7, when)
    assert (job.timeout_ms, job.force_kill_on_timeout) == (1500, True)
    assert job.tags == ["b", "a", "b"]
    assert job.idempotency_key == "key-1"
    assert (job.retry_delay, job.retry_backoff, job.retry_delay_max) == (4, False, 60)
    assert job.dead_letter_job_type == "email_dlq"
    assert (job.group_id, job.group_tier) == ("tenant-1", "gold")
    assert (job.depends_on_job_ids, job.depends_on_tags) == ([prerequisite], ["x"])


def test_add_job_serialises_attrs_and_dataclass_payloads(queue: dq.JobQueue) -> None:
    import dataclasses

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    job_id = queue.add_job("p", {"point": Point(1, 2), "group": dq.JobGroup("g")})
    job = queue.get_job(job_id)
    assert job is not None
    assert job.payload == {"point": {"x": 1, "y": 2}, "group": {"id": "g", "tier": None}}


def test_added_event_metadata_matches_upstream_shape(queue: dq.JobQueue) -> None:
    plain = queue.add_job("a", {"n": 1})
    keyed = queue.add_job("b", {"n": 2}, tags=["t"], idempotency_key="k")
    dependent = queue.add_job("c", 3, depends_on=dq.DependsOn(job_ids=[plain]))
    [event] = queue.get_job_events(plain)
    assert event.event_type == "added"
    assert event.metadata == {"jobType": "a", "payload": {"n": 1}}
    [event] = queue.get_job_events(keyed)
    assert event.metadata == {
        "jobType": "b",
        "payload": {"n": 2},
        "tags": ["t"],
        "idempotencyKey": "k",
    }
    [event] = queue.get_job_events(dependent)
    assert event.metadata == {"jobType": "c", "payload": 3, "dependsOn": {"jobIds": [plain]}}


def test_idempotency_key_returns_existing_id(queue: dq.JobQueue) -> None:
    first = queue.add_job("email", {"v": 1}, idempotency_key="welcome-42")
    second = queue.add_job("other", {"v": 2}, idempotency_key="welcome-42", priority=9)
    assert second == first
    job = queue.get_job(first)
    assert job is not None and (job.job_type, job.payload, job.priority) == ("email", {"v": 1}, 0)
    assert len(queue.get_job_events(first)) == 1
    assert _count_jobs(queue) == 1


def test_idempotency_key_is_unique_under_concurrent_adds(queue: dq.JobQueue) -> None:
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def add() -> None:
        try:
            barrier.wait()
            results.append(queue.add_job("race", {}, idempotency_key="same"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 8 and len(set(results)) == 1
    assert _count_jobs(queue) == 1
    assert len(queue.get_job_events(results[0])) == 1


def test_add_jobs_returns_increasing_ids_in_input_order(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([dq.JobOptions(f"t{i}", {"i": i}) for i in range(3)])
    assert ids == sorted(ids) and len(set(ids)) == 3
    for i, job_id in enumerate(ids):
        job = queue.get_job(job_id)
        assert job is not None and job.payload == {"i": i}


def test_add_jobs_accepts_mappings_and_job_options(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs(
        [dq.JobOptions("a", {}, priority=2), {"job_type": "b", "payload": {}, "tags": ["x"]}]
    )
    first, second = (queue.get_job(i) for i in ids)
    assert first is not None and first.priority == 2
    assert second is not None and second.tags == ["x"]


def test_add_jobs_with_empty_list_does_not_touch_the_store() -> None:
    # The engine points at a port where nothing listens: any database access would fail.
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    queue = dq.init_job_queue(engine=engine)
    seen: list[Any] = []
    queue.on("job:added", seen.append)
    assert queue.add_jobs([]) == []
    assert seen == []


def test_add_jobs_is_one_statement_for_rows_and_events(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # The largest batch that is not pipelined (larger ones: test_pipelined_enqueue.py).
    count = PIPELINE_CHUNK
    with StatementCounter() as counter:
        ids = pg_queue.add_jobs([dq.JobOptions("bulk", {"i": i}, tags=["t"]) for i in range(count)])
    assert len(counter.statements) == 1
    assert _count_jobs(pg_queue) == count
    events = run_sql(engine, "SELECT count(*) FROM job_events WHERE event_type = 'added'")
    assert events[0][0] == count
    assert len(ids) == count


def test_add_jobs_resolves_repeated_key_in_batch_to_one_job(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs(
        [
            {"job_type": "a", "payload": 1, "idempotency_key": "dup"},
            {"job_type": "b", "payload": 2},
            {"job_type": "c", "payload": 3, "idempotency_key": "dup"},
        ]
    )
    assert ids[0] == ids[2] != ids[1]
    assert _count_jobs(queue) == 2
    assert len(queue.get_job_events(ids[0])) == 1


def test_add_jobs_writes_no_event_for_keys_that_already_exist(queue: dq.JobQueue) -> None:
    existing = queue.add_job("a", {}, idempotency_key="k")
    ids = queue.add_jobs(
        [{"job_type": "a", "payload": {}, "idempotency_key": "k"}, {"job_type": "b", "payload": {}}]
    )
    assert ids[0] == existing
    assert len(queue.get_job_events(existing)) == 1
    assert len(queue.get_job_events(ids[1])) == 1


def test_add_jobs_resolves_batch_dep_ref_placeholders(queue: dq.JobQueue) -> None:
    outside = queue.add_job("outside", {})
    ids = queue.add_jobs(
        [
            {"job_type": "a", "payload": {}},
            {
                "job_type": "b",
                "payload": {},
                "depends_on": {"job_ids": [dq.batch_dep_ref(0), outside]},
            },
            {"job_type": "c", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(1)]}},
        ]
    )
    second, third = queue.get_job(ids[1]), queue.get_job(ids[2])
    assert second is not None and second.depends_on_job_ids == [ids[0], outside]
    assert third is not None and third.depends_on_job_ids == [ids[1]]
    [event] = queue.get_job_events(ids[1])
    assert event.metadata is not None
    assert event.metadata["dependsOn"] == {"jobIds": [ids[0], outside]}


def test_placeholder_to_a_repeated_key_resolves_to_the_first_job(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs(
        [
            {"job_type": "a", "payload": {}, "idempotency_key": "same"},
            {"job_type": "a", "payload": {}, "idempotency_key": "same"},
            {"job_type": "b", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(1)]}},
        ]
    )
    job = queue.get_job(ids[2])
    assert job is not None and job.depends_on_job_ids == [ids[0]]


def test_placeholder_to_a_later_job_is_rejected(queue: dq.JobQueue) -> None:
    with pytest.raises(dq.JobDependencyError, match="-2"):
        queue.add_jobs(
            [
                {"job_type": "a", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(1)]}},
                {"job_type": "b", "payload": {}},
            ]
        )
    assert _count_jobs(queue) == 0


def test_placeholder_in_add_job_is_rejected(queue: dq.JobQueue) -> None:
    with pytest.raises(dq.JobDependencyError, match="only supported in add_jobs"):
        queue.add_job("a", {}, depends_on={"job_ids": [-1]})
    assert _count_jobs(queue) == 0


def test_unknown_prerequisite_is_rejected_and_nothing_written(queue: dq.JobQueue) -> None:
    existing = queue.add_job("a", {})
    with pytest.raises(dq.JobDependencyError, match="do not exist \\(9998, 9999\\)") as info:
        queue.add_jobs(
            [
                {"job_type": "b", "payload": {}},
                {"job_type": "c", "payload": {}, "depends_on": {"job_ids": [existing, 9999, 9998]}},
            ]
        )
    assert info.value.job_ids == [9998, 9999]
    assert _count_jobs(queue) == 1


def test_job_added_hook_fires_per_job_written(queue: dq.JobQueue) -> None:
    seen: list[dict[str, Any]] = []
    queue.on("job:added", seen.append)
    first = queue.add_job("a", {}, idempotency_key="k")
    assert queue.add_job("a", {}, idempotency_key="k") == first  # a duplicate: no hook
    ids = queue.add_jobs([{"job_type": "b", "payload": {}}, {"job_type": "c", "payload": {}}])
    assert seen == [
        {"job_id": first, "job_type": "a"},
        {"job_id": ids[0], "job_type": "b"},
        {"job_id": ids[1], "job_type": "c"},
    ]
