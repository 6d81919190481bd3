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
    """A job as stored (a row of ``job_queue``). Datetimes are timezone-aware, in UTC.

    Attributes:
        id: The job's id (increasing).
        job_type: Which handler runs it.
        payload: The handler's input, as decoded JSON.
        status: ``pending``, ``processing``, ``completed``, ``failed`` (also while it
            waits for a retry: see ``next_attempt_at`` and :attr:`is_final`),
            ``cancelled`` or ``waiting`` (paused by a workflow wait).
        created_at: When it was enqueued (the database's clock).
        updated_at: Last change of the row.
        locked_at: When the current (or last) worker claimed it; refreshed by that
            worker's heartbeats while it runs.
        locked_by: The worker id of that worker.
        attempts: How many times it was claimed to run (a resumed wait does not
            count).
        max_attempts: The attempt budget (default 3).
        next_attempt_at: For a ``failed`` job: when its retry is due; None when it
            failed for good.
        priority: Higher runs first.
        run_at: Not claimed before this.
        pending_reason: Why a job did not run: a dependent cancelled because a
            prerequisite failed or was cancelled holds the text
            ``{"rootJobId":<id>,"dependencyCascade":true}``. Cleared when claimed.
        error_history: One ``{"message": str, "timestamp": str}`` per failed attempt,
            oldest first (timestamps ISO-8601 UTC with milliseconds).
        timeout_ms: Per-attempt deadline in milliseconds, or None.
        force_kill_on_timeout: The handler runs in a child process killed at the
            deadline.
        failure_reason: Reason of the last failure: ``timeout``, ``handler_error`` or
            ``no_handler``; kept after a later success.
        completed_at: When it completed.
        started_at: When it was first claimed.
        last_retried_at: Last manual retry, or last claim of a second or later attempt.
        last_failed_at: When the last attempt failed.
        last_cancelled_at: When it was cancelled.
        tags: Its tags, or None.
        idempotency_key: Its key, or None.
        wait_until: While ``waiting`` on a time: when it resumes.
        wait_token_id: While ``waiting`` on a token: the token's id.
        step_data: Results of completed ``ctx.run`` steps and the state of waits;
            ``{}`` for a new job, None once completed.
        progress: The last ``ctx.set_progress`` value (0 to 100), or None.
        output: The handler's result (or the last ``ctx.set_output`` value), or None.
        retry_delay: Base retry delay in seconds, or None (see ``add_job``).
        retry_backoff: Exponential (True/None) or fixed (False) retry delay.
        retry_delay_max: Cap of the retry delay in seconds, or None.
        dead_letter_job_type: Where a final failure is routed, or None.
        dead_lettered_at: When the dead-letter job was enqueued.
        dead_letter_job_id: The id of that dead-letter job.
        group_id: The ``group`` id, or None.
        group_tier: The ``group`` tier (stored, no behaviour).
        depends_on_job_ids: Prerequisite job ids, or None.
        depends_on_tags: Tag barrier, or None.
    """

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
    """Something that happened to a job (a row of ``job_events``).

    Events are written in the same transaction as the change they record. ``metadata``
    keeps the camelCase keys the Node.js dataqueue writes, by ``event_type``:

    - ``added``: ``{"jobType", "payload"}`` plus ``"tags"``, ``"idempotencyKey"`` and
      ``"dependsOn"`` when given; for a dead-letter job ``{"jobType", "sourceJobId",
      "sourceJobType"}``.
    - ``failed``: ``{"message", "failureReason", "deadLetterJobId"}``.
    - ``cancelled``: None, or ``{"rootJobId", "dependencyCascade": true}`` when a
      prerequisite's failure or cancellation cancelled the job.
    - ``edited``: the fields given to the edit, camelCase (``{"priority": 5}``).
    - ``waiting``: ``{"waitUntil", "waitTokenId"}``.
    - ``processing``, ``completed``, ``retried``, ``prolonged``: None.

    Attributes:
        id: The event's id.
        job_id: The job it belongs to.
        event_type: What happened.
        created_at: When (UTC).
        metadata: Details, as above.
    """

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
    """Concurrency group of a job (``add_job(group=...)``).

    Processors created with ``group_concurrency=N`` run at most N jobs with the same
    ``id`` at once, across all processors. ``tier`` is stored but has no behaviour.
    """

    id: str
    tier: str | None = None


@attrs.frozen
class DependsOn:
    """Prerequisites of a job (``add_job(depends_on=...)``).

    The job runs only when every job in ``job_ids`` has completed and no other
    pending, processing or waiting job carries all of ``tags``. In ``add_jobs``,
    ``job_ids`` may hold :func:`dataqueue.batch_dep_ref` placeholders for earlier
    entries of the same batch.
    """

    job_ids: list[int] | None = None
    tags: list[str] | None = None


