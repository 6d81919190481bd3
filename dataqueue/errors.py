"""Exceptions raised by dataqueue.

Every error the library raises on purpose derives from :class:`DataQueueError`.
Errors about bad input also derive from :class:`ValueError`, so code that already
catches ``ValueError`` for invalid arguments keeps working.
"""

from __future__ import annotations

from typing import Any


class DataQueueError(Exception):
    """Base class of every dataqueue error."""


class ConfigurationError(DataQueueError, ValueError):
    """Configuration is missing, contradictory or malformed."""


class InvalidJobError(DataQueueError, ValueError):
    """A job option (type, payload, datetime, tags, connection, …) is invalid."""


class JobDependencyError(InvalidJobError):
    """``depends_on`` names unknown jobs, the job itself, or would form a cycle."""

    def __init__(self, message: str, job_ids: list[int] | None = None) -> None:
        super().__init__(message)
        #: The offending job ids, when the error is about specific ids.
        self.job_ids: list[int] = list(job_ids or [])


class InvalidCronExpressionError(InvalidJobError):
    """A cron expression or timezone is invalid, or the expression never fires."""


class DuplicateScheduleError(DataQueueError):
    """A cron schedule with the same name already exists."""


class UnsupportedOperationError(DataQueueError):
    """The operation is not available on this backend."""


class SchemaNotReadyError(DataQueueError):
    """The dataqueue tables do not exist: migrations have not been run."""


class JobAbortedError(DataQueueError):
    """Raised by ``AbortSignal.raise_if_aborted()`` once the job was aborted."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "Job was aborted")
        self.reason = reason


class WaitSignal(BaseException):
    """Internal: ends a handler invocation so that the job can wait.

    Derives from :class:`BaseException` so that a handler's ``except Exception``
    cannot swallow it.
    """

    def __init__(self, **details: Any) -> None:
        super().__init__("job is waiting")
        self.details = details
