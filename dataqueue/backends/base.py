"""The Backend protocol: every storage operation dataqueue performs.

:class:`dataqueue.queue.JobQueue` validates input and emits hooks; it reaches the store
only through these methods. Each backend implements all of them, and the integration
tests run the same behaviour against each.

Conventions: inputs are already validated (see :mod:`dataqueue.validation`); methods
that change state report what they changed (a bool, a count or the affected ids) so
that the queue emits hooks only for real changes (W-EV-1).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from dataqueue.enums import FailureReason
from dataqueue.rate_limits import RateLimit
from dataqueue.records import (
    CronScheduleRecord,
    JobEvent,
    JobRecord,
    JobTypeStats,
    WaitpointRecord,
)
from dataqueue.validation import JobFilter, NewJob


@attrs.frozen
class ClaimedJob:
    """What a processor needs of a job it claimed (post-claim values)."""

    id: int
    job_type: str
    payload: Any
    attempts: int
    max_attempts: int
    timeout_ms: int | None
    force_kill_on_timeout: bool
    retry_delay: int | None
    retry_backoff: bool | None
    retry_delay_max: int | None
    step_data: dict[str, Any] | None
    group_id: str | None
    #: Claimed from ``waiting`` (a wait ended): the claim did not count an attempt.
    resumed: bool = False


@attrs.frozen
class Completion:
    """A job that finished; ``output_json`` None keeps the stored output."""

    job_id: int
    output_json: str | None = None


@attrs.frozen
class Failure:
    """A job whose attempt failed; ``retry_in_seconds`` None means it failed for good."""

    job_id: int
    message: str
    reason: FailureReason | None
    retry_in_seconds: float | None
    failed_at: str


@attrs.frozen
class FailResult:
    """What recording a failure did: whether a retry is scheduled, and any dead letter."""

    job_id: int
    will_retry: bool
    dead_letter_job_id: int | None


@attrs.frozen
class ClaimRequest:
    """How many jobs to claim and under which restrictions."""

    limit: int
    job_types: tuple[str, ...] | None = None
    group_limit: int | None = None
    #: Rows each claim branch may look at; a processor passes its largest claim so
    #: that one prepared statement serves every claim size.
    scan_size: int = 0
    #: Global rate limits, (job type, limit) sorted by type: the claim takes a job of
    #: such a type only while fewer than ``limit.limit`` of its starts (by any claim
    #: that sets the limit) fall within the last ``limit.per`` seconds, and logs each
    #: job it takes as a start. Types the claim does not ask for are ignored.
    rate_limits: tuple[tuple[str, RateLimit], ...] = ()
    #: Called during the claim, when it left a rate-limited type full, with the seconds
    #: (by the store's clock) until that type has room again (the earliest such type).
    on_rate_limited: Callable[[float], object] | None = attrs.field(default=None, eq=False)

    def limited_types(self) -> tuple[tuple[str, RateLimit], ...]:
        """The rate limits of the types this claim asks for (all of them: no type filter)."""
        if self.job_types is None:
            return self.rate_limits
        return tuple((t, limit) for t, limit in self.rate_limits if t in self.job_types)


class Wakeups(Protocol):
    """A store's push channel to one processor: "jobs may have become due"."""

    def wait(self, timeout: float) -> list[str] | None:
        """Block up to ``timeout`` seconds; return the payloads of the wake-ups received
        (``[]``: none). A payload is a job type, or ``""`` for any type. None when
        :meth:`interrupt` ended the wait. Raises when the connection is lost (the
        caller closes this object and asks the backend for a new one)."""
        ...

    def interrupt(self) -> None:
        """End a :meth:`wait` in progress (or the next one) at once; any thread."""
        ...

    def close(self) -> None:
        """Close the listening connection (not in a forked child: the parent's)."""
        ...


