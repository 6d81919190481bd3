"""Job dependencies: eligibility in the claim, cascades, validation.

Tests taking ``queue`` run on every backend; ``pg_queue`` tests need the processor,
which the Redis backend does not have yet.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql

pytestmark = pytest.mark.all_backends


def _status(queue: dq.JobQueue, job_id: int) -> str:
    job = queue.get_job(job_id)
    assert job is not None
    return job.status.value


def _drain(processor: dq.Processor) -> None:
    while processor.start():
        pass


def _fail(payload: Any) -> None:
    raise RuntimeError("nope")


def test_dependent_runs_only_after_its_prerequisite_completed(pg_queue: dq.JobQueue) -> None:
    order: list[str] = []
    first, second = pg_queue.add_jobs(
        [
            {"job_type": "t", "payload": "first"},
            {
                "job_type": "t",
                "payload": "second",
                "depends_on": {"job_ids": [dq.batch_dep_ref(0)]},
                "priority": 9,
            },
        ]
    )
    processor = pg_queue.create_processor({"t": order.append}, batch_size=10, concurrency=1)
    assert processor.start() == 1  # the dependent has the higher priority but must wait
    assert order == ["first"]
    _drain(processor)
    assert order == ["first", "second"]
    assert (_status(pg_queue, first), _status(pg_queue, second)) == ("completed", "completed")


def test_prerequisite_removed_by_cleanup_counts_as_satisfied(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # W-DEP-2: only completed jobs are ever cleaned up, so a missing prerequisite is done.
    prerequisite = pg_queue.add_job("t", {})
    dependent = pg_queue.add_job("t", {}, depends_on={"job_ids": [prerequisite]})
    run_sql(
        engine,
        "UPDATE job_queue SET status='completed', updated_at=now() - interval '40 days'"
        " WHERE id=:id",
        id=prerequisite,
    )
    assert pg_queue.cleanup_old_jobs(30) == 1
    processor = pg_queue.create_processor({"t": lambda p: None})
    assert processor.start() == 1
    assert _status(pg_queue, dependent) == "completed"


def test_tag_drain_waits_for_every_matching_active_job(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    import_jobs = pg_queue.add_jobs(
        [{"job_type": "import", "payload": i, "tags": ["batch-7", "import"]} for i in range(3)]
    )
    retrying = pg_queue.add_job("import", 9, tags=["batch-7"])
    run_sql(
        engine,
        "UPDATE job_queue SET status='failed', next_attempt_at=now() + interval '1 hour'"
        " WHERE id=:id",
        id=retrying,
    )
    report = pg_queue.add_job("report", {}, depends_on={"tags": ["batch-7"]}, priority=10)
    seen: list[str] = []
    processor = pg_queue.create_processor(
        {"import": lambda p: seen.append("import"), "report": lambda p: seen.append("report")},
        batch_size=10,
        concurrency=1,
    )
    assert processor.start() == 3  # the report is blocked while imports are pending
    assert _status(pg_queue, report) == "pending"
    _drain(processor)
    # A failed job awaiting its retry does not block the barrier.
    assert seen == ["import", "import", "import", "report"]
    assert all(_status(pg_queue, i) == "completed" for i in import_jobs)


def test_final_failure_cancels_dependents_transitively(pg_queue: dq.JobQueue) -> None:
    cancelled_hooks: list[Any] = []
    pg_queue.on("job:cancelled", cancelled_hooks.append)
    root, child, grandchild, unrelated = pg_queue.add_jobs(
        [
            {"job_type": "fail", "payload": {}, "max_attempts": 1, "tags": ["etl"]},
            {"job_type": "ok", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(0)]}},
            {"job_type": "ok", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(1)]}},
            {"job_type": "ok", "payload": {}, "depends_on": {"tags": ["etl"]}},
        ]
    )
    pg_queue.create_processor({"fail": _fail, "ok": lambda p: None}, job_type="fail").start()
    assert _status(pg_queue, root) == "failed"
    for job_id in (child, grandchild, unrelated):
        job = pg_queue.get_job(job_id)
        assert job is not None and job.status == "cancelled"
        assert job.pending_reason is not None and '"rootJobId":' + str(root) in job.pending_reason
        event = pg_queue.get_job_events(job_id)[-1]
        assert (event.event_type, event.metadata) == (
            "cancelled",
            {"rootJobId": root, "dependencyCascade": True},
        )
    assert cancelled_hooks == []  # cascades fire no hooks, as upstream


def test_retryable_failure_does_not_cancel_dependents(pg_queue: dq.JobQueue) -> None:
    # W-DEP-1: upstream cancelled dependents on every failure, even one that is retried.
    root, child = pg_queue.add_jobs(
        [
            {"job_type": "fail", "payload": {}, "max_attempts": 3},
            {"job_type": "ok", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(0)]}},
        ]
    )
    pg_queue.create_processor({"fail": _fail}, job_type="fail").start()
    assert (_status(pg_queue, root), _status(pg_queue, child)) == ("failed", "pending")


def test_cancelling_a_prerequisite_cancels_its_dependents(queue: dq.JobQueue) -> None:
    root, child = queue.add_jobs(
        [
            {"job_type": "t", "payload": {}},
            {"job_type": "t", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(0)]}},
        ]
    )
    other_root, other_child = queue.add_jobs(
        [
            {"job_type": "bulk", "payload": {}},
            {"job_type": "t", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(0)]}},
        ]
    )
    assert queue.cancel_job(root)
    assert _status(queue, child) == "cancelled"
    assert queue.cancel_all_upcoming_jobs({"job_type": "bulk"}) == 1
    assert (_status(queue, other_root), _status(queue, other_child)) == (
        "cancelled",
        "cancelled",
    )


def test_cycle_inside_a_batch_is_rejected(queue: dq.JobQueue) -> None:
    with pytest.raises(dq.JobDependencyError, match="out of range"):
        queue.add_jobs(
            [
                {"job_type": "a", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(1)]}},
                {"job_type": "b", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(0)]}},
            ]
        )
    with pytest.raises(dq.JobDependencyError, match="out of range"):
        queue.add_jobs(
            [{"job_type": "a", "payload": {}, "depends_on": {"job_ids": [dq.batch_dep_ref(0)]}}]
        )
    assert queue.get_all_jobs() == []


def test_mutual_tag_barriers_block_each_other_until_one_is_cancelled(pg_queue: dq.JobQueue) -> None:
    # W-DEP-3 (documented, not rejected): each job's tags satisfy the other's barrier,
    # so neither is ever claimable. Cancelling one releases the other.
    first = pg_queue.add_job("t", {}, tags=["nightly"], depends_on={"tags": ["nightly"]})
    second = pg_queue.add_job("t", {}, tags=["nightly"], depends_on={"tags": ["nightly"]})
    processor = pg_queue.create_processor({"t": lambda p: None})
    assert processor.start() == 0
    pg_queue.cancel_job(first)
    # The cascade from cancelling `first` reaches `second` (its barrier matches), as upstream.
    assert _status(pg_queue, second) == "cancelled"


def test_cancelling_a_tagged_job_cancels_tag_barrier_dependents_transitively(
    queue: dq.JobQueue,
) -> None:
    root = queue.add_job("t", {}, tags=["etl", "nightly"])
    barrier = queue.add_job("t", {}, depends_on={"tags": ["etl"]})
    grandchild = queue.add_job("t", {}, depends_on={"job_ids": [barrier]})
    unmet = queue.add_job("t", {}, depends_on={"tags": ["etl", "other"]})
    assert queue.cancel_job(root)
    for job_id in (barrier, grandchild):
        job = queue.get_job(job_id)
        assert job is not None and job.status == "cancelled"
        assert job.pending_reason == f'{{"rootJobId":{root},"dependencyCascade":true}}'
    assert _status(queue, unmet) == "pending"


def test_unknown_prerequisite_in_add_job_writes_nothing(queue: dq.JobQueue) -> None:
    # W-DEP-4: upstream's Redis backend accepted any id, and the job blocked forever.
    with pytest.raises(dq.JobDependencyError, match="do not exist \\(4242\\)"):
        queue.add_job("t", {}, depends_on={"job_ids": [4242]})
    assert queue.get_all_jobs() == []
