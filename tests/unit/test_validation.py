"""Pure validation rules: options, filters, updates, dependencies, payload encoding."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest

import dataqueue as dq
from dataqueue import validation as v
from dataqueue.dependencies import normalise_depends_on, resolve_batch_placeholders
from dataqueue.payload import encode_json

UTC = dt.timezone.utc


def test_new_job_defaults() -> None:
    job = v.build_new_job("t", {"a": 1}, {})
    assert (job.max_attempts, job.priority, job.run_at, job.tags) == (3, 0, None, None)
    assert job.payload_json == '{"a":1}'


def test_depends_on_normalises_duplicates_and_empty_lists() -> None:
    assert normalise_depends_on({"job_ids": [3, 1, 3], "tags": []}) == ([3, 1], None)
    assert normalise_depends_on(dq.DependsOn(job_ids=[], tags=["a", "a"])) == (None, ["a"])
    assert normalise_depends_on(None) == (None, None)


def test_batch_dep_ref_maps_index_to_placeholder() -> None:
    assert dq.batch_dep_ref(0) == -1 and dq.batch_dep_ref(4) == -5
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            dq.batch_dep_ref(bad)  # type: ignore[arg-type]


def test_placeholders_must_point_to_earlier_jobs() -> None:
    resolve_batch_placeholders([-1, 7], position=1, batch_size=3)
    with pytest.raises(dq.JobDependencyError, match="-2"):
        resolve_batch_placeholders([-2], position=1, batch_size=3)
    with pytest.raises(dq.JobDependencyError):
        resolve_batch_placeholders([-1], position=0, batch_size=1)  # itself


def test_payload_encoding_accepts_common_python_values() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    when = dt.datetime(2030, 1, 1, tzinfo=UTC)
    key = uuid.UUID(int=1)
    text = encode_json({"p": Point(1), "at": when, "id": key, "t": (1, 2)})
    assert text == (
        '{"p":{"x":1},"at":"2030-01-01T00:00:00+00:00",'
        '"id":"00000000-0000-0000-0000-000000000001","t":[1,2]}'
    )


def test_payload_encoding_rejects_naive_datetimes_and_nul() -> None:
    with pytest.raises(dq.InvalidJobError, match="naive"):
        encode_json({"at": dt.datetime(2030, 1, 1)})
    with pytest.raises(dq.InvalidJobError, match="NUL"):
        encode_json(["a\x00"])
    assert encode_json("\\u0000") == '"\\\\u0000"'  # an escaped backslash is fine


@dataclasses.dataclass
class _Pair:
    x: float
    y: float


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"bad": float("nan")}, "nan at payload['bad']"),
        ([1, {"y": (2, float("inf"))}], "inf at payload[1]['y'][1]"),
        (_Pair(1, float("-inf")), "-inf at payload['y']"),
    ],
)
def test_payload_encoding_names_a_non_finite_float(value: object, named: str) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        encode_json(value)
    assert named in str(info.value)


def test_update_rules() -> None:
    assert v.build_update({"run_at": None, "tags": None}) == {"run_at": None, "tags": None}
    assert v.build_update({"payload": [1]}) == {"payload": "[1]"}
    with pytest.raises(TypeError, match="group"):
        v.build_update({"group": {"id": "x"}})
    with pytest.raises(dq.InvalidJobError, match="priority"):
        v.build_update({"priority": None})


def test_filter_rules() -> None:
    when = dt.datetime(2030, 1, 1, tzinfo=UTC)
    parsed = v.build_filter(
        {"job_type": "", "run_at": {"gte": when, "lt": None}, "tags": {"values": ["a"]}}
    )
    assert parsed.job_type is None
    assert parsed.run_at == (("gte", when),)
    assert (parsed.tag_values, parsed.tag_mode) == (("a",), dq.TagMatch.ALL)
    with pytest.raises(dq.InvalidJobError, match="cursor"):
        v.build_filter({"cursor": 3}, allow_cursor=False)


def test_enum_members_compare_to_strings() -> None:
    assert dq.JobStatus.PENDING == "pending" and str(dq.JobStatus.WAITING) == "waiting"
    assert dq.FailureReason("no_handler") is dq.FailureReason.NO_HANDLER
