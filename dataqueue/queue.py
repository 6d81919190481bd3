"""The :class:`JobQueue` facade: validates input, calls the backend, emits hooks.

It owns no SQL and imports no database library; storage goes through the
:class:`dataqueue.backends.base.Backend` protocol.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dataqueue import intervals, tracing
from dataqueue import validation as v
from dataqueue.after_commit import run_after_commit
from dataqueue.backends.base import Backend
from dataqueue.dependencies import resolve_batch_placeholders
from dataqueue.durations import token_timeout
from dataqueue.errors import InvalidCronExpressionError, InvalidJobError, UnsupportedOperationError
from dataqueue.hooks import EventHooks, Listener
from dataqueue.payload import encode_json
from dataqueue.processing.context import new_token_id
from dataqueue.records import (
    MAX_STATS_WINDOW,
    CronScheduleRecord,
    DependsOn,
    JobEvent,
    JobGroup,
    JobRecord,
    QueueStats,
    WaitpointRecord,
    WaitToken,
    queue_stats,
)
from dataqueue.validation import NewJob

if TYPE_CHECKING:
    from dataqueue.processing.instrument import Instrumentation
    from dataqueue.processing.processor import Processor
    from dataqueue.rate_limits import RateLimit
    from dataqueue.supervisor import Supervisor

logger = logging.getLogger("dataqueue.queue")


#: Retention beyond this (about 2,700 years) would reach before PostgreSQL's timestamps.
MAX_DAYS_TO_KEEP = 1_000_000


def _days_to_keep(value: Any) -> int:
    return v.require_int(value, "days_to_keep", minimum=0, maximum=MAX_DAYS_TO_KEEP)


def _validated(
    entries: Sequence[Any], job_types: list[str], step_data_json: str | None = None
) -> Iterator[NewJob]:
    """Validate ``add_jobs`` entries one by one, as the backend draws them.

    Appends each job's type to ``job_types`` (for the ``job:added`` hooks and the
    enqueue span). ``step_data_json``: every job's first step data (the trace context).
    """
    for position, entry in enumerate(entries):
        job = v.job_from_entry(entry)
        if job.depends_on_job_ids:
            resolve_batch_placeholders(job.depends_on_job_ids, position, len(entries))
        if step_data_json is not None:
            job.step_data_json = step_data_json  # a new job, not shared yet: no copy
        job_types.append(job.job_type)
        yield job


class JobQueue:
    """A job queue on one backend. Create it with :func:`dataqueue.init_job_queue`.

    Thread-safe: share one queue between threads. ``close()`` (or leaving a ``with``
    block) releases what the queue created, never an engine or client you passed in.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        engine: Any = None,
        redis_client: Any = None,
        verbose: bool = False,
    ) -> None:
        self._backend = backend
        self._engine = engine
        self._redis_client = redis_client
        self._hooks = EventHooks()
        self.verbose = verbose
        # Run by every processor before it claims: due cron schedules become jobs.
        self._before_claim_hooks: list[Callable[[], object]] = [self.enqueue_due_cron_jobs]

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release connections the queue created. Engines/clients you passed stay open."""
        self._backend.close()

    def reset_after_fork(self) -> None:
        """Forget connections inherited from a parent process (call in a ``post_fork`` hook).

        The queue already does this by itself after ``os.fork()``; calling it again is
        harmless. The parent's connections are left open for the parent.
        """
        self._backend.reset_after_fork()

    def get_engine(self) -> Any:
        """The SQLAlchemy engine (PostgreSQL backend only)."""
        if self._engine is None:
            raise UnsupportedOperationError(
                "get_engine() is only available with the PostgreSQL backend."
            )
        return self._engine

    def get_redis_client(self) -> Any:
        """The redis-py client (Redis backend only)."""
        if self._redis_client is None:
            raise UnsupportedOperationError(
                "get_redis_client() is only available with the Redis backend."
            )
        return self._redis_client

    # -- hooks ----------------------------------------------------------------------

    def on(self, event: str, listener: Listener) -> None:
        """Call ``listener(payload)`` on every ``event``.

        Events and the payload each listener receives (a dict, except for ``error``):

        - ``job:added``: ``{"job_id", "job_type"}`` for each job ``add_job``/``add_jobs``
          wrote; not for an idempotent duplicate, nor for jobs enqueued by cron
          schedules or dead-letter routing. With ``db=`` it fires once your
          transaction commits (SQLAlchemy ``Connection``/``Session``, Django's
          connection) and never after a rollback; on a raw DB-API connection
          (psycopg), which has no commit hook, when the call returns.
        - ``job:processing``, ``job:completed``, ``job:waiting``:
          ``{"job_id", "job_type"}``.
        - ``job:failed``: ``{"job_id", "job_type", "error", "will_retry"}``; ``error``
          is the exception, ``will_retry`` is True exactly when a retry was scheduled.
        - ``job:cancelled``, ``job:retried``: ``{"job_id"}``, only when the job changed.
        - ``job:progress``: ``{"job_id", "progress"}`` (the rounded percentage).
        - ``job:output``: ``{"job_id", "output"}`` (the value given to ``set_output``).
        - ``error``: the exception of a processor or supervisor loop (a lost database
          connection, a failing maintenance task), never a handler's failure.

        Listeners run synchronously in the thread that emits (a processor's threads for
        the ``job:`` events of processing), in registration order. A listener that
        raises is logged and never breaks the queue. Hooks are in-process only: a
        listener hears about jobs this process enqueued or processed. An unknown event
        name raises :class:`InvalidJobError` (a ``ValueError``).
        """
        self._hooks.on(event, listener)

    def once(self, event: str, listener: Listener) -> None:
        """Call ``listener(payload)`` on the next ``event`` only (payloads: :meth:`on`)."""
        self._hooks.once(event, listener)

    def off(self, event: str, listener: Listener) -> None:
        """Remove ``listener`` from ``event``."""
        self._hooks.off(event, listener)

    def remove_all_listeners(self, event: str | None = None) -> None:
        """Remove all listeners of ``event`` (or of every event)."""
        self._hooks.remove_all_listeners(event)

    # -- processing -----------------------------------------------------------------

    def create_processor(
        self,
        handlers: Mapping[str, Callable[..., Any]],
        *,
        worker_id: str | None = None,
        batch_size: int = 10,
        concurrency: int = 3,
        group_concurrency: int | None = None,
        poll_interval: float = 5000,
        on_error: Callable[[BaseException], object] | None = None,
        verbose: bool = False,
        job_type: str | list[str] | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        heartbeat_interval: float | dt.timedelta = 5.0,
        heartbeat_timeout: float | dt.timedelta = 20.0,
        listen: bool = True,
        instrumentation: Instrumentation | None = None,
    ) -> Processor:
        """A :class:`Processor` running ``handlers`` (job type -> callable).

        Handlers are called as ``(payload)``, ``(payload, signal)`` or
        ``(payload, signal, ctx)`` depending on how many positional parameters they
        take; what they return becomes the job's output. ``concurrency`` jobs run at
        once on worker threads; ``group_concurrency`` caps running jobs per group
        across every processor and process that sets it.

        ``job_type`` restricts what is claimed. By default a processor claims exactly
        the job types in ``handlers``, so services with different handlers (or a
        Node.js service) can share one table; jobs of other types stay ``pending``.
        ``job_type="*"`` claims every type (jobs without a handler then fail with
        ``no_handler``), a string or list claims those types.

        ``heartbeat_interval`` (seconds or ``timedelta``, default 5 s): how often the
        locks of every held job are refreshed. ``heartbeat_timeout`` (default 20 s, at
        least 3 intervals): how long after the last heartbeat a job counts as
        abandoned and is reclaimed by any worker or supervisor. A live job is never
        reclaimed, however long it runs. ``poll_interval`` is in milliseconds, finite.
        Bad options raise TypeError/ValueError naming the value.

        Wake-ups: with ``listen=True`` (the default) the processor keeps one extra
        connection that LISTENs for the notification every enqueue (and retry,
        resume, dead letter) sends on commit, and claims at once, so a new job starts
        within milliseconds whatever ``poll_interval`` says; a lost connection is
        re-opened with backoff, and polling goes on meanwhile. ``listen=False`` polls
        only: use it behind a pooler in transaction mode (pgbouncer), which cannot
        keep a LISTEN. Either way the processor sleeps no later than the next
        scheduled job's due time (``run_at``, a retry's ``next_attempt_at``, a wait's
        ``wait_until``), so those start on time rather than at the next poll.

        Rate limits: ``rate_limits={"email": dataqueue.RateLimit(20, per=1.0)}`` lets no
        more than 20 ``email`` jobs start in any one-second window, counted across
        every processor and process that sets that limit, exactly (a sliding window,
        no burst). The claim itself counts and logs the starts, under a lock per
        type; a retry or a resumed wait is a start too. While a type is at its limit
        the processor sleeps until the claim says it has room again. Types without a
        limit are claimed as before.

        Args:
            handlers: Job type to handler. A handler that raises fails the attempt;
                what it returns (JSON) becomes the job's output. Plain functions run
                on the worker threads; ``async def`` handlers run on the processor's
                event loop, each still taking one of the ``concurrency`` slots, and
                are cancelled (``asyncio.CancelledError``) at their deadline.
            worker_id: Written to ``locked_by`` of the jobs it claims. Default
                ``worker-`` plus 7 random characters.
            batch_size: Most jobs claimed per claim (at least 1).
            concurrency: Most handlers running at once: the number of worker
                threads (at least 1).
            group_concurrency: Most running jobs per ``group`` id, counted over every
                processor that sets it; None means no limit. Jobs without a group are
                never limited.
            poll_interval: Milliseconds between polls, 0 to 86,400,000 (a day). The
                fallback when no wake-up arrives (see above).
            on_error: Called with errors of the processor's own loop (a lost database
                connection), never with handler failures; default: log them.
            verbose: Log what the processor does at INFO instead of DEBUG.
            job_type: Which job types to claim (see above). ``"*"`` is
                :data:`dataqueue.ALL_JOB_TYPES`.
            rate_limits: Job type to :class:`~dataqueue.RateLimit` (see above); each
                type must be one this processor claims (else ``ConfigurationError``).
                Give every processor that claims a limited type the same limit: a
                processor without it neither counts nor logs its starts.
            heartbeat_interval: Seconds (or a ``timedelta``) between heartbeats, more
                than 0 and at most 600.
            heartbeat_timeout: Seconds (or a ``timedelta``) without a heartbeat after
                which this worker's jobs are reclaimed; at least 3 heartbeat intervals,
                at most a day.
            listen: Wake up on PostgreSQL ``NOTIFY`` (see above).
            instrumentation: Told of claims, job starts and outcomes, store failures
                and retries, for metrics (see
                :mod:`dataqueue.processing.instrument`); e.g.
                ``dataqueue.contrib.prometheus.PrometheusMetrics()``. Default: none
                (no cost). What it raises is logged and ignored.
        """
        from dataqueue.processing.processor import Processor

        return Processor(
            self._backend,
            self._hooks,
            handlers,
            worker_id=worker_id,
            batch_size=batch_size,
            concurrency=concurrency,
            group_concurrency=group_concurrency,
            poll_interval=poll_interval,
            on_error=on_error,
            verbose=verbose or self.verbose,
            job_type=job_type,
            rate_limits=rate_limits,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            before_claim=list(self._before_claim_hooks),
            listen=listen,
            instrumentation=instrumentation,
        )

    def create_supervisor(
        self,
        *,
        interval_ms: float = 60000,
        stuck_jobs_timeout_minutes: float | None = None,
        stuck_jobs_timeout: float | dt.timedelta | None = None,
        cleanup_jobs_days_to_keep: int = 30,
        cleanup_events_days_to_keep: int = 30,
        cleanup_batch_size: int = 1000,
        reclaim_stuck_jobs: bool = True,
        expire_timed_out_tokens: bool = True,
        on_error: Callable[[BaseException], object] | None = None,
        verbose: bool = False,
    ) -> Supervisor:
        """A :class:`Supervisor` for periodic maintenance (see its docstring).

        A retention of 0 days (or less) disables that cleanup. Several supervisors, in
        several processes, may run at once.

        Reclaim: jobs of dataqueue processors are reclaimed once their heartbeat is
        older than the processor's ``heartbeat_timeout`` (20 s by default), however
        long they run. ``stuck_jobs_timeout`` (seconds or ``timedelta``; or
        ``stuck_jobs_timeout_minutes``, default 10 minutes) applies only to jobs locked
        by workers that do not heartbeat (the Node.js dataqueue's processor): they are
        reclaimed when locked longer than that and their own ``timeout_ms``. It must be
        more than 0.

        Args:
            interval_ms: Milliseconds between the end of one background run and the
                start of the next (more than 0, at most a day).
            stuck_jobs_timeout_minutes: The stuck-job limit in minutes (default 10).
                Give this or ``stuck_jobs_timeout``, not both.
            stuck_jobs_timeout: The same limit in seconds or as a ``timedelta``.
            cleanup_jobs_days_to_keep: Delete completed jobs not updated for this many
                days; 0 or less disables it. Failed and cancelled jobs are never
                deleted.
            cleanup_events_days_to_keep: Delete events older than this many days (of
                any job); 0 or less disables it.
            cleanup_batch_size: Rows deleted per statement by both cleanups.
            reclaim_stuck_jobs: Run the reclaim task.
            expire_timed_out_tokens: Run the token expiry task.
            on_error: Called with the error of a failing task; default: log it.
            verbose: Log the counts of each run at INFO instead of DEBUG.
        """
        from dataqueue.supervisor import Supervisor

        return Supervisor(
            self._backend,
            self._hooks,
            interval_ms=interval_ms,
            stuck_jobs_timeout_minutes=stuck_jobs_timeout_minutes,
            stuck_jobs_timeout=stuck_jobs_timeout,
            cleanup_jobs_days_to_keep=cleanup_jobs_days_to_keep,
            cleanup_events_days_to_keep=cleanup_events_days_to_keep,
            cleanup_batch_size=cleanup_batch_size,
            reclaim_stuck_jobs=reclaim_stuck_jobs,
            expire_timed_out_tokens=expire_timed_out_tokens,
            on_error=on_error,
            verbose=verbose or self.verbose,
        )

    # -- cron -----------------------------------------------------------------------

    def add_cron_job(
        self,
        schedule_name: str,
        cron_expression: str,
        job_type: str,
        payload: Any,
        *,
        timezone: str = "UTC",
        allow_overlap: bool = False,
        max_attempts: int = 3,
        priority: int = 0,
        timeout_ms: int | None = None,
        force_kill_on_timeout: bool = False,
        tags: list[str] | None = None,
        retry_delay: int | None = None,
        retry_backoff: bool | None = None,
        retry_delay_max: int | None = None,
        dead_letter_job_type: str | None = None,
    ) -> int:
        """Create a cron schedule that enqueues ``job_type`` jobs; return its id.

        ``cron_expression`` is a standard 5-field expression (or ``@daily`` etc.)
        evaluated in the IANA ``timezone``. Processors enqueue due occurrences before
        each claim (or call :meth:`enqueue_due_cron_jobs`); missed occurrences are not
        caught up. With ``allow_overlap=False`` an occurrence is skipped while the
        previous job is still pending, processing or waiting. Invalid expressions or
        timezones, and expressions that never fire, raise
        :class:`InvalidCronExpressionError`; a taken name raises
        :class:`DuplicateScheduleError`. ``schedule_name`` and ``cron_expression`` hold
        at most 255 characters, ``timezone`` 100; the job options mean what they mean
        in :meth:`add_job` (``timeout_ms`` in milliseconds, ``retry_delay`` and
        ``retry_delay_max`` in seconds) and are copied to every job the schedule
        enqueues.
        """
        from dataqueue import cron

        name = v.require_str(schedule_name, "schedule_name", max_len=v.MAX_SCHEDULE_NAME_LENGTH)
        v.check_cron_text(cron_expression, "cron_expression", max_len=v.MAX_CRON_EXPRESSION_LENGTH)
        v.check_cron_text(timezone, "timezone", max_len=v.MAX_TIMEZONE_LENGTH)
        expression = cron.validate_cron_expression(cron_expression)
        zone = cron.validate_timezone(timezone)
        job = v.build_new_job(
            job_type,
            payload,
            {
                "max_attempts": max_attempts,
                "priority": priority,
                "timeout_ms": timeout_ms,
                "force_kill_on_timeout": force_kill_on_timeout,
                "tags": tags,
                "retry_delay": retry_delay,
                "retry_backoff": retry_backoff,
                "retry_delay_max": retry_delay_max,
                "dead_letter_job_type": dead_letter_job_type,
            },
        )
        if not isinstance(allow_overlap, bool):
            raise InvalidJobError(f"allow_overlap must be a bool, got {allow_overlap!r}")
        values = {
            "schedule_name": name,
            "cron_expression": expression,
            "timezone": zone,
            "allow_overlap": allow_overlap,
            "next_run_at": _first_run(expression, zone),
            "job_type": job.job_type,
            "payload": json.loads(job.payload_json),
            "max_attempts": job.max_attempts,
            "priority": job.priority,
            "timeout_ms": job.timeout_ms,
            "force_kill_on_timeout": job.force_kill_on_timeout,
            "tags": job.tags,
            "retry_delay": job.retry_delay,
            "retry_backoff": job.retry_backoff,
            "retry_delay_max": job.retry_delay_max,
            "dead_letter_job_type": job.dead_letter_job_type,
        }
        return self._backend.add_cron_schedule(values)

    def get_cron_job(self, schedule_id: int) -> CronScheduleRecord | None:
        """The schedule with ``schedule_id``, or None."""
        return self._backend.get_cron_schedule(v.require_int(schedule_id, "schedule_id", minimum=1))

    def get_cron_job_by_name(self, schedule_name: str) -> CronScheduleRecord | None:
        """The schedule named ``schedule_name``, or None."""
        name = v.require_str(schedule_name, "schedule_name", max_len=v.MAX_SCHEDULE_NAME_LENGTH)
        return self._backend.get_cron_schedule(name=name)

    def list_cron_jobs(self, status: str | None = None) -> list[CronScheduleRecord]:
        """All schedules, or those ``"active"``/``"paused"``, oldest first."""
        if status is not None and status not in ("active", "paused"):
            raise InvalidJobError(f"status must be 'active' or 'paused', got {status!r}")
        return self._backend.list_cron_schedules(status)

    def edit_cron_job(self, schedule_id: int, **updates: Any) -> bool:
        """Change a schedule; True if it exists. Unknown field names raise TypeError.

        Editable: ``cron_expression, timezone, payload, max_attempts, priority,
        timeout_ms, force_kill_on_timeout, tags, allow_overlap, retry_delay,
        retry_backoff, retry_delay_max, dead_letter_job_type`` (None clears the optional
        ones). A new expression or timezone recomputes the next run from now.
        """
        schedule_id = v.require_int(schedule_id, "schedule_id", minimum=1)
        v.check_cron_text(
            updates.get("cron_expression"),
            "cron_expression",
            max_len=v.MAX_CRON_EXPRESSION_LENGTH,
        )
        v.check_cron_text(updates.get("timezone"), "timezone", max_len=v.MAX_TIMEZONE_LENGTH)
        values = _cron_updates(updates)
        if "cron_expression" in values or "timezone" in values:
            existing = self._backend.get_cron_schedule(schedule_id)
            if existing is None:
                return False
            values["next_run_at"] = _first_run(
                values.get("cron_expression", existing.cron_expression),
                values.get("timezone", existing.timezone),
            )
        if not values:
            return False
        return self._backend.update_cron_schedule(schedule_id, values)

    def pause_cron_job(self, schedule_id: int) -> bool:
        """Stop enqueueing for the schedule (``next_run_at`` is kept); True if it exists."""
        schedule_id = v.require_int(schedule_id, "schedule_id", minimum=1)
        return self._backend.update_cron_schedule(schedule_id, {"status": "paused"})

    def resume_cron_job(self, schedule_id: int) -> bool:
        """Enqueue again; a ``next_run_at`` in the past fires once at the next pass."""
        schedule_id = v.require_int(schedule_id, "schedule_id", minimum=1)
        return self._backend.update_cron_schedule(schedule_id, {"status": "active"})

    def remove_cron_job(self, schedule_id: int) -> bool:
        """Delete the schedule (jobs it enqueued stay); True if it existed."""
        schedule_id = v.require_int(schedule_id, "schedule_id", minimum=1)
        return self._backend.remove_cron_schedule(schedule_id)

    def enqueue_due_cron_jobs(self) -> int:
        """Enqueue one job for every due active schedule and advance it; return how many.

        Safe to call from several processors at once: each occurrence is enqueued
        exactly once (W-CRON-1). Processors call it before every claim.
        """
        from dataqueue import cron

        return self._backend.enqueue_due_cron_jobs(cron.next_run)

    # -- tokens ---------------------------------------------------------------------

    def create_token(
        self, *, timeout: str | dt.timedelta | None = None, tags: list[str] | None = None
    ) -> WaitToken:
        """Create a token that a job can wait on with ``ctx.wait_for_token(token.id)``.

        ``timeout``: ``"30s"``, ``"10m"``, ``"1h"``, ``"7d"`` or a ``timedelta`` (at most
        365 days); after it the token times out and its waiter resumes with
        ``ok=False``. Unlike in the Node.js dataqueue, a job waiting on a token made here
        is resumed when the token completes (W-TOK-1).
        """
        token_id = new_token_id()
        duration = token_timeout(timeout)
        self._backend.create_token(
            token_id, None, duration, None if tags is None else v.require_tags(tags)
        )
        return WaitToken(token_id)

    def complete_token(self, token_id: str, data: Any = None) -> bool:
        """Complete a token with ``data`` (JSON) and resume the job waiting on it.

        Returns True if this call completed it, False if it had already completed or
        timed out (idempotent). An unknown id raises :class:`InvalidJobError`.
        """
        token_id = v.require_token_id(token_id)
        output = None if data is None else encode_json(data, what="token data")
        completed = self._backend.complete_token(token_id, output)
        if completed is None:
            raise InvalidJobError(f"unknown token {token_id!r}")
        return completed

    def get_token(self, token_id: str) -> WaitpointRecord | None:
        """The token's record, or None. An id that is no token id raises InvalidJobError."""
        return self._backend.get_token(v.require_token_id(token_id))

    def expire_timed_out_tokens(self) -> int:
        """Time out tokens past their timeout and resume their waiters; return how many."""
        return self._backend.expire_timed_out_tokens()

    # -- enqueue --------------------------------------------------------------------

    def add_job(
        self,
        job_type: str,
        payload: Any,
        *,
        max_attempts: int = 3,
        priority: int = 0,
        run_at: dt.datetime | None = None,
        timeout_ms: int | None = None,
        force_kill_on_timeout: bool = False,
        tags: list[str] | None = None,
        idempotency_key: str | None = None,
        retry_delay: int | None = None,
        retry_backoff: bool | None = None,
        retry_delay_max: int | None = None,
        dead_letter_job_type: str | None = None,
        group: JobGroup | Mapping[str, Any] | None = None,
        depends_on: DependsOn | Mapping[str, Any] | None = None,
        db: Any = None,
    ) -> int:
        """Add one job and return its id.

        The row and its ``added`` event are written by one statement. With ``db`` (your
        open SQLAlchemy ``Connection``/``Session`` or DB-API connection) they join your
        transaction and vanish if you roll back; the queue never commits, rolls back or
        closes it. An ``idempotency_key`` that already exists returns the existing id
        and changes nothing. Raises :class:`InvalidJobError` (or
        :class:`JobDependencyError`) naming the bad value before anything is written;
        an unknown option name raises ``TypeError``. Called inside an OpenTelemetry
        span, the call gets a ``send`` span and the job carries its context to the
        handler (``step_data["__dqTrace"]``; see the observability guide).

        A failed attempt with attempts left leaves the job in status ``failed`` with
        ``next_attempt_at`` set: it is waiting for its retry, not finished (see
        :attr:`JobRecord.is_final`). The delay after attempt ``n`` (1 for the first run):

        - no ``retry_*`` option given: ``2**n`` minutes (2, 4, 8, … minutes; no jitter);
        - ``retry_backoff`` True or not given (but another ``retry_*`` option is):
          ``min(retry_delay_max, retry_delay * 2**n)`` seconds times a random factor in
          [0.5, 1), with ``retry_delay`` 60 when not given and no cap without
          ``retry_delay_max``;
        - ``retry_backoff=False``: ``retry_delay`` seconds (60 when not given).

        Args:
            job_type: The handler to run: a key of the processor's ``handlers`` (at most
                255 characters).
            payload: The handler's input, stored as JSON: dicts, lists, strings,
                numbers, booleans, None, plus dataclasses and attrs instances (by
                field), timezone-aware datetimes, dates and UUIDs (as ISO/UUID strings),
                tuples and sets (as lists).
            max_attempts: How many times the handler may run, the first run included
                (at least 1). With the default 3 a job is retried twice.
            priority: Higher runs first; equal priorities run oldest first.
            run_at: Not before this timezone-aware datetime; None means now.
            timeout_ms: Deadline of each attempt in milliseconds; None or 0 means none.
                At the deadline the attempt fails with reason ``timeout`` and the
                handler's ``signal`` is aborted (the thread is not killed).
            force_kill_on_timeout: Run the handler in a child process that is killed at
                the deadline (needs ``timeout_ms`` and a module-level handler; see
                :func:`dataqueue.validate_handler_serializable`).
            tags: Labels to filter by (``get_jobs_by_tags``, tag filters, tag
                dependencies).
            idempotency_key: At most one job per key, whatever its status, until the
                job is deleted by cleanup (only completed jobs are).
            retry_delay: Base retry delay in seconds (see above).
            retry_backoff: Exponential backoff with jitter (True) or a fixed delay
                (False).
            retry_delay_max: Upper bound of the retry delay in seconds.
            dead_letter_job_type: When the job fails for good, enqueue a job of this
                type whose payload holds the original job, payload and failure.
            group: ``{"id": ..., "tier": ...}`` or :class:`JobGroup`; processors with
                ``group_concurrency`` run at most that many jobs of one group id at once.
            depends_on: ``{"job_ids": [...], "tags": [...]}`` or :class:`DependsOn`: run
                only after those jobs completed and no other unfinished job carries all
                of those tags.
            db: Your open transaction (PostgreSQL only; the Redis backend raises
                :class:`UnsupportedOperationError`).

        Returns:
            The new job's id, or the existing job's id for a known ``idempotency_key``.
        """
        job = v.build_new_job(
            job_type,
            payload,
            {
                "max_attempts": max_attempts,
                "priority": priority,
                "run_at": run_at,
                "timeout_ms": timeout_ms,
                "force_kill_on_timeout": force_kill_on_timeout,
                "tags": tags,
                "idempotency_key": idempotency_key,
                "retry_delay": retry_delay,
                "retry_backoff": retry_backoff,
                "retry_delay_max": retry_delay_max,
                "dead_letter_job_type": dead_letter_job_type,
                "group": group,
                "depends_on": depends_on,
            },
        )
        v.reject_placeholders(job)
        inserted: list[bool] | None = [] if self._hooks.has_listeners("job:added") else None
        with tracing.trace_enqueue() as traced:
            job.step_data_json = traced.step_data_json
            (job_id,) = self._backend.add_jobs([job], 1, db, inserted)
            traced.added([job_id], [job.job_type])
        if inserted and inserted[0]:  # not for an idempotent duplicate
            self._emit_added([(job_id, job.job_type)], db)
        return job_id

    def _emit_added(self, added: list[tuple[int, str]], db: Any) -> None:
        """``job:added`` for jobs this call wrote; with ``db``, after its commit."""

        def emit() -> None:
            for job_id, job_type in added:
                self._hooks.emit("job:added", {"job_id": job_id, "job_type": job_type})

        if db is None:
            emit()
        else:
            run_after_commit(db, emit)

    def add_jobs(self, jobs: Iterable[Any], *, db: Any = None) -> list[int]:
        """Add many jobs in one transaction; return their ids in input order.

        Each entry is a :class:`JobOptions` or a mapping with ``add_job``'s argument
        names. ``depends_on.job_ids`` may hold :func:`batch_dep_ref` placeholders for
        earlier entries. Entries with a known idempotency key (or repeating a key of
        an earlier entry) get the existing id. An empty list returns ``[]`` without
        touching the store.

        All-or-nothing: an invalid entry raises (naming the value) and nothing is
        written. A batch of more than 200 jobs on a psycopg 3 connection is sent
        in pipelined chunks, the server writing one chunk while the next is checked
        and encoded: on the queue's own connection in one transaction, in the
        caller's transaction (``db=``) under a savepoint, so that an invalid entry or
        a failing statement undoes the batch alone and the caller's transaction stays
        usable. Smaller batches are checked whole before their one statement runs.
        From the first chunk that has an idempotency key on, the rest of a batch is
        one statement.

        Concurrent calls sharing idempotency keys never deadlock, in any key order:
        each statement writes its keys sorted, and each caller gets the one job's id.

        Called inside an OpenTelemetry span, the whole call is one ``send`` span whose
        context every job carries to its handler (see the observability guide).
        """
        entries = list(jobs)
        if not entries:
            return []
        job_types: list[str] = []
        inserted: list[bool] | None = [] if self._hooks.has_listeners("job:added") else None
        with tracing.trace_enqueue() as traced:
            jobs_in = _validated(entries, job_types, traced.step_data_json)
            ids = self._backend.add_jobs(jobs_in, len(entries), db, inserted)
            traced.added(ids, job_types)
        if inserted is not None:
            added = [
                (job_id, job_type)
                for job_id, job_type, new in zip(ids, job_types, inserted, strict=True)
                if new
            ]
            if added:
                self._emit_added(added, db)
        return ids

    # -- reads ----------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job with ``job_id``, or None."""
        return self._backend.get_job(v.require_job_id(job_id))

    def wait_for_job(self, job_id: int, timeout: float | None = None) -> JobRecord:
        """Block until the job is final (:attr:`JobRecord.is_final`) and return it.

        ``timeout`` is in seconds (None waits forever); when it passes, raises
        ``TimeoutError``. Polls the job, starting at 10 ms and backing off to 0.5 s.
        Raises :class:`InvalidJobError` if there is no such job (or it was deleted
        while waiting).
        """
        if timeout is not None:
            timeout = intervals.seconds(timeout, "timeout", maximum=365 * 86_400.0)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while True:
            job = self.get_job(job_id)
            if job is None:
                raise InvalidJobError(f"no job with id {job_id!r}")
            if job.is_final:
                return job
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"job {job_id} is still {job.status.value} after {timeout:g} s"
                    )
                delay = min(delay, remaining)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def get_jobs(
        self, filters: Mapping[str, Any] | None = None, limit: int = 100, offset: int = 0
    ) -> list[JobRecord]:
        """Jobs matching ``filters``, newest first (``created_at`` then ``id`` descending).

        Filters: ``job_type``, ``priority``, ``run_at`` (datetime or a mapping of
        ``gt/gte/lt/lte/eq``), ``tags`` (``{"values": [...], "mode": "all"}``) and
        ``cursor`` (only ids below it; offset is then ignored). Tag modes: ``all``,
        ``any``, ``none`` (untagged jobs match) and ``exact`` (same set of tags).

        At most ``limit`` jobs (default 100; 0 returns none) after skipping ``offset``.
        To walk every job, page with a cursor: pass the last id of a page as the next
        page's ``cursor``.
        """
        limit, offset = v.page(limit, offset)
        return self._backend.list_jobs(v.build_filter(filters), limit, offset)

    def get_jobs_by_status(self, status: str, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs with ``status``, newest first; at most ``limit`` (default 100).

        ``status`` is a :class:`JobStatus` or its value. Failed jobs waiting for their
        retry are included in ``"failed"``. Unknown statuses raise
        :class:`InvalidJobError`.
        """
        limit, offset = v.page(limit, offset)
        return self._backend.list_jobs(v.JobFilter(status=v.job_status(status)), limit, offset)

    def get_all_jobs(self, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """All jobs, newest first; at most ``limit`` (default 100) after ``offset``."""
        limit, offset = v.page(limit, offset)
        return self._backend.list_jobs(v.JobFilter(), limit, offset)

    def get_jobs_by_tags(
        self, tags: list[str], mode: str = "all", limit: int = 100, offset: int = 0
    ) -> list[JobRecord]:
        """Jobs whose tags match ``tags`` under ``mode`` (see :meth:`get_jobs`), newest first.

        At most ``limit`` jobs (default 100) after ``offset``.

        The filter applies even to an empty list: ``all`` then matches every tagged
        job, ``none`` every job, ``any`` none, ``exact`` jobs tagged with ``[]``.
        """
        limit, offset = v.page(limit, offset)
        filters = v.JobFilter(
            tag_values=tuple(v.require_tags(tags, max_len=None)),
            tag_mode=v.tag_mode(mode),
            match_tags_when_empty=True,
        )
        return self._backend.list_jobs(filters, limit, offset)

    def get_job_events(self, job_id: int) -> list[JobEvent]:
        """The job's events, oldest first (ties broken by event id)."""
        return self._backend.get_job_events(v.require_job_id(job_id))

    def get_stats(self, window: float | dt.timedelta = 300.0) -> QueueStats:
        """Jobs by status and type, the oldest due job's wait, and recent throughput.

        Counts (pending, processing, waiting, completed, cancelled, and failed split
        into awaiting-retry and final) per job type and in total; per type also how
        long the longest-waiting due pending job has been due, and within the last
        ``window`` (seconds or a ``timedelta``; default 5 minutes, at most an hour):
        jobs completed, failed attempts, and the median and 95th percentile run time
        (``completed_at - started_at``) of the newest 1,000 completions. Times are the
        store's clock. Field by field: :class:`QueueStats`, :class:`JobTypeStats`.

        Meant to be called every few seconds (dashboards, metrics); it never scans the
        jobs. PostgreSQL: one read-only snapshot of six index scans (revision
        ``0006_stats_indexes``), about 35 ms on a million jobs; their cost follows the
        jobs not completed and those finished within the window, and the completed
        jobs kept, which above 100,000 are recounted at most every 30 s by this queue
        (in between, the last count). Redis: one script of O(job types) over counters
        the other scripts keep (under 1 ms of Redis time), then the newest run times
        are read and the percentiles computed here; the first call on a store that
        already holds jobs counts them, 1,000 per script run. Measurements and the
        differences between the two: the observability guide.

        A ``window`` that is not a positive number of seconds up to 3600 raises
        :class:`ConfigurationError` (a ``ValueError``) or ``TypeError``.
        """
        seconds = intervals.seconds(window, "window", maximum=MAX_STATS_WINDOW)
        collected_at, job_types = self._backend.get_stats(seconds)
        return queue_stats(collected_at, seconds, job_types)

    # -- management -----------------------------------------------------------------

    def retry_job(self, job_id: int) -> bool:
        """Put a failed (or processing) job back to pending, due now.

        Returns True if the job changed; only then is a ``retried`` event written and
        ``job:retried`` emitted (the Node.js dataqueue does both unconditionally;
        W-EV-1). Attempts are kept; if the job had used all of them, it gets one more
        (``max_attempts`` is raised by one; W-RT-1). Cancelled and completed jobs are
        not retried.
        """
        changed = self._backend.retry_job(v.require_job_id(job_id))
        if changed:
            self._hooks.emit("job:retried", {"job_id": job_id})
        return changed

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a pending or waiting job; True if it changed (then ``job:cancelled``)."""
        changed = self._backend.cancel_job(v.require_job_id(job_id))
        if changed:
            self._hooks.emit("job:cancelled", {"job_id": job_id})
        return changed

    def edit_job(self, job_id: int, **updates: Any) -> bool:
        """Change fields of a pending job; True if it changed (then an ``edited`` event).

        Editable: ``payload, max_attempts, priority, run_at, timeout_ms, tags,
        retry_delay, retry_backoff, retry_delay_max, dead_letter_job_type``. Omitted
        means unchanged; ``None`` clears (``run_at=None`` means now). Unknown names
        raise TypeError. Jobs that are not pending are left alone.
        """
        job_id = v.require_job_id(job_id)
        return self._backend.edit_job(job_id, v.build_update(updates))

    def edit_all_pending_jobs(
        self, filters: Mapping[str, Any] | None = None, **updates: Any
    ) -> int:
        """Apply ``edit_job`` updates to every pending job matching ``filters``.

        One statement updates the rows and writes one ``edited`` event per row.
        Returns the number of jobs changed (0 without updates).
        """
        job_filter = v.build_filter(filters, allow_cursor=False)
        return self._backend.edit_pending_jobs(job_filter, v.build_update(updates))

    def cancel_all_upcoming_jobs(self, filters: Mapping[str, Any] | None = None) -> int:
        """Cancel every pending job matching ``filters``; return how many.

        Unlike the Node.js dataqueue (W-API-4) this behaves like ``cancel_job`` for
        each job: ``last_cancelled_at`` is set, a ``cancelled`` event is written and
        ``job:cancelled`` is emitted per job. Waiting jobs are not cancelled.
        """
        ids = self._backend.cancel_upcoming_jobs(v.build_filter(filters, allow_cursor=False))
        for job_id in ids:
            self._hooks.emit("job:cancelled", {"job_id": job_id})
        return len(ids)

    def cleanup_old_jobs(self, days_to_keep: int = 30, batch_size: int = 1000) -> int:
        """Delete finished jobs not updated for ``days_to_keep`` days, in batches.

        Finished: completed, cancelled, or failed with no retry left (a job waiting for
        a retry is kept). Their events and tokens go with them. Returns the number
        deleted.
        """
        days = _days_to_keep(days_to_keep)
        return self._backend.cleanup_old_jobs(
            days, v.require_int(batch_size, "batch_size", minimum=1)
        )

    def cleanup_old_job_events(self, days_to_keep: int = 30, batch_size: int = 1000) -> int:
        """Delete events older than ``days_to_keep`` days, in batches; return how many."""
        days = _days_to_keep(days_to_keep)
        return self._backend.cleanup_old_job_events(
            days, v.require_int(batch_size, "batch_size", minimum=1)
        )

    def reclaim_stuck_jobs(
        self,
        max_processing_time_minutes: float | None = None,
        *,
        max_processing_time: float | dt.timedelta | None = None,
    ) -> int:
        """Release jobs whose worker is gone; return how many.

        A job held by a dataqueue processor is released once its heartbeat is older
        than that processor's ``heartbeat_timeout``: a crashed worker's jobs come back,
        a live one is never touched, however long it runs. A job locked by a worker
        that does not heartbeat (the Node.js dataqueue's processor) is released when its
        lock is older than the larger of ``max_processing_time`` (seconds or
        ``timedelta``; or ``max_processing_time_minutes``; default 10 minutes) and its
        own ``timeout_ms``. A released job goes back to pending keeping its attempts; a
        job already on its last attempt fails for good with reason ``timeout`` (the
        Node.js dataqueue leaves it unclaimable, W-RT-1). The limit must be more than 0
        (the Node.js dataqueue accepts 0, which reclaims running jobs).
        """
        from dataqueue.intervals import stuck_timeout_seconds

        return self._backend.reclaim_stuck_jobs(
            stuck_timeout_seconds(
                max_processing_time_minutes,
                max_processing_time,
                ("max_processing_time_minutes", "max_processing_time"),
            )
        )


_CRON_EDITABLE = frozenset(
    {
        "cron_expression",
        "timezone",
        "payload",
        "max_attempts",
        "priority",
        "timeout_ms",
        "force_kill_on_timeout",
        "tags",
        "allow_overlap",
        "retry_delay",
        "retry_backoff",
        "retry_delay_max",
        "dead_letter_job_type",
    }
)


def _first_run(expression: str, zone: str) -> dt.datetime:
    from dataqueue import cron

    next_run_at = cron.next_run(expression, zone)
    if next_run_at is None:
        raise InvalidCronExpressionError(
            f'Invalid cron expression: "{expression}" (it never fires)'
        )
    return next_run_at


def _cron_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``edit_cron_job`` fields into column values."""
    from dataqueue import cron

    unknown = set(updates) - _CRON_EDITABLE
    if unknown:
        raise TypeError(
            f"cannot edit cron field(s) {', '.join(sorted(unknown))}; "
            f"editable: {', '.join(sorted(_CRON_EDITABLE))}"
        )
    values: dict[str, Any] = {}
    job_fields = {k: updates[k] for k in updates if k in v.EDITABLE_FIELDS}
    for name, value in v.build_update(job_fields).items():
        values[name] = json.loads(value) if name == "payload" else value
    if "cron_expression" in updates:
        values["cron_expression"] = cron.validate_cron_expression(updates["cron_expression"])
    if "timezone" in updates:
        values["timezone"] = cron.validate_timezone(updates["timezone"])
    for flag in ("allow_overlap", "force_kill_on_timeout"):
        if flag in updates:
            if not isinstance(updates[flag], bool):
                raise InvalidJobError(f"{flag} must be a bool, got {updates[flag]!r}")
            values[flag] = updates[flag]
    return values


def _reject(message: str) -> None:
    from dataqueue.errors import ConfigurationError

    raise ConfigurationError(message)


def init_job_queue(
    database_url: str | None = None,
    *,
    backend: str | None = None,
    engine: Any = None,
    database_config: Mapping[str, Any] | None = None,
    schema: str | None = None,
    redis_url: str | None = None,
    redis_config: Mapping[str, Any] | None = None,
    redis_client: Any = None,
    key_prefix: str = "dq:",
    verbose: bool = False,
    notify: bool = True,
    notify_channel: str | None = None,
) -> JobQueue:
    """Create a :class:`JobQueue`.

    PostgreSQL (the default): pass ``database_url``, ``database_config`` or your own
    SQLAlchemy ``engine`` (never disposed by the queue). With nothing given, reads
    ``DATAQUEUE_DATABASE_URL`` (or ``PG_DATAQUEUE_DATABASE``), else
    ``DATAQUEUE_REDIS_URL`` for the Redis backend. Contradictory or missing
    configuration raises :class:`ConfigurationError` saying what to pass.

    ``notify`` (PostgreSQL): every statement that makes jobs due sends one
    ``NOTIFY`` on ``notify_channel`` (default ``dataqueue``, or ``dataqueue.<schema>``
    with ``schema=``), delivered when its transaction commits, so listening
    processors claim at once. ``notify=False`` sends none (processors then poll).

    Args:
        database_url: A ``postgresql://`` or ``postgres://`` URL (run on psycopg 3) or
            a libpq ``"host=... dbname=..."`` string. A ``search_path`` query parameter
            is applied to every connection.
        backend: ``"postgres"`` or ``"redis"``. Default: Redis when only Redis options
            are given (or, with no options at all, only ``DATAQUEUE_REDIS_URL`` is
            set), else PostgreSQL.
        engine: Your SQLAlchemy engine; used as is and never disposed.
        database_config: Connection fields, TLS and pool options instead of a URL; the
            keys are the keyword arguments of :func:`dataqueue.create_engine`.
        schema: PostgreSQL schema holding dataqueue's tables (default: the
            connection's ``search_path``). Migrate it with ``dataqueue migrate --schema``.
        redis_url: ``redis://`` or ``rediss://`` URL (Redis backend).
        redis_config: Mapping with ``url``, ``host`` (default ``127.0.0.1``), ``port``
            (6379), ``password``, ``db`` (0), ``tls`` and ``key_prefix``.
        redis_client: Your ``redis.Redis`` client; never closed by the queue.
        key_prefix: Prefix of every Redis key of this queue (``redis_config``'s
            ``key_prefix`` wins). With Redis Cluster it needs a hash tag, e.g.
            ``"{dq}:"``.
        verbose: Log at INFO what the queue and its processors and supervisors do.
        notify: Send wake-up notifications (PostgreSQL; see above).
        notify_channel: The channel of those notifications.
    """
    from dataqueue import config

    pg_given = database_url is not None or engine is not None or database_config is not None
    redis_given = redis_url is not None or redis_config is not None or redis_client is not None
    if backend is None:
        if redis_given and not pg_given:
            backend = "redis"
        elif not pg_given and not redis_given and config.database_url_from_env() is None:
            backend = "redis" if config.redis_url_from_env() else "postgres"
        else:
            backend = "postgres"
    if backend not in ("postgres", "redis"):
        _reject(f"Unknown backend: {backend!r} (expected 'postgres' or 'redis')")
    if backend == "redis":
        return _init_redis(
            pg_given, redis_url, redis_config, redis_client, key_prefix, verbose=verbose
        )
    if redis_given:
        _reject("redis_url/redis_config/redis_client were given but backend is 'postgres'")
    if schema is not None and (not isinstance(schema, str) or not schema):
        _reject(f"schema must be a non-empty string, got {schema!r}")
    if engine is not None and (database_url is not None or database_config is not None):
        _reject("pass either engine or database_url/database_config, not both")
    from dataqueue.backends.postgres import PostgresBackend

    owns_engine = engine is None
    if engine is None:
        if database_url is None and database_config is None:
            database_url = config.database_url_from_env()
            if database_url is None:
                _reject(
                    "PostgreSQL backend requires a database: pass database_url, "
                    "database_config or engine, or set DATAQUEUE_DATABASE_URL"
                )
        engine = config.create_engine(database_url, **dict(database_config or {}))
    config.install_fork_safety(engine)
    if not isinstance(notify, bool):
        _reject(f"notify must be True or False, got {notify!r}")
    pg_backend = PostgresBackend(
        engine,
        schema=schema,
        owns_engine=owns_engine,
        notify=notify,
        notify_channel=notify_channel,
    )
    if verbose:
        logger.info(
            "dataqueue queue on %s (schema %s)",
            engine.url.render_as_string(),
            schema,
            extra={"action": "queue_opened", "backend": "postgres", "schema": schema},
        )
    return JobQueue(pg_backend, engine=engine, verbose=verbose)


def _init_redis(
    pg_given: bool,
    redis_url: str | None,
    redis_config: Mapping[str, Any] | None,
    redis_client: Any,
    key_prefix: str,
    *,
    verbose: bool = False,
) -> JobQueue:
    """A queue on the Redis backend (see :mod:`dataqueue.backends.redis.settings`).

    A ``redis_client`` given by the caller is used as is and never closed; otherwise
    the client is built from ``redis_url``, ``redis_config`` or ``DATAQUEUE_REDIS_URL``
    and closed by ``queue.close()``. Without the redis package, raises
    :class:`ConfigurationError` naming the ``dataqueue[redis]`` extra.
    """
    from dataqueue import config

    if pg_given:
        _reject("database_url/database_config/engine were given but backend is 'redis'")
    if not isinstance(key_prefix, str):
        _reject(f"key_prefix must be a string, got {key_prefix!r}")
    if redis_config is not None:
        unknown = set(redis_config) - {"url", "host", "port", "password", "db", "tls", "key_prefix"}
        if unknown:
            _reject(f"unknown redis_config key(s): {sorted(unknown)!r}")
    nothing_given = redis_client is None and redis_url is None and redis_config is None
    if nothing_given and config.redis_url_from_env() is None:
        _reject(
            "Redis backend requires either redis_url, redis_config or redis_client "
            "(or DATAQUEUE_REDIS_URL)"
        )
    if redis_client is not None and not callable(getattr(redis_client, "eval", None)):
        raise InvalidJobError(f"redis_client must be a redis.Redis client, got {redis_client!r}")
    if redis_client is not None and (redis_url is not None or redis_config is not None):
        _reject("pass either redis_client or redis_url/redis_config, not both")
    from dataqueue.backends.redis import settings

    settings.require_redis()
    from dataqueue.backends.redis import RedisBackend

    prefix = settings.key_prefix(redis_config, key_prefix)
    owns_client = redis_client is None
    if redis_client is None:
        if nothing_given:
            redis_url = config.redis_url_from_env()
        redis_client = settings.create_client(redis_url, redis_config)
    backend = RedisBackend(redis_client, prefix=prefix, owns_client=owns_client)
    if verbose:
        logger.info(
            "dataqueue queue on Redis (key prefix %r)",
            prefix,
            extra={"action": "queue_opened", "backend": "redis", "key_prefix": prefix},
        )
    return JobQueue(backend, redis_client=redis_client, verbose=verbose)
