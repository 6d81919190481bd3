"""Texts we store that upstream (Node.js) writes too are written as upstream writes them
(issue 13 item 10): byte for byte where the value is text, format for timestamps."""

from __future__ import annotations

import re
from typing import Any

import pytest

import dataqueue as dq

pytestmark = pytest.mark.all_backends

#: JavaScript's Date.prototype.toISOString(): UTC, milliseconds, "Z".
JS_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def test_cascade_pending_reason_is_compact_json_text(queue: dq.JobQueue) -> None:
    root = queue.add_job("t", {})
    child = queue.add_job("t", {}, depends_on={"job_ids": [root]})
    assert queue.cancel_job(root)
    job = queue.get_job(child)
    assert job is not None
    assert job.pending_reason == f'{{"rootJobId":{root},"dependencyCascade":true}}'


def test_waiting_event_wait_until_has_milliseconds(queue: dq.JobQueue) -> None:
    def handler(payload: Any, signal: Any, ctx: dq.JobContext) -> None:
        ctx.wait_for(hours=1)

    job_id = queue.add_job("t", {})
    assert queue.create_processor({"t": handler}).start() == 1
    waiting = [e for e in queue.get_job_events(job_id) if e.event_type == "waiting"]
    assert len(waiting) == 1 and waiting[0].metadata is not None
    assert JS_ISO.match(waiting[0].metadata["waitUntil"])
    assert waiting[0].metadata["waitTokenId"] is None


def test_edited_run_at_and_error_timestamps_have_milliseconds(queue: dq.JobQueue) -> None:
    import datetime as dt

    job_id = queue.add_job("t", {})
    when = dt.datetime(2031, 2, 3, 4, 5, 6, 789_123, tzinfo=dt.timezone.utc)
    assert queue.edit_job(job_id, run_at=when)
    edited = queue.get_job_events(job_id)[-1]
    assert edited.metadata == {"runAt": "2031-02-03T04:05:06.789Z"}

    def boom(payload: Any) -> None:
        raise RuntimeError("boom")

    failing = queue.add_job("f", {}, max_attempts=1)
    assert queue.create_processor({"f": boom}).start() == 1
    job = queue.get_job(failing)
    assert job is not None and JS_ISO.match(job.error_history[-1]["timestamp"])
    failed = queue.get_job_events(failing)[-1]
    assert failed.metadata == {
        "message": "boom",
        "failureReason": "handler_error",
        "deadLetterJobId": None,
    }
