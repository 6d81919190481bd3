"""OpenTelemetry traces: enqueue spans, run spans, and the trace context carried between.

Each test that traces gets its own SDK tracer provider with an in-memory exporter, set
as the global provider for the test only (and unset after it, so that every other test
runs with OpenTelemetry imported but not configured).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import dataqueue as dq
from dataqueue.tracing import STEP_DATA_KEY
from tests.conftest import REPO_ROOT, run_sql
from tests.integration.store_state import is_redis, make_wait_due
from tests.integration.tracing_handlers import SPAN_FILE_VARIABLE, read_spans
from tests.integration.worker_runner import WorkerProcess

pytestmark = pytest.mark.all_backends

WORKER_TIMEOUT = 30.0


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An SDK provider, global for this test, whose spans the exporter keeps."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The API sets its global provider once per process; OpenTelemetry's own test
    # helpers reset it the same way.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield exporter
    provider.shutdown()


def _tracer() -> trace.Tracer:
    return trace.get_tracer("tests")


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = _named(exporter, name)
    names = [span.name for span in exporter.get_finished_spans()]
    assert len(found) == 1, f"expected one span {name!r}, got {names}"
    return found[0]


def _ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _step_data(queue: dq.JobQueue, job_id: int) -> dict[str, Any] | None:
    job = queue.get_job(job_id)
    assert job is not None
    return job.step_data


def _enqueue_in_request(enqueue: Callable[[], Any]) -> tuple[Any, trace.Span]:
    with _tracer().start_as_current_span("request") as request:
        result = enqueue()
    return result, request


# -- in one process ------------------------------------------------------------------


def test_job_run_is_a_child_of_the_enqueue_span(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    def greet(payload: Any) -> str:
        with _tracer().start_as_current_span("handler-work"):
            return f"hello {payload['name']}"

    job_id, _ = _enqueue_in_request(lambda: queue.add_job("greet", {"name": "ada"}))
    assert queue.create_processor({"greet": greet}).start() == 1

    request, send = _one(spans, "request"), _one(spans, "send greet")
    run, work = _one(spans, "process greet"), _one(spans, "handler-work")
    trace_id = _ids(request)[0]
    assert {_ids(span)[0] for span in (send, run, work)} == {trace_id}
    assert _parent_id(send) == _ids(request)[1]
    assert _parent_id(run) == _ids(send)[1]
    assert _parent_id(work) == _ids(run)[1]
    assert [link.context.span_id for link in run.links] == [_ids(send)[1]]
    assert (send.kind, run.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert dict(send.attributes or {}) == {
        "messaging.system": "dataqueue",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "greet",
        "messaging.message.id": str(job_id),
        "dataqueue.job.id": job_id,
        "dataqueue.job.ids": (job_id,),
        "dataqueue.job.types": ("greet",),
        "dataqueue.job.count": 1,
    }
    attributes = dict(run.attributes or {})
    assert attributes.pop("dataqueue.worker.id").startswith("worker-")
    assert attributes == {
        "messaging.system": "dataqueue",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "greet",
        "messaging.message.id": str(job_id),
        "dataqueue.job.id": job_id,
        "dataqueue.job.type": "greet",
        "dataqueue.job.attempt": 1,
        "dataqueue.job.max_attempts": 3,
        "dataqueue.job.resumed": False,
        "dataqueue.job.outcome": "completed",
    }
    assert run.status.status_code == StatusCode.UNSET


def test_job_carries_the_enqueue_context_in_step_data(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    job_id, _ = _enqueue_in_request(lambda: queue.add_job("greet", {"name": "ada"}))
    trace_id, span_id = _ids(_one(spans, "send greet"))
    step_data = _step_data(queue, job_id) or {}
    assert list(step_data) == [STEP_DATA_KEY]
    assert list(step_data[STEP_DATA_KEY]) == ["traceparent"]  # no tracestate, no baggage
    # W3C trace context: version, trace id, parent id (the enqueue span), flags (sampled).
    version, carried_trace, carried_span, flags = step_data[STEP_DATA_KEY]["traceparent"].split("-")
    assert (version, carried_trace, carried_span) == ("00", f"{trace_id:032x}", f"{span_id:016x}")
    assert int(flags, 16) & 1


def test_failed_run_records_the_error(queue: dq.JobQueue, spans: InMemorySpanExporter) -> None:
    def failing(payload: Any) -> None:
        raise ValueError("boom")

    job_id, _ = _enqueue_in_request(lambda: queue.add_job("failing", {}, max_attempts=1))
    queue.create_processor({"failing": failing}).start()

    run = _one(spans, "process failing")
    assert _parent_id(run) == _ids(_one(spans, "send failing"))[1]
    assert run.status.status_code == StatusCode.ERROR and run.status.description == "boom"
    attributes = run.attributes or {}
    assert attributes["dataqueue.job.outcome"] == "failed"
    assert attributes["dataqueue.job.failure_reason"] == "handler_error"
    assert attributes["error.type"] == "ValueError"
    [event] = run.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "ValueError"
    assert dict(event.attributes or {})["exception.message"] == "boom"
    job = queue.get_job(job_id)
    assert job is not None and job.status == "failed"


def test_retries_run_in_the_enqueuing_trace(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    attempts: list[int] = []

    def flaky(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        attempts.append(ctx.attempts)
        if ctx.attempts == 1:
            raise RuntimeError("first try")

    job_id, _ = _enqueue_in_request(lambda: queue.add_job("flaky", {}, retry_delay=0))
    processor = queue.create_processor({"flaky": flaky})
    processor.start()
    assert STEP_DATA_KEY in (_step_data(queue, job_id) or {})  # kept by the failure
    deadline = time.monotonic() + 10
    while processor.start() == 0:
        assert time.monotonic() < deadline, "the retry never became due"
        time.sleep(0.05)

    send_id = _ids(_one(spans, "send flaky"))[1]
    runs = _named(spans, "process flaky")
    assert [_parent_id(run) for run in runs] == [send_id, send_id]
    assert [(run.attributes or {})["dataqueue.job.attempt"] for run in runs] == [1, 2]
    assert [(run.attributes or {})["dataqueue.job.outcome"] for run in runs] == [
        "failed",
        "completed",
    ]


def test_trace_context_survives_steps_and_waits(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> str:
        ctx.run("first", lambda: 1)
        ctx.wait_for(hours=1)
        return "done"

    job_id, _ = _enqueue_in_request(lambda: queue.add_job("flow", {}))
    processor = queue.create_processor({"flow": flow})
    assert processor.start() == 1
    carried = (_step_data(queue, job_id) or {}).get(STEP_DATA_KEY)
    assert carried is not None
    assert set(_step_data(queue, job_id) or {}) == {STEP_DATA_KEY, "first", "__wait_0"}
    make_wait_due(queue, job_id)
    assert processor.start() == 1

    job = queue.get_job(job_id)
    assert job is not None and job.status == "completed" and job.output == "done"
    send_id = _ids(_one(spans, "send flow"))[1]
    runs = _named(spans, "process flow")
    assert [_parent_id(run) for run in runs] == [send_id, send_id]
    assert [(run.attributes or {})["dataqueue.job.outcome"] for run in runs] == [
        "waiting",
        "completed",
    ]
    assert [(run.attributes or {})["dataqueue.job.resumed"] for run in runs] == [False, True]
    assert all(run.status.status_code == StatusCode.UNSET for run in runs)


def test_the_trace_key_is_not_a_step_name(queue: dq.JobQueue) -> None:
    def flow(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.run(STEP_DATA_KEY, lambda: 1)

    job_id = queue.add_job("flow", {}, max_attempts=1)
    queue.create_processor({"flow": flow}).start()
    job = queue.get_job(job_id)
    assert job is not None and job.status == "failed"
    assert "reserved" in job.error_history[-1]["message"]


def test_async_handler_spans_nest_under_the_run_span(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    async def fetch(payload: Any) -> int:
        await asyncio.sleep(0)
        with _tracer().start_as_current_span("async-work"):
            await asyncio.sleep(0)
            return 1

    _enqueue_in_request(lambda: queue.add_job("fetch", {}))
    assert queue.create_processor({"fetch": fetch}).start() == 1

    run = _one(spans, "process fetch")
    assert _parent_id(run) == _ids(_one(spans, "send fetch"))[1]
    assert _parent_id(_one(spans, "async-work")) == _ids(run)[1]


def test_handler_that_outlives_its_timeout_ends_its_span_as_timed_out(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    def slow(payload: Any) -> None:
        time.sleep(0.3)

    _enqueue_in_request(lambda: queue.add_job("slow", {}, timeout_ms=50, max_attempts=1))
    queue.create_processor({"slow": slow}).start()
    deadline = time.monotonic() + 5
    while not _named(spans, "process slow"):  # the handler returns after its deadline
        assert time.monotonic() < deadline, "the run span never ended"
        time.sleep(0.02)

    run = _one(spans, "process slow")
    assert (run.attributes or {})["dataqueue.job.outcome"] == "failed"
    assert (run.attributes or {})["dataqueue.job.failure_reason"] == "timeout"
    assert run.status.status_code == StatusCode.ERROR


def test_add_jobs_is_one_span_whose_context_every_job_carries(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    entries = [
        {"job_type": "a", "payload": {"n": 1}},
        {"job_type": "b", "payload": {"n": 2}},
        {"job_type": "a", "payload": {"n": 3}},
    ]
    ids, _ = _enqueue_in_request(lambda: queue.add_jobs(entries))
    send = _one(spans, "send")
    assert dict(send.attributes or {}) == {
        "messaging.system": "dataqueue",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.batch.message_count": 3,
        "dataqueue.job.ids": tuple(ids),
        "dataqueue.job.types": ("a", "b"),
        "dataqueue.job.count": 3,
    }
    carried = {str((_step_data(queue, job_id) or {}).get(STEP_DATA_KEY)) for job_id in ids}
    assert len(carried) == 1

    queue.create_processor({"a": lambda p: None, "b": lambda p: None}, batch_size=5).start()
    runs = _named(spans, "process a") + _named(spans, "process b")
    assert len(runs) == 3
    assert {_parent_id(run) for run in runs} == {_ids(send)[1]}


def test_enqueue_that_raises_records_the_error(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(dq.InvalidJobError):
        _enqueue_in_request(lambda: queue.add_jobs([{"job_type": "a", "payload": {}}, {}]))
    send = _one(spans, "send")
    assert send.status.status_code == StatusCode.ERROR
    assert (send.attributes or {})["error.type"] == "dataqueue.errors.InvalidJobError"
    assert queue.get_jobs_by_status("pending") == []


# -- nothing traced ------------------------------------------------------------------


def test_enqueue_outside_any_span_writes_no_trace_context(
    queue: dq.JobQueue, spans: InMemorySpanExporter
) -> None:
    job_id = queue.add_job("greet", {"name": "ada"})
    [batch_id] = queue.add_jobs([{"job_type": "greet", "payload": {"name": "bob"}}])
    assert _step_data(queue, job_id) == {} and _step_data(queue, batch_id) == {}
    assert spans.get_finished_spans() == ()

    queue.create_processor({"greet": lambda p: None}).start()
    runs = _named(spans, "process greet")
    assert len(runs) == 2 and all(run.parent is None for run in runs)  # roots of their own


def test_without_a_tracer_provider_nothing_is_traced_or_written(queue: dq.JobQueue) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    with _tracer().start_as_current_span("request"):
        job_id = queue.add_job("greet", {"name": "ada"})
        [batch_id] = queue.add_jobs([{"job_type": "greet", "payload": {"name": "bob"}}])
    assert _step_data(queue, job_id) == {} and _step_data(queue, batch_id) == {}
    assert queue.create_processor({"greet": lambda p: None}).start() == 2


def test_dataqueue_never_imports_opentelemetry_itself() -> None:
    script = """
