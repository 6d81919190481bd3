"""Connection configuration: URL/keyword parsing, search_path, TLS, pool options, env vars.

No server needed: these tests inspect :func:`dataqueue.config.build_connect_params` and
engines that are built but never connected.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import stat
import weakref
from pathlib import Path

import pytest
import sqlalchemy as sa

from dataqueue.config import (
    DATABASE_CONFIG_KEYS,
    build_connect_params,
    create_engine,
    database_url_from_env,
    install_fork_safety,
    parse_search_path,
    redis_url_from_env,
)
from dataqueue.errors import ConfigurationError

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATAQUEUE_DATABASE_URL",
        "PG_DATAQUEUE_DATABASE",
        "DATAQUEUE_REDIS_URL",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
    ):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgres_url_schemes_run_on_psycopg(scheme: str) -> None:
    url = build_connect_params(f"{scheme}://app:s%40cret@db.example:6543/appdb").url

    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        "s@cret",
        "db.example",
        6543,
        "appdb",
    )


@pytest.mark.parametrize("url", ["postgresql+psycopg2://h/db", "mysql://h/db", "sqlite:///x.db"])
def test_other_url_schemes_are_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match="Unsupported database URL scheme"):
        build_connect_params(url)


def test_sqlalchemy_url_object_is_accepted() -> None:
    url = build_connect_params(sa.make_url("postgresql://u:p@h/db")).url

    assert url.drivername == "postgresql+psycopg"
    assert url.password == "p"


def test_url_query_parameters_other_than_search_path_reach_libpq() -> None:
    url = build_connect_params("postgresql://h/db?sslmode=require&application_name=web").url

    assert dict(url.query) == {"sslmode": "require", "application_name": "web"}


def test_keyword_value_string_is_converted_to_a_url() -> None:
    params = build_connect_params(
        "host=db.internal port=6543 dbname=app user=worker password='p w' sslmode=require"
    )

    url = params.url
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "worker",
        "p w",
        "db.internal",
        6543,
        "app",
    )
    assert dict(url.query) == {"sslmode": "require"}


def test_keyword_value_unix_socket_host_becomes_a_query_parameter() -> None:
    url = build_connect_params("host=/var/run/postgresql dbname=app").url

    assert url.host is None
    assert url.query["host"] == "/var/run/postgresql"
    assert url.database == "app"


def test_malformed_keyword_value_string_raises() -> None:
    with pytest.raises(ConfigurationError, match="neither a postgresql:// URL nor"):
        build_connect_params("hostname=db nonsense")


def test_config_fields_build_the_url() -> None:
    url = build_connect_params(
        host="db", port="5433", database="app", user="u", password="p@ss/word"
    ).url

    assert url.render_as_string(hide_password=False) == (
        "postgresql+psycopg://u:p%40ss%2Fword@db:5433/app"
    )


def test_config_fields_override_the_url_parts() -> None:
    url = build_connect_params("postgresql://app@db/appdb", password="from-vault", port=6000).url

    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        "from-vault",
        "db",
        6000,
        "appdb",
    )


def test_connection_string_key_is_used_like_database_url() -> None:
    url = build_connect_params(connection_string="postgres://h/db").url

    assert url.drivername == "postgresql+psycopg"
    assert url.database == "db"


def test_database_url_and_different_connection_string_conflict() -> None:
    with pytest.raises(ConfigurationError, match="pass only one"):
        build_connect_params("postgresql://h/a", connection_string="postgresql://h/b")


# --------------------------------------------------------------------------- search_path


def test_search_path_is_stripped_from_the_url_and_quoted() -> None:
    params = build_connect_params('postgresql://h/db?search_path=MySchema,"Other-Schema",public')

    assert "search_path" not in params.url.query
    assert params.search_path == ("myschema", "Other-Schema", "public")
    assert params.search_path_sql == 'SET search_path TO "myschema", "Other-Schema", "public"'


def test_search_path_cannot_inject_sql() -> None:
    params = build_connect_params("postgresql://h/db?search_path=x;DROP TABLE job_queue")

    assert params.search_path_sql == 'SET search_path TO "x;drop table job_queue"'


def test_search_path_in_keyword_options_is_stripped_keeping_other_options() -> None:
    params = build_connect_params(
        "host=h dbname=db options='-c statement_timeout=5000 -csearch_path=app,public'"
    )

    assert params.search_path == ("app", "public")
    assert params.url.query["options"] == "-c statement_timeout=5000"


def test_options_holding_only_search_path_are_removed() -> None:
    params = build_connect_params("host=h dbname=db options='-c search_path=app'")

    assert "options" not in params.url.query
    assert params.search_path == ("app",)


def test_no_search_path_means_no_statement() -> None:
    params = build_connect_params("postgresql://h/db")

    assert params.search_path == ()
    assert params.search_path_sql is None


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("public", ("public",)),
        (' "$user" , Public ', ("$user", "public")),
        ('"a""b",c', ('a"b', "c")),
        ('"Mixed Case"', ("Mixed Case",)),
    ],
)
def test_parse_search_path(value: str, names: tuple[str, ...]) -> None:
    assert parse_search_path(value) == names


@pytest.mark.parametrize("value", ["", "a,,b", '"unterminated', '""', 'a"b', '"a" b'])
def test_malformed_search_path_raises(value: str) -> None:
    with pytest.raises(ConfigurationError, match="search_path"):
        parse_search_path(value)


# --------------------------------------------------------------------------- TLS


def test_sslmode_no_verify_maps_to_require() -> None:
    params = build_connect_params("postgresql://h/db?sslmode=no-verify")

    assert params.url.query["sslmode"] == "require"
    assert "sslmode" not in params.connect_args


def test_ssl_file_urls_are_passed_as_paths(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text(PEM)

    params = build_connect_params(
        "postgresql://h/db",
        ssl={
            "ca": f"file://{tmp_path / 'ca.pem'}",
            "cert": f"file://{tmp_path / 'cert.pem'}",
            "key": f"file://{tmp_path / 'key.pem'}",
        },
    )

    assert params.connect_args["sslrootcert"] == str(tmp_path / "ca.pem")
    assert params.connect_args["sslcert"] == str(tmp_path / "cert.pem")
    assert params.connect_args["sslkey"] == str(tmp_path / "key.pem")
    assert params.connect_args["sslmode"] == "verify-full"


def test_missing_ssl_file_raises_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"

    with pytest.raises(ConfigurationError, match=str(missing)):
        build_connect_params("postgresql://h/db", ssl={"ca": f"file://{missing}"})


def test_ssl_pem_text_is_written_to_a_private_temp_file() -> None:
    params = build_connect_params("postgresql://h/db", ssl={"ca": PEM, "key": PEM})

    for key in ("sslrootcert", "sslkey"):
        path = Path(params.connect_args[key])
        assert path.read_text(encoding="utf-8") == PEM
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ssl_value_that_is_neither_pem_nor_file_url_raises() -> None:
    with pytest.raises(ConfigurationError, match="file://"):
        build_connect_params("postgresql://h/db", ssl={"ca": "/etc/ssl/ca.pem"})


def test_ssl_ca_falls_back_to_pgsslrootcert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "root.crt"
    ca.write_text(PEM)
    monkeypatch.setenv("PGSSLROOTCERT", str(ca))

    params = build_connect_params("postgresql://h/db", ssl={})

    assert params.connect_args["sslrootcert"] == str(ca)


def test_missing_pgsslrootcert_file_raises_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tmp_path / "missing.crt"))

    with pytest.raises(ConfigurationError, match="PGSSLROOTCERT"):
        build_connect_params("postgresql://h/db", ssl={})


def test_explicit_ca_wins_over_pgsslrootcert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", "/does/not/matter.crt")

    params = build_connect_params("postgresql://h/db", ssl={"ca": PEM})

    assert Path(params.connect_args["sslrootcert"]).read_text(encoding="utf-8") == PEM


@pytest.mark.parametrize(
    ("ssl", "sslmode"),
    [
        ({}, "verify-full"),
        ({"reject_unauthorized": True}, "verify-full"),
        ({"reject_unauthorized": False}, "require"),
        (True, "verify-full"),
    ],
)
def test_reject_unauthorized_selects_sslmode(ssl: object, sslmode: str) -> None:
    params = build_connect_params("postgresql://h/db", ssl=ssl)

    assert params.connect_args["sslmode"] == sslmode


def test_ssl_config_overrides_sslmode_no_verify() -> None:
    params = build_connect_params("postgresql://h/db?sslmode=no-verify", ssl={})

    assert "sslmode" not in params.url.query
    assert params.connect_args["sslmode"] == "verify-full"


def test_sslmode_together_with_custom_ca_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="dataqueue.config"):
        build_connect_params("postgresql://h/db?sslmode=require", ssl={"ca": PEM})

    assert any("Remove sslmode" in record.getMessage() for record in caplog.records)


def test_ssl_without_url_sslmode_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dataqueue.config"):
        build_connect_params("postgresql://h/db", ssl={"ca": PEM})

    assert not caplog.records


def test_unknown_ssl_key_raises() -> None:
    with pytest.raises(ConfigurationError, match=r"'rejectUnauthorized'.*Accepted keys: ca"):
        build_connect_params("postgresql://h/db", ssl={"rejectUnauthorized": False})


def test_non_boolean_reject_unauthorized_raises() -> None:
    with pytest.raises(ConfigurationError, match="'no'"):
        build_connect_params("postgresql://h/db", ssl={"reject_unauthorized": "no"})


# --------------------------------------------------------------------------- pool options


def test_pool_defaults() -> None:
    params = build_connect_params("postgresql://h/db")

    assert params.engine_kwargs == {
        "pool_size": 10,
        "max_overflow": 0,
        "pool_timeout": 30.0,
        "pool_recycle": 300,
        "pool_pre_ping": False,
        "pool_reset_on_return": "rollback",
        "pool_use_lifo": True,
    }
    assert params.connect_args == {"fallback_application_name": "dataqueue"}


def test_max_is_a_synonym_of_pool_size() -> None:
    assert build_connect_params("postgresql://h/db", max=4).engine_kwargs["pool_size"] == 4


def test_differing_max_and_pool_size_raise() -> None:
    with pytest.raises(ConfigurationError, match="synonyms"):
        build_connect_params("postgresql://h/db", max=4, pool_size=5)


def test_connection_timeout_maps_to_pool_timeout_and_connect_timeout() -> None:
    params = build_connect_params("postgresql://h/db", connection_timeout_millis=2500)

    assert params.engine_kwargs["pool_timeout"] == 2.5
    assert params.connect_args["connect_timeout"] == "3"


def test_zero_connection_timeout_waits_forever() -> None:
    params = build_connect_params("postgresql://h/db", connection_timeout_millis=0)

    assert params.engine_kwargs["pool_timeout"] is None
    assert "connect_timeout" not in params.connect_args


@pytest.mark.parametrize(("millis", "recycle"), [(10_000, 10), (1, 1), (0, -1)])
def test_idle_timeout_maps_to_pool_recycle(millis: int, recycle: int) -> None:
    params = build_connect_params("postgresql://h/db", idle_timeout_millis=millis)

    assert params.engine_kwargs["pool_recycle"] == recycle


def test_pool_options_pass_through() -> None:
    params = build_connect_params(
        "postgresql://h/db", max_overflow=5, pool_recycle=60, pool_pre_ping=True, min=2
    )

    assert params.engine_kwargs["max_overflow"] == 5
    assert params.engine_kwargs["pool_recycle"] == 60
    assert params.engine_kwargs["pool_pre_ping"] is True


def test_application_name_is_passed_to_libpq() -> None:
    params = build_connect_params("postgresql://h/db", application_name="billing-worker")

    assert params.connect_args["application_name"] == "billing-worker"


def test_none_values_count_as_not_given() -> None:
    params = build_connect_params("postgresql://h/db", password=None, ssl=None, max=None)

    assert params.engine_kwargs["pool_size"] == 10
    assert "sslmode" not in params.connect_args


def test_unknown_key_raises_naming_it_and_listing_accepted_keys() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_connect_params("postgresql://h/db", hots="db")

    message = str(caught.value)
    assert "'hots'" in message
    assert "Did you mean 'host'?" in message
    assert all(key in message for key in DATABASE_CONFIG_KEYS)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("port", "abc"),
        ("port", 70000),
        ("port", True),
        ("pool_size", 0),
        ("max", -1),
        ("max_overflow", -2),
        ("min", 11),
        ("pool_pre_ping", "yes"),
        ("idle_timeout_millis", -1),
        ("connection_timeout_millis", "5s"),
        ("pool_recycle", 1.5),
        ("user", 42),
        ("ssl", "require"),
    ],
)
def test_bad_values_raise_naming_the_value(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(value))):
        build_connect_params("postgresql://h/db", **{key: value})


def test_idle_timeout_and_pool_recycle_together_raise() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        build_connect_params("postgresql://h/db", idle_timeout_millis=1000, pool_recycle=5)


# --------------------------------------------------------------------------- missing config / env


def test_missing_configuration_says_what_to_pass() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_connect_params()

    message = str(caught.value)
    for hint in ("database_url", "database_config", "engine", "DATAQUEUE_DATABASE_URL"):
        assert hint in message


def test_pool_options_alone_are_not_a_configuration() -> None:
    with pytest.raises(ConfigurationError, match="No PostgreSQL connection configured"):
        build_connect_params(pool_size=5)


def test_blank_url_counts_as_missing() -> None:
    with pytest.raises(ConfigurationError, match="No PostgreSQL connection configured"):
        build_connect_params("  ")


def test_environment_url_is_used_when_nothing_is_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAQUEUE_DATABASE_URL", "postgres://env-host/envdb")

    url = build_connect_params(pool_size=5).url

    assert (url.host, url.database) == ("env-host", "envdb")


def test_database_url_from_env_prefers_dataqueue_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATAQUEUE_DATABASE_URL", "postgresql://a/a")
    monkeypatch.setenv("PG_DATAQUEUE_DATABASE", "postgresql://b/b")

    assert database_url_from_env() == "postgresql://a/a"


def test_database_url_from_env_falls_back_to_pg_dataqueue_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATAQUEUE_DATABASE_URL", "")
    monkeypatch.setenv("PG_DATAQUEUE_DATABASE", "postgresql://b/b")

    assert database_url_from_env() == "postgresql://b/b"


def test_database_url_from_env_is_none_when_unset() -> None:
    assert database_url_from_env() is None


def test_redis_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert redis_url_from_env() is None
    monkeypatch.setenv("DATAQUEUE_REDIS_URL", "redis://localhost:6379/0")

    assert redis_url_from_env() == "redis://localhost:6379/0"


# --------------------------------------------------------------------------- engine


def test_create_engine_builds_a_psycopg_engine_with_the_pool_options() -> None:
    engine = create_engine("postgres://h/db", pool_size=3, max_overflow=1)

    assert engine.url.drivername == "postgresql+psycopg"
    assert isinstance(engine.pool, sa.QueuePool)
    assert engine.pool.size() == 3
    engine.dispose()


def test_fork_safety_hook_does_not_keep_the_engine_alive() -> None:
    engine = create_engine("postgresql://h/db")
    install_fork_safety(engine)
    reference = weakref.ref(engine)

    del engine
    gc.collect()

    assert reference() is None


def test_temp_files_survive_in_this_process_until_exit() -> None:
    path = build_connect_params("postgresql://h/db", ssl={"cert": PEM}).connect_args["sslcert"]

    assert os.path.exists(path)
