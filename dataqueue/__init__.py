"""dataqueue: background jobs in the PostgreSQL (or Redis) you already run.

Enqueue inside your own transaction, process with worker threads. Start with
:func:`init_job_queue`.
"""

from __future__ import annotations

from dataqueue.config import create_engine
from dataqueue.dependencies import batch_dep_ref
from dataqueue.enums import FailureReason, JobEventType, JobStatus, TagMatch
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
from dataqueue.processing.context import JobContext
from dataqueue.processing.processor import Processor
from dataqueue.processing.signal import AbortSignal
from dataqueue.queue import JobQueue, init_job_queue
from dataqueue.records import DependsOn, JobEvent, JobGroup, JobOptions, JobRecord

__version__ = "0.1.0"

__all__ = [
    "AbortSignal",
    "ConfigurationError",
    "DataQueueError",
    "DependsOn",
    "DuplicateScheduleError",
    "FailureReason",
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
    "Processor",
    "SchemaNotReadyError",
    "TagMatch",
    "UnsupportedOperationError",
    "WaitSignal",
    "__version__",
    "batch_dep_ref",
    "create_engine",
    "init_job_queue",
]
