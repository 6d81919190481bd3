"""Bad input raises the API.md error naming the value, and writes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import StatementCounter, run_sql
from tests.integration.bad_values import INT4_OVER, LONE, NUL, nested


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


# --- values PostgreSQL would refuse, in reads, edits, tokens and cron -----------------


class Targets(NamedTuple):
    """What the bad calls aim at: a pending job, a waiting token, a cron schedule."""

    job_id: int
    token_id: str
    schedule_id: int


_Call = Callable[[dq.JobQueue, Targets], Any]

#: (id, call, text its InvalidJobError names: the field and the value)
UNSTORABLE: list[tuple[str, _Call, str]] = [
    ("get_job id beyond int4", lambda q, t: q.get_job(INT4_OVER), f"got {INT4_OVER}"),
    ("get_job_events id beyond int4", lambda q, t: q.get_job_events(2**40), "job_id must be"),
    ("retry_job id beyond int4", lambda q, t: q.retry_job(INT4_OVER), "job_id must be"),
    ("cancel_job negative id", lambda q, t: q.cancel_job(-1), "job_id must be an integer"),
    ("edit_job id beyond int4", lambda q, t: q.edit_job(2**63, priority=1), "job_id must be"),
    ("edit_job payload lone surrogate", lambda q, t: q.edit_job(t.job_id, payload={"x": LONE}),
     "payload['x'] contains a lone surrogate '\\ud800'"),
    ("edit_job payload NUL key", lambda q, t: q.edit_job(t.job_id, payload=[{NUL: 1}]),
     "payload[0] has a key that contains a NUL character"),
    ("edit_job payload too deep", lambda q, t: q.edit_job(t.job_id, payload=nested(500)),
     "payload nests containers more than 100 levels deep"),
    ("edit_job tag NUL", lambda q, t: q.edit_job(t.job_id, tags=["ok", "a" + NUL]),
     "tags[1] contains a NUL character"),
    ("edit_job tag of 1 MB", lambda q, t: q.edit_job(t.job_id, tags=["t" * 1_000_000]),
     "tags[0] must be at most 255 characters"),
    ("edit_job dead_letter_job_type lone surrogate",
     lambda q, t: q.edit_job(t.job_id, dead_letter_job_type=LONE),
     "dead_letter_job_type contains a lone surrogate"),
    ("edit_job dead_letter_job_type of 256 characters",
     lambda q, t: q.edit_job(t.job_id, dead_letter_job_type="d" * 256),
     "dead_letter_job_type must be at most 255 characters"),
    ("edit_job priority beyond int4", lambda q, t: q.edit_job(t.job_id, priority=INT4_OVER),
     f"priority must be between -2147483648 and 2147483647, got {INT4_OVER}"),
    ("edit_job timeout_ms beyond int4",
     lambda q, t: q.edit_job(t.job_id, timeout_ms=INT4_OVER), "timeout_ms must be between"),
    ("edit_all_pending_jobs payload key lone surrogate",
     lambda q, t: q.edit_all_pending_jobs(payload={LONE: 1}),
     "payload has a key that contains a lone surrogate"),
    ("edit_all_pending_jobs job_type filter NUL",
     lambda q, t: q.edit_all_pending_jobs({"job_type": "a" + NUL}, priority=1),
     "filters.job_type contains a NUL character"),
    ("edit_all_pending_jobs tag filter lone surrogate",
     lambda q, t: q.edit_all_pending_jobs({"tags": {"values": [LONE]}}, priority=1),
     "filters.tags.values[0] contains a lone surrogate"),
    ("cancel_all_upcoming_jobs job_type filter lone surrogate",
     lambda q, t: q.cancel_all_upcoming_jobs({"job_type": LONE}),
     "filters.job_type contains a lone surrogate"),
    ("cancel_all_upcoming_jobs tag filter NUL",
     lambda q, t: q.cancel_all_upcoming_jobs({"tags": {"values": ["t", NUL], "mode": "any"}}),
     "filters.tags.values[1] contains a NUL character"),
    ("get_jobs job_type filter NUL", lambda q, t: q.get_jobs({"job_type": NUL}),
     "filters.job_type contains a NUL character"),
    ("get_jobs tag filter lone surrogate",
     lambda q, t: q.get_jobs({"tags": {"values": [LONE]}}),
     "filters.tags.values[0] contains a lone surrogate"),
    ("get_jobs negative cursor", lambda q, t: q.get_jobs({"cursor": -1}),
     "filters.cursor must be between 1 and 2147483647, got -1"),
    ("get_jobs cursor beyond int4", lambda q, t: q.get_jobs({"cursor": INT4_OVER}),
     "filters.cursor must be between"),
    ("get_jobs bool cursor", lambda q, t: q.get_jobs({"cursor": True}),
     "filters.cursor must be an integer, got True"),
    ("get_jobs_by_tags lone surrogate", lambda q, t: q.get_jobs_by_tags([LONE]),
     "tags[0] contains a lone surrogate"),
    ("get_jobs_by_tags NUL", lambda q, t: q.get_jobs_by_tags(["a", NUL], mode="any"),
     "tags[1] contains a NUL character"),
    ("limit beyond bigint", lambda q, t: q.get_all_jobs(limit=2**63),
     f"limit must be between 0 and 9223372036854775807, got {2**63}"),
    ("offset beyond bigint", lambda q, t: q.get_jobs(offset=2**70), "offset must be between"),
    ("negative offset", lambda q, t: q.get_jobs_by_tags(["a"], offset=-1),
     "offset must be between 0"),
    ("bool limit", lambda q, t: q.get_jobs_by_status("pending", limit=True),
     "limit must be an integer, got True"),
    ("float limit", lambda q, t: q.get_all_jobs(limit=1.5), "limit must be an integer, got 1.5"),
    ("get_token NUL", lambda q, t: q.get_token(NUL), "token_id contains a NUL character"),
    ("get_token lone surrogate", lambda q, t: q.get_token(LONE),
     "token_id contains a lone surrogate"),
    ("get_token of 256 characters", lambda q, t: q.get_token("t" * 256),
     "token_id must be at most 255 characters"),
    ("get_token non-string", lambda q, t: q.get_token(7), "token_id must be a non-empty string"),
    ("complete_token lone surrogate", lambda q, t: q.complete_token("tok" + LONE),
     "token_id contains a lone surrogate"),
    ("complete_token data NUL", lambda q, t: q.complete_token(t.token_id, {"a": NUL}),
     "token data['a'] contains a NUL character"),
    ("create_token tag lone surrogate", lambda q, t: q.create_token(tags=[LONE]),
     "tags[0] contains a lone surrogate"),
    ("create_token tag of 256 characters", lambda q, t: q.create_token(tags=["t" * 256]),
     "tags[0] must be at most 255 characters"),
    ("cron name lone surrogate",
     lambda q, t: q.add_cron_job(LONE, "0 0 * * *", "report", {}),
     "schedule_name contains a lone surrogate"),
    ("cron name of 256 characters",
     lambda q, t: q.add_cron_job("n" * 256, "0 0 * * *", "report", {}),
     "schedule_name must be at most 255 characters"),
    ("cron expression NUL",
     lambda q, t: q.add_cron_job("n", "0 0 * * *" + NUL, "report", {}),
     "cron_expression contains a NUL character"),
    ("cron expression lone surrogate",
     lambda q, t: q.add_cron_job("n", "0 0 * * " + LONE, "report", {}),
     "cron_expression contains a lone surrogate"),
    ("cron expression of 256 characters",
     lambda q, t: q.add_cron_job("n", "0" + ",0" * 128 + " * * * *", "report", {}),
     "cron_expression must be at most 255 characters"),
    ("cron timezone lone surrogate",
     lambda q, t: q.add_cron_job("n", "0 0 * * *", "report", {}, timezone="UTC" + LONE),
     "timezone contains a lone surrogate"),
    ("cron timezone of 101 characters",
     lambda q, t: q.add_cron_job("n", "0 0 * * *", "report", {}, timezone="E/" + "x" * 99),
     "timezone must be at most 100 characters"),
    ("cron job_type lone surrogate",
     lambda q, t: q.add_cron_job("n", "0 0 * * *", "report" + LONE, {}),
     "job_type contains a lone surrogate"),
    ("cron payload NUL",
     lambda q, t: q.add_cron_job("n", "0 0 * * *", "report", {"a": [NUL]}),
     "payload['a'][0] contains a NUL character"),
    ("cron tag lone surrogate",
     lambda q, t: q.add_cron_job("n", "0 0 * * *", "report", {}, tags=[LONE]),
     "tags[0] contains a lone surrogate"),
    ("cron priority beyond int4",
     lambda q, t: q.add_cron_job("n", "0 0 * * *", "report", {}, priority=INT4_OVER),
     "priority must be between"),
    ("get_cron_job_by_name NUL", lambda q, t: q.get_cron_job_by_name("n" + NUL),
     "schedule_name contains a NUL character"),
    ("get_cron_job id beyond int4", lambda q, t: q.get_cron_job(INT4_OVER),
     "schedule_id must be between 1 and 2147483647"),
    ("edit_cron_job expression NUL",
     lambda q, t: q.edit_cron_job(t.schedule_id, cron_expression="0 1 * * *" + NUL),
     "cron_expression contains a NUL character"),
    ("edit_cron_job timezone lone surrogate",
     lambda q, t: q.edit_cron_job(t.schedule_id, timezone=LONE),
     "timezone contains a lone surrogate"),
    ("edit_cron_job payload lone surrogate",
     lambda q, t: q.edit_cron_job(t.schedule_id, payload={"a": LONE}),
     "payload['a'] contains a lone surrogate"),
    ("edit_cron_job tag NUL", lambda q, t: q.edit_cron_job(t.schedule_id, tags=[NUL]),
     "tags[0] contains a NUL character"),
    ("edit_cron_job dead_letter_job_type of 256 characters",
     lambda q, t: q.edit_cron_job(t.schedule_id, dead_letter_job_type="d" * 256),
     "dead_letter_job_type must be at most 255 characters"),
]  # fmt: skip


def _stored_state(engine: sa.Engine) -> list[Any]:
    return run_sql(
        engine,
        "SELECT (SELECT json_agg(j ORDER BY id) FROM job_queue j),"
        " (SELECT json_agg(e ORDER BY id) FROM job_events e),"
        " (SELECT json_agg(w ORDER BY id) FROM waitpoints w),"
        " (SELECT json_agg(c ORDER BY id) FROM cron_schedules c)",
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [case[1:] for case in UNSTORABLE],
    ids=[case[0] for case in UNSTORABLE],
)
def test_unstorable_value_raises_before_any_statement_and_changes_nothing(
    queue: dq.JobQueue, engine: sa.Engine, call: _Call, message: str
) -> None:
    targets = Targets(
        job_id=queue.add_job("kept", {"v": 1}, tags=["t"]),
        token_id=queue.create_token(timeout="1h").id,
        schedule_id=queue.add_cron_job("nightly", "0 0 * * *", "report", {}),
    )
    before = _stored_state(engine)
    with StatementCounter() as counter, pytest.raises(dq.InvalidJobError) as info:
        call(queue, targets)
    assert message in str(info.value)
    assert counter.statements == []
    assert _stored_state(engine) == before


def test_surrogate_pairs_in_payloads_are_stored_as_the_character(queue: dq.JobQueue) -> None:
    # JSONB joins a high and a low surrogate escape; text columns never see them.
    job_id = queue.add_job("a", {"e": "\ud83d\ude00", "plain": "😀"})
    job = queue.get_job(job_id)
    assert job is not None and job.payload == {"e": "😀", "plain": "😀"}


def test_largest_values_the_columns_hold_are_stored(queue: dq.JobQueue) -> None:
    job_id = queue.add_job(
        "j" * 255,
        nested(100),
        tags=["t" * 255, "é😀"],
        idempotency_key="k" * 255,
        group={"id": "g" * 255, "tier": "t" * 255},
        dead_letter_job_type="d" * 255,
        max_attempts=2**31 - 1,
        priority=-(2**31),
        timeout_ms=2**31 - 1,
        depends_on={"tags": ["x" * 255]},
    )
    job = queue.get_job(job_id)
    assert job is not None and job.job_type == "j" * 255 and job.payload == nested(100)
    assert queue.get_all_jobs(limit=2**63 - 1, offset=0)[0].id == job_id
    assert queue.get_all_jobs(limit=1, offset=2**63 - 1) == []
    assert queue.get_jobs({"cursor": 2**31 - 1, "job_type": "j" * 1000}) == []
