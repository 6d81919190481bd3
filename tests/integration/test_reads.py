"""get_job, get_jobs and friends: filters, tag modes, paging, ordering, full records."""

from __future__ import annotations

import datetime as dt

import pytest

import dataqueue as dq

UTC = dt.timezone.utc

pytestmark = pytest.mark.all_backends


def test_get_job_returns_none_for_unknown_id(queue: dq.JobQueue) -> None:
    assert queue.get_job(123456) is None


def test_lists_are_newest_first_with_id_tiebreak(queue: dq.JobQueue) -> None:
    # W-ORD-1: jobs of one add_jobs call share created_at; id breaks the tie.
    ids = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(4)])
    expected = list(reversed(ids))
    assert [j.id for j in queue.get_all_jobs()] == expected
    assert [j.id for j in queue.get_jobs()] == expected
    assert [j.id for j in queue.get_jobs_by_status("pending")] == expected


def test_list_reads_return_full_records_with_tags(queue: dq.JobQueue) -> None:
    # W-API-3: upstream omitted tags (and force_kill_on_timeout) in some list reads.
    queue.add_job("t", {}, tags=["a"], force_kill_on_timeout=True)
    for jobs in (
        queue.get_all_jobs(),
        queue.get_jobs_by_status("pending"),
        queue.get_jobs_by_tags(["a"]),
    ):
        assert jobs[0].tags == ["a"] and jobs[0].force_kill_on_timeout is True


def test_get_jobs_filters_by_type_and_priority(queue: dq.JobQueue) -> None:
    a = queue.add_job("a", {}, priority=0)
    queue.add_job("b", {}, priority=0)
    c = queue.add_job("a", {}, priority=5)
    assert [j.id for j in queue.get_jobs({"job_type": "a"})] == [c, a]
    assert [j.id for j in queue.get_jobs({"job_type": "a", "priority": 0})] == [a]
    assert len(queue.get_jobs({"job_type": ""})) == 3


def test_get_jobs_filters_by_run_at(queue: dq.JobQueue) -> None:
    t1 = dt.datetime(2030, 1, 1, tzinfo=UTC)
    t2 = dt.datetime(2030, 1, 2, tzinfo=UTC)
    first = queue.add_job("a", {}, run_at=t1)
    second = queue.add_job("a", {}, run_at=t2)
    assert [j.id for j in queue.get_jobs({"run_at": t1})] == [first]
    assert [j.id for j in queue.get_jobs({"run_at": {"gt": t1}})] == [second]
    assert [j.id for j in queue.get_jobs({"run_at": {"gte": t1, "lt": t2}})] == [first]
    assert [j.id for j in queue.get_jobs({"run_at": {"lte": t2, "eq": t2}})] == [second]


def test_tag_modes_follow_the_documented_semantics(queue: dq.JobQueue) -> None:
    both = queue.add_job("t", {}, tags=["foo", "bar"])
    foo = queue.add_job("t", {}, tags=["foo"])
    baz = queue.add_job("t", {}, tags=["baz"])
    untagged = queue.add_job("t", {})
    reordered = queue.add_job("t", {}, tags=["bar", "foo", "foo"])

    def ids(mode: str) -> set[int]:
        return {j.id for j in queue.get_jobs_by_tags(["foo", "bar"], mode=mode)}

    assert ids("all") == {both, reordered}
    assert ids("any") == {both, foo, reordered}
    # exact compares sets; none includes untagged jobs (W-API-1, same on every backend).
    assert ids("exact") == {both, reordered}
    assert ids("none") == {baz, untagged}
    via_filter = queue.get_jobs({"tags": {"values": ["foo"], "mode": "any"}})
    assert {j.id for j in via_filter} == {both, foo, reordered}


