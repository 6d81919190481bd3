"""dataqueue's log records: the facts each one carries, and a JSON formatter for them.

Every record the library logs carries its facts as attributes (``logging``'s
``extra``) under stable keys, so a handler can read ``record.job_id`` instead of parsing
the message. ``action`` is always there: a snake_case name of what happened
(``job_started``, ``job_failed``, ``store_failing`` …). The other keys appear where
they apply:

========================  =====  ==========================================================
key                       type   meaning
========================  =====  ==========================================================
``action``                str    what happened (see docs/guides/observability.md)
``worker_id``             str    the processor's worker id (``locked_by``)
``job_id``                int    the job
``job_type``              str    its type
``attempt``               int    its attempt number (1 for the first run)
``duration_ms``           float  how long it took, in milliseconds
``job_ids``               list   several jobs (ints)
``count``                 int    how many (jobs, rows)
``reason``                str    a failure reason (``handler_error``, ``timeout`` …)
``will_retry``            bool   a failed job will run again
``error``                 str    an error's message (records without a traceback)
``tries``                 int    consecutive failed tries of the store
========================  =====  ==========================================================

:class:`JsonFormatter` writes one JSON object per record (``dataqueue worker
--log-format json``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Protocol

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


class _Job(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def job_type(self) -> str: ...

    @property
    def attempts(self) -> int: ...


def job_fields(job: _Job, worker_id: str | None, action: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a record about one claimed job: action, worker, job id/type/attempt.

    ``worker_id`` None leaves the key out.
    """
    fields: dict[str, Any] = {"action": action}
    if worker_id is not None:
        fields["worker_id"] = worker_id
    fields.update(job_id=job.id, job_type=job.job_type, attempt=job.attempts, **more)
    return fields


def milliseconds(seconds: float) -> float:
    """``duration_ms`` of a duration in seconds (microsecond precision)."""
    return round(seconds * 1000, 3)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: ``timestamp`` (ISO 8601 UTC with milliseconds and ``Z``), ``level``,
    ``logger``, ``message`` (arguments applied), ``thread`` (its name), then every
    ``extra`` key of the record, then ``exception`` (the formatted traceback) and
    ``stack`` when the record has them. Values JSON cannot hold are written as
    ``str(value)``; an ``extra`` key that collides with one of the keys above is
    written as ``extra_<key>``.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        entry: dict[str, Any] = {
            "timestamp": created.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{created.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            entry[f"extra_{key}" if key in entry else key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
