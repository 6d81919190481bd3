"""Test your application's jobs against a real PostgreSQL, with pytest or without.

Installing dataqueue registers a pytest plugin (``-p no:dataqueue`` turns it off). It
does nothing until a test asks for one of its fixtures:

``dataqueue_queue``
    A :class:`~dataqueue.JobQueue` on a database of this test's own: migrated, empty,
    and dropped after the test. Every test's database is a copy of one template that is
    migrated once per session, so a test pays about 50 ms for it, not a migration.
``dataqueue_database_url`` / ``dataqueue_engine``
    The URL (``postgresql+psycopg://…``) and a SQLAlchemy engine of that same database:
    configure the application under test with them, so that what it enqueues lands where
    the test looks.
``dataqueue_prepare_database``
    Override it (session scope) to create your application's own tables in the template;
    every test then starts with them, empty.
``dataqueue_redis_queue``
    A queue on the Redis backend, on a key prefix of this test's own (deleted after it).
``dataqueue_databases``
    The session's :class:`TemplateDatabases`, for a test that needs more databases.

Which PostgreSQL: the first of ``--dataqueue-database-url``, the environment variable
``DATAQUEUE_TESTING_DATABASE_URL`` and the ini option ``dataqueue_database_url``; the
URL names a server where the user may ``CREATE DATABASE`` (its database is used only to
connect, e.g. ``postgres``). With none of them, an embedded PostgreSQL (the ``embedded``
extra, pgserver) is started once per session in a temporary folder, removed at the end.
Redis: ``--dataqueue-redis-url``, ``DATAQUEUE_TESTING_REDIS_URL`` or the ini option
``dataqueue_redis_url``; there is no embedded Redis.

Helpers, usable with or without pytest:

- :func:`run_until_idle` processes the due jobs in the test, one at a time, until none is
  left, and returns what ran (:class:`RunResult`).
- :func:`enqueued_jobs`, :func:`assert_enqueued` and :func:`assert_not_enqueued` say what
  is in the queue, and list what was enqueued instead when an assertion fails.

.. code-block:: python

    from dataqueue.testing import assert_enqueued, run_until_idle

    def test_signup_sends_a_welcome_email(dataqueue_queue):
        signup(dataqueue_queue, "ada@example.com")         # your code, enqueueing
        assert_enqueued(dataqueue_queue, "send_welcome", {"email": "ada@example.com"})
        result = run_until_idle(dataqueue_queue, {"send_welcome": send_welcome})
        assert [run.outcome for run in result.runs] == ["completed"]

Nothing here mocks the store: every helper goes through the same queue API as
production code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataqueue.testing.assertions import assert_enqueued, assert_not_enqueued, enqueued_jobs
    from dataqueue.testing.databases import TemplateDatabases
    from dataqueue.testing.running import (
        JobRun,
        JobsFailedError,
        RunLimitError,
        RunResult,
        run_until_idle,
    )

#: Public names and the module that defines each, imported on first use: pytest loads the
#: plugin in every session, and a session that uses none of it should not pay for
#: SQLAlchemy's import.
_LAZY = {
    "JobRun": "dataqueue.testing.running",
    "JobsFailedError": "dataqueue.testing.running",
    "RunLimitError": "dataqueue.testing.running",
    "RunResult": "dataqueue.testing.running",
    "TemplateDatabases": "dataqueue.testing.databases",
    "assert_enqueued": "dataqueue.testing.assertions",
    "assert_not_enqueued": "dataqueue.testing.assertions",
    "enqueued_jobs": "dataqueue.testing.assertions",
    "run_until_idle": "dataqueue.testing.running",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dataqueue.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "JobRun",
    "JobsFailedError",
    "RunLimitError",
    "RunResult",
    "TemplateDatabases",
    "assert_enqueued",
    "assert_not_enqueued",
    "enqueued_jobs",
    "run_until_idle",
]
