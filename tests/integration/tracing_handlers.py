"""Handlers of the tracing tests' worker processes: ``tests.integration.tracing_handlers:HANDLERS``.

When :data:`SPAN_FILE_VARIABLE` names a file, importing this module (which
``dataqueue worker`` does) sets up an OpenTelemetry SDK that appends every ended span
to that file as one JSON line (:func:`span_fields`), so that the test can read the
worker's spans.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

SPAN_FILE_VARIABLE = "DATAQUEUE_TEST_SPAN_FILE"


def span_fields(span: ReadableSpan) -> dict[str, Any]:
    """What the tests compare of a span, in plain JSON types (ids as hex)."""
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
        "parent_span_id": None if parent is None else trace.format_span_id(parent.span_id),
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as a JSON line, flushed at once."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_fields(span)) + "\n" for span in spans)
        with self._lock, open(self._path, "a", encoding="utf-8") as file:
            file.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def read_spans(path: str) -> list[dict[str, Any]]:
    """The spans :class:`JsonLinesExporter` wrote to ``path`` so far."""
    try:
        with open(path, encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.endswith("\n")]
    except FileNotFoundError:
        return []


def traced(payload: Any) -> Any:
    """Opens a span of its own: it must nest under the job's run span."""
    with trace.get_tracer("tests.handlers").start_as_current_span("handler-work"):
        return payload


def failing(payload: Any) -> None:
    raise ValueError(f"boom {payload.get('n')}")


HANDLERS = {"traced": traced, "failing": failing}


def _set_up_tracing() -> None:
    path = os.environ.get(SPAN_FILE_VARIABLE)
    if path:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
        trace.set_tracer_provider(provider)


_set_up_tracing()
