"""OpenTelemetry traces of enqueues and job runs (the optional ``[otel]`` extra).

``add_job``/``add_jobs`` called inside a span get a PRODUCER span of their own, one
per call, whose context every job of the call carries in its ``step_data`` under
:data:`STEP_DATA_KEY`: ``{"__dqTrace": {"traceparent": ..., "tracestate": ...}}``,
written by the global text-map propagator (W3C trace context unless
``OTEL_PROPAGATORS`` says otherwise). A worker runs each attempt of the job under a
CONSUMER span whose parent is that context (a root span when the job carries none),
current in the worker thread (and in an ``async def`` handler's task) while the
handler runs, so the handler's own spans nest under it.

Nothing here imports OpenTelemetry. Tracing is on only when the application has
imported ``opentelemetry.trace`` and set a tracer provider (an SDK); otherwise every
entry point returns after a dictionary lookup and, if OpenTelemetry was imported,
one call to ``get_tracer_provider()``. A failure inside OpenTelemetry is logged and
never fails an enqueue or a job.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dataqueue.logs import job_fields

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from dataqueue.backends.base import ClaimedJob
    from dataqueue.processing.invoke import Outcome

logger = logging.getLogger("dataqueue.tracing")

#: The key of ``step_data`` that carries the enqueuing trace context (a JSON object of
#: propagation headers). Upstream Node.js ignores it; step and wait code skips it.
STEP_DATA_KEY = "__dqTrace"

#: The instrumentation scope name, and ``messaging.system``.
TRACER_NAME = "dataqueue"

#: An enqueue span lists the job ids of a call of at most this many jobs.
MAX_LISTED_IDS = 1000

_TRACE_MODULE = "opentelemetry.trace"


def _configured_provider() -> TracerProvider | None:
    """The global tracer provider, or None while OpenTelemetry is not set up.

    Not set up: ``opentelemetry.trace`` never imported (so not installed, or unused),
    or no provider set (the API's proxy or no-op provider).
    """
    trace_api: Any = sys.modules.get(_TRACE_MODULE)
    if trace_api is None:
        return None
    try:
        provider = trace_api.get_tracer_provider()
        unset = (trace_api.ProxyTracerProvider, trace_api.NoOpTracerProvider)
    except AttributeError:  # another thread is still importing the module
        return None
    return None if isinstance(provider, unset) else provider


@functools.lru_cache(maxsize=8)
def _tracer(provider: TracerProvider) -> Tracer:
    """dataqueue's tracer of ``provider`` (cached: the SDK builds a new one per call)."""
    from dataqueue import __version__

    return provider.get_tracer(TRACER_NAME, __version__)


def _error_type(error: BaseException) -> str:
    """``error.type``: the exception's fully qualified class name."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _record_error(span: Span, error: BaseException, message: str | None = None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    span.set_attribute("error.type", _error_type(error))
    span.set_status(Status(StatusCode.ERROR, message or str(error) or type(error).__name__))


# -- enqueue ------------------------------------------------------------------------


class EnqueueTrace:
    """The span of one ``add_job``/``add_jobs`` call, current while the call writes.

    ``step_data_json`` is the ``step_data`` every job of the call starts with (None:
    the default ``{}``). Untraced calls get an instance without a span, whose methods
    do nothing.
    """

    __slots__ = ("_span", "_token", "step_data_json")

    def __init__(self, span: Span | None = None, step_data_json: str | None = None) -> None:
        self._span = span
        self._token: object = None
        self.step_data_json = step_data_json

    def __enter__(self) -> EnqueueTrace:
        if self._span is not None:
            from opentelemetry import context, trace

            # A database instrumentation's spans for the insert nest under this one.
            self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        try:
            from opentelemetry import context

            if self._token is not None:
                context.detach(self._token)  # type: ignore[arg-type]
            if exc is not None:
                _record_error(span, exc)
            span.end()
        except Exception:
            logger.exception(
                "could not end the enqueue span (ignored)", extra={"action": "tracing_failed"}
            )

    def added(self, job_ids: Sequence[int], job_types: Sequence[str]) -> None:
        """Name the span after the call's job types and record the ids it returned."""
        span = self._span
        if span is None:
            return
        try:
            _describe_enqueue(span, job_ids, job_types)
        except Exception:
            logger.exception(
                "could not describe the enqueue span (ignored)",
                extra={"action": "tracing_failed"},
            )


#: The shared no-op: holds nothing, changes nothing.
_UNTRACED_ENQUEUE = EnqueueTrace()


def trace_enqueue() -> EnqueueTrace:
    """Start the span of an enqueue call if OpenTelemetry is set up and a span is current.

    Outside any span nothing is traced and nothing is written: dataqueue joins the
    caller's trace, it does not start one.
    """
    provider = _configured_provider()
    if provider is None:
        return _UNTRACED_ENQUEUE
    try:
        return _start_enqueue(provider)
    except Exception:
        logger.exception(
            "could not start an enqueue span (the jobs carry no trace context)",
            extra={"action": "tracing_failed"},
        )
        return _UNTRACED_ENQUEUE


def _start_enqueue(provider: TracerProvider) -> EnqueueTrace:
    from opentelemetry import propagate, trace

    if not trace.get_current_span().get_span_context().is_valid:
        return _UNTRACED_ENQUEUE
    attributes: dict[str, Any] = {
        "messaging.system": TRACER_NAME,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
    span = _tracer(provider).start_span("send", kind=trace.SpanKind.PRODUCER, attributes=attributes)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    if not carrier:  # a propagator that writes nothing: nothing to carry
        return EnqueueTrace(span)
    return EnqueueTrace(span, json.dumps({STEP_DATA_KEY: carrier}, separators=(",", ":")))


def _describe_enqueue(span: Span, job_ids: Sequence[int], job_types: Sequence[str]) -> None:
    types = sorted(set(job_types))
    if len(types) == 1:
        span.update_name(f"send {types[0]}")
        span.set_attribute("messaging.destination.name", types[0])
    span.set_attribute("dataqueue.job.types", types)
    span.set_attribute("dataqueue.job.count", len(job_ids))
    if len(job_ids) == 1:
        span.set_attribute("messaging.message.id", str(job_ids[0]))
        span.set_attribute("dataqueue.job.id", job_ids[0])
    else:
        span.set_attribute("messaging.batch.message_count", len(job_ids))
    if len(job_ids) <= MAX_LISTED_IDS:
        span.set_attribute("dataqueue.job.ids", list(job_ids))


# -- job runs -----------------------------------------------------------------------


def carried_context(step_data: Any) -> Context | None:
    """The trace context a job's ``step_data`` carries, or None (absent or malformed)."""
    if not isinstance(step_data, dict):
        return None
    carrier = step_data.get(STEP_DATA_KEY)
    if not isinstance(carrier, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in carrier.items()
    ):
        return None
    from opentelemetry import propagate

    return propagate.extract(carrier)


class RunTrace:
    """The span of one job run, current in the worker thread until :meth:`end`."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: object) -> None:
        self._span = span
        self._token = token

    def end(self, outcome: Outcome, timed_out: bool = False) -> None:
        """Record how the run ended and end the span (in the thread that started it).

        ``timed_out``: the job's deadline settled it first (it failed with reason
        ``timeout``) and ``outcome``, the handler's, came too late to count.
        """
        try:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]
            _describe_outcome(self._span, outcome, timed_out)
            self._span.end()
        except Exception:
            logger.exception(
                "could not end the run span of job %s (ignored)",
                outcome.job.id,
                extra=job_fields(outcome.job, None, "tracing_failed"),
            )


def start_run(job: ClaimedJob, worker_id: str) -> RunTrace | None:
    """Start the span of one run of ``job`` and make it current; None when not traced.

    Its parent is the context the job carries (see :data:`STEP_DATA_KEY`); a job
    without one (enqueued outside a span, by Node.js, by cron) gets a root span.
    """
    provider = _configured_provider()
    if provider is None:
        return None
    try:
        return _start_run(provider, job, worker_id)
    except Exception:
        logger.exception(
            "could not start the run span of job %s (ignored)",
            job.id,
            extra=job_fields(job, worker_id, "tracing_failed"),
        )
        return None


def _start_run(provider: TracerProvider, job: ClaimedJob, worker_id: str) -> RunTrace:
    from opentelemetry import context, trace
    from opentelemetry.context import Context

    parent = carried_context(job.step_data)
    links = []
    if parent is not None:
        creation = trace.get_current_span(parent).get_span_context()
        if creation.is_valid:
            # Messaging conventions: a process span links to the message's creation
            # context; with one message per run it is also the parent.
            links.append(trace.Link(creation))
    attributes: dict[str, Any] = {
        "messaging.system": TRACER_NAME,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": job.job_type,
        "messaging.message.id": str(job.id),
        "dataqueue.job.id": job.id,
        "dataqueue.job.type": job.job_type,
        "dataqueue.job.attempt": job.attempts,
        "dataqueue.job.max_attempts": job.max_attempts,
        "dataqueue.job.resumed": job.resumed,
        "dataqueue.worker.id": worker_id,
    }
    base = parent if parent is not None else Context()  # never the worker thread's context
    span = _tracer(provider).start_span(
        f"process {job.job_type}",
        context=base,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )
    token = context.attach(trace.set_span_in_context(span, base))
    return RunTrace(span, token)


def _describe_outcome(span: Span, outcome: Outcome, timed_out: bool) -> None:
    if timed_out:
        span.set_attribute("dataqueue.job.outcome", "failed")
        span.set_attribute("dataqueue.job.failure_reason", "timeout")
        _record_error(span, TimeoutError("the job timed out before its handler returned"))
        return
    span.set_attribute("dataqueue.job.outcome", outcome.kind)
    if outcome.kind != "failed":
        return
    if outcome.reason is not None:
        span.set_attribute("dataqueue.job.failure_reason", str(outcome.reason))
    if outcome.error is not None:
        _record_error(span, outcome.error)
