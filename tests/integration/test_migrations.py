"""The Alembic revisions, ``dataqueue.migrate`` and the ``dataqueue migrate`` command.

Every test runs against a real PostgreSQL database of its own (``fresh_database_url``).
The reference for "the schema" is ``dataqueue.schema.metadata``: a database built with
``metadata.create_all`` must be indistinguishable from a migrated one.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import alembic.command
import alembic.script
import alembic.util
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dataqueue.errors import ConfigurationError
from dataqueue.migrate import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    downgrade,
    script_location,
    upgrade,
)
from dataqueue.schema import metadata

REPO_ROOT = Path(__file__).resolve().parents[2]
# The newest revision, read from the shipped script directory (not hard-coded).
HEAD = alembic.script.ScriptDirectory(script_location()).get_current_head()
DATAQUEUE_TABLES = {
    "job_queue",
    "job_events",
    "waitpoints",
    "cron_schedules",
    "dataqueue_workers",
    "dataqueue_rate_limit_starts",
}
URL_ENV_VARS = ("DATAQUEUE_DATABASE_URL", "PG_DATAQUEUE_DATABASE")


# --------------------------------------------------------------------------- helpers


@contextmanager
def connect(url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """An extra empty database, for tests that need a second one."""
    name = f"dq_migr_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def user_tables(url: str) -> set[tuple[str, str]]:
    """(schema, table) of every table outside the system schemas."""
    with connect(url) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        )
        return {(row.table_schema, row.table_name) for row in rows}


def index_definitions(url: str) -> dict[str, str]:
    with connect(url) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = 'public' AND tablename = ANY(:tables)"
            ),
            {"tables": sorted(DATAQUEUE_TABLES)},
        )
        return {row.indexname: row.indexdef for row in rows}


def constraint_definitions(url: str) -> dict[str, str]:
    with connect(url) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT conname, conrelid::regclass::text AS tbl, "
                "pg_get_constraintdef(oid) AS definition FROM pg_constraint "
                "WHERE connamespace = 'public'::regnamespace "
                "AND conrelid::regclass::text = ANY(:tables)"
            ),
            {"tables": sorted(DATAQUEUE_TABLES)},
        )
        return {row.conname: f"{row.tbl}: {row.definition}" for row in rows}


def column_definitions(url: str) -> dict[tuple[str, str], tuple[object, ...]]:
    with connect(url) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT table_name, column_name, ordinal_position, udt_name, "
                "character_maximum_length, is_nullable, column_default "
                "FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = ANY(:tables)"
            ),
            {"tables": sorted(DATAQUEUE_TABLES)},
        )
        return {(row[0], row[1]): tuple(row[2:]) for row in rows}


def version_rows(url: str, schema: str = "public") -> list[str]:
    with connect(url) as conn:
        rows = conn.execute(sa.text(f'SELECT version_num FROM "{schema}".{VERSION_TABLE}'))
        return [row.version_num for row in rows]


def plain_url(url: str) -> str:
    """The URL as a user would write it: postgresql://, no driver."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def env_without_database_url(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in URL_ENV_VARS}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dataqueue", *args],
        env=env,
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def create_all_url(pg_admin_url: str) -> Iterator[str]:
    """A database built straight from ``dataqueue.schema.metadata`` (read-only for tests)."""
    with scratch_database(pg_admin_url) as url:
        with connect(url) as conn:
            metadata.create_all(conn)
        yield url


@pytest.fixture
def no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in URL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- schema


def test_upgrade_head_creates_exactly_the_dataqueue_tables(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)

    expected = {("public", t) for t in DATAQUEUE_TABLES} | {("public", VERSION_TABLE)}
    expected.add(("public", "dataqueuedev_migrations"))  # upstream's bookkeeping
    assert user_tables(fresh_database_url) == expected


def test_upgrade_records_head_in_dataqueue_version_table(fresh_database_url: str) -> None:
    assert current_revision(fresh_database_url) is None

    upgrade(fresh_database_url)

    assert current_revision(fresh_database_url) == HEAD
    assert version_rows(fresh_database_url) == [HEAD]


def test_alembic_check_finds_no_drift_from_schema_module(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)

    alembic.command.check(alembic_config(fresh_database_url))  # raises on any difference


