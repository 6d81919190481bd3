"""Cron schedules on Redis.

Keys (upstream's, SEMANTICS §10.1; ``P`` is the prefix):

- ``P cron:<id>``: hash of the schedule, camelCase field names encoded like the job hash
  (strings; ``null`` for NULL; epoch milliseconds; ``true``/``false``; ``payload`` and
  ``tags`` as JSON text);
- ``P cron_id_seq``: id counter; ``P cron_name:<name>``: id by name (names are unique);
- ``P crons``: every id; ``P cron_status:<status>``: ids per status;
- ``P cron_due``: the **active** schedules that have a next run, score ``nextRunAt``.

Each change is one Lua script (``scripts/cron_*.lua``): add (with its name check),
update, remove, and the enqueue of one occurrence. Timestamps come from the Redis
server's clock.

Exactly once (W-CRON-1): a pass reads the due schedules and the server's clock in one
script, computes each next run in Python, then runs one compare-and-set script per
schedule that enqueues the job and advances ``nextRunAt`` only if the schedule is still
active with the ``nextRunAt`` and job fields it read. Of several processes ticking at
once, one enqueues each occurrence; the others find ``nextRunAt`` moved and skip it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from dataqueue.backends.redis import codec
from dataqueue.backends.redis._base import RedisPart
from dataqueue.errors import DuplicateScheduleError, InvalidJobError
from dataqueue.records import CronScheduleRecord
from dataqueue.validation import NewJob

_NULL = "null"

#: Column name -> hash field of the columns a caller may set.
_FIELDS: Mapping[str, str] = {
    "schedule_name": "scheduleName",
    "cron_expression": "cronExpression",
    "job_type": "jobType",
    "payload": "payload",
    "max_attempts": "maxAttempts",
    "priority": "priority",
    "timeout_ms": "timeoutMs",
    "force_kill_on_timeout": "forceKillOnTimeout",
    "tags": "tags",
    "timezone": "timezone",
    "allow_overlap": "allowOverlap",
    "status": "status",
    "last_enqueued_at": "lastEnqueuedAt",
    "last_job_id": "lastJobId",
    "next_run_at": "nextRunAt",
    "retry_delay": "retryDelay",
    "retry_backoff": "retryBackoff",
    "retry_delay_max": "retryDelayMax",
    "dead_letter_job_type": "deadLetterJobType",
}

#: The column defaults of PostgreSQL's ``cron_schedules`` (for columns not given).
_DEFAULTS: Mapping[str, Any] = {
    "payload": {},
    "max_attempts": 3,
    "priority": 0,
    "force_kill_on_timeout": False,
    "timezone": "UTC",
    "allow_overlap": False,
    "status": "active",
}

#: Hash fields a due occurrence's job and next run are computed from: the enqueue
#: script checks they are unchanged, so an edit made meanwhile is never half applied.
_ENQUEUE_INPUTS = (
    "cronExpression",
    "timezone",
    "jobType",
    "payload",
    "maxAttempts",
    "priority",
    "timeoutMs",
    "forceKillOnTimeout",
    "tags",
    "retryDelay",
    "retryBackoff",
    "retryDelayMax",
    "deadLetterJobType",
)

#: What cron_update.lua returns when the new name belongs to another schedule.
_NAME_TAKEN = -1


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _encode(column: str, value: Any) -> str:
    """The hash text of one column value."""
    if column == "payload":
        return _json(value)
    if value is None:
        return _NULL
    if column == "tags":
        return _json(list(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return str(codec.to_ms(value))
    return str(value)


def _field_pairs(values: Mapping[str, Any]) -> list[str]:
    """``field, text, ...`` for the scripts; unknown columns raise InvalidJobError."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise InvalidJobError(f"unknown cron schedule field(s): {', '.join(unknown)}")
    pairs: list[str] = []
    for column, value in values.items():
        pairs += [_FIELDS[column], _encode(column, value)]
    return pairs


