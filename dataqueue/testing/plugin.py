"""The pytest plugin of :mod:`dataqueue.testing` (entry point ``dataqueue``).

pytest loads it in every session of an environment where dataqueue is installed; it
only adds its command-line and ini options, and starts or creates nothing until a test
uses one of its fixtures. ``-p no:dataqueue`` turns it off; with plugin autoloading off
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), enable it with ``-p dataqueue.testing.plugin``.

Fixtures (see :mod:`dataqueue.testing` for a tour):

- ``dataqueue_queue``: a :class:`~dataqueue.JobQueue` on the test's own database.
- ``dataqueue_database_url`` / ``dataqueue_engine``: that database's URL and engine.
- ``dataqueue_prepare_database`` (session): override to prepare the template.
- ``dataqueue_databases`` (session): the :class:`~dataqueue.testing.TemplateDatabases`.
- ``dataqueue_redis_queue``: a queue on Redis, on a key prefix of the test's own.

Settings, first found wins: the command-line option, the environment variable, the ini
option (``[tool.pytest.ini_options]`` in pyproject.toml, or pytest.ini):

========================== ================================== =========================
command line               environment                        ini
========================== ================================== =========================
``--dataqueue-database-url`` ``DATAQUEUE_TESTING_DATABASE_URL`` ``dataqueue_database_url``
``--dataqueue-redis-url``    ``DATAQUEUE_TESTING_REDIS_URL``    ``dataqueue_redis_url``
========================== ================================== =========================

Without a database URL, an embedded PostgreSQL (pgserver, from the ``embedded`` extra) is
started once per session in a temporary folder that is removed at the end. Without a
Redis URL, ``dataqueue_redis_queue`` raises :class:`~dataqueue.ConfigurationError`.
dataqueue's own ``DATAQUEUE_DATABASE_URL`` is deliberately not read: it usually names
the application's real database, and the tests create and drop databases.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import sqlalchemy as sa

    from dataqueue.queue import JobQueue
    from dataqueue.testing.databases import PrepareDatabase, TemplateDatabases

#: Environment variable naming the PostgreSQL server for the tests.
DATABASE_URL_ENV = "DATAQUEUE_TESTING_DATABASE_URL"
#: Environment variable naming the Redis server for the tests.
REDIS_URL_ENV = "DATAQUEUE_TESTING_REDIS_URL"

_SETTINGS = {
    "database": (
        DATABASE_URL_ENV,
        "PostgreSQL server for the dataqueue fixtures; each test gets a database of its "
        "own there (the user needs CREATEDB). Default: an embedded PostgreSQL.",
    ),
    "redis": (
        REDIS_URL_ENV,
        "Redis server for dataqueue_redis_queue; each test gets a key prefix of its own.",
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dataqueue", "dataqueue test fixtures")
    for name, (env, help_text) in _SETTINGS.items():
        group.addoption(
            f"--dataqueue-{name}-url",
            dest=f"dataqueue_{name}_url",
            default=None,
            metavar="URL",
            help=f"{help_text} Also ${env} or the ini option dataqueue_{name}_url.",
        )
        parser.addini(f"dataqueue_{name}_url", f"{help_text} (--dataqueue-{name}-url)")


def configured_url(config: pytest.Config, name: str) -> str | None:
    """The URL set for ``name`` (``"database"`` or ``"redis"``), or None.

    Command line, then environment, then ini; blank values count as unset.
    """
    env, _ = _SETTINGS[name]
    for value in (
        config.getoption(f"dataqueue_{name}_url"),
        os.environ.get(env),
        config.getini(f"dataqueue_{name}_url"),
    ):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@pytest.fixture(scope="session")
def dataqueue_prepare_database() -> PrepareDatabase | None:
    """Override to prepare the template database once per session (default: nothing).

    Return a callable that takes a SQLAlchemy engine on the template, which already has
    dataqueue's tables, and creates your application's tables (``metadata.create_all``,
    your own migrations…). Every test's database is a copy, so each starts with them,
    empty. Close what you open: PostgreSQL copies a template only when nobody is
    connected to it.
    """
    return None


@pytest.fixture(scope="session")
def dataqueue_databases(
    request: pytest.FixtureRequest, dataqueue_prepare_database: PrepareDatabase | None
) -> Iterator[TemplateDatabases]:
    """The session's :class:`~dataqueue.testing.TemplateDatabases` on the configured
    server, or on an embedded PostgreSQL started for the session."""
    from dataqueue.testing.databases import TemplateDatabases

    url = configured_url(request.config, "database")
    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(_embedded_postgres())
        yield stack.enter_context(TemplateDatabases(url, prepare=dataqueue_prepare_database))


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    """An embedded PostgreSQL for the session; without pgserver, say what to configure."""
    from dataqueue.embedded import embedded_postgres
    from dataqueue.errors import ConfigurationError

    try:
        import pgserver  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the dataqueue fixtures need a PostgreSQL server: pass --dataqueue-database-url, "
            f"set {DATABASE_URL_ENV} or the ini option dataqueue_database_url (a server where "
            "the user may CREATE DATABASE), or pip install 'dataqueue[embedded]' for an "
            "embedded one"
        ) from None
    with embedded_postgres() as url:
        yield url


@pytest.fixture
def dataqueue_database_url(dataqueue_databases: TemplateDatabases) -> Iterator[str]:
    """URL of a database of this test's own, migrated and empty; dropped after the test
    (connections still open to it are ended)."""
    url = dataqueue_databases.create_database()
    yield url
    dataqueue_databases.drop_database(url)


@pytest.fixture
def dataqueue_engine(dataqueue_database_url: str) -> Iterator[sa.Engine]:
    """A SQLAlchemy engine (psycopg 3) on the test's database; disposed after the test."""
    import dataqueue as dq

    engine = dq.create_engine(dataqueue_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def dataqueue_queue(dataqueue_engine: sa.Engine) -> Iterator[JobQueue]:
    """A PostgreSQL-backed queue on the test's database; closed after the test.

    Stop the processors you start on it before the test ends; the database is dropped.
    """
    import dataqueue as dq

    queue = dq.init_job_queue(engine=dataqueue_engine)
    yield queue
    queue.close()


@pytest.fixture(scope="session")
def _dataqueue_redis_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    from dataqueue.errors import ConfigurationError

    url = configured_url(request.config, "redis")
    if url is None:
        raise ConfigurationError(
            "dataqueue_redis_queue needs a Redis server: pass --dataqueue-redis-url, set "
            f"{REDIS_URL_ENV} or the ini option dataqueue_redis_url (e.g. redis://localhost/15)"
        )
    from dataqueue.backends.redis import settings

    settings.require_redis()
    import redis

    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def dataqueue_redis_queue(_dataqueue_redis_client: Any) -> Iterator[JobQueue]:
    """A Redis-backed queue on a key prefix of this test's own; its keys are deleted
    after the test. The server's other keys are never touched."""
    import dataqueue as dq
    from dataqueue.testing.databases import delete_redis_prefix, new_redis_prefix

    prefix = new_redis_prefix()
    queue = dq.init_job_queue(
        backend="redis", redis_client=_dataqueue_redis_client, key_prefix=prefix
    )
    yield queue
    queue.close()
    delete_redis_prefix(_dataqueue_redis_client, prefix)
