"""dataqueue: background jobs in the PostgreSQL (or Redis) you already run.

Enqueue inside your own transaction, process with worker threads. Start with
:func:`init_job_queue`.

Names are imported on first use, so ``import dataqueue`` stays cheap; this matters for
``force_kill_on_timeout`` handlers, whose child processes import the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dataqueue.enums import ALL_JOB_TYPES, FailureReason, JobEventType, JobStatus, TagMatch
from dataqueue.errors import (
    ConfigurationError,
    DataQueueError,
    DuplicateScheduleError,
    InvalidCronExpressionError,
    InvalidJobError,
    JobAbortedError,
    JobDependencyError,
    SchemaNotReadyError,
    UnsupportedOperationError,
    WaitSignal,
)

if TYPE_CHECKING:
    from dataqueue.config import create_engine
    from dataqueue.dependencies import batch_dep_ref
    from dataqueue.processing.context import JobContext
    from dataqueue.processing.isolated import HandlerCheck, validate_handler_serializable
    from dataqueue.processing.processor import Processor
    from dataqueue.processing.signal import AbortSignal
    from dataqueue.queue import JobQueue, init_job_queue
    from dataqueue.rate_limits import RateLimit
    from dataqueue.records import (
        CronScheduleRecord,
        DependsOn,
        JobEvent,
        JobGroup,
        JobOptions,
        JobRecord,
        JobTypeStats,
        QueueStats,
        WaitpointRecord,
        WaitToken,
        WaitTokenResult,
    )
    from dataqueue.supervisor import Supervisor, SupervisorRunResult

__version__ = "0.1.0"

#: Lazily imported public names and the module that defines each.
_LAZY = {
    "AbortSignal": "dataqueue.processing.signal",
    "CronScheduleRecord": "dataqueue.records",
    "DependsOn": "dataqueue.records",
    "HandlerCheck": "dataqueue.processing.isolated",
    "JobContext": "dataqueue.processing.context",
    "JobEvent": "dataqueue.records",
    "JobGroup": "dataqueue.records",
    "JobOptions": "dataqueue.records",
    "JobQueue": "dataqueue.queue",
    "JobRecord": "dataqueue.records",
    "JobTypeStats": "dataqueue.records",
    "Processor": "dataqueue.processing.processor",
    "QueueStats": "dataqueue.records",
    "RateLimit": "dataqueue.rate_limits",
    "Supervisor": "dataqueue.supervisor",
    "SupervisorRunResult": "dataqueue.supervisor",
    "WaitToken": "dataqueue.records",
    "WaitTokenResult": "dataqueue.records",
    "WaitpointRecord": "dataqueue.records",
    "batch_dep_ref": "dataqueue.dependencies",
    "create_engine": "dataqueue.config",
    "init_job_queue": "dataqueue.queue",
    "validate_handler_serializable": "dataqueue.processing.isolated",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dataqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ALL_JOB_TYPES",
    "AbortSignal",
    "ConfigurationError",
    "CronScheduleRecord",
    "DataQueueError",
    "DependsOn",
    "DuplicateScheduleError",
    "FailureReason",
    "HandlerCheck",
    "InvalidCronExpressionError",
    "InvalidJobError",
    "JobAbortedError",
    "JobContext",
    "JobDependencyError",
    "JobEvent",
    "JobEventType",
    "JobGroup",
    "JobOptions",
    "JobQueue",
    "JobRecord",
    "JobStatus",
    "JobTypeStats",
    "Processor",
    "QueueStats",
    "RateLimit",
    "SchemaNotReadyError",
    "Supervisor",
    "SupervisorRunResult",
    "TagMatch",
    "UnsupportedOperationError",
    "WaitSignal",
    "WaitToken",
    "WaitTokenResult",
    "WaitpointRecord",
    "__version__",
    "batch_dep_ref",
    "create_engine",
    "init_job_queue",
    "validate_handler_serializable",
]
