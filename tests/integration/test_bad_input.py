"""Bad input raises the API.md error naming the value, and writes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql


def _nothing_written(engine: sa.Engine) -> bool:
    rows = run_sql(
        engine, "SELECT (SELECT count(*) FROM job_queue) + (SELECT count(*) FROM job_events)"
    )
    return bool(rows[0][0] == 0)


BAD_ADD_JOB: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("empty job_type", {"job_type": ""}, dq.InvalidJobError, "job_type"),
    ("non-string job_type", {"job_type": 42}, dq.InvalidJobError, "42"),
    ("unserialisable payload", {"payload": {"x": object()}}, dq.InvalidJobError, "object"),
    ("NaN payload", {"payload": {"x": float("nan")}}, dq.InvalidJobError, "payload"),
    ("NUL in payload", {"payload": {"x": "a\x00b"}}, dq.InvalidJobError, "NUL"),
    ("naive run_at", {"run_at": dt.datetime(2030, 1, 1)}, dq.InvalidJobError, "naive"),
    ("zero max_attempts", {"max_attempts": 0}, dq.InvalidJobError, "max_attempts.*0"),
    ("bool max_attempts", {"max_attempts": True}, dq.InvalidJobError, "True"),
    ("negative timeout_ms", {"timeout_ms": -5}, dq.InvalidJobError, "-5"),
    ("huge priority", {"priority": 2**40}, dq.InvalidJobError, str(2**40)),
    ("tags as a string", {"tags": "urgent"}, dq.InvalidJobError, "urgent"),
    ("non-string tag", {"tags": ["ok", 3]}, dq.InvalidJobError, "3"),
    ("empty idempotency key", {"idempotency_key": ""}, dq.InvalidJobError, "idempotency_key"),
    ("non-bool retry_backoff", {"retry_backoff": "yes"}, dq.InvalidJobError, "yes"),
    ("negative retry_delay", {"retry_delay": -1}, dq.InvalidJobError, "-1"),
    ("group without id", {"group": {"tier": "x"}}, dq.InvalidJobError, "group.id"),
    ("non-integer dependency", {"depends_on": {"job_ids": ["7"]}}, dq.JobDependencyError, "'7'"),
    ("unknown depends_on key", {"depends_on": {"ids": [1]}}, dq.InvalidJobError, "ids"),
    ("db that is no connection", {"db": "postgresql://x"}, dq.InvalidJobError, "postgresql://x"),
]


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [case[1:] for case in BAD_ADD_JOB],
    ids=[case[0] for case in BAD_ADD_JOB],
)
def test_bad_add_job_input_raises_and_writes_nothing(
    queue: dq.JobQueue,
    engine: sa.Engine,
    options: dict[str, Any],
    error: type[Exception],
    pattern: str,
) -> None:
    arguments: dict[str, Any] = {"job_type": "email", "payload": {}, **options}
    with pytest.raises(error, match=pattern):
        queue.add_job(arguments.pop("job_type"), arguments.pop("payload"), **arguments)
    assert _nothing_written(engine)


def test_unknown_add_job_option_is_a_type_error(queue: dq.JobQueue, engine: sa.Engine) -> None:
    with pytest.raises(TypeError, match="retries"):
        queue.add_job("email", {}, retries=3)  # type: ignore[call-arg]
    assert _nothing_written(engine)


def test_unknown_add_jobs_option_is_a_type_error(queue: dq.JobQueue, engine: sa.Engine) -> None:
    with pytest.raises(TypeError, match="retries"):
        queue.add_jobs(
            [{"job_type": "a", "payload": {}}, {"job_type": "b", "payload": {}, "retries": 1}]
        )
    assert _nothing_written(engine)


def test_one_bad_entry_rejects_the_whole_batch(queue: dq.JobQueue, engine: sa.Engine) -> None:
    with pytest.raises(dq.InvalidJobError, match="naive"):
        queue.add_jobs(
            [
                {"job_type": "a", "payload": {}},
                {"job_type": "b", "payload": {}, "run_at": dt.datetime(2030, 1, 1)},
            ]
        )
    assert _nothing_written(engine)


def test_closed_sqlalchemy_connection_is_rejected(queue: dq.JobQueue, engine: sa.Engine) -> None:
    conn = engine.connect()
    conn.close()
    with pytest.raises(dq.InvalidJobError, match="closed"):
        queue.add_job("a", {}, db=conn)
    assert _nothing_written(engine)


BAD_READS: list[tuple[str, Callable[[dq.JobQueue], Any], type[Exception], str]] = [
    ("unknown tag mode", lambda q: q.get_jobs_by_tags(["a"], mode="some"), ValueError, "some"),
    (
        "unknown tag mode in filters",
        lambda q: q.get_jobs({"tags": {"values": ["a"], "mode": "x"}}),
        ValueError,
        "'x'",
    ),
    ("unknown filter", lambda q: q.get_jobs({"jobtype": "a"}), dq.InvalidJobError, "jobtype"),
    (
        "naive run_at filter",
        lambda q: q.get_jobs({"run_at": {"lt": dt.datetime(2030, 1, 1)}}),
        dq.InvalidJobError,
        "naive",
    ),
    ("negative limit", lambda q: q.get_all_jobs(limit=-1), dq.InvalidJobError, "-1"),
    ("unknown status", lambda q: q.get_jobs_by_status("done"), dq.InvalidJobError, "done"),
    ("job id zero", lambda q: q.get_job(0), dq.InvalidJobError, "0"),
    ("unknown edit field", lambda q: q.edit_job(1, job_type="x"), TypeError, "job_type"),
    (
        "clearing max_attempts",
        lambda q: q.edit_job(1, max_attempts=None),
        dq.InvalidJobError,
        "None",
    ),
    ("negative cleanup days", lambda q: q.cleanup_old_jobs(-1), dq.InvalidJobError, "-1"),
    (
        "zero cleanup batch",
        lambda q: q.cleanup_old_job_events(30, 0),
        dq.InvalidJobError,
        "batch_size",
    ),
    ("unknown event", lambda q: q.on("job:done", print), ValueError, "job:done"),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [case[1:] for case in BAD_READS],
    ids=[case[0] for case in BAD_READS],
)
def test_bad_read_and_manage_input_raises(
    queue: dq.JobQueue, call: Callable[[dq.JobQueue], Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        call(queue)


def test_bad_edit_leaves_job_unchanged(queue: dq.JobQueue) -> None:
    job_id = queue.add_job("a", {"v": 1})
    with pytest.raises(dq.InvalidJobError):
        queue.edit_job(job_id, payload={"v": 2}, run_at=dt.datetime(2030, 1, 1))
    job = queue.get_job(job_id)
    assert job is not None and job.payload == {"v": 1}
    assert [e.event_type for e in queue.get_job_events(job_id)] == ["added"]