import sys
import dataqueue
from dataqueue import tracing
from dataqueue.backends.base import ClaimedJob
assert tracing.trace_enqueue().step_data_json is None
job = ClaimedJob(1, "t", {}, 1, 3, None, False, None, None, None, {}, None)
assert tracing.start_run(job, "w") is None
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
assert not loaded, loaded
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# -- PostgreSQL paths ----------------------------------------------------------------


def _carrying(engine: sa.Engine) -> int:
    sql = "SELECT count(*) FROM job_queue WHERE step_data ? :key"
    return int(run_sql(engine, sql, key=STEP_DATA_KEY)[0][0])


def test_pipelined_batch_carries_the_context_in_every_job(
    pg_queue: dq.JobQueue, engine: sa.Engine, spans: InMemorySpanExporter
) -> None:
    entries = [{"job_type": "t", "payload": {"n": n}} for n in range(2500)]
    entries[1700]["idempotency_key"] = "k"  # the keyed rest goes as one statement
    _enqueue_in_request(lambda: pg_queue.add_jobs(entries))
    assert _carrying(engine) == 2500
    send = _one(spans, "send t")
    assert "dataqueue.job.ids" not in (send.attributes or {})  # more than MAX_LISTED_IDS
    assert (send.attributes or {})["messaging.batch.message_count"] == 2500