@attrs.define
class JobOptions:
    """One job for :meth:`JobQueue.add_jobs`.

    The fields are the arguments of :meth:`JobQueue.add_job`, with the same defaults
    and meaning (``max_attempts`` 3; ``timeout_ms`` in milliseconds; ``retry_delay``
    and ``retry_delay_max`` in seconds). A mapping with the same keys works too.
    """

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
    """A token a job can wait on (a row of ``waitpoints``), from ``get_token``.

    Attributes:
        id: ``wp_`` followed by a UUID.
        job_id: The job that created it with ``ctx.create_token``, or None for a token
            made with ``queue.create_token``.
        status: ``waiting``, ``completed`` or ``timed_out``.
        output: The data passed to ``complete_token``, or None.
        timeout_at: When it times out, or None.
        created_at: When it was created.
        completed_at: When it was completed (not set on timeout).
        tags: Its tags, or None.
    """

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
    """A token created by ``create_token``; pass ``id`` to whoever completes it.

    A job waits on it with ``ctx.wait_for_token(token.id)``; a web request or another
    job resumes that job with ``queue.complete_token(token.id, data)``.
    """

    id: str


@attrs.frozen
class WaitTokenResult:
    """How a token wait ended, returned by ``ctx.wait_for_token``.

    ``ok=True`` with the ``output`` given to ``complete_token``, or ``ok=False`` with
    ``error="Token timed out"``.
    """

    ok: bool
    output: Any = None
    error: str | None = None


@attrs.frozen
class CronScheduleRecord:
    """A cron schedule (a row of ``cron_schedules``). Datetimes are timezone-aware UTC.

    The job fields are copied to every job the schedule enqueues; they mean what the
    arguments of :meth:`JobQueue.add_job` of the same name mean.

    Attributes:
        id: The schedule's id.
        schedule_name: Its unique name.
        cron_expression: The 5-field expression (or nickname such as ``@daily``).
        job_type: Job field: the type of the jobs it enqueues.
        payload: Job field: their payload.
        max_attempts: Job field (default 3).
        priority: Job field.
        timeout_ms: Job field, in milliseconds.
        force_kill_on_timeout: Job field.
        tags: Job field.
        timezone: The IANA time zone the expression is evaluated in.
        allow_overlap: False: an occurrence is skipped while the previous job is
            still pending, processing or waiting.
        status: ``active`` or ``paused``.
        last_enqueued_at: When an occurrence was last handled (also when skipped).
        last_job_id: The id of the last job it enqueued.
        next_run_at: The next occurrence, or None if it never fires again.
        created_at: When the schedule was created.
        updated_at: Last change.
        retry_delay: Job field, in seconds.
        retry_backoff: Job field.
        retry_delay_max: Job field, in seconds.
        dead_letter_job_type: Job field.
    """

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


@attrs.frozen
class JobTypeStats:
    """Statistics of one job type, part of :class:`QueueStats`.

    Counts are jobs stored now; durations are float seconds.

    Attributes:
        job_type: The job type.
        pending: Pending jobs, due or scheduled for later.
        processing: Jobs a worker is running.
        waiting: Jobs paused by a workflow wait (a time or a token).
        completed: Completed jobs still stored (``cleanup_old_jobs`` deletes old ones).
            On PostgreSQL, above 100,000 completed jobs, counted at most every 30
            seconds by a queue object (in between, its last count).
        cancelled: Cancelled jobs.
        failed_retrying: Failed jobs whose retry is scheduled (not
            :attr:`JobRecord.is_final`).
        failed_final: Jobs that failed for good (:attr:`JobRecord.is_final`).
        oldest_pending_age: Seconds since the longest-waiting due pending job became
            due (now minus its ``run_at``); None when no pending job is due. See the
            observability guide for what the Redis backend looks at.
        completed_recent: Jobs completed within the window.
        failed_recent: Failed attempts within the window (a job that failed twice
            counts twice; retried attempts count too).
        run_time_p50: Median of ``completed_at - started_at`` of the newest 1,000 jobs
            completed within the window (all of them when fewer); ``started_at`` is
            the first attempt's start, so retries and waits count. None when none
            completed.
        run_time_p95: The 95th percentile of the same, interpolated as PostgreSQL's
            ``percentile_cont`` does.
    """

    job_type: str
    pending: int = 0
    processing: int = 0
    waiting: int = 0
    completed: int = 0
    cancelled: int = 0
    failed_retrying: int = 0
    failed_final: int = 0
    oldest_pending_age: float | None = None
    completed_recent: int = 0
    failed_recent: int = 0
    run_time_p50: float | None = None
    run_time_p95: float | None = None

    @property
    def failed(self) -> int:
        """Failed jobs: awaiting a retry plus failed for good."""
        return self.failed_retrying + self.failed_final

    @property
    def total(self) -> int:
        """Every job of this type stored, whatever its status."""
        return (
            self.pending
            + self.processing
            + self.waiting
            + self.completed
            + self.cancelled
            + self.failed
        )

    def to_dict(self, *, camel_case: bool = False) -> dict[str, Any]:
        """A JSON-ready dict of the fields plus ``failed`` (see :meth:`JobRecord.to_dict`)."""
        out = {}
        for name in [field.name for field in attrs.fields(JobTypeStats)] + ["failed"]:
            out[_camel(name) if camel_case else name] = getattr(self, name)
        return out