def _decoded(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash reply (bytes or str) as text."""
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


def _optional(h: Mapping[str, str], field: str) -> str | None:
    value = h.get(field)
    return None if value is None or value in ("", _NULL) else value


def _int(h: Mapping[str, str], field: str) -> int | None:
    value = _optional(h, field)
    return None if value is None else int(float(value))


def _bool(h: Mapping[str, str], field: str) -> bool | None:
    value = _optional(h, field)
    return None if value is None else value in ("true", "1")


def _time(h: Mapping[str, str], field: str) -> dt.datetime | None:
    return codec.from_ms(_optional(h, field))


def _payload(text: str | None) -> Any:
    if text is None:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text  # as for jobs: unparsable payloads are returned as the raw text


def cron_record_from_hash(h: Mapping[str, str]) -> CronScheduleRecord:
    """A :class:`CronScheduleRecord` from a decoded ``P cron:<id>`` hash.

    The NOT NULL text fields (name, expression, job type) are read as stored, so a
    schedule named ``null`` keeps its name.
    """
    created_at = _time(h, "createdAt")
    assert created_at is not None
    tags = _optional(h, "tags")
    max_attempts = _int(h, "maxAttempts")
    return CronScheduleRecord(
        id=int(h["id"]),
        schedule_name=h.get("scheduleName", ""),
        cron_expression=h.get("cronExpression", ""),
        job_type=h.get("jobType", ""),
        payload=_payload(h.get("payload")),
        max_attempts=3 if max_attempts is None else max_attempts,
        priority=_int(h, "priority") or 0,
        timeout_ms=_int(h, "timeoutMs"),
        force_kill_on_timeout=bool(_bool(h, "forceKillOnTimeout")),
        tags=None if tags is None else list(json.loads(tags)),
        timezone=_optional(h, "timezone") or "UTC",
        allow_overlap=bool(_bool(h, "allowOverlap")),
        status=_optional(h, "status") or "active",
        last_enqueued_at=_time(h, "lastEnqueuedAt"),
        last_job_id=_int(h, "lastJobId"),
        next_run_at=_time(h, "nextRunAt"),
        created_at=created_at,
        updated_at=_time(h, "updatedAt") or created_at,
        retry_delay=_int(h, "retryDelay"),
        retry_backoff=_bool(h, "retryBackoff"),
        retry_delay_max=_int(h, "retryDelayMax"),
        dead_letter_job_type=_optional(h, "deadLetterJobType"),
    )


def job_from_schedule(record: CronScheduleRecord, payload_json: str) -> NewJob:
    """The job a schedule enqueues (as on PostgreSQL): its job fields, due now.

    ``payload_json`` is the stored payload text, passed on verbatim.
    """
    return NewJob(
        job_type=record.job_type,
        payload_json=payload_json,
        max_attempts=record.max_attempts,
        priority=record.priority,
        timeout_ms=record.timeout_ms,
        force_kill_on_timeout=record.force_kill_on_timeout,
        tags=record.tags,
        retry_delay=record.retry_delay,
        retry_backoff=record.retry_backoff,
        retry_delay_max=record.retry_delay_max,
        dead_letter_job_type=record.dead_letter_job_type,
    )


def _flat_to_hash(flat: list[Any]) -> dict[str, str]:
    return _decoded(dict(zip(flat[::2], flat[1::2], strict=True)))


class RedisCron(RedisPart):
    """The cron part of the Redis backend (see the module docstring for the keys)."""

    def add_cron_schedule(self, values: dict[str, Any]) -> int:
        row = {**_DEFAULTS, **values}
        name = row.get("schedule_name")
        if not isinstance(name, str):
            raise InvalidJobError(f"schedule_name must be a string, got {name!r}")
        new_id = int(self._run_once("cron_add", name, *_field_pairs(row)))
        if new_id == 0:  # the name is taken; nothing was written
            raise DuplicateScheduleError(f'Cron schedule with name "{name}" already exists')
        return new_id

    def get_cron_schedule(
        self, schedule_id: int | None = None, name: str | None = None
    ) -> CronScheduleRecord | None:
        if name is not None:
            found = self.client.get(f"{self.prefix}cron_name:{name}")
            if found is None:
                return None
            record = self._load_schedule(found.decode() if isinstance(found, bytes) else found)
            return record if record is not None and record.schedule_name == name else None
        if schedule_id is None:
            return None
        return self._load_schedule(str(schedule_id))

    def _load_schedule(self, schedule_id: str) -> CronScheduleRecord | None:
        raw = self.client.hgetall(f"{self.prefix}cron:{schedule_id}")
        return cron_record_from_hash(_decoded(raw)) if raw else None

    def list_cron_schedules(self, status: str | None) -> list[CronScheduleRecord]:
        index = "crons" if status is None else f"cron_status:{status}"
        ids = sorted(int(v) for v in self.client.smembers(self.prefix + index))
        pipe = self.client.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hgetall(f"{self.prefix}cron:{schedule_id}")
        records = [cron_record_from_hash(_decoded(raw)) for raw in pipe.execute() if raw]
        if status is not None:  # changed between the two round trips
            records = [r for r in records if r.status == status]
        records.sort(key=lambda r: (r.created_at, r.id))
        return records

    def update_cron_schedule(self, schedule_id: int, values: dict[str, Any]) -> bool:
        outcome = int(self._run("cron_update", schedule_id, *_field_pairs(values)))
        if outcome == _NAME_TAKEN:
            raise DuplicateScheduleError(
                f'Cron schedule with name "{values["schedule_name"]}" already exists'
            )
        return outcome == 1

    def remove_cron_schedule(self, schedule_id: int) -> bool:
        return bool(self._run_once("cron_remove", schedule_id))

    def enqueue_due_cron_jobs(
        self, next_run: Callable[[str, str, dt.datetime], dt.datetime | None]
    ) -> int:
        now_text, *hashes = self._run("cron_due")
        now = codec.from_ms(now_text.decode() if isinstance(now_text, bytes) else now_text)
        assert now is not None
        due = [_flat_to_hash(flat) for flat in hashes]
        due.sort(key=lambda h: (int(h["nextRunAt"]), int(h["id"])))
        # Every next run first: an expression that cannot be evaluated fails the pass
        # before anything is written (as PostgreSQL rolls its transaction back).
        following = [next_run(h["cronExpression"], h.get("timezone") or "UTC", now) for h in due]
        enqueued = 0
        for h, next_at in zip(due, following, strict=True):
            if self._enqueue_occurrence(h, next_at) > 0:
                enqueued += 1
        return enqueued

    def _enqueue_occurrence(self, h: Mapping[str, str], next_at: dt.datetime | None) -> int:
        """Run the compare-and-set script for one due schedule read as ``h``.

        Returns the new job id, 0 when skipped for overlap, -1 when another process
        enqueued the occurrence first (or the schedule changed meanwhile).
        """
        record = cron_record_from_hash(h)
        row = codec.batch_row(job_from_schedule(record, h.get("payload") or "{}"))
        checks: list[str] = []
        for field in _ENQUEUE_INPUTS:
            checks += [field, h.get(field, "")]
        return int(
            self._run(
                "cron_enqueue",
                record.id,
                h["nextRunAt"],
                _NULL if next_at is None else str(codec.to_ms(next_at)),
                _json(row),
                *checks,
            )
        )