def test_jobs_enqueued_in_the_callers_transaction_carry_the_context(
    pg_queue: dq.JobQueue, engine: sa.Engine, spans: InMemorySpanExporter
) -> None:
    def enqueue() -> None:
        with engine.begin() as conn:
            pg_queue.add_job("t", {"n": 1}, db=conn)
            pg_queue.add_jobs([{"job_type": "t", "payload": {"n": n}} for n in range(3)], db=conn)

    _enqueue_in_request(enqueue)
    assert _carrying(engine) == 4
    assert len(_named(spans, "send t")) == 2


# -- across a worker process -----------------------------------------------------------


def _worker(queue: dq.JobQueue, database_url: str, request: pytest.FixtureRequest) -> WorkerProcess:
    args = ("--poll-interval", "100", "--no-supervisor")
    handlers = "tests.integration.tracing_handlers:HANDLERS"
    if not is_redis(queue):
        return WorkerProcess(database_url, handlers, *args)
    prefix: str = queue._backend.prefix  # type: ignore[attr-defined]
    redis_url: str = request.getfixturevalue("redis_url")
    return WorkerProcess(database_url, handlers, *args, redis_url=redis_url, key_prefix=prefix)


def _wait_for_final(queue: dq.JobQueue, job_id: int, worker: WorkerProcess) -> dq.JobRecord:
    deadline = time.monotonic() + WORKER_TIMEOUT
    while (job := queue.get_job(job_id)) is None or not job.is_final:
        assert worker.poll() is None, worker.stop()[1][-3000:]
        assert time.monotonic() < deadline, "the worker did not run the job"
        time.sleep(0.05)
    return job


