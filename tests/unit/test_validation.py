"""Pure validation rules: options, filters, updates, dependencies, payload encoding."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest

import dataqueue as dq
from dataqueue import validation as v
from dataqueue.dependencies import normalise_depends_on, resolve_batch_placeholders
from dataqueue.payload import MAX_PAYLOAD_DEPTH, SHOWN_CHARS, encode_json, shown, text_problem

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


# --- what PostgreSQL cannot store: text, lengths, integer ranges, nesting ---------------

LONE = "\ud800"
NUL = "\x00"


def _nested(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("plain", None),
        ("", None),
        ("héllo 😀 한국어", None),
        ("a\x00b", "a NUL character"),
        ("é\x00", "a NUL character"),
        ("x\ud800", "a lone surrogate '\\ud800'"),
        ("\udfff", "a lone surrogate '\\udfff'"),
        # Two surrogate code points are no character either: UTF-8 cannot encode them.
        ("\ud83d\ude00", "a lone surrogate '\\ud83d'"),
    ],
)
def test_text_problem_names_nul_and_surrogates(text: str, problem: str | None) -> None:
    assert text_problem(text) == problem


def test_shown_cuts_long_values_and_survives_huge_ints() -> None:
    assert shown("abc") == "'abc'"
    assert shown("x" * 1000) == "'" + "x" * (SHOWN_CHARS - 1) + "…"
    assert shown(10**5000) == "<int too large to show>"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (LONE, "job_type contains a lone surrogate '\\ud800', got '\\ud800'"),
        ("a" + NUL, "job_type contains a NUL character, got 'a\\x00'"),
        ("", "job_type must be a non-empty string, got ''"),
        (b"email", "job_type must be a non-empty string, got b'email'"),
        ("j" * 256, "job_type must be at most 255 characters, got 256 characters: 'jjj"),
    ],
)
def test_require_str_names_field_and_value(value: object, message: str) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.require_str(value, "job_type")
    assert str(info.value).startswith(message)


def test_require_str_takes_255_characters_and_any_unicode_character() -> None:
    assert v.require_str("j" * 255, "job_type") == "j" * 255
    assert v.require_str("é😀" * 100, "job_type") == "é😀" * 100


def test_require_str_cuts_a_huge_value_short_in_the_message() -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.require_str("k" * 1_000_000, "idempotency_key")
    assert len(str(info.value)) < 200 and "1000000 characters" in str(info.value)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (["ok", "x" + NUL], "tags[1] contains a NUL character"),
        (("ok", "ok", LONE), "tags[2] contains a lone surrogate '\\ud800'"),
        (["t" * 256], "tags[0] must be at most 255 characters"),
        (["ok", 3], "tags[1] must be a string, got 3"),
        ("urgent", "tags must be a list of strings, got 'urgent'"),
    ],
)
def test_require_tags_names_the_bad_tag(tags: object, message: str) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.require_tags(tags)
    assert message in str(info.value)


def test_require_tags_caps_stored_tags_but_not_filters() -> None:
    assert v.require_tags(("", "t" * v.MAX_TAG_LENGTH)) == ["", "t" * 255]
    assert v.require_tags(["t" * 10_000], max_len=None) == ["t" * 10_000]
    with pytest.raises(dq.InvalidJobError, match="NUL"):
        v.require_tags(["t" * 10_000 + NUL], max_len=None)


_TOO_BIG = 2**31


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"tags": ["a", LONE]}, "tags[1] contains a lone surrogate"),
        ({"tags": ["t" * 1_000_000]}, "tags[0] must be at most 255 characters"),
        ({"idempotency_key": "k" + NUL}, "idempotency_key contains a NUL character"),
        ({"idempotency_key": "k" * 256}, "idempotency_key must be at most 255"),
        ({"group": {"id": LONE}}, "group.id contains a lone surrogate"),
        ({"group": {"id": "g", "tier": "t" * 256}}, "group.tier must be at most 255"),
        ({"group": dq.JobGroup(id="g", tier=NUL)}, "group.tier contains a NUL character"),
        ({"dead_letter_job_type": "d" + LONE}, "dead_letter_job_type contains a lone surrogate"),
        ({"dead_letter_job_type": "d" * 256}, "dead_letter_job_type must be at most 255"),
        ({"depends_on": {"tags": ["ok", NUL]}}, "depends_on.tags[1] contains a NUL character"),
        ({"depends_on": dq.DependsOn(tags=[LONE])}, "depends_on.tags[0] contains a lone"),
        ({"depends_on": {"tags": ["t" * 256]}}, "depends_on.tags[0] must be at most 255"),
        ({"depends_on": {"job_ids": [2**40]}}, f"depends_on.job_ids: {2**40} is neither"),
        ({"depends_on": {"job_ids": [1, _TOO_BIG]}}, f"depends_on.job_ids: {_TOO_BIG} is"),
        ({"depends_on": {"job_ids": [0]}}, "depends_on.job_ids: 0 is neither"),
        ({"depends_on": {"job_ids": [-(2**40)]}}, "depends_on.job_ids: -1099511627776"),
        ({"max_attempts": _TOO_BIG}, f"max_attempts must be between 1 and {v.INT4_MAX}"),
        ({"priority": -_TOO_BIG - 1}, f"priority must be between {v.INT4_MIN}"),
        ({"timeout_ms": _TOO_BIG}, "timeout_ms must be between 0"),
        ({"retry_delay": _TOO_BIG}, "retry_delay must be between 0"),
        ({"retry_delay_max": 2**63}, "retry_delay_max must be between 0"),
    ],
)
def test_options_a_column_cannot_hold_are_refused(options: dict[str, object], named: str) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.build_new_job("email", {}, options)
    assert named in str(info.value)


def test_dependency_ids_keep_placeholders_and_the_int4_range() -> None:
    job = v.build_new_job("t", {}, {"depends_on": {"job_ids": [v.INT4_MAX, -1, 1]}})
    assert job.depends_on_job_ids == [v.INT4_MAX, -1, 1]
    with pytest.raises(dq.JobDependencyError) as info:
        v.build_new_job("t", {}, {"depends_on": {"job_ids": [2**40]}})
    assert info.value.job_ids == [2**40]


@pytest.mark.parametrize(
    ("updates", "named"),
    [
        ({"payload": {"x": LONE}}, "payload['x'] contains a lone surrogate '\\ud800'"),
        ({"payload": {NUL: 1}}, "payload has a key that contains a NUL character"),
        ({"tags": ["ok", NUL]}, "tags[1] contains a NUL character"),
        ({"dead_letter_job_type": LONE}, "dead_letter_job_type contains a lone surrogate"),
        ({"dead_letter_job_type": "d" * 256}, "dead_letter_job_type must be at most 255"),
        ({"max_attempts": 2**40}, "max_attempts must be between 1"),
        ({"priority": _TOO_BIG}, "priority must be between"),
        ({"timeout_ms": _TOO_BIG}, "timeout_ms must be between 0"),
    ],
)
def test_updates_a_column_cannot_hold_are_refused(updates: dict[str, object], named: str) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.build_update(updates)
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"job_type": "a" + NUL}, "filters.job_type contains a NUL character"),
        ({"job_type": LONE}, "filters.job_type contains a lone surrogate"),
        ({"job_type": 3}, "filters.job_type must be a string, got 3"),
        ({"tags": {"values": ["ok", LONE]}}, "filters.tags.values[1] contains a lone"),
        ({"tags": {"values": [NUL], "mode": "any"}}, "filters.tags.values[0] contains a NUL"),
        ({"cursor": 0}, "filters.cursor must be between 1"),
        ({"cursor": -5}, "filters.cursor must be between 1"),
        ({"cursor": _TOO_BIG}, f"filters.cursor must be between 1 and {v.INT4_MAX}"),
        ({"cursor": True}, "filters.cursor must be an integer, got True"),
        ({"priority": 2**40}, "filters.priority must be between"),
    ],
)
def test_filters_postgresql_would_refuse_are_refused(
    filters: dict[str, object], named: str
) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.build_filter(filters)
    assert named in str(info.value)


def test_filter_text_has_no_length_cap() -> None:
    parsed = v.build_filter({"job_type": "j" * 1000, "tags": {"values": ["t" * 1000]}})
    assert parsed.job_type == "j" * 1000 and parsed.tag_values == ("t" * 1000,)


@pytest.mark.parametrize(
    ("limit", "offset", "named"),
    [
        (-1, 0, "limit must be between 0"),
        (2**63, 0, f"limit must be between 0 and {v.INT8_MAX}, got {2**63}"),
        (True, 0, "limit must be an integer, got True"),
        (1.5, 0, "limit must be an integer, got 1.5"),
        ("10", 0, "limit must be an integer, got '10'"),
        (10, -1, "offset must be between 0"),
        (10, 2**64, "offset must be between 0"),
        (10, False, "offset must be an integer, got False"),
        (10, None, "offset must be an integer, got None"),
    ],
)
def test_page_refuses_what_bigint_cannot_hold(limit: object, offset: object, named: str) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.page(limit, offset)
    assert named in str(info.value)


def test_page_takes_the_bigint_range() -> None:
    assert v.page(0, v.INT8_MAX) == (0, v.INT8_MAX)


@pytest.mark.parametrize(
    ("job_id", "named"),
    [(0, "got 0"), (-1, "got -1"), (_TOO_BIG, f"got {_TOO_BIG}"), (True, "got True")],
)
def test_job_ids_are_int4(job_id: object, named: str) -> None:
    with pytest.raises(dq.InvalidJobError, match=f"job_id must be an integer from 1 to .*{named}"):
        v.require_job_id(job_id)


@pytest.mark.parametrize(
    ("token_id", "named"),
    [
        ("tok" + NUL, "token_id contains a NUL character"),
        (LONE, "token_id contains a lone surrogate"),
        ("t" * 256, "token_id must be at most 255 characters"),
        (7, "token_id must be a non-empty string, got 7"),
    ],
)
def test_token_ids_are_checked(token_id: object, named: str) -> None:
    with pytest.raises(dq.InvalidJobError) as info:
        v.require_token_id(token_id)
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("value", "max_len", "named"),
    [
        ("* * * * *" + NUL, 255, "cron_expression contains a NUL character"),
        ("* * * * " + LONE, 255, "cron_expression contains a lone surrogate"),
        ("0" + ",0" * 200 + " * * * *", 255, "cron_expression must be at most 255"),
    ],
)
def test_cron_text_is_checked_before_parsing(value: str, max_len: int, named: str) -> None:
    with pytest.raises(dq.InvalidCronExpressionError) as info:
        v.check_cron_text(value, "cron_expression", max_len=max_len)
    assert named in str(info.value)
    v.check_cron_text(None, "timezone", max_len=100)  # non-strings are the parser's business
    v.check_cron_text("Europe/Berlin", "timezone", max_len=100)


# --- encode_json: NUL, lone surrogates and nesting, named by path ------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, 2, LONE]}, "payload['a'][2] contains a lone surrogate '\\ud800': '\\ud800'"),
        ({"a": {"b": "x\x00y"}}, "payload['a']['b'] contains a NUL character: 'x\\x00y'"),
        ({"a": {"b\x00": 1}}, "payload['a'] has a key that contains a NUL character: 'b\\x00'"),
        ([{"\udc80": 1}], "payload[0] has a key that contains a lone surrogate '\\udc80'"),
        ("\ude00\ud83d", "payload contains a lone surrogate '\\ude00'"),
        (_Pair(1.0, float(0)), None),
        ({"s": {LONE}}, "payload['s'][0] contains a lone surrogate"),  # sets become lists
    ],
)
def test_payload_encoding_names_the_path_of_unstorable_text(
    value: object, message: str | None
) -> None:
    if message is None:
        encode_json(value)
        return
    with pytest.raises(dq.InvalidJobError) as info:
        encode_json(value)
    assert str(info.value).startswith(message)


def test_payload_encoding_names_what_it_encodes() -> None:
    with pytest.raises(dq.InvalidJobError, match=r"^handler result\['x'\] contains a NUL"):
        encode_json({"x": "\x00"}, what="handler result")


def test_payload_encoding_keeps_surrogate_pairs_and_escaped_backslashes() -> None:
    # JSONB joins a high and a low surrogate escape into one character.
    assert encode_json({"e": "\ud83d\ude00"}) == '{"e":"\\ud83d\\ude00"}'
    assert encode_json("😀") == '"\\ud83d\\ude00"'
    # Backslashes followed by text that looks like an escape are just text.
    assert encode_json(["\\ud800", "\\\\u0000"]) == '["\\\\ud800","\\\\\\\\u0000"]'
    with pytest.raises(dq.InvalidJobError, match="lone surrogate"):
        encode_json("\\" + LONE)


def test_payload_encoding_caps_nesting_depth() -> None:
    assert encode_json(_nested(MAX_PAYLOAD_DEPTH)).startswith("[" * MAX_PAYLOAD_DEPTH)
    for levels in (MAX_PAYLOAD_DEPTH + 1, 500, 100_000):
        with pytest.raises(dq.InvalidJobError, match=f"more than {MAX_PAYLOAD_DEPTH} levels"):
            encode_json(_nested(levels))


def test_payload_depth_counts_dicts_and_converted_objects_but_not_brackets_in_strings() -> None:
    deep: object = _Pair(1.0, 2.0)
    for level in range(MAX_PAYLOAD_DEPTH):
        deep = {"k": deep} if level % 2 else [deep]
    with pytest.raises(dq.InvalidJobError, match=r"levels deep \(at payload\['k'\]\[0\]\['k'\]"):
        encode_json(deep)
    brackets = {"text": "[" * 500, 'q\\"[': "]" * 500, "list": [[1]] * 300}
    assert encode_json(brackets).startswith('{"text":"[[[')


def test_payload_encoding_reports_a_cycle_without_walking_it() -> None:
    cycle: dict[str, object] = {}
    cycle["a"] = cycle
    cycle["b"] = cycle
    with pytest.raises(dq.InvalidJobError, match="Circular reference"):
        encode_json(cycle)
