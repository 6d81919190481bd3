"""Steps, time waits and tokens: memoisation, resumption, attempts, upstream's gaps fixed."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

import dataqueue as dq
from tests.integration.store_state import force_job, make_token_due, make_wait_due

pytestmark = pytest.mark.all_backends

UTC = dt.timezone.utc


def _job(queue: dq.JobQueue, job_id: int) -> dq.JobRecord:
    job = queue.get_job(job_id)
    assert job is not None
    return job


def test_steps_replay_and_time_wait_resumes_without_an_attempt(queue: dq.JobQueue) -> None:
    calls: list[str] = []

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        first = ctx.run("charge", lambda: calls.append("charge") or {"charged": 10})
        ctx.wait_for(hours=1)
        second = ctx.run("email", lambda: calls.append("email") or "sent")
        return {"first": first, "second": second}

    job_id = queue.add_job("flow", {}, max_attempts=1)
    processor = queue.create_processor({"flow": flow})
    assert processor.start() == 1
    job = _job(queue, job_id)
    assert (job.status, job.locked_by, job.attempts) == ("waiting", None, 1)
    assert job.wait_until is not None and job.wait_until > dt.datetime.now(UTC) + dt.timedelta(
        minutes=59
    )
    assert job.step_data == {
        "charge": {"__completed": True, "result": {"charged": 10}},
        "__wait_0": {"type": "duration", "completed": False},
    }
    waiting = queue.get_job_events(job_id)[-1]
    assert waiting.event_type == "waiting" and waiting.metadata is not None
    assert waiting.metadata["waitTokenId"] is None and waiting.metadata["waitUntil"].endswith("Z")
    assert processor.start() == 0  # not due yet
    make_wait_due(queue, job_id)
    assert processor.start() == 1
    job = _job(queue, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert job.output == {"first": {"charged": 10}, "second": "sent"}
    assert calls == ["charge", "email"]


def test_wait_until_in_the_past_resumes_on_the_next_claim(queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        ctx.wait_until(dt.datetime.now(UTC) - dt.timedelta(seconds=1))
        return "done"

    job_id = queue.add_job("flow", {})
    processor = queue.create_processor({"flow": flow})
    processor.start()
    assert _job(queue, job_id).status == "waiting"
    processor.start()
    assert _job(queue, job_id).output == "done"


def test_wait_signal_is_not_swallowed_by_except_exception(queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        try:
            ctx.wait_for(minutes=5)
        except Exception:  # a broad handler must not turn the wait into a completion
            return "swallowed"
        return "after"

    job_id = queue.add_job("flow", {})
    queue.create_processor({"flow": flow}).start()
    assert _job(queue, job_id).status == "waiting"


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda ctx: ctx.wait_for(seconds=0), "must be positive"),
        (lambda ctx: ctx.wait_for(seconds=-5), "must be positive"),
        (lambda ctx: ctx.wait_for(fortnights=1), "fortnights"),
        (lambda ctx: ctx.wait_until(dt.datetime(2030, 1, 1)), "naive"),
        (lambda ctx: ctx.run("s", object), "not JSON-serialisable"),
        (lambda ctx: ctx.create_token(timeout="10 m"), "Invalid timeout format"),
        (lambda ctx: ctx.wait_for_token("wp_missing"), "unknown token"),
    ],
    ids=["zero", "negative", "unknown unit", "naive", "step result", "timeout", "token"],
)
def test_bad_wait_arguments_fail_the_attempt(queue: dq.JobQueue, call: Any, pattern: str) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        call(ctx)

    job_id = queue.add_job("flow", {})
    queue.create_processor({"flow": flow}).start()
    job = _job(queue, job_id)
    assert job.status == "failed"
    assert pattern in job.error_history[0]["message"]


def test_token_created_in_a_handler_resumes_its_job_without_an_attempt(
    queue: dq.JobQueue,
) -> None:
    # W-TOK-3: upstream's resume consumed an attempt; with max_attempts=1 the job was stuck.
    results: list[dq.WaitTokenResult] = []

    def approve(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        token_id = ctx.run("token", lambda: ctx.create_token(timeout="1h", tags=["approval"]).id)
        result = ctx.wait_for_token(token_id)
        results.append(result)
        return {"approved": result.output}

    job_id = queue.add_job("approve", {}, max_attempts=1)
    processor = queue.create_processor({"approve": approve})
    processor.start()
    job = _job(queue, job_id)
    assert job.status == "waiting" and job.wait_token_id is not None
    token = queue.get_token(job.wait_token_id)
    assert token is not None and token.id.startswith("wp_")
    assert (token.job_id, token.status, token.tags) == (job_id, "waiting", ["approval"])
    assert token.timeout_at is not None
    assert queue.complete_token(token.id, {"by": "ada"}) is True
    assert queue.complete_token(token.id, {"by": "eve"}) is False
    processor.start()
    job = _job(queue, job_id)
    assert (job.status, job.attempts, job.output) == ("completed", 1, {"approved": {"by": "ada"}})
    assert results == [dq.WaitTokenResult(ok=True, output={"by": "ada"})]
    completed = queue.get_token(token.id)
    assert completed is not None and completed.status == "completed"
    assert completed.output == {"by": "ada"} and completed.completed_at is not None


def test_token_created_outside_a_handler_resumes_the_waiter(queue: dq.JobQueue) -> None:
    # W-TOK-1: upstream only resumed jobs through waitpoints.job_id, which is NULL here.
    token = queue.create_token(timeout=dt.timedelta(minutes=5))

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        return ctx.wait_for_token(payload["token"]).output

    job_id = queue.add_job("flow", {"token": token.id})
    processor = queue.create_processor({"flow": flow})
    processor.start()
    assert _job(queue, job_id).status == "waiting"
    linked = queue.get_token(token.id)
    assert linked is not None and linked.job_id == job_id
    queue.complete_token(token.id, "go")
    processor.start()
    assert _job(queue, job_id).output == "go"


def test_completion_that_lands_before_the_wait_is_not_lost(queue: dq.JobQueue) -> None:
    # W-TOK-2: the token completes after the handler checked it but before the job is
    # parked. The store sees the settled token and makes the job due at once.
    backend = queue._backend  # the race is between two backend calls
    token = queue.create_token()
    job_id = queue.add_job("flow", {})
    force_job(queue, job_id, status="processing", locked_by="w1", attempts=1)
    queue.complete_token(token.id, {"late": True})
    assert backend.wait_job("w1", job_id, None, token.id, '{"__wait_0": {"type": "token"}}')
    job = _job(queue, job_id)
    assert (job.status, job.wait_token_id) == ("waiting", None)
    assert job.wait_until is not None and job.wait_until <= dt.datetime.now(UTC)


def test_timed_out_token_resumes_the_waiter_with_an_error(queue: dq.JobQueue) -> None:
    results: list[dq.WaitTokenResult] = []

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        token_id = ctx.run("token", lambda: ctx.create_token(timeout="0s").id)
        results.append(ctx.wait_for_token(token_id))

    job_id = queue.add_job("flow", {}, max_attempts=1)
    processor = queue.create_processor({"flow": flow})
    processor.start()
    job = _job(queue, job_id)
    if job.status == "waiting":
        assert queue.expire_timed_out_tokens() == 1
        processor.start()
    assert results == [dq.WaitTokenResult(ok=False, error="Token timed out")]
    assert _job(queue, job_id).status == "completed"


def test_expire_timed_out_tokens_only_touches_due_tokens(queue: dq.JobQueue) -> None:
    due = queue.create_token(timeout="1h")
    later = queue.create_token(timeout="1h")
    forever = queue.create_token()
    make_token_due(queue, due.id)
    assert queue.expire_timed_out_tokens() == 1
    statuses = {t.id: t.status for t in (queue.get_token(i.id) for i in (due, later, forever)) if t}
    assert statuses == {due.id: "timed_out", later.id: "waiting", forever.id: "waiting"}


def test_complete_token_rejects_unknown_ids(queue: dq.JobQueue) -> None:
    with pytest.raises(dq.InvalidJobError, match="wp_nope"):
        queue.complete_token("wp_nope")
    assert queue.get_token("wp_nope") is None


def test_cancel_job_cancels_a_job_waiting_on_a_token(queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.wait_for_token(ctx.run("t", lambda: ctx.create_token().id))

    job_id = queue.add_job("flow", {})
    queue.create_processor({"flow": flow}).start()
    assert queue.cancel_job(job_id) is True
    job = _job(queue, job_id)
    assert (job.status, job.wait_token_id, job.wait_until) == ("cancelled", None, None)


def test_job_waiting_hook_fires_once_parked(queue: dq.JobQueue) -> None:
    seen: list[Any] = []
    queue.on("job:waiting", seen.append)

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.wait_for(seconds=30)

    job_id = queue.add_job("flow", {})
    queue.create_processor({"flow": flow}).start()
    assert seen == [{"job_id": job_id, "job_type": "flow"}]
    time.sleep(0)  # nothing else to wait for


def _wait_on_payload_token(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
    result = ctx.wait_for_token(payload["token"])
    return {"ok": result.ok, "output": result.output, "error": result.error}


def test_token_made_outside_a_handler_has_no_job_timeout_or_tags(queue: dq.JobQueue) -> None:
    before = dt.datetime.now(UTC) - dt.timedelta(seconds=5)
    token = queue.create_token()
    record = queue.get_token(token.id)
    assert record is not None
    assert (record.id, record.job_id, record.status, record.output) == (
        token.id,
        None,
        "waiting",
        None,
    )
    assert (record.timeout_at, record.completed_at, record.tags) == (None, None, None)
    assert before < record.created_at < dt.datetime.now(UTC) + dt.timedelta(seconds=5)


def test_token_timeout_counts_from_creation(queue: dq.JobQueue) -> None:
    token = queue.create_token(timeout="10m", tags=[])
    record = queue.get_token(token.id)
    assert record is not None and record.timeout_at is not None
    assert record.timeout_at - record.created_at == dt.timedelta(minutes=10)
    assert record.tags == []


def test_complete_token_without_data_stores_no_output(queue: dq.JobQueue) -> None:
    token = queue.create_token()
    assert queue.complete_token(token.id) is True
    record = queue.get_token(token.id)
    assert record is not None and record.completed_at is not None
    assert (record.status, record.output) == ("completed", None)


def test_complete_token_keeps_json_output_exactly(queue: dq.JobQueue) -> None:
    data = {"empty": [], "nested": {}, "big": 2**62 + 1, "text": "é\u2028"}
    token = queue.create_token()
    queue.complete_token(token.id, data)
    record = queue.get_token(token.id)
    assert record is not None and record.output == data


def test_every_job_waiting_on_a_token_resumes(queue: dq.JobQueue) -> None:
    token = queue.create_token()
    ids = [queue.add_job("flow", {"token": token.id}, max_attempts=1) for _ in range(2)]
    processor = queue.create_processor({"flow": _wait_on_payload_token})
    assert processor.start() == 2
    assert [_job(queue, i).status for i in ids] == ["waiting", "waiting"]
    linked = queue.get_token(token.id)
    assert linked is not None and linked.job_id in ids  # the first waiter is linked
    assert queue.complete_token(token.id, 7) is True
    for job_id in ids:
        job = _job(queue, job_id)
        assert (job.status, job.wait_token_id) == ("waiting", None)
        assert job.wait_until is not None and job.wait_until <= dt.datetime.now(UTC)
    assert processor.start() == 2
    for job_id in ids:
        job = _job(queue, job_id)
        assert (job.status, job.attempts) == ("completed", 1)
        assert job.output == {"ok": True, "output": 7, "error": None}


def test_expired_token_resumes_its_waiters_without_an_attempt(queue: dq.JobQueue) -> None:
    token = queue.create_token(timeout="1h")
    job_id = queue.add_job("flow", {"token": token.id}, max_attempts=1)
    processor = queue.create_processor({"flow": _wait_on_payload_token})
    processor.start()
    assert _job(queue, job_id).status == "waiting"
    assert queue.expire_timed_out_tokens() == 0  # not due yet
    make_token_due(queue, token.id)
    assert queue.expire_timed_out_tokens() == 1
    assert queue.expire_timed_out_tokens() == 0
    expired = queue.get_token(token.id)
    assert expired is not None and (expired.status, expired.completed_at) == ("timed_out", None)
    job = _job(queue, job_id)
    assert (job.status, job.wait_token_id) == ("waiting", None)
    assert queue.complete_token(token.id, "late") is False
    assert processor.start() == 1
    job = _job(queue, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert job.output == {"ok": False, "output": None, "error": "Token timed out"}


def test_completed_token_does_not_time_out(queue: dq.JobQueue) -> None:
    token = queue.create_token(timeout="1h")
    queue.complete_token(token.id, "done")
    make_token_due(queue, token.id)
    assert queue.expire_timed_out_tokens() == 0
    record = queue.get_token(token.id)
    assert record is not None and (record.status, record.output) == ("completed", "done")


def test_completion_resumes_only_jobs_waiting_on_that_token(queue: dq.JobQueue) -> None:
    # The job creates (and so is linked to) one token but waits on another one.
    external = queue.create_token()
    own: list[str] = []

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        own.append(ctx.run("own", lambda: ctx.create_token().id))
        return ctx.wait_for_token(external.id).output

    job_id = queue.add_job("flow", {})
    processor = queue.create_processor({"flow": flow})
    processor.start()
    linked = queue.get_token(own[0])
    assert linked is not None and linked.job_id == job_id
    assert queue.complete_token(own[0]) is True
    job = _job(queue, job_id)
    assert (job.status, job.wait_token_id) == ("waiting", external.id)
    assert processor.start() == 0
    queue.complete_token(external.id, "go")
    assert processor.start() == 1
    assert _job(queue, job_id).output == "go"


def test_completion_leaves_a_cancelled_waiter_cancelled(queue: dq.JobQueue) -> None:
    token = queue.create_token()
    job_id = queue.add_job("flow", {"token": token.id})
    processor = queue.create_processor({"flow": _wait_on_payload_token})
    processor.start()
    assert queue.cancel_job(job_id) is True
    assert queue.complete_token(token.id) is True
    job = _job(queue, job_id)
    assert (job.status, job.wait_until, job.wait_token_id) == ("cancelled", None, None)
    assert processor.start() == 0
