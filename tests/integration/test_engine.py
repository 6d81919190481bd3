"""Engines from dataqueue.config against a real PostgreSQL: search_path and fork safety."""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from dataqueue.config import create_engine, install_fork_safety, reset_engine_after_fork


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("select pg_backend_pid()").scalar_one())


def _run_in_child(work: Callable[[], int]) -> tuple[int, str]:
    """Fork; run ``work`` in the child and return (child exit code, what it reported).

    The child reports ``work()``'s result or its traceback through a pipe and always ends
    with ``os._exit``, so it never runs the parent's pytest teardown or atexit handlers.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            report = str(work())
            code = 0
        except BaseException:
            report = traceback.format_exc()
        finally:
            os.write(write_end, report.encode())
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def _backend_is_alive(admin: sa.Engine, backend_pid: int) -> bool:
    with admin.connect() as connection:
        count = connection.execute(
            sa.text("select count(*) from pg_stat_activity where pid = :pid"), {"pid": backend_pid}
        ).scalar_one()
    return bool(count)


def _backend_ends(admin: sa.Engine, backend_pid: int, timeout: float = 5.0) -> bool:
    """Whether the backend exits within ``timeout`` (it exits shortly after the client hangs up)."""
    deadline = time.monotonic() + timeout
    while _backend_is_alive(admin, backend_pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def single_connection_engine(pg_admin_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_admin_url, pool_size=1)
    yield engine
    engine.dispose()


@pytest.fixture
def admin_engine(pg_admin_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_admin_url, poolclass=sa.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def quoted_schema(admin_engine: sa.Engine) -> Iterator[str]:
    """A schema whose name needs quoting (capital letter and dash); dropped afterwards."""
    name = f"Dq-Test_{uuid.uuid4().hex[:8]}"
    with admin_engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    yield name
    with admin_engine.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')


def test_engine_connects_and_queries(pg_admin_url: str) -> None:
    engine = create_engine(pg_admin_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("select 1").scalar_one() == 1
        assert connection.exec_driver_sql("show application_name").scalar_one() == "dataqueue"
    engine.dispose()


def test_postgres_scheme_and_keyword_string_connect(pg_admin_url: str) -> None:
    url = sa.make_url(pg_admin_url)
    # pgserver (embedded mode) names its Unix socket folder in the query, not the host.
    host = url.host or url.query.get("host")
    keyword = f"host={host} port={url.port or 5432} dbname={url.database} user={url.username}"
    if url.password:
        keyword += f" password={url.password}"
    legacy = url.set(drivername="postgres").render_as_string(hide_password=False)

    for source in (keyword, legacy):
        engine = create_engine(source)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("select 1").scalar_one() == 1
        engine.dispose()


def test_search_path_from_url_applies_to_every_connection(
    pg_admin_url: str, quoted_schema: str
) -> None:
    url = sa.make_url(pg_admin_url).update_query_dict({"search_path": f'"{quoted_schema}",public'})
    engine = create_engine(url, pool_size=2)

    with engine.connect() as first, engine.connect() as second:
        for connection in (first, second):
            assert connection.exec_driver_sql("show search_path").scalar_one() == (
                f'"{quoted_schema}", public'
            )
            assert connection.exec_driver_sql("select current_schema()").scalar_one() == (
                quoted_schema
            )
    engine.dispose()


def test_search_path_survives_rollback_on_return(pg_admin_url: str, quoted_schema: str) -> None:
    url = sa.make_url(pg_admin_url).update_query_dict({"search_path": f'"{quoted_schema}"'})
    engine = create_engine(url, pool_size=1)

    with engine.connect() as connection:
        connection.exec_driver_sql("select 1")
        connection.rollback()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("select current_schema()").scalar_one() == (quoted_schema)
    engine.dispose()


def test_forked_child_opens_its_own_connection_and_parent_keeps_its_own(
    single_connection_engine: sa.Engine,
) -> None:
    engine = single_connection_engine
    parent_backend = _backend_pid(engine)

    exit_code, report = _run_in_child(lambda: _backend_pid(engine))

    assert exit_code == 0, report
    assert int(report) != parent_backend
    assert _backend_pid(engine) == parent_backend


def test_forked_child_while_parent_holds_a_connection(
    single_connection_engine: sa.Engine,
) -> None:
    engine = single_connection_engine
    with engine.connect() as held:
        parent_backend = held.exec_driver_sql("select pg_backend_pid()").scalar_one()

        exit_code, report = _run_in_child(lambda: _backend_pid(engine))

        assert exit_code == 0, report
        assert int(report) != parent_backend
        assert held.exec_driver_sql("select pg_backend_pid()").scalar_one() == parent_backend


def test_reset_engine_after_fork_in_child_leaves_parent_connection_open(
    pg_admin_url: str, admin_engine: sa.Engine
) -> None:
    # A plain SQLAlchemy engine: no at-fork hook, so the explicit reset is what protects it.
    engine = sa.create_engine(pg_admin_url, pool_size=1, max_overflow=0)
    parent_backend = _backend_pid(engine)

    def child_work() -> int:
        reset_engine_after_fork(engine)
        return _backend_pid(engine)

    exit_code, report = _run_in_child(child_work)

    assert exit_code == 0, report
    assert int(report) != parent_backend
    assert _backend_is_alive(admin_engine, parent_backend)
    assert _backend_pid(engine) == parent_backend
    engine.dispose()


def test_reset_engine_after_fork_with_fork_safety_installed(
    single_connection_engine: sa.Engine,
) -> None:
    engine = single_connection_engine
    install_fork_safety(engine)  # second install: a no-op
    parent_backend = _backend_pid(engine)

    def child_work() -> int:
        reset_engine_after_fork(engine)
        return _backend_pid(engine)

    exit_code, report = _run_in_child(child_work)

    assert exit_code == 0, report
    assert int(report) != parent_backend
    assert _backend_pid(engine) == parent_backend


def test_reset_engine_after_fork_in_parent_closes_pooled_connections(
    single_connection_engine: sa.Engine, admin_engine: sa.Engine
) -> None:
    engine = single_connection_engine
    old_backend = _backend_pid(engine)

    reset_engine_after_fork(engine)

    assert _backend_pid(engine) != old_backend
    assert _backend_ends(admin_engine, old_backend)
