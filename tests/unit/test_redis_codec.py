"""The Redis backend's pure parts: hash encoding, event decoding, script files."""

from __future__ import annotations

import datetime as dt
import json
import re
from importlib import resources

import pytest

from dataqueue.backends.redis import codec, scripts
from dataqueue.backends.redis.keys import Keys, queue_member
from dataqueue.validation import NewJob, build_update

UTC = dt.timezone.utc


def test_milliseconds_round_trip_and_truncate_microseconds() -> None:
    when = dt.datetime(2031, 2, 3, 4, 5, 6, 789_999, tzinfo=UTC)
    ms = int(when.replace(microsecond=0).timestamp()) * 1000 + 789
    assert codec.to_ms(when) == ms
    assert codec.from_ms(str(ms)) == when.replace(microsecond=789_000)
    for null in (None, "", "null"):
        assert codec.from_ms(null) is None


def test_hash_written_by_upstream_reads_as_a_record() -> None:
    # Upstream's encoding: 'null' strings, '1'/'0' booleans, missing fields, and an
    # empty dependency array meaning "no dependencies".
    record = codec.job_record_from_hash(
        {
            b"id": b"7",
            b"jobType": b"email",
            b"payload": b"not json",
            b"status": b"failed",
            b"createdAt": b"1700000000000",
            b"updatedAt": b"null",
            b"attempts": b"2",
            b"maxAttempts": b"5",
            b"priority": b"-3",
            b"forceKillOnTimeout": b"1",
            b"tags": b'["a","b"]',
            b"errorHistory": b'[{"message":"x","timestamp":"t"}]',
            b"stepData": b"null",
            b"dependsOnJobIds": b"[]",
            b"retryBackoff": b"false",
            b"failureReason": b"timeout",
        }
    )
    created = dt.datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert (record.id, record.job_type, record.payload) == (7, "email", "not json")
    assert (record.created_at, record.updated_at, record.run_at) == (created, created, created)
    assert (record.attempts, record.max_attempts, record.priority) == (2, 5, -3)
    assert record.force_kill_on_timeout is True and record.retry_backoff is False
    assert record.tags == ["a", "b"] and record.error_history[0]["message"] == "x"
    assert record.step_data is None and record.depends_on_job_ids is None
    assert record.failure_reason == "timeout" and record.locked_by is None


def test_batch_row_keeps_user_json_as_text() -> None:
    job = NewJob(
        "t",
        '{"list":[],"big":12345678901234567890}',
        tags=[],
        idempotency_key="k",
        depends_on_job_ids=[-1, 4],
        depends_on_tags=["x"],
    )
    row = codec.batch_row(job)
    assert row[1] == '{"list":[],"big":12345678901234567890}'
    assert row[7] == "[]" and row[8] == [] and row[9] == "k"
    assert row[16] == [-1, 4] and row[17] == '["x"]' and row[18] == ["x"]
    head = json.loads(row[19] + "}")
    assert head == {
        "jobType": "t",
        "payload": {"list": [], "big": 12345678901234567890},
        "tags": [],
        "idempotencyKey": "k",
    }
    assert json.loads(codec.encode_batch([job]))[0] == row


def test_edit_arguments_encode_fields_tags_and_metadata() -> None:
    updates = build_update(
        {"payload": {"v": []}, "run_at": None, "tags": ["a", "b"], "retry_backoff": None}
    )
    args = codec.edit_arguments(updates)
    assert json.loads(args[0]) == {
        "payload": {"v": []},
        "runAt": None,
        "tags": ["a", "b"],
        "retryBackoff": None,
    }
    assert args[1:10] == [
        "4",
        "payload",
        '{"v":[]}',
        "runAt",
        "",
        "tags",
        '["a","b"]',
        "retryBackoff",
        "null",
    ]
    assert args[10:] == ["set", "2", "a", "b"]
    assert codec.edit_arguments(build_update({"priority": 1}))[-1] == "keep"


def test_event_entries_decode() -> None:
    event = codec.job_event_from_json(
        '{"id":3,"jobId":9,"eventType":"edited","createdAt":1700000000000,"metadata":{"a":1}}'
    )
    assert (event.id, event.job_id, event.event_type, event.metadata) == (3, 9, "edited", {"a": 1})
    assert event.created_at == dt.datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_queue_members_sort_by_number() -> None:
    members = [queue_member(i) for i in (10, 9, 2_147_483_647, 100)]
    assert sorted(members) == [queue_member(i) for i in (9, 10, 100, 2_147_483_647)]
    assert Keys("{dq}:").job(5) == "{dq}:job:5"


@pytest.mark.parametrize("name", scripts.script_names())
def test_every_script_names_its_keys_and_arguments(name: str) -> None:
    text = resources.files(scripts).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    header = re.match(r"(--[^\n]*\n)+", text)
    assert header is not None
    assert "KEYS[1]" in header.group(0) and "ARGV" in header.group(0)


def test_every_script_file_is_registered() -> None:
    names = scripts.script_names()
    assert {"add_jobs", "advance", "fail_jobs", "wait_job"} <= set(names)
    assert "_lib" not in names
