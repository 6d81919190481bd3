"""The PostgreSQL backend.

- :mod:`.backend`: :class:`PostgresBackend`, the :class:`~dataqueue.backends.base.Backend`
  on SQLAlchemy Core statements, and the functions that build records from rows.
- :mod:`.sql`: the statements Core cannot say readably (enqueue, claim, fail, waits).
- :mod:`.enqueue`: running the enqueue statements, pipelined for large batches, also on
  the caller's connection (``db=``).
"""

from dataqueue.backends.postgres.backend import (
    PostgresBackend,
    cron_record_from_row,
    filter_conditions,
    job_event_from_row,
    job_record_from_row,
)

__all__ = [
    "PostgresBackend",
    "cron_record_from_row",
    "filter_conditions",
    "job_event_from_row",
    "job_record_from_row",
]