def test_alembic_check_detects_drift(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    with connect(fresh_database_url) as conn:
        conn.exec_driver_sql("DROP INDEX idx_job_queue_claim_order")

    with pytest.raises(alembic.util.AutogenerateDiffsDetected, match="idx_job_queue_claim_order"):
        alembic.command.check(alembic_config(fresh_database_url))


def test_indexes_match_metadata_create_all(fresh_database_url: str, create_all_url: str) -> None:
    upgrade(fresh_database_url)

    migrated = index_definitions(fresh_database_url)
    assert migrated == index_definitions(create_all_url)
    expected_names = {index.name for table in metadata.tables.values() for index in table.indexes}
    assert expected_names <= migrated.keys()


def test_constraints_match_metadata_create_all(
    fresh_database_url: str, create_all_url: str
) -> None:
    upgrade(fresh_database_url)

    migrated = constraint_definitions(fresh_database_url)
    assert migrated == constraint_definitions(create_all_url)
    assert migrated["fk_job_events_job_queue"] == (
        "job_events: FOREIGN KEY (job_id) REFERENCES job_queue(id) ON DELETE CASCADE"
    )


def test_columns_match_metadata_create_all(fresh_database_url: str, create_all_url: str) -> None:
    upgrade(fresh_database_url)

    assert column_definitions(fresh_database_url) == column_definitions(create_all_url)


# --------------------------------------------------------------------------- downgrade


def test_downgrade_to_base_removes_the_dataqueue_tables(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)

    downgrade(fresh_database_url)

    assert user_tables(fresh_database_url) == {("public", VERSION_TABLE)}
    assert current_revision(fresh_database_url) is None


def test_upgrade_after_downgrade_recreates_the_tables(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    downgrade(fresh_database_url)

    upgrade(fresh_database_url)

    assert {t for _, t in user_tables(fresh_database_url)} >= DATAQUEUE_TABLES
    assert current_revision(fresh_database_url) == HEAD


def test_application_alembic_history_and_tables_are_untouched(fresh_database_url: str) -> None:
    with connect(fresh_database_url) as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('app_rev_7')")
        conn.exec_driver_sql("CREATE TABLE users (id SERIAL PRIMARY KEY, email TEXT)")
        conn.exec_driver_sql("INSERT INTO users (email) VALUES ('a@example.com')")

    upgrade(fresh_database_url)
    alembic.command.check(alembic_config(fresh_database_url))  # ignores the app's tables
    downgrade(fresh_database_url)

    with connect(fresh_database_url) as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
            ("app_rev_7",)
        ]
        assert conn.exec_driver_sql("SELECT email FROM users").all() == [("a@example.com",)]


# --------------------------------------------------------------------------- options


def test_schema_option_puts_tables_and_version_table_in_that_schema(
    fresh_database_url: str,
) -> None:
    upgrade(fresh_database_url, schema="dq")

    expected = {("dq", t) for t in DATAQUEUE_TABLES} | {("dq", VERSION_TABLE)}
    expected.add(("dq", "dataqueuedev_migrations"))  # upstream's bookkeeping
    assert user_tables(fresh_database_url) == expected
    assert current_revision(fresh_database_url, schema="dq") == HEAD
    assert current_revision(fresh_database_url) is None


def test_schema_option_check_finds_no_drift(fresh_database_url: str) -> None:
    upgrade(fresh_database_url, schema="dq")

    alembic.command.check(alembic_config(fresh_database_url, schema="dq"))


def test_schema_option_ignores_same_named_tables_in_public(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)

    upgrade(fresh_database_url, schema="dq")
    downgrade(fresh_database_url, schema="dq")

    tables = user_tables(fresh_database_url)
    assert {("public", t) for t in DATAQUEUE_TABLES} <= tables
    assert not any(schema == "dq" and t in DATAQUEUE_TABLES for schema, t in tables)


def test_sql_mode_writes_ddl_without_touching_the_database(fresh_database_url: str) -> None:
    buf = io.StringIO()

    upgrade(fresh_database_url, sql=True, output=buf)

    script = buf.getvalue()
    for table in DATAQUEUE_TABLES:
        assert f"CREATE TABLE {table} (" in script
    assert "CREATE UNIQUE INDEX idx_job_queue_idempotency_key" in script
    assert f"CREATE TABLE {VERSION_TABLE}" in script
    assert user_tables(fresh_database_url) == set()


def test_sql_mode_needs_no_database_url(no_url_env: None) -> None:
    buf = io.StringIO()

    upgrade(sql=True, output=buf, schema="jobs")

    assert 'CREATE SCHEMA IF NOT EXISTS "jobs"' in buf.getvalue()
    assert "CREATE TABLE job_queue (" in buf.getvalue()


def test_upgrade_accepts_an_engine_and_leaves_it_open(fresh_database_url: str) -> None:
    engine = sa.create_engine(fresh_database_url, poolclass=sa.NullPool)
    try:
        upgrade(engine)

        assert current_revision(engine) == HEAD
        with engine.connect() as conn:  # still usable: upgrade never disposes it
            assert conn.execute(sa.text("SELECT count(*) FROM job_queue")).scalar_one() == 0
    finally:
        engine.dispose()


def test_upgrade_accepts_postgres_scheme_url(fresh_database_url: str) -> None:
    url = plain_url(fresh_database_url).replace("postgresql://", "postgres://", 1)

    upgrade(url)

    assert current_revision(fresh_database_url) == HEAD


def test_upgrade_accepts_url_with_percent_encoded_password(fresh_database_url: str) -> None:
    url = make_url(fresh_database_url).set(password="p%w@rd:/x")  # the server trusts any
    rendered = url.render_as_string(hide_password=False)
    assert "%25" in rendered

    upgrade(rendered)

    assert current_revision(fresh_database_url) == HEAD


def test_upgrade_reads_url_from_environment(
    fresh_database_url: str, no_url_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_DATAQUEUE_DATABASE", plain_url(fresh_database_url))

    upgrade()

    assert current_revision(fresh_database_url) == HEAD


def test_upgrade_without_url_raises_configuration_error(no_url_env: None) -> None:
    with pytest.raises(ConfigurationError, match="DATAQUEUE_DATABASE_URL"):
        upgrade()


def test_upgrade_with_non_postgres_url_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        upgrade("mysql://root@localhost/app")


def test_migration_on_callers_connection_follows_its_transaction(
    fresh_database_url: str,
) -> None:
    engine = sa.create_engine(fresh_database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            alembic.command.upgrade(alembic_config(connection=conn), "head")
            transaction.rollback()
    finally:
        engine.dispose()

    assert user_tables(fresh_database_url) == set()


def test_concurrent_migrate_processes_all_succeed(fresh_database_url: str) -> None:
    command = [sys.executable, "-m", "dataqueue", "migrate"]
    env = env_without_database_url(DATAQUEUE_DATABASE_URL=plain_url(fresh_database_url))
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]

    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in processes]

    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    assert version_rows(fresh_database_url) == [HEAD]


# --------------------------------------------------------------------------- adoption


def test_database_created_by_upstream_is_adopted_and_stamped(fresh_database_url: str) -> None:
    with connect(fresh_database_url) as conn:
        metadata.create_all(conn)
        conn.exec_driver_sql("INSERT INTO job_queue (job_type, payload) VALUES ('x', '{}')")

    upgrade(fresh_database_url)

    assert current_revision(fresh_database_url) == HEAD
    with connect(fresh_database_url) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM job_queue").scalar_one() == 1
    alembic.command.check(alembic_config(fresh_database_url))


def test_older_upstream_database_gets_missing_columns_and_indexes(
    fresh_database_url: str, create_all_url: str
) -> None:
    with connect(fresh_database_url) as conn:
        metadata.create_all(conn)
        conn.exec_driver_sql(
            "ALTER TABLE job_queue DROP COLUMN depends_on_job_ids, DROP COLUMN depends_on_tags"
        )
        conn.exec_driver_sql("DROP TABLE cron_schedules")

    upgrade(fresh_database_url)

    assert index_definitions(fresh_database_url) == index_definitions(create_all_url)
    alembic.command.check(alembic_config(fresh_database_url))


UPSTREAM_ONLY_INDEXES = {
    "idx_job_queue_claimable",
    "idx_job_queue_next_attempt",
    "idx_job_queue_priority",
    "idx_job_queue_run_at",
}


def test_lean_indexes_revision_drops_unneeded_indexes_and_downgrade_restores_them(
    fresh_database_url: str,
) -> None:
    upgrade(fresh_database_url, revision="0006_stats_indexes")
    before = index_definitions(fresh_database_url)
    assert set(before) >= UPSTREAM_ONLY_INDEXES
    with connect(fresh_database_url) as conn:
        conn.exec_driver_sql("INSERT INTO job_queue (job_type, payload) VALUES ('x', '{}')")

    upgrade(fresh_database_url)

    after = index_definitions(fresh_database_url)
    assert not UPSTREAM_ONLY_INDEXES & set(after)
    assert "WHERE ((status)::text = 'pending'::text)" in after["idx_job_queue_pending_run_at"]
    assert after["idx_job_queue_tags"].endswith("USING gin (tags) WHERE (tags IS NOT NULL)")
    assert after["idx_job_queue_depends_on_job_ids"].endswith(
        "USING gin (depends_on_job_ids) WHERE (depends_on_job_ids IS NOT NULL)"
    )
    assert set(after) == set(before) - UPSTREAM_ONLY_INDEXES | {"idx_job_queue_pending_run_at"}
    alembic.command.check(alembic_config(fresh_database_url))

    downgrade(fresh_database_url, revision="0006_stats_indexes")
    assert index_definitions(fresh_database_url) == before
    with connect(fresh_database_url) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM job_queue").scalar_one() == 1


def test_lean_indexes_revision_tolerates_an_upstream_database_missing_some_of_them(
    fresh_database_url: str,
) -> None:
    upgrade(fresh_database_url, revision="0006_stats_indexes")
    with connect(fresh_database_url) as conn:
        conn.exec_driver_sql("DROP INDEX idx_job_queue_priority")

    upgrade(fresh_database_url)

    assert not UPSTREAM_ONLY_INDEXES & set(index_definitions(fresh_database_url))


# --------------------------------------------------------------------------- command lines


def test_cli_migrate_migrates_the_database(fresh_database_url: str) -> None:
    result = run_cli(
        "migrate", "--database-url", plain_url(fresh_database_url), env=env_without_database_url()
    )

    assert result.returncode == 0, result.stderr
    assert current_revision(fresh_database_url) == HEAD


def test_cli_migrate_reads_dataqueue_database_url(fresh_database_url: str) -> None:
    env = env_without_database_url(DATAQUEUE_DATABASE_URL=plain_url(fresh_database_url))

    result = run_cli("migrate", "--schema", "jobs", env=env)

    assert result.returncode == 0, result.stderr
    assert current_revision(fresh_database_url, schema="jobs") == HEAD


def test_cli_migrate_sql_prints_ddl_to_stdout(fresh_database_url: str) -> None:
    result = run_cli(
        "migrate",
        "--sql",
        "--database-url",
        plain_url(fresh_database_url),
        env=env_without_database_url(),
    )

    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE job_queue (" in result.stdout
    assert user_tables(fresh_database_url) == set()


def test_cli_migrate_without_url_exits_2_with_message() -> None:
    result = run_cli("migrate", env=env_without_database_url())

    assert result.returncode == 2
    assert "--database-url" in result.stderr
    assert "DATAQUEUE_DATABASE_URL" in result.stderr


def test_cli_migrate_unreachable_database_exits_1() -> None:
    url = "postgresql://nobody@127.0.0.1:1/nowhere"

    result = run_cli("migrate", "--database-url", url, env=env_without_database_url())

    assert result.returncode == 1
    assert "failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["migrate", "--help"]])
def test_cli_help_exits_0(args: list[str]) -> None:
    result = run_cli(*args, env=env_without_database_url())

    assert result.returncode == 0
    assert "usage: dataqueue" in result.stdout


@pytest.mark.parametrize("args", [["migrate", "--no-such-flag"], ["no-such-command"], []])
def test_cli_usage_error_exits_2(args: list[str]) -> None:
    result = run_cli(*args, env=env_without_database_url())

    assert result.returncode == 2
    assert "usage: dataqueue" in result.stderr


def test_alembic_command_line_upgrades_from_repo_root(fresh_database_url: str) -> None:
    url = plain_url(fresh_database_url)
    alembic_cli = [sys.executable, "-m", "alembic", "-x", f"url={url}"]

    upgraded = subprocess.run(
        [*alembic_cli, "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env_without_database_url(),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    checked = subprocess.run(
        [*alembic_cli, "check"],
        cwd=REPO_ROOT,
        env=env_without_database_url(),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert upgraded.returncode == 0, upgraded.stderr
    assert checked.returncode == 0, checked.stderr
    assert current_revision(fresh_database_url) == HEAD


def test_alembic_command_line_without_url_fails_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env_without_database_url(),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "-x url=" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- packaging


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out)]
    try:
        import hatchling  # noqa: F401  (the build backend; then no download is needed)

        command.append("--no-build-isolation")
    except ImportError:
        pass
    result = subprocess.run(
        [*command, str(REPO_ROOT)], check=False, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("dataqueue-*.whl")
    return wheel


def test_wheel_ships_the_alembic_revisions(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())

    assert "dataqueue/_alembic/env.py" in names
    assert "dataqueue/_alembic/script.py.mako" in names
    assert f"dataqueue/_alembic/versions/{HEAD}.py" in names
    assert not any(name.startswith("alembic/") for name in names)


def test_installed_wheel_migrates_with_its_own_revisions(
    built_wheel: Path, fresh_database_url: str, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(built_wheel).extractall(site)
    probe = (
        "import sys; from dataqueue.migrate import script_location, upgrade; "
        "print(script_location()); upgrade(sys.argv[1])"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe, plain_url(fresh_database_url)],
        cwd=tmp_path,
        env=env_without_database_url(PYTHONPATH=str(site)),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(site / "dataqueue" / "_alembic")
    assert current_revision(fresh_database_url) == HEAD


def test_script_location_matches_how_dataqueue_is_installed() -> None:
    import dataqueue

    package = Path(dataqueue.__file__).resolve().parent
    if package == REPO_ROOT / "dataqueue":  # editable install / checkout
        assert Path(script_location()) == REPO_ROOT / "alembic"
    else:  # installed wheel: the revisions ship inside the package
        assert Path(script_location()) == package / "_alembic"
    assert (Path(script_location()) / "env.py").is_file()


# --------------------------------------------------------------- Node.js side by side


def _load_upstream_names() -> tuple[str, ...]:
    import importlib.util

    path = Path(script_location()) / "versions" / "0004_upstream_bookkeeping.py"
    spec = importlib.util.spec_from_file_location("upstream_bookkeeping", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names: tuple[str, ...] = module.UPSTREAM_MIGRATIONS
    return names


UPSTREAM_MIGRATIONS = _load_upstream_names()


def _upstream_rows(url: str, schema: str = "public") -> list[str]:
    with connect(url) as conn:
        return [
            row[0]
            for row in conn.exec_driver_sql(
                f'SELECT name FROM "{schema}".dataqueuedev_migrations ORDER BY run_on, id'
            )
        ]


def test_upgrade_records_upstreams_migrations_for_node_pg_migrate(fresh_database_url: str) -> None:
    # node-pg-migrate (upstream's `dataqueue-cli migrate`) reads this table: with every
    # upstream migration recorded, it has nothing to run on a database we created.
    upgrade(fresh_database_url)
    assert _upstream_rows(fresh_database_url) == list(UPSTREAM_MIGRATIONS)
    assert len(UPSTREAM_MIGRATIONS) == 16


def test_upgrade_keeps_what_node_recorded_and_adds_only_the_rest(fresh_database_url: str) -> None:
    with connect(fresh_database_url) as conn:
        conn.exec_driver_sql(
            "CREATE TABLE dataqueuedev_migrations (id SERIAL PRIMARY KEY,"
            " name varchar(255) NOT NULL, run_on timestamp NOT NULL)"
        )
        for name in UPSTREAM_MIGRATIONS[:5]:  # what upstream 1.24 applies
            conn.exec_driver_sql(
                "INSERT INTO dataqueuedev_migrations (name, run_on) VALUES (%s, now())", (name,)
            )
        conn.commit()
    upgrade(fresh_database_url)
    assert _upstream_rows(fresh_database_url) == list(UPSTREAM_MIGRATIONS)


def test_downgrade_forgets_upstreams_migrations(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    downgrade(fresh_database_url)
    assert ("public", "dataqueuedev_migrations") not in user_tables(fresh_database_url)


def test_schema_option_records_them_in_that_schema(fresh_database_url: str) -> None:
    upgrade(fresh_database_url, schema="jobs")
    assert _upstream_rows(fresh_database_url, "jobs") == list(UPSTREAM_MIGRATIONS)


def test_url_with_search_path_migrates_where_the_queue_looks(fresh_database_url: str) -> None:
    # The queue accepts ?search_path=; `dataqueue migrate` with the same URL used to fail
    # with psycopg's 'invalid connection option "search_path"'.
    with connect(fresh_database_url) as conn:
        conn.exec_driver_sql("CREATE SCHEMA jobs")
        conn.commit()
    url = make_url(fresh_database_url).update_query_dict({"search_path": "jobs"})
    text = url.render_as_string(hide_password=False)
    upgrade(text)
    assert current_revision(text) == HEAD
    assert ("jobs", "job_queue") in user_tables(fresh_database_url)
    import dataqueue as dq

    with dq.init_job_queue(text) as queue:
        job_id = queue.add_job("t", {})
        assert queue.get_job(job_id) is not None
    downgrade(text)
    assert ("jobs", "job_queue") not in user_tables(fresh_database_url)
