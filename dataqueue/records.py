"""Immutable records returned by the queue, and the option classes users pass in."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from dataqueue.enums import FailureReason, JobEventType, JobStatus


def iso_text(value: dt.datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` suffix (``2026-11-30T04:45:25.123Z``):
    the text JavaScript's ``Date.toISOString()`` gives, so stored timestamps read the
    same as upstream's."""
    utc = value.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else iso_text(value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, JobStatus | JobEventType | FailureReason):
        return value.value
    return value


@attrs.frozen
class JobRecord:
    """A row of ``job_queue``. Datetimes are timezone-aware UTC."""

    id: int
    job_type: str
    payload: Any
    status: JobStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    locked_at: dt.datetime | None
    locked_by: str | None
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime | None
    priority: int
    run_at: dt.datetime
    pending_reason: str | None
    error_history: list[dict[str, Any]]
    timeout_ms: int | None
    force_kill_on_timeout: bool
    failure_reason: FailureReason | None
    completed_at: dt.datetime | None
    started_at: dt.datetime | None
    last_retried_at: dt.datetime | None
    last_failed_at: dt.datetime | None
    last_cancelled_at: dt.datetime | None
    tags: list[str] | None
    idempotency_key: str | None
    wait_until: dt.datetime | None
    wait_token_id: str | None
    step_data: dict[str, Any] | None
    progress: int | None
    output: Any
    retry_delay: int | None
    retry_backoff: bool | None
    retry_delay_max: int | None
    dead_letter_job_type: str | None
    dead_lettered_at: dt.datetime | None
    dead_letter_job_id: int | None
    group_id: str | None
    group_tier: str | None
    depends_on_job_ids: list[int] | None
    depends_on_tags: list[str] | None

    @property
    def is_final(self) -> bool:
        """True when the job will not run again by itself.

        ``completed`` and ``cancelled`` jobs, and ``failed`` jobs with no retry left (no
        ``next_attempt_at``, or every attempt used). A ``failed`` job awaiting its
        retry is not final: it runs again at ``next_attempt_at``. (``retry_job`` can
        still bring a final failed job back.)
        """
        if self.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
            return True
        if self.status is JobStatus.FAILED:
            return self.next_attempt_at is None or self.attempts >= self.max_attempts
        return False

    def to_dict(self, *, camel_case: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: datetimes as ISO-8601 UTC strings, enums as strings.

        ``camel_case=True`` uses upstream's key names (``jobType``, ``createdAt``, …),
        as the dashboard's JSON does.
        """
        out = {}
        for field in attrs.fields(JobRecord):
            key = _camel(field.name) if camel_case else field.name
            out[key] = _json_ready(getattr(self, field.name))
        return out


@attrs.frozen
class JobEvent:
    """A row of ``job_events``; ``metadata`` keeps upstream's camelCase keys."""

    id: int
    job_id: int
    event_type: JobEventType
    created_at: dt.datetime
    metadata: dict[str, Any] | None

    def to_dict(self, *, camel_case: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`JobRecord.to_dict`)."""
        out = {}
        for field in attrs.fields(JobEvent):
            key = _camel(field.name) if camel_case else field.name
            out[key] = _json_ready(getattr(self, field.name))
        return out


@attrs.frozen
class JobGroup:
    """Concurrency group of a job. ``tier`` is stored but has no behaviour."""

    id: str
    tier: str | None = None


@attrs.frozen
class DependsOn:
    """Prerequisites of a job: ids that must complete, and tags that must drain."""

    job_ids: list[int] | None = None
    tags: list[str] | None = None


@attrs.define
class JobOptions:
    """One job for :meth:`JobQueue.add_jobs`; the fields are ``add_job``'s arguments."""

    job_type: str
    payload: Any
    max_attempts: int = 3
    priority: int = 0
    run_at: dt.datetime | None = None
    timeout_ms: int | None = None
    force_kill_on_timeout: bool = False
    tags: list[str] | None = None
    idempotency_key: str | None = None
    retry_delay: int | None = None
    retry_backoff: bool | None = None
    retry_delay_max: int | None = None
    dead_letter_job_type: str | None = None
    group: JobGroup | dict[str, Any] | None = None
    depends_on: DependsOn | dict[str, Any] | None = None


@attrs.frozen
class WaitpointRecord:
    """A row of ``waitpoints``: a token a job can wait on."""

    id: str
    job_id: int | None
    status: str
    output: Any
    timeout_at: dt.datetime | None
    created_at: dt.datetime
    completed_at: dt.datetime | None
    tags: list[str] | None


@attrs.frozen
class WaitToken:
    """A token created by ``create_token``; pass ``id`` to whoever completes it."""

    id: str


@attrs.frozen
class WaitTokenResult:
    """How a token wait ended: ``ok`` with ``output``, or not ok with ``error``."""

    ok: bool
    output: Any = None
    error: str | None = None


@attrs.frozen
class CronScheduleRecord:
    """A row of ``cron_schedules``. Datetimes are timezone-aware UTC."""

    id: int
    schedule_name: str
    cron_expression: str
    job_type: str
    payload: Any
    max_attempts: int
    priority: int
    timeout_ms: int | None
    force_kill_on_timeout: bool
    tags: list[str] | None
    timezone: str
    allow_overlap: bool
    status: str
    last_enqueued_at: dt.datetime | None
    last_job_id: int | None
    next_run_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    retry_delay: int | None
    retry_backoff: bool | None
    retry_delay_max: int | None
    dead_letter_job_type: str | None

    def to_dict(self, *, camel_case: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`JobRecord.to_dict`)."""
        out = {}
        for field in attrs.fields(CronScheduleRecord):
            key = _camel(field.name) if camel_case else field.name
            out[key] = _json_ready(getattr(self, field.name))
        return out