#: The longest recent window of :meth:`JobQueue.get_stats`, in seconds (an hour: the
#: Redis backend keeps per-second tallies that long).
MAX_STATS_WINDOW = 3600.0

#: The counts every :class:`QueueStats` and :class:`JobTypeStats` carries.
_COUNT_FIELDS = (
    "pending",
    "processing",
    "waiting",
    "completed",
    "cancelled",
    "failed_retrying",
    "failed_final",
    "completed_recent",
    "failed_recent",
)


@attrs.frozen
class QueueStats:
    """What ``queue.get_stats()`` reports: jobs by status and type, and recent activity.

    Everything is read at one moment of the store's clock (``collected_at``); the
    totals are the sums over :attr:`job_types`. Durations are float seconds.

    Attributes:
        collected_at: When the figures were read (the store's clock, UTC).
        window: The length of the recent window, in seconds.
        pending: Pending jobs of every type (due or scheduled for later).
        processing: Jobs workers are running.
        waiting: Jobs paused by a workflow wait.
        completed: Completed jobs still stored.
        cancelled: Cancelled jobs.
        failed_retrying: Failed jobs whose retry is scheduled.
        failed_final: Jobs that failed for good.
        completed_recent: Jobs completed within the window.
        failed_recent: Failed attempts within the window.
        oldest_pending_age: The largest :attr:`JobTypeStats.oldest_pending_age`, or None.
        job_types: Per job type, by name (sorted); every type with a stored job.
    """

    collected_at: dt.datetime
    window: float
    pending: int
    processing: int
    waiting: int
    completed: int
    cancelled: int
    failed_retrying: int
    failed_final: int
    completed_recent: int
    failed_recent: int
    oldest_pending_age: float | None
    job_types: dict[str, JobTypeStats]

    @property
    def failed(self) -> int:
        """Failed jobs: awaiting a retry plus failed for good."""
        return self.failed_retrying + self.failed_final

    @property
    def total(self) -> int:
        """Every job stored, whatever its status."""
        return sum(stats.total for stats in self.job_types.values())

    def by_status(self) -> dict[JobStatus, int]:
        """Jobs per status, every status present (``failed`` counts both kinds)."""
        return {
            JobStatus.PENDING: self.pending,
            JobStatus.PROCESSING: self.processing,
            JobStatus.COMPLETED: self.completed,
            JobStatus.FAILED: self.failed,
            JobStatus.CANCELLED: self.cancelled,
            JobStatus.WAITING: self.waiting,
        }

    def to_dict(self, *, camel_case: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`JobRecord.to_dict`), plus ``failed``.

        ``job_types`` becomes a list of :meth:`JobTypeStats.to_dict` dicts, in type order.
        """
        out: dict[str, Any] = {}
        for field in attrs.fields(QueueStats):
            key = _camel(field.name) if camel_case else field.name
            if field.name == "job_types":
                out[key] = [s.to_dict(camel_case=camel_case) for s in self.job_types.values()]
            else:
                out[key] = _json_ready(getattr(self, field.name))
        out["failed"] = self.failed
        return out


def queue_stats(
    collected_at: dt.datetime, window: float, job_types: list[JobTypeStats]
) -> QueueStats:
    """The :class:`QueueStats` of per-type figures: totals summed, types sorted by name."""
    ordered = {stats.job_type: stats for stats in sorted(job_types, key=lambda s: s.job_type)}
    totals = {name: sum(getattr(s, name) for s in job_types) for name in _COUNT_FIELDS}
    ages = [s.oldest_pending_age for s in job_types if s.oldest_pending_age is not None]
    return QueueStats(
        collected_at=collected_at,
        window=window,
        oldest_pending_age=max(ages) if ages else None,
        job_types=ordered,
        **totals,
    )