@pytest.fixture
def span_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The file this test's worker processes write their spans to."""
    path = tmp_path / "worker-spans.jsonl"
    monkeypatch.setenv(SPAN_FILE_VARIABLE, str(path))  # the workers inherit it
    return str(path)


def test_worker_process_runs_the_job_in_the_enqueuing_trace(
    queue: dq.JobQueue,
    spans: InMemorySpanExporter,
    database_url: str,
    request: pytest.FixtureRequest,
    span_file: str,
) -> None:
    (job_id, failed_id), _ = _enqueue_in_request(
        lambda: (
            queue.add_job("traced", {"n": 1}),
            queue.add_job("failing", {"n": 2}, max_attempts=1),
        )
    )
    worker = _worker(queue, database_url, request)
    try:
        assert _wait_for_final(queue, job_id, worker).status == "completed"
        assert _wait_for_final(queue, failed_id, worker).status == "failed"
    finally:
        code, stderr = worker.stop()
    assert code == 0, stderr[-3000:]

    worker_spans = read_spans(span_file)
    by_name = {span["name"]: span for span in worker_spans}
    run, work = by_name["process traced"], by_name["handler-work"]
    failed = by_name["process failing"]
    send_trace, send_id = _ids(_one(spans, "send traced"))
    assert run["trace_id"] == f"{send_trace:032x}"
    assert run["parent_span_id"] == f"{send_id:016x}"
    assert run["kind"] == "CONSUMER"
    assert run["attributes"]["dataqueue.job.id"] == job_id
    assert run["attributes"]["dataqueue.job.outcome"] == "completed"
    assert (work["trace_id"], work["parent_span_id"]) == (run["trace_id"], run["span_id"])
    failed_send = _ids(_one(spans, "send failing"))
    assert failed["parent_span_id"] == f"{failed_send[1]:016x}"
    assert failed["status"] == "ERROR" and failed["events"] == ["exception"]
    assert failed["attributes"]["error.type"] == "ValueError"


def test_worker_process_without_trace_context_runs_root_spans(
    queue: dq.JobQueue, database_url: str, request: pytest.FixtureRequest, span_file: str
) -> None:
    job_id = queue.add_job("traced", {"n": 1})  # no provider here: nothing carried
    assert _step_data(queue, job_id) == {}
    worker = _worker(queue, database_url, request)
    try:
        assert _wait_for_final(queue, job_id, worker).status == "completed"
    finally:
        code, stderr = worker.stop()
    assert code == 0, stderr[-3000:]
    run = next(span for span in read_spans(span_file) if span["name"] == "process traced")
    assert run["parent_span_id"] is None
