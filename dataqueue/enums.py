"""String enums for job statuses, event types and failure reasons.

Each member compares equal to its string value (``JobStatus.PENDING == "pending"``),
which is also what is stored in the database.
"""

from __future__ import annotations

import enum


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return str(self.value)


class JobStatus(_StrEnum):
    """Where a job is in its life cycle.

    - ``pending``: waiting to be claimed (also before its ``run_at``, and while its
      dependencies are unfinished).
    - ``processing``: claimed by a worker; its handler runs.
    - ``completed``: the handler returned. Final.
    - ``failed``: the last attempt failed. The job is **not** final while
      ``next_attempt_at`` is set: it runs again then. With no attempts left it has
      failed for good (``next_attempt_at`` is None).
    - ``cancelled``: cancelled before it ran (or while waiting). Final.
    - ``waiting``: paused by ``ctx.wait_for``, ``ctx.wait_until`` or
      ``ctx.wait_for_token``; it becomes due again when the wait ends.

    :attr:`JobRecord.is_final` tells whether a job will run again by itself.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"


class JobEventType(_StrEnum):
    """The kind of a job event (see :class:`JobEvent` for each one's ``metadata``).

    ``added`` (enqueued), ``processing`` (claimed), ``completed``, ``failed`` (one
    attempt failed), ``cancelled``, ``retried`` (``retry_job``), ``edited``
    (``edit_job``/``edit_all_pending_jobs``), ``prolonged`` (``ctx.prolong`` or an
    ``on_timeout`` extension), ``waiting`` (a workflow wait began).
    """

    ADDED = "added"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    EDITED = "edited"
    PROLONGED = "prolonged"
    WAITING = "waiting"


class FailureReason(_StrEnum):
    """Why a job's last attempt failed (``JobRecord.failure_reason``).

    ``timeout``: the attempt passed its ``timeout_ms`` (or the job was reclaimed on
    its last attempt after its worker died). ``handler_error``: the handler raised.
    ``no_handler``: a processor claiming every type (``job_type="*"``) had no
    handler for it.
    """

    TIMEOUT = "timeout"
    HANDLER_ERROR = "handler_error"
    NO_HANDLER = "no_handler"


class TagMatch(_StrEnum):
    """How a tag filter compares a job's tags with the requested values.

    ``all``: the job has every value. ``any``: the job has at least one value.
    ``none``: the job has none of the values (untagged jobs match). ``exact``: the
    job's tags and the values are the same set (order and duplicates ignored).
    """

    ALL = "all"
    ANY = "any"
    NONE = "none"
    EXACT = "exact"


#: ``create_processor(job_type=ALL_JOB_TYPES)`` claims every job type, also those the
#: processor has no handler for (they fail with ``no_handler``). By default a processor
#: claims only its handlers' types.
ALL_JOB_TYPES = "*"