def test_empty_tag_list_in_get_jobs_is_ignored(queue: dq.JobQueue) -> None:
    queue.add_job("t", {})
    queue.add_job("t", {}, tags=["a"])
    assert len(queue.get_jobs({"tags": {"values": [], "mode": "all"}})) == 2
    assert len(queue.get_jobs_by_tags([], mode="all")) == 1


def test_cursor_pages_by_id(queue: dq.JobQueue) -> None:
    id1, id2, id3 = (queue.add_job("t", {}) for _ in range(3))
    first_page = queue.get_jobs({}, limit=2)
    assert [j.id for j in first_page] == [id3, id2]
    second_page = queue.get_jobs({"cursor": first_page[-1].id}, limit=2, offset=50)
    assert [j.id for j in second_page] == [id1]


def test_limit_and_offset_page_results(queue: dq.JobQueue) -> None:
    ids = queue.add_jobs([{"job_type": "t", "payload": i} for i in range(5)])
    newest_first = list(reversed(ids))
    assert [j.id for j in queue.get_all_jobs(limit=2, offset=1)] == newest_first[1:3]
    assert [j.id for j in queue.get_jobs_by_status("pending", limit=2, offset=4)] == newest_first[
        4:
    ]


def test_get_job_events_oldest_first(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {})
    queue.edit_job(job_id, priority=1)
    queue.cancel_job(job_id)
    events = queue.get_job_events(job_id)
    assert [e.event_type for e in events] == ["added", "edited", "cancelled"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert all(e.job_id == job_id and e.created_at.tzinfo is not None for e in events)


def test_records_convert_to_json_ready_dicts(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("t", {"a": 1}, tags=["x"])
    job = queue.get_job(job_id)
    assert job is not None
    plain = job.to_dict()
    assert plain["job_type"] == "t" and plain["status"] == "pending"
    assert isinstance(plain["created_at"], str) and plain["created_at"].endswith("Z")
    camel = job.to_dict(camel_case=True)
    assert camel["jobType"] == "t" and camel["maxAttempts"] == 3 and camel["idempotencyKey"] is None
    event = queue.get_job_events(job_id)[0].to_dict(camel_case=True)
    assert event["eventType"] == "added" and event["jobId"] == job_id


def test_datetimes_come_back_in_utc(queue: dq.JobQueue) -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    when = dt.datetime(2030, 5, 1, 9, 0, tzinfo=tokyo)
    job = queue.get_job(queue.add_job("t", {}, run_at=when))
    assert job is not None
    assert job.run_at == when and job.run_at.utcoffset() == dt.timedelta(0)


def test_empty_tag_lists_follow_set_semantics(queue: dq.JobQueue) -> None:
    untagged = queue.add_job("t", {})
    empty = queue.add_job("t", {}, tags=[])
    tagged = queue.add_job("t", {}, tags=["a"])

    def ids(mode: str) -> set[int]:
        return {j.id for j in queue.get_jobs_by_tags([], mode=mode)}

    assert ids("all") == {empty, tagged}
    assert ids("any") == set()
    assert ids("none") == {untagged, empty, tagged}
    assert ids("exact") == {empty}


def test_filters_combine(queue: dq.JobQueue) -> None:
    when = dt.datetime(2030, 1, 1, tzinfo=UTC)
    match = queue.add_job("a", {}, priority=2, run_at=when, tags=["x", "y"])
    queue.add_job("a", {}, priority=1, run_at=when, tags=["x", "y"])
    queue.add_job("b", {}, priority=2, run_at=when, tags=["x", "y"])
    queue.add_job("a", {}, priority=2, tags=["x", "y"])
    queue.add_job("a", {}, priority=2, run_at=when, tags=["x"])
    filters = {
        "job_type": "a",
        "priority": 2,
        "run_at": {"gte": when},
        "tags": {"values": ["y", "x"], "mode": "exact"},
    }
    assert [j.id for j in queue.get_jobs(filters)] == [match]
    assert queue.get_jobs({**filters, "cursor": match}) == []
