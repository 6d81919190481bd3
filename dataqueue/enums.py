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
    """Where a job is in its life cycle."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"


class JobEventType(_StrEnum):
    """The kind of a row in ``job_events``."""

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
    """Why a job's last attempt failed."""

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
