"""Encoding between dataqueue's records and the Redis job hash and event lists.

The job hash is upstream's (SEMANTICS §10.2): camelCase field names, every value a
string, the literal ``null`` for NULL (missing and empty fields read as NULL too),
timestamps as epoch milliseconds, booleans as ``true``/``false``, JSON fields as JSON
text. Deviations:

- a fresh job's ``stepData`` is ``{}`` (as our PostgreSQL stores; upstream Redis wrote
  ``null``);
- every timestamp the store sets (``createdAt``, ``updatedAt``, event ``createdAt``, …)
  is the Redis server's clock read inside the script (upstream: the client's clock);
- timestamps keep upstream's millisecond precision, so a ``run_at`` given with
  microseconds is truncated to the millisecond (PostgreSQL keeps microseconds);
- a cascade-cancelled job's ``pendingReason`` is ``{"rootJobId":<id>,
  "dependencyCascade":true}`` as on PostgreSQL (upstream Redis left it unset).

JSON produced by users (payloads, tags) is encoded here, in Python, and travels to
the scripts as text that they store and splice verbatim: Lua's cjson never re-encodes
it (it would turn ``[]`` into ``{}`` and large integers into floats).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from dataqueue.backends.base import ClaimedJob
from dataqueue.enums import FailureReason, JobEventType, JobStatus
from dataqueue.records import JobEvent, JobRecord, iso_text
from dataqueue.validation import EDITED_KEYS, NewJob

_NULL = "null"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

#: camelCase hash fields (and ``edited`` metadata keys) of the editable fields.
EDIT_FIELDS = EDITED_KEYS


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def to_ms(value: dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime (truncated below the millisecond)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(value: str | None) -> dt.datetime | None:
    """An aware UTC datetime from epoch milliseconds; NULL encodings give None."""
    if value is None or value in ("", _NULL):
        return None
    return _EPOCH + dt.timedelta(milliseconds=int(float(value)))


def _text(value: Any) -> str:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def batch_row(job: NewJob) -> list[Any]:
    """One job as ``add_jobs.lua`` takes it (see the script's header)."""
    tags_json = _NULL if job.tags is None else _json(job.tags)
    head = '{"jobType":' + _json(job.job_type) + ',"payload":' + job.payload_json
    if job.tags is not None:
        head += ',"tags":' + tags_json
    if job.idempotency_key is not None:
        head += ',"idempotencyKey":' + _json(job.idempotency_key)
    row = [
        job.job_type,
        job.payload_json,
        str(job.max_attempts),
        str(job.priority),
        "" if job.run_at is None else str(to_ms(job.run_at)),
        _text(job.timeout_ms),
        _text(job.force_kill_on_timeout),
        tags_json,
        job.tags or [],
        job.idempotency_key or "",
        _text(job.retry_delay),
        _text(job.retry_backoff),
        _text(job.retry_delay_max),
        _text(job.dead_letter_job_type),
        _text(job.group_id),
        _text(job.group_tier),
        job.depends_on_job_ids or [],
        _NULL if job.depends_on_tags is None else _json(job.depends_on_tags),
        job.depends_on_tags or [],
        head,
    ]
    if job.step_data_json is not None:  # the trace context (dataqueue.tracing)
        row.append(job.step_data_json)
    return row


def encode_batch(jobs: list[NewJob]) -> str:
    """The ``ARGV[1]`` of ``add_jobs.lua``."""
    return _json([batch_row(job) for job in jobs])


def edit_arguments(updates: Mapping[str, Any]) -> list[str]:
    """``edit_jobs.lua``'s arguments before the job ids (see its header)."""
    pairs: list[str] = []
    meta: dict[str, Any] = {}
    for name, value in updates.items():
        field = EDIT_FIELDS[name]
        if name == "payload":
            pairs += [field, value]
            meta[field] = json.loads(value)
        elif name == "run_at":
            pairs += [field, "" if value is None else str(to_ms(value))]
            meta[field] = None if value is None else iso_text(value)
        elif name == "tags":
            pairs += [field, _NULL if value is None else _json(value)]
            meta[field] = value
        else:
            pairs += [field, _text(value)]
            meta[field] = value
    arguments = [_json(meta), str(len(pairs) // 2), *pairs]
    if "tags" in updates:
        tags = updates["tags"] or []
        arguments += ["set", str(len(tags)), *tags]
    else:
        arguments.append("keep")
    return arguments


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return None if text in ("", _NULL) else text


def _raw(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: str | None) -> int | None:
    return None if value is None else int(float(value))


def _bool(value: str | None) -> bool | None:
    return None if value is None else value in ("true", "1")


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _payload(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value  # upstream: unparsable payloads are returned as the raw text


def job_record_from_hash(raw: Mapping[Any, Any]) -> JobRecord:
    """A :class:`JobRecord` from a job hash (``HGETALL``; bytes or str)."""
    text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    h = {k: _str(v) for k, v in text.items()}
    created_at = from_ms(h.get("createdAt"))
    assert created_at is not None
    reason = h.get("failureReason")
    depends_on_ids = _loads(h.get("dependsOnJobIds"))
    depends_on_tags = _loads(h.get("dependsOnTags"))
    return JobRecord(
        id=int(h["id"] or 0),
        # Required text: a job type named "null" is that name, not NULL.
        job_type=_raw(text.get("jobType")),
        payload=_payload(h.get("payload")),
        status=JobStatus(h.get("status") or "pending"),
        created_at=created_at,
        updated_at=from_ms(h.get("updatedAt")) or created_at,
        locked_at=from_ms(h.get("lockedAt")),
        locked_by=h.get("lockedBy"),
        attempts=_int(h.get("attempts")) or 0,
        max_attempts=_int(h.get("maxAttempts")) or 3,
        next_attempt_at=from_ms(h.get("nextAttemptAt")),
        priority=_int(h.get("priority")) or 0,
        run_at=from_ms(h.get("runAt")) or created_at,
        pending_reason=h.get("pendingReason"),
        error_history=list(_loads(h.get("errorHistory")) or []),
        timeout_ms=_int(h.get("timeoutMs")),
        force_kill_on_timeout=bool(_bool(h.get("forceKillOnTimeout"))),
        failure_reason=FailureReason(reason) if reason else None,
        completed_at=from_ms(h.get("completedAt")),
        started_at=from_ms(h.get("startedAt")),
        last_retried_at=from_ms(h.get("lastRetriedAt")),
        last_failed_at=from_ms(h.get("lastFailedAt")),
        last_cancelled_at=from_ms(h.get("lastCancelledAt")),
        tags=_loads(h.get("tags")),
        idempotency_key=h.get("idempotencyKey"),
        wait_until=from_ms(h.get("waitUntil")),
        wait_token_id=h.get("waitTokenId"),
        step_data=_loads(h.get("stepData")),
        progress=_int(h.get("progress")),
        output=_loads(h.get("output")),
        retry_delay=_int(h.get("retryDelay")),
        retry_backoff=_bool(h.get("retryBackoff")),
        retry_delay_max=_int(h.get("retryDelayMax")),
        dead_letter_job_type=h.get("deadLetterJobType"),
        dead_lettered_at=from_ms(h.get("deadLetteredAt")),
        dead_letter_job_id=_int(h.get("deadLetterJobId")),
        group_id=h.get("groupId"),
        group_tier=h.get("groupTier"),
        # Upstream: empty dependency arrays read as NULL.
        depends_on_job_ids=depends_on_ids or None,
        depends_on_tags=depends_on_tags or None,
    )


#: Values per claimed job in the reply of ``advance.lua``.
CLAIMED_FIELDS = 13


def claimed_job(values: Sequence[Any]) -> ClaimedJob:
    """A :class:`ClaimedJob` from the 13 values ``advance.lua`` returns per claimed job."""
    v = [_str(x) for x in values]
    return ClaimedJob(
        id=int(v[0] or 0),
        job_type=_raw(values[1]),
        payload=_payload(v[2]),
        attempts=_int(v[3]) or 0,
        max_attempts=_int(v[4]) or 3,
        timeout_ms=_int(v[5]),
        force_kill_on_timeout=bool(_bool(v[6])),
        retry_delay=_int(v[7]),
        retry_backoff=_bool(v[8]),
        retry_delay_max=_int(v[9]),
        step_data=_loads(v[10]),
        group_id=v[11],
        resumed=v[12] == "1",
    )


def job_event_from_json(text: str | bytes) -> JobEvent:
    """A :class:`JobEvent` from one entry of ``P events:<id>``."""
    entry = json.loads(text)
    created_at = from_ms(str(entry["createdAt"]))
    assert created_at is not None
    return JobEvent(
        id=int(entry["id"]),
        job_id=int(entry["jobId"]),
        event_type=JobEventType(entry["eventType"]),
        created_at=created_at,
        metadata=entry.get("metadata"),
    )
