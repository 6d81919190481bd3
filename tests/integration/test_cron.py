"""Cron schedules: CRUD, enqueueing, overlap, pause/resume, processor tick, exactly once.

Every test runs on PostgreSQL and on Redis (the ``queue`` fixture).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from typing import Any

import pytest

import dataqueue as dq
from dataqueue import cron
from tests.integration import cron_ticker
from tests.integration.store_state import delete_job, force_job, make_cron_due

pytestmark = pytest.mark.all_backends

UTC = dt.timezone.utc
NEVER = dt.datetime.max.replace(tzinfo=UTC)


def _schedule(queue: dq.JobQueue, schedule_id: int) -> dq.CronScheduleRecord:
    record = queue.get_cron_job(schedule_id)
    assert record is not None
    return record


def _job_types(queue: dq.JobQueue) -> Counter[str]:
    return Counter(job.job_type for job in queue.get_all_jobs(limit=10_000))


def _is_redis(queue: dq.JobQueue) -> bool:
    try:
        queue.get_redis_client()
    except dq.UnsupportedOperationError:
        return False
    return True


def ticker_store(request: pytest.FixtureRequest, queue: dq.JobQueue) -> list[str]:
    """The store of ``queue`` as ``cron_ticker`` takes it: ``[URL]`` or ``[URL, PREFIX]``."""
    if _is_redis(queue):
        prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
        return [request.getfixturevalue("redis_url"), prefix]
    return [request.getfixturevalue("database_url")]


# -- CRUD -----------------------------------------------------------------------------


def test_add_cron_job_stores_the_schedule(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job(
        "nightly-report",
        "0 3 * * *",
        "report",
        {"kind": "daily"},
        timezone="Europe/Berlin",
        priority=4,
        tags=["reports"],
        retry_delay=5,
        dead_letter_job_type="report_dlq",
    )
    record = _schedule(queue, schedule_id)
    assert (record.schedule_name, record.cron_expression, record.timezone) == (
        "nightly-report",
        "0 3 * * *",
        "Europe/Berlin",
    )
    assert (record.status, record.allow_overlap, record.max_attempts) == ("active", False, 3)
    assert (record.payload, record.priority, record.tags) == ({"kind": "daily"}, 4, ["reports"])
    assert (record.retry_delay, record.retry_backoff, record.retry_delay_max) == (5, None, None)
    assert (record.dead_letter_job_type, record.timeout_ms) == ("report_dlq", None)
    assert record.force_kill_on_timeout is False
    assert (record.last_enqueued_at, record.last_job_id) == (None, None)
    assert record.next_run_at is not None and record.next_run_at > dt.datetime.now(UTC)
    assert record.next_run_at.astimezone(dt.timezone(dt.timedelta(hours=1))).hour in (3, 4)
    assert record.created_at == record.updated_at
    assert queue.get_cron_job_by_name("nightly-report") == record
    assert queue.get_cron_job_by_name("missing") is None
    assert queue.get_cron_job(schedule_id + 1) is None


def test_duplicate_schedule_name_is_rejected(queue: dq.JobQueue) -> None:
    queue.add_cron_job("once", "* * * * *", "t", {})
    with pytest.raises(
        dq.DuplicateScheduleError, match=r'^Cron schedule with name "once" already exists$'
    ):
        queue.add_cron_job("once", "*/5 * * * *", "t", {})
    assert len(queue.list_cron_jobs()) == 1


def test_concurrent_adds_of_one_name_create_one_schedule(queue: dq.JobQueue) -> None:
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def add() -> None:
        start.wait()
        try:
            queue.add_cron_job("contested", "* * * * *", "t", {})
            outcomes.append("added")
        except dq.DuplicateScheduleError:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["added"] + ["duplicate"] * 7
    assert [s.schedule_name for s in queue.list_cron_jobs()] == ["contested"]


@pytest.mark.parametrize(
    ("expression", "timezone", "pattern"),
    [
        ("0 0 * * * *", "UTC", "0 0 \\* \\* \\* \\*"),
        ("garbage", "UTC", "garbage"),
        ("0 0 30 2 *", "UTC", "never fires"),
        ("0 0 * * *", "Mars/Olympus", "Mars/Olympus"),
    ],
)
def test_invalid_schedules_are_rejected_and_nothing_is_written(
    queue: dq.JobQueue, expression: str, timezone: str, pattern: str
) -> None:
    with pytest.raises(dq.InvalidCronExpressionError, match=pattern):
        queue.add_cron_job("bad", expression, "t", {}, timezone=timezone)
    assert queue.list_cron_jobs() == []


def test_list_returns_oldest_first_and_filters_by_status(queue: dq.JobQueue) -> None:
    ids = [queue.add_cron_job(f"s{n}", "* * * * *", "t", {}) for n in (3, 1, 2, 10)]
    assert [s.id for s in queue.list_cron_jobs()] == ids
    queue.pause_cron_job(ids[1])
    queue.pause_cron_job(ids[3])
    assert [s.id for s in queue.list_cron_jobs("active")] == [ids[0], ids[2]]
    assert [s.id for s in queue.list_cron_jobs("paused")] == [ids[1], ids[3]]
    with pytest.raises(dq.InvalidJobError):
        queue.list_cron_jobs("stopped")


def test_edit_recomputes_next_run_when_expression_or_timezone_change(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job("e", "0 0 1 1 *", "t", {})
    before = _schedule(queue, schedule_id)
    assert queue.edit_cron_job(schedule_id, priority=3, payload={"v": 2}, tags=None)
    unchanged = _schedule(queue, schedule_id)
    assert (unchanged.priority, unchanged.payload, unchanged.next_run_at) == (
        3,
        {"v": 2},
        before.next_run_at,
    )
    assert unchanged.tags is None and unchanged.updated_at >= before.updated_at
    assert queue.edit_cron_job(schedule_id, cron_expression="*/5 * * * *")
    soon = _schedule(queue, schedule_id).next_run_at
    assert soon is not None and soon - dt.datetime.now(UTC) <= dt.timedelta(minutes=5)
    assert queue.edit_cron_job(schedule_id, timezone="Asia/Tokyo")
    assert _schedule(queue, schedule_id).timezone == "Asia/Tokyo"
    with pytest.raises(TypeError, match="schedule_name"):
        queue.edit_cron_job(schedule_id, schedule_name="x")
    with pytest.raises(dq.InvalidCronExpressionError):
        queue.edit_cron_job(schedule_id, cron_expression="0 0 31 2 *")
    assert queue.edit_cron_job(987654, priority=1) is False


def test_edit_clears_and_sets_the_job_options(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job(
        "o", "* * * * *", "t", {}, timeout_ms=5, retry_delay_max=9, dead_letter_job_type="d"
    )
    assert queue.edit_cron_job(
        schedule_id,
        timeout_ms=None,
        retry_delay_max=None,
        dead_letter_job_type=None,
        allow_overlap=True,
        force_kill_on_timeout=True,
        max_attempts=7,
        retry_backoff=True,
        tags=["a", "b"],
    )
    record = _schedule(queue, schedule_id)
    assert (record.timeout_ms, record.retry_delay_max, record.dead_letter_job_type) == (
        None,
        None,
        None,
    )
    assert (record.allow_overlap, record.force_kill_on_timeout, record.max_attempts) == (
        True,
        True,
        7,
    )
    assert (record.retry_backoff, record.tags) == (True, ["a", "b"])


def test_operations_on_an_unknown_schedule_return_false(queue: dq.JobQueue) -> None:
    assert queue.pause_cron_job(4242) is False
    assert queue.resume_cron_job(4242) is False
    assert queue.edit_cron_job(4242, priority=1) is False
    assert queue.edit_cron_job(4242, cron_expression="* * * * *") is False
    assert queue.remove_cron_job(4242) is False
    assert queue.get_cron_job(4242) is None
    assert queue.list_cron_jobs() == []
    assert queue.enqueue_due_cron_jobs() == 0


def test_pause_resume_and_remove(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job("p", "* * * * *", "t", {})
    assert queue.pause_cron_job(schedule_id)
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 0
    paused = _schedule(queue, schedule_id)
    assert paused.status == "paused" and paused.last_enqueued_at is None
    assert [s.id for s in queue.list_cron_jobs("paused")] == [schedule_id]
    assert queue.list_cron_jobs("active") == []
    assert queue.resume_cron_job(schedule_id)
    assert _schedule(queue, schedule_id).next_run_at == paused.next_run_at  # kept
    assert queue.enqueue_due_cron_jobs() == 1  # the missed occurrence fires once
    assert queue.enqueue_due_cron_jobs() == 0
    assert queue.remove_cron_job(schedule_id) is True
    assert queue.remove_cron_job(schedule_id) is False
    assert queue.get_cron_job(schedule_id) is None
    assert queue.get_cron_job_by_name("p") is None
    assert queue.list_cron_jobs() == []
    assert len(queue.get_all_jobs()) == 1  # enqueued jobs stay


def test_a_removed_schedules_name_can_be_used_again(queue: dq.JobQueue) -> None:
    first = queue.add_cron_job("reuse", "* * * * *", "t", {})
    assert queue.remove_cron_job(first)
    second = queue.add_cron_job("reuse", "*/5 * * * *", "u", {})
    assert second != first
    assert _schedule(queue, second).job_type == "u"
    assert queue.get_cron_job_by_name("reuse") == _schedule(queue, second)


# -- enqueueing -----------------------------------------------------------------------


def test_due_schedule_enqueues_a_job_with_its_fields(queue: dq.JobQueue) -> None:
    added: list[Any] = []
    queue.on("job:added", added.append)
    schedule_id = queue.add_cron_job(
        "s",
        "*/5 * * * *",
        "report",
        {"a": 1},
        max_attempts=5,
        priority=2,
        timeout_ms=1000,
        force_kill_on_timeout=True,
        tags=["cron"],
        retry_delay=7,
        retry_backoff=False,
        retry_delay_max=60,
        dead_letter_job_type="dlq",
    )
    assert queue.enqueue_due_cron_jobs() == 0  # not due yet
    make_cron_due(queue, schedule_id)
    before = _schedule(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 1
    [job] = queue.get_all_jobs()
    assert (job.job_type, job.payload, job.max_attempts, job.priority, job.timeout_ms) == (
        "report",
        {"a": 1},
        5,
        2,
        1000,
    )
    assert (job.tags, job.retry_delay, job.retry_backoff, job.retry_delay_max) == (
        ["cron"],
        7,
        False,
        60,
    )
    assert job.dead_letter_job_type == "dlq" and job.idempotency_key is None
    assert job.force_kill_on_timeout is True and job.status == "pending"
    assert (job.group_id, job.depends_on_job_ids, job.depends_on_tags) == (None, None, None)
    assert job.run_at == job.created_at  # due at once
    [event] = queue.get_job_events(job.id)
    assert event.event_type == "added"
    assert event.metadata is not None and event.metadata["jobType"] == "report"
    assert added == []  # no job:added hook for cron jobs, as upstream
    record = _schedule(queue, schedule_id)
    assert record.last_job_id == job.id and record.last_enqueued_at is not None
    assert record.last_enqueued_at >= job.created_at - dt.timedelta(seconds=1)
    assert record.updated_at >= before.updated_at
    assert record.next_run_at is not None and record.next_run_at > dt.datetime.now(UTC)
    assert record.next_run_at == cron.next_run("*/5 * * * *", "UTC", record.last_enqueued_at)
    assert queue.enqueue_due_cron_jobs() == 0


def test_the_payload_reaches_the_job_unchanged(queue: dq.JobQueue) -> None:
    payload = {"empty": [], "nested": {"o": {}}, "big": 2**70, "text": 'é/"\\\u2028', "f": 0.1}
    schedule_id = queue.add_cron_job("j", "* * * * *", "t", payload)
    assert _schedule(queue, schedule_id).payload == payload
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 1
    [job] = queue.get_all_jobs()
    assert job.payload == payload
    [event] = queue.get_job_events(job.id)
    assert event.metadata is not None and event.metadata["payload"] == payload


def test_due_schedules_are_enqueued_in_next_run_order(queue: dq.JobQueue) -> None:
    later = queue.add_cron_job("later", "* * * * *", "later", {})
    earlier = queue.add_cron_job("earlier", "* * * * *", "earlier", {})
    make_cron_due(queue, later, seconds_ago=1)
    make_cron_due(queue, earlier, seconds_ago=5)
    assert queue.enqueue_due_cron_jobs() == 2
    jobs = sorted(queue.get_all_jobs(), key=lambda j: j.id)
    assert [j.job_type for j in jobs] == ["earlier", "later"]


def test_overlap_is_skipped_unless_allowed(queue: dq.JobQueue) -> None:
    strict = queue.add_cron_job("strict", "* * * * *", "t", {})
    relaxed = queue.add_cron_job("relaxed", "* * * * *", "u", {}, allow_overlap=True)
    for _ in range(2):
        make_cron_due(queue, strict)
        make_cron_due(queue, relaxed)
        queue.enqueue_due_cron_jobs()
    assert _job_types(queue) == {"t": 1, "u": 2}
    skipped = _schedule(queue, strict)
    assert skipped.next_run_at is not None and skipped.next_run_at > dt.datetime.now(UTC)
    [job] = [j for j in queue.get_all_jobs() if j.job_type == "t"]
    assert skipped.last_job_id == job.id  # unchanged by the skipped occurrence
    assert skipped.last_enqueued_at is not None and skipped.last_enqueued_at > job.created_at


def test_skipped_occurrence_is_not_counted_but_advances(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job("strict", "* * * * *", "t", {})
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 1
    first = _schedule(queue, schedule_id)
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 0
    second = _schedule(queue, schedule_id)
    assert second.last_job_id == first.last_job_id
    assert second.next_run_at is not None and second.next_run_at > dt.datetime.now(UTC)
    assert queue.enqueue_due_cron_jobs() == 0


@pytest.mark.parametrize(
    ("last_status", "blocks"),
    [
        ("processing", True),
        ("waiting", True),
        ("completed", False),
        ("failed", False),
        ("cancelled", False),
    ],
)
def test_overlap_depends_on_the_last_jobs_status(
    queue: dq.JobQueue, last_status: str, blocks: bool
) -> None:
    schedule_id = queue.add_cron_job("strict", "* * * * *", "t", {})
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 1
    last_job_id = _schedule(queue, schedule_id).last_job_id
    assert last_job_id is not None
    force_job(queue, last_job_id, status=last_status)
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == (0 if blocks else 1)
    assert len(queue.get_all_jobs()) == (1 if blocks else 2)


def test_a_deleted_last_job_does_not_block(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job("strict", "* * * * *", "t", {})
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 1
    last_job_id = _schedule(queue, schedule_id).last_job_id
    assert last_job_id is not None
    delete_job(queue, last_job_id)
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 1
    [job] = queue.get_all_jobs()
    assert _schedule(queue, schedule_id).last_job_id == job.id != last_job_id


def test_a_schedule_that_never_fires_again_stops(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job("last", "* * * * *", "t", {}, allow_overlap=True)
    make_cron_due(queue, schedule_id)
    # The backend asks for the following run; an expression past its last occurrence says None.
    assert queue._backend.enqueue_due_cron_jobs(lambda expression, zone, now: None) == 1
    record = _schedule(queue, schedule_id)
    assert record.next_run_at is None and record.status == "active"
    assert queue.pause_cron_job(schedule_id) and queue.resume_cron_job(schedule_id)
    assert queue.enqueue_due_cron_jobs() == 0
    assert len(queue.get_all_jobs()) == 1


def test_next_run_is_computed_in_the_schedules_timezone(queue: dq.JobQueue) -> None:
    schedule_id = queue.add_cron_job("tokyo", "0 20 * * *", "t", {}, timezone="Asia/Tokyo")
    make_cron_due(queue, schedule_id)
    assert queue.enqueue_due_cron_jobs() == 1
    record = _schedule(queue, schedule_id)
    assert record.next_run_at is not None and record.last_enqueued_at is not None
    assert record.next_run_at.astimezone(UTC).hour == 11  # 20:00 JST
    assert record.next_run_at - record.last_enqueued_at <= dt.timedelta(days=1)


def test_a_tick_inside_another_enqueues_the_occurrence_once(queue: dq.JobQueue) -> None:
    # The inner tick runs between the outer tick's read and its write.
    schedule_id = queue.add_cron_job("race", "* * * * *", "t", {}, allow_overlap=True)
    make_cron_due(queue, schedule_id)
    inner: list[int] = []

    def next_run_with_a_rival(expression: str, zone: str, now: dt.datetime) -> dt.datetime | None:
        if not inner:
            inner.append(queue.enqueue_due_cron_jobs())
        return cron.next_run(expression, zone, now)

    outer = queue._backend.enqueue_due_cron_jobs(next_run_with_a_rival)
    assert sorted([outer, *inner]) == [0, 1]
    assert len(queue.get_all_jobs()) == 1
    assert queue.enqueue_due_cron_jobs() == 0


def test_processor_enqueues_due_schedules_before_claiming(queue: dq.JobQueue) -> None:
    ran: list[Any] = []
    schedule_id = queue.add_cron_job("tick", "* * * * *", "tick", {"n": 1})
    make_cron_due(queue, schedule_id)
    assert queue.create_processor({"tick": ran.append}).start() == 1
    assert ran == [{"n": 1}]
    [job] = queue.get_all_jobs()
    assert job.status == "completed"


def test_concurrent_tickers_enqueue_each_occurrence_exactly_once(
    queue: dq.JobQueue, request: pytest.FixtureRequest
) -> None:
    # W-CRON-1: upstream's lock ended with its SELECT (Redis: no lock), so simultaneous
    # ticks duplicated occurrences.
    schedule_id = queue.add_cron_job("race", "0 0 1 1 *", "t", {}, allow_overlap=True)
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            queue.enqueue_due_cron_jobs()

    processes = cron_ticker.start(ticker_store(request, queue), seconds=6, count=2)
    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    occurrences = 0
    try:
        time.sleep(1.0)  # let the other processes start ticking
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            make_cron_due(queue, schedule_id)
            occurrences += 1
            while (_schedule(queue, schedule_id).next_run_at or NEVER) <= dt.datetime.now(UTC):
                time.sleep(0.002)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        assert [process.wait(30) for process in processes] == [0, 0]
    assert occurrences > 20
    assert len(queue.get_all_jobs(limit=10_000)) == occurrences
