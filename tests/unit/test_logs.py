"""The JSON log formatter and the fields of job records."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import attrs

from dataqueue.logs import JsonFormatter, job_fields


@attrs.frozen
class _Job:
    id: int
    job_type: str
    attempts: int


def _record(message: str, *args: Any, extra: dict[str, Any] | None = None, **kw: Any) -> Any:
    logger = logging.getLogger("dataqueue.test")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, message, args, None, extra=extra, **kw
    )


def test_a_record_is_one_json_line_with_its_extra_keys() -> None:
    extra = job_fields(_Job(7, "mail", 2), "w-1", "job_completed", duration_ms=1.5)
    line = JsonFormatter().format(_record("job %s done\nsecond line", 7, extra=extra))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "job 7 done\nsecond line"
    assert entry["level"] == "WARNING" and entry["logger"] == "dataqueue.test"
    assert entry["timestamp"].endswith("Z") and len(entry["timestamp"]) == 24
    assert {k: entry[k] for k in extra} == extra


def test_job_fields_leave_out_an_unknown_worker() -> None:
    assert "worker_id" not in job_fields(_Job(1, "t", 1), None, "x")


def test_exceptions_become_text_and_odd_values_strings() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        exc_info = sys.exc_info()
    record = _record("failed", extra={"action": "x", "when": object(), "level": "custom"})
    record.exc_info = exc_info
    entry = json.loads(JsonFormatter().format(record))
    assert entry["exception"].startswith("Traceback") and "ValueError: bad" in entry["exception"]
    assert entry["when"].startswith("<object object")
    assert entry["level"] == "WARNING" and entry["extra_level"] == "custom"
