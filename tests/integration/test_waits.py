"""Steps, time waits and tokens: memoisation, resumption, attempts, upstream's gaps fixed."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql

UTC = dt.timezone.utc


def _job(queue: dq.JobQueue, job_id: int) -> dq.JobRecord:
    job = queue.get_job(job_id)
    assert job is not None
    return job


def _make_due(engine: sa.Engine, job_id: int) -> None:
    run_sql(
        engine,
        "UPDATE job_queue SET wait_until = now() - interval '1 second' WHERE id = :id",
        id=job_id,
    )


def test_steps_replay_and_time_wait_resumes_without_an_attempt(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    calls: list[str] = []

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        first = ctx.run("charge", lambda: calls.append("charge") or {"charged": 10})
        ctx.wait_for(hours=1)
        second = ctx.run("email", lambda: calls.append("email") or "sent")
        return {"first": first, "second": second}

    job_id = pg_queue.add_job("flow", {}, max_attempts=1)
    processor = pg_queue.create_processor({"flow": flow})
    assert processor.start() == 1
    job = _job(pg_queue, job_id)
    assert (job.status, job.locked_by, job.attempts) == ("waiting", None, 1)
    assert job.wait_until is not None and job.wait_until > dt.datetime.now(UTC) + dt.timedelta(
        minutes=59
    )
    assert job.step_data == {
        "charge": {"__completed": True, "result": {"charged": 10}},
        "__wait_0": {"type": "duration", "completed": False},
    }
    waiting = pg_queue.get_job_events(job_id)[-1]
    assert waiting.event_type == "waiting" and waiting.metadata is not None
    assert waiting.metadata["waitTokenId"] is None and waiting.metadata["waitUntil"].endswith("Z")
    assert processor.start() == 0  # not due yet
    _make_due(engine, job_id)
    assert processor.start() == 1
    job = _job(pg_queue, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert job.output == {"first": {"charged": 10}, "second": "sent"}
    assert calls == ["charge", "email"]


def test_wait_until_in_the_past_resumes_on_the_next_claim(pg_queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        ctx.wait_until(dt.datetime.now(UTC) - dt.timedelta(seconds=1))
        return "done"

    job_id = pg_queue.add_job("flow", {})
    processor = pg_queue.create_processor({"flow": flow})
    processor.start()
    assert _job(pg_queue, job_id).status == "waiting"
    processor.start()
    assert _job(pg_queue, job_id).output == "done"


def test_wait_signal_is_not_swallowed_by_except_exception(pg_queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        try:
            ctx.wait_for(minutes=5)
        except Exception:  # a broad handler must not turn the wait into a completion
            return "swallowed"
        return "after"

    job_id = pg_queue.add_job("flow", {})
    pg_queue.create_processor({"flow": flow}).start()
    assert _job(pg_queue, job_id).status == "waiting"


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
def test_bad_wait_arguments_fail_the_attempt(
    pg_queue: dq.JobQueue, call: Any, pattern: str
) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        call(ctx)

    job_id = pg_queue.add_job("flow", {})
    pg_queue.create_processor({"flow": flow}).start()
    job = _job(pg_queue, job_id)
    assert job.status == "failed"
    assert pattern in job.error_history[0]["message"]


def test_token_created_in_a_handler_resumes_its_job_without_an_attempt(
    pg_queue: dq.JobQueue,
) -> None:
    # W-TOK-3: upstream's resume consumed an attempt; with max_attempts=1 the job was stuck.
    results: list[dq.WaitTokenResult] = []

    def approve(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        token_id = ctx.run("token", lambda: ctx.create_token(timeout="1h", tags=["approval"]).id)
        result = ctx.wait_for_token(token_id)
        results.append(result)
        return {"approved": result.output}

    job_id = pg_queue.add_job("approve", {}, max_attempts=1)
    processor = pg_queue.create_processor({"approve": approve})
    processor.start()
    job = _job(pg_queue, job_id)
    assert job.status == "waiting" and job.wait_token_id is not None
    token = pg_queue.get_token(job.wait_token_id)
    assert token is not None and token.id.startswith("wp_")
    assert (token.job_id, token.status, token.tags) == (job_id, "waiting", ["approval"])
    assert token.timeout_at is not None
    assert pg_queue.complete_token(token.id, {"by": "ada"}) is True
    assert pg_queue.complete_token(token.id, {"by": "eve"}) is False
    processor.start()
    job = _job(pg_queue, job_id)
    assert (job.status, job.attempts, job.output) == ("completed", 1, {"approved": {"by": "ada"}})
    assert results == [dq.WaitTokenResult(ok=True, output={"by": "ada"})]
    completed = pg_queue.get_token(token.id)
    assert completed is not None and completed.status == "completed"
    assert completed.output == {"by": "ada"} and completed.completed_at is not None


def test_token_created_outside_a_handler_resumes_the_waiter(pg_queue: dq.JobQueue) -> None:
    # W-TOK-1: upstream only resumed jobs through waitpoints.job_id, which is NULL here.
    token = pg_queue.create_token(timeout=dt.timedelta(minutes=5))

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        return ctx.wait_for_token(payload["token"]).output

    job_id = pg_queue.add_job("flow", {"token": token.id})
    processor = pg_queue.create_processor({"flow": flow})
    processor.start()
    assert _job(pg_queue, job_id).status == "waiting"
    linked = pg_queue.get_token(token.id)
    assert linked is not None and linked.job_id == job_id
    pg_queue.complete_token(token.id, "go")
    processor.start()
    assert _job(pg_queue, job_id).output == "go"


def test_completion_that_lands_before_the_wait_is_not_lost(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # W-TOK-2: the token completes after the handler checked it but before the job is
    # parked. The store sees the settled token and makes the job due at once.
    backend = pg_queue._backend  # the race is between two backend calls
    token = pg_queue.create_token()
    job_id = pg_queue.add_job("flow", {})
    run_sql(
        engine,
        "UPDATE job_queue SET status='processing', locked_by='w1', attempts=1 WHERE id=:id",
        id=job_id,
    )
    pg_queue.complete_token(token.id, {"late": True})
    assert backend.wait_job("w1", job_id, None, token.id, '{"__wait_0": {"type": "token"}}')
    job = _job(pg_queue, job_id)
    assert (job.status, job.wait_token_id) == ("waiting", None)
    assert job.wait_until is not None and job.wait_until <= dt.datetime.now(UTC)


def test_timed_out_token_resumes_the_waiter_with_an_error(pg_queue: dq.JobQueue) -> None:
    results: list[dq.WaitTokenResult] = []

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        token_id = ctx.run("token", lambda: ctx.create_token(timeout="0s").id)
        results.append(ctx.wait_for_token(token_id))

    job_id = pg_queue.add_job("flow", {}, max_attempts=1)
    processor = pg_queue.create_processor({"flow": flow})
    processor.start()
    job = _job(pg_queue, job_id)
    if job.status == "waiting":
        assert pg_queue.expire_timed_out_tokens() == 1
        processor.start()
    assert results == [dq.WaitTokenResult(ok=False, error="Token timed out")]
    assert _job(pg_queue, job_id).status == "completed"


def test_expire_timed_out_tokens_only_touches_due_tokens(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    due = pg_queue.create_token(timeout="1h")
    later = pg_queue.create_token(timeout="1h")
    forever = pg_queue.create_token()
    run_sql(
        engine,
        "UPDATE waitpoints SET timeout_at = now() - interval '1 second' WHERE id = :id",
        id=due.id,
    )
    assert pg_queue.expire_timed_out_tokens() == 1
    statuses = {
        t.id: t.status for t in (pg_queue.get_token(i.id) for i in (due, later, forever)) if t
    }
    assert statuses == {due.id: "timed_out", later.id: "waiting", forever.id: "waiting"}


def test_complete_token_rejects_unknown_ids(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(dq.InvalidJobError, match="wp_nope"):
        pg_queue.complete_token("wp_nope")
    assert pg_queue.get_token("wp_nope") is None


def test_cancel_job_cancels_a_job_waiting_on_a_token(pg_queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.wait_for_token(ctx.run("t", lambda: ctx.create_token().id))

    job_id = pg_queue.add_job("flow", {})
    pg_queue.create_processor({"flow": flow}).start()
    assert pg_queue.cancel_job(job_id) is True
    job = _job(pg_queue, job_id)
    assert (job.status, job.wait_token_id, job.wait_until) == ("cancelled", None, None)


def test_job_waiting_hook_fires_once_parked(pg_queue: dq.JobQueue) -> None:
    seen: list[Any] = []
    pg_queue.on("job:waiting", seen.append)

    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.wait_for(seconds=30)

    job_id = pg_queue.add_job("flow", {})
    pg_queue.create_processor({"flow": flow}).start()
    assert seen == [{"job_id": job_id, "job_type": "flow"}]
    time.sleep(0)  # nothing else to wait for