class Backend(Protocol):
    """What a store must do for a :class:`dataqueue.queue.JobQueue`."""

    def add_jobs(
        self,
        jobs: Iterable[NewJob],
        count: int,
        db: Any = None,
        inserted: list[bool] | None = None,
    ) -> list[int]:
        """Insert the ``count`` jobs of ``jobs`` with one ``added`` event each; return
        their ids in input order. All or nothing. With ``inserted`` (an empty list),
        append one flag per input job: True if this call wrote it, False for an
        idempotent duplicate (an existing key, or a key repeated in the batch).

        ``jobs`` may validate each job as it is drawn and raise: then nothing may be
        written, and the caller's transaction (``db``) must stay usable. A backend
        may write early jobs before drawing later ones only inside a transaction
        (or, in the caller's transaction, a savepoint) that such an exception undoes.

        Batch placeholders (negative ids in ``depends_on_job_ids``) refer to earlier
        jobs of ``jobs``. A job whose idempotency key exists resolves to the existing
        id and writes nothing. Prerequisite ids that do not exist raise
        ``JobDependencyError``.
        """
        ...

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job, or None."""
        ...

    def list_jobs(self, filters: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        """Jobs matching ``filters``, newest first (``created_at``, then ``id``)."""
        ...

    def get_job_events(self, job_id: int) -> list[JobEvent]:
        """The job's events, oldest first (``created_at``, then ``id``)."""
        ...

    def get_stats(self, window_seconds: float) -> tuple[dt.datetime, list[JobTypeStats]]:
        """The store's clock now and the figures of every job type with a stored job.

        Counts are exact at one moment; ``completed_recent``, ``failed_recent`` and the
        run-time percentiles cover the last ``window_seconds`` (at most
        :data:`dataqueue.records.MAX_STATS_WINDOW`). Must stay cheap on millions of
        jobs: index lookups and counters, never a scan of every job.
        """
        ...

    def retry_job(self, job_id: int) -> bool:
        """Failed or processing job back to pending; True if a row changed."""
        ...

    def cancel_job(self, job_id: int) -> bool:
        """Pending or waiting job to cancelled; True if a row changed."""
        ...

    def edit_job(self, job_id: int, updates: dict[str, Any]) -> bool:
        """Apply validated ``updates`` to a pending job; True if a row changed."""
        ...

    def edit_pending_jobs(self, filters: JobFilter, updates: dict[str, Any]) -> int:
        """Apply ``updates`` to every pending job matching ``filters``; return the count."""
        ...

    def cancel_upcoming_jobs(self, filters: JobFilter) -> list[int]:
        """Cancel every pending job matching ``filters``; return their ids."""
        ...

    def cleanup_old_jobs(self, days_to_keep: int, batch_size: int) -> int:
        """Delete completed jobs older than ``days_to_keep`` days in batches; return count."""
        ...

    def cleanup_old_job_events(self, days_to_keep: int, batch_size: int) -> int:
        """Delete events older than ``days_to_keep`` days in batches; return count."""
        ...

    def reclaim_stuck_jobs(self, max_processing_seconds: float) -> int:
        """Release jobs whose worker is gone; return how many were released.

        A job locked by a registered worker (one that heartbeats) is released once its
        ``locked_at`` is older than that worker's heartbeat timeout, whatever
        ``max_processing_seconds`` says. A job locked by an unregistered worker (e.g.
        upstream's Node.js processor) is released when locked longer than
        ``max(max_processing_seconds, timeout_ms)``. A released job on its last attempt
        fails for good with reason ``timeout``. Also forgets workers that have been
        silent for an hour and hold nothing.
        """
        ...

    def reclaim_abandoned_jobs(self) -> int:
        """Release the jobs of registered workers whose heartbeat is stale (see above)."""
        ...

    # -- worker registry and heartbeats -------------------------------------------------

    def heartbeat(
        self, worker_id: str, job_ids: Sequence[int], timeout_seconds: float
    ) -> list[int]:
        """Register (or refresh) the worker and refresh ``locked_at`` of ``job_ids``.

        Returns the ids this worker still owns; a job missing from the result was
        reclaimed or changed by someone else, and any result of it will be refused.
        """
        ...

    def unregister_worker(self, worker_id: str) -> None:
        """Remove the worker's registry entry (it holds no jobs any more)."""
        ...

    def release_jobs(self, worker_id: str, jobs: Sequence[ClaimedJob]) -> list[int]:
        """Give back claimed jobs that never started, as if they had not been claimed.

        The attempt the claim counted is restored (a job claimed from ``waiting`` goes
        back to ``waiting``, due now); nothing is recorded as a failure. Returns the ids
        released (jobs this worker still owned).
        """
        ...

    # -- processing: every write is guarded by status='processing' AND locked_by ------

    def advance(
        self, worker_id: str, completions: Sequence[Completion], claim: ClaimRequest
    ) -> tuple[list[int], list[ClaimedJob]]:
        """Complete ``completions`` and claim up to ``claim.limit`` jobs, atomically.

        Returns the ids actually completed (jobs this worker still owned) and the
        claimed jobs in claim order (priority, then age, then id). Both write their
        events in the same transaction.
        """
        ...

    def fail_jobs(self, worker_id: str, failures: Sequence[Failure]) -> list[FailResult]:
        """Record failed attempts (retry schedule, error history, dead letters, events).

        Jobs this worker no longer owns are skipped and absent from the result.
        """
        ...

    def prolong_job(self, worker_id: str, job_id: int) -> bool:
        """Refresh the lock of a job this worker owns; writes a ``prolonged`` event."""
        ...

    def update_progress(self, worker_id: str, job_id: int, progress: int) -> bool:
        """Store progress (0..100) of a job this worker owns."""
        ...

    def update_output(self, worker_id: str, job_id: int, output_json: str) -> bool:
        """Store the output of a job this worker owns."""
        ...

    def update_step_data(self, worker_id: str, job_id: int, step_data_json: str) -> bool:
        """Store the step/wait memo of a job this worker owns."""
        ...

    def wait_job(
        self,
        worker_id: str,
        job_id: int,
        wait_until: dt.datetime | None,
        token_id: str | None,
        step_data_json: str,
    ) -> bool:
        """Park a job this worker owns until ``wait_until`` or until ``token_id`` settles.

        Releases the lock, keeps attempts, writes a ``waiting`` event. If the token has
        already settled the job is due at once (no lost wake-up, W-TOK-2).
        """
        ...

    # -- tokens ---------------------------------------------------------------------

    def create_token(
        self,
        token_id: str,
        job_id: int | None,
        timeout: dt.timedelta | None,
        tags: list[str] | None,
    ) -> None:
        """Insert a waiting token."""
        ...

    def get_token(self, token_id: str) -> WaitpointRecord | None:
        """The token, or None."""
        ...

    def complete_token(self, token_id: str, output_json: str | None) -> bool | None:
        """Complete a waiting token and resume the jobs waiting on it.

        Returns True if it completed, False if it had already completed or timed out,
        None if no such token exists.
        """
        ...

    def expire_timed_out_tokens(self) -> int:
        """Time out due tokens and resume their waiting jobs; return how many tokens."""
        ...

    # -- cron -----------------------------------------------------------------------

    def add_cron_schedule(self, values: dict[str, Any]) -> int:
        """Insert a schedule (column values); a taken name raises DuplicateScheduleError."""
        ...

    def get_cron_schedule(
        self, schedule_id: int | None = None, name: str | None = None
    ) -> CronScheduleRecord | None:
        """The schedule with that id or name, or None."""
        ...

    def list_cron_schedules(self, status: str | None) -> list[CronScheduleRecord]:
        """All schedules (or those with ``status``), oldest first."""
        ...

    def update_cron_schedule(self, schedule_id: int, values: dict[str, Any]) -> bool:
        """Set column values (``updated_at`` too); True if the schedule exists."""
        ...

    def remove_cron_schedule(self, schedule_id: int) -> bool:
        """Delete the schedule (its jobs stay); True if it existed."""
        ...

    def enqueue_due_cron_jobs(
        self, next_run: Callable[[str, str, dt.datetime], dt.datetime | None]
    ) -> int:
        """Enqueue one job per due active schedule and advance it, exactly once even when
        several processes tick at the same moment (W-CRON-1). ``next_run(expression,
        timezone, now)`` computes the following occurrence. Returns jobs enqueued."""
        ...

    # -- wake-ups -------------------------------------------------------------------

    def listen(self) -> Wakeups | None:
        """Open a connection that receives wake-ups when jobs become due (enqueued,
        retried, resumed, released), or None if this store cannot push them (the
        processor then polls). Raises what connecting raises."""
        ...

    def next_due_in(self, job_types: Sequence[str] | None) -> float | None:
        """Seconds until the earliest scheduled job becomes due, by the store's clock:
        a pending job's ``run_at``, a failed job's ``next_attempt_at`` or a time-based
        wait's ``wait_until``, among ``job_types`` (None: all), counting only times
        still in the future. None when there is none (or the store cannot tell)."""
        ...

    def is_data_error(self, error: BaseException) -> bool:
        """True if the store refused a value of the request (text it cannot hold, a
        number out of range): the same values would fail again, other rows would not.
        Any other error (connection lost, server restarting, tables missing) is worth
        retrying later with the same values."""
        ...

    def reset_after_fork(self) -> None:
        """Drop connections inherited from a parent process without closing them."""
        ...

    def close(self) -> None:
        """Release what this backend created (never what the caller passed in)."""
        ...
