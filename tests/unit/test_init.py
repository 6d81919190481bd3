"""init_job_queue configuration errors and backend selection (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATAQUEUE_DATABASE_URL", "PG_DATAQUEUE_DATABASE", "DATAQUEUE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def test_missing_configuration_says_what_to_pass() -> None:
    with pytest.raises(dq.ConfigurationError, match="DATAQUEUE_DATABASE_URL"):
        dq.init_job_queue()


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(dq.ConfigurationError, match="mysql"):
        dq.init_job_queue("postgresql://x/y", backend="mysql")


def test_engine_and_url_together_are_contradictory() -> None:
    engine = sa.create_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    with pytest.raises(dq.ConfigurationError, match="not both"):
        dq.init_job_queue("postgresql://x/y", engine=engine)


def test_redis_options_with_postgres_backend_are_contradictory() -> None:
    with pytest.raises(dq.ConfigurationError, match="backend is 'postgres'"):
        dq.init_job_queue("postgresql://x/y", backend="postgres", redis_url="redis://x")


@pytest.mark.parametrize(
    "options",
    [
        {"redis_url": "redis://localhost:6379/0"},
        {"backend": "redis", "redis_config": {"host": "localhost"}},
    ],
)
def test_redis_options_select_the_redis_backend(options: dict[str, Any]) -> None:
    import redis

    # Connecting is lazy: nothing here needs a server.
    with dq.init_job_queue(**options) as queue:
        assert isinstance(queue.get_redis_client(), redis.Redis)
        with pytest.raises(dq.UnsupportedOperationError, match="PostgreSQL backend"):
            queue.get_engine()


def test_redis_env_var_selects_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAQUEUE_REDIS_URL", "redis://localhost:6379/3")
    with dq.init_job_queue() as queue:
        kwargs = queue.get_redis_client().connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["db"]) == ("localhost", 3)


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    with pytest.raises(dq.ConfigurationError, match=r"dataqueue\[redis\]"):
        dq.init_job_queue(redis_url="redis://localhost:6379/0")


def test_redis_client_and_url_together_are_contradictory() -> None:
    import redis

    with pytest.raises(dq.ConfigurationError, match="not both"):
        dq.init_job_queue(redis_client=redis.Redis(), redis_url="redis://localhost:6379/0")


def test_redis_tls_pem_cert_must_be_a_file() -> None:
    with pytest.raises(dq.ConfigurationError, match="file://"):
        dq.init_job_queue(
            backend="redis",
            redis_config={"host": "localhost", "tls": {"cert": "-----BEGIN CERTIFICATE-----"}},
        )


def test_bad_redis_config_key_is_rejected() -> None:
    with pytest.raises(dq.ConfigurationError, match="hots"):
        dq.init_job_queue(backend="redis", redis_config={"hots": "x"})


def test_engine_is_not_disposed_by_close() -> None:
    engine = sa.create_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    disposed: list[Any] = []
    sa.event.listen(engine, "engine_disposed", disposed.append)
    with dq.init_job_queue(engine=engine) as queue:
        assert queue.get_engine() is engine
        with pytest.raises(dq.UnsupportedOperationError, match="Redis backend"):
            queue.get_redis_client()
    assert disposed == []


def test_queue_created_engine_is_disposed_by_close() -> None:
    queue = dq.init_job_queue("postgresql://u@127.0.0.1:1/db")
    disposed: list[Any] = []
    sa.event.listen(queue.get_engine(), "engine_disposed", disposed.append)
    queue.close()
    assert len(disposed) == 1
