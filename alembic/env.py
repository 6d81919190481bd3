"""Alembic environment for dataqueue's own tables.

Where the database comes from, first match wins:

1. ``config.attributes["connection"]``: a SQLAlchemy Connection passed in by
   :func:`dataqueue.migrate.alembic_config` (used inside its transaction, never closed);
2. ``config.attributes["url"]`` (set by ``alembic_config``) or ``-x url=...``;
3. ``sqlalchemy.url`` in the ini file, if someone set one;
4. the ``DATAQUEUE_DATABASE_URL`` or ``PG_DATAQUEUE_DATABASE`` environment variable.

``-x schema=NAME`` (or ``config.attributes["schema"]``) puts the tables and the version
table in that PostgreSQL schema, created if missing. The version table is
``dataqueue_alembic_version``, so an application's own ``alembic_version`` is never touched,
and autogenerate / ``alembic check`` only look at dataqueue's four tables.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

import alembic.context
import sqlalchemy as sa
from alembic.util import CommandError

from dataqueue.errors import ConfigurationError
from dataqueue.migrate import VERSION_TABLE, database_url_from_env, sqlalchemy_url
from dataqueue.schema import metadata

config = alembic.context.config

if config.config_file_name is not None:
    # Only when run from the alembic command line with an ini file: programmatic callers
    # keep their own logging configuration.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata

#: The tables autogenerate and ``alembic check`` compare; everything else is the application's.
DATAQUEUE_TABLES = frozenset(metadata.tables)

#: ``pg_advisory_xact_lock`` key serialising concurrent migrations (ASCII "dqmigrat").
MIGRATION_LOCK_KEY = 0x64716D6967726174


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Reflect only dataqueue's tables (and everything that hangs off them)."""
    if type_ == "table":
        return name in DATAQUEUE_TABLES
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare only dataqueue's tables, whether found in the metadata or the database."""
    if type_ == "table":
        return name in DATAQUEUE_TABLES
    return True


def _x_argument(key: str) -> str | None:
    value = alembic.context.get_x_argument(as_dictionary=True).get(key)
    return value or None


def _schema() -> str | None:
    schema = config.attributes.get("schema") or _x_argument("schema")
    return str(schema) if schema else None


def _database_url() -> sa.URL:
    url = (
        config.attributes.get("url")
        or _x_argument("url")
        or config.get_main_option("sqlalchemy.url")
        or database_url_from_env()
    )
    if not url:
        raise CommandError(
            "No database URL: run `alembic -x url=postgresql://user:password@host/dbname "
            "upgrade head`, or set DATAQUEUE_DATABASE_URL (or PG_DATAQUEUE_DATABASE)"
        )
    try:
        return sqlalchemy_url(url)
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from exc


def _configure(schema: str | None, **options: Any) -> None:
    alembic.context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        include_name=include_name,
        include_object=include_object,
        compare_type=True,
        compare_server_default=True,
        **options,
    )


def run_migrations_offline() -> None:
    """Write the SQL script (``--sql``) without connecting to the database."""
    schema = _schema()
    _configure(
        schema,
        url=_database_url(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with alembic.context.begin_transaction():
        if schema is not None:
            dialect = alembic.context.get_context().dialect
            quoted = dialect.identifier_preparer.quote_identifier(schema)
            alembic.context.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            alembic.context.execute(f"SET LOCAL search_path TO {quoted}")
        alembic.context.run_migrations()


def _migrate(connection: sa.Connection, schema: str | None) -> None:
    """Run the revisions inside the connection's current transaction."""
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    previous_search_path: str | None = None
    if schema is not None:
        quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
        connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        previous_search_path = connection.exec_driver_sql("SHOW search_path").scalar_one()
        # Unqualified names in the revisions (and reflection) now resolve to the schema
        # alone; SET LOCAL ends with the transaction, so a caller's session keeps its own.
        connection.exec_driver_sql(f"SET LOCAL search_path TO {quoted}")
    _configure(schema, connection=connection)
    with alembic.context.begin_transaction():
        alembic.context.run_migrations()
    if previous_search_path is not None:
        connection.execute(
            sa.text("SELECT set_config('search_path', :path, true)"),
            {"path": previous_search_path},
        )


def run_migrations_online() -> None:
    """Migrate through the given connection, or through a connection of our own."""
    schema = _schema()
    connection = config.attributes.get("connection")
    if connection is not None:
        if connection.in_transaction():
            _migrate(connection, schema)
        else:
            with connection.begin():
                _migrate(connection, schema)
        return
    engine = sa.create_engine(_database_url(), poolclass=sa.NullPool)
    try:
        with engine.begin() as own_connection:
            _migrate(own_connection, schema)
    finally:
        engine.dispose()


if alembic.context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
