"""Create and upgrade the dataqueue tables with the bundled Alembic revisions.

The revisions live at the repository root in ``alembic/`` (so ``alembic upgrade head``
works from a checkout) and ship inside the wheel as ``dataqueue/_alembic``. They keep
their own version table, :data:`VERSION_TABLE`, so an application's own Alembic history
in ``alembic_version`` is never read or written.

Typical use, at deploy time or application start::

    from dataqueue.migrate import upgrade

    upgrade("postgresql://app:secret@db/app")   # or upgrade(engine), or upgrade() with env vars

A database already migrated by the upstream Node.js library is adopted: ``upgrade``
creates only what is missing and records the version.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import TextIO

import alembic.command
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dataqueue.config import database_url_from_env
from dataqueue.errors import ConfigurationError

#: Alembic version table of dataqueue; distinct from an application's ``alembic_version``.
VERSION_TABLE = "dataqueue_alembic_version"

#: Environment variables read, in order, when no URL or engine is given.
DATABASE_URL_ENV_VARS = ("DATAQUEUE_DATABASE_URL", "PG_DATAQUEUE_DATABASE")

#: Dialect used to render ``--sql`` output when no database URL is configured.
_OFFLINE_PLACEHOLDER_URL = "postgresql+psycopg://"

_MISSING_URL_HINT = (
    "pass a database URL (postgresql://user:password@host:port/dbname) or a SQLAlchemy "
    "Engine, or set DATAQUEUE_DATABASE_URL (or PG_DATAQUEUE_DATABASE)"
)


def sqlalchemy_url(url: str | sa.URL) -> sa.URL:
    """Parse a PostgreSQL URL and select the psycopg 3 driver.

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``; a URL that
    already names a driver (``postgresql+psycopg2://``) keeps it. Anything that is not a
    PostgreSQL URL raises :class:`~dataqueue.errors.ConfigurationError` (the message
    never repeats the password).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            "The database URL could not be parsed; expected "
            "postgresql://user:password@host:port/dbname"
        ) from exc
    dialect, _, driver = parsed.drivername.partition("+")
    if dialect not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"The database URL must be a PostgreSQL URL (postgresql://...), got scheme "
            f"{parsed.drivername!r}"
        )
    return parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")


def script_location() -> str:
    """Return the directory holding ``env.py`` and ``versions/``.

    An installed wheel has it at ``dataqueue/_alembic``; an editable install or a
    checkout uses ``alembic/`` at the repository root, next to the package.
    """
    packaged = resources.files("dataqueue") / "_alembic"
    if packaged.is_dir():
        return str(packaged)
    checkout = Path(__file__).resolve().parent.parent / "alembic"
    if (checkout / "env.py").is_file():
        return str(checkout)
    raise ConfigurationError(
        "dataqueue's Alembic scripts were not found (looked for dataqueue/_alembic and "
        f"{checkout}); reinstall the dataqueue package"
    )


def alembic_config(
    url: str | None = None,
    *,
    schema: str | None = None,
    connection: sa.Connection | None = None,
) -> Config:
    """Build an Alembic :class:`~alembic.config.Config` for dataqueue's revisions.

    Pass it to any ``alembic.command`` function (``upgrade``, ``downgrade``, ``check``,
    ``current``, ``history``...). The database is, in order: ``connection`` (used as is,
    inside its current transaction if it has one; never closed), ``url``, then the
    environment variables of :data:`DATABASE_URL_ENV_VARS`; with none of them a
    :class:`~dataqueue.errors.ConfigurationError` is raised. ``schema`` puts the tables
    and the version table in that PostgreSQL schema, created if missing.
    """
    config = Config()
    config.set_main_option("script_location", script_location())
    if connection is not None:
        config.attributes["connection"] = connection
    else:
        resolved = url or database_url_from_env()
        if resolved is None:
            raise ConfigurationError(f"No database configured for migrations: {_MISSING_URL_HINT}")
        config.attributes["url"] = sqlalchemy_url(resolved)
    if schema is not None:
        config.attributes["schema"] = _checked_schema(schema)
    return config


def upgrade(
    target: str | sa.Engine | None = None,
    *,
    schema: str | None = None,
    revision: str = "head",
    sql: bool = False,
    output: TextIO | None = None,
) -> None:
    """Migrate the database up to ``revision`` (default: the latest).

    ``target`` is a URL, an Engine (never disposed), or ``None`` for the environment
    variables. Tables and indexes that already exist (for example created by the upstream
    Node.js library) are kept, so adopting such a database only records the version.

    With ``sql=True`` nothing touches the database: the SQL script is written to
    ``output`` (default ``sys.stdout``). Without any configured URL it is rendered for
    PostgreSQL in general.

    Concurrent upgrades from several processes are safe: they take turns on a PostgreSQL
    advisory lock. Within one process, run one migration at a time: Alembic's ``op`` and
    ``context`` proxies are process-global.
    """
    if sql:
        url = _offline_url(target)
        config = alembic_config(url, schema=schema)
        config.output_buffer = output if output is not None else sys.stdout
        alembic.command.upgrade(config, revision, sql=True)
        return
    if isinstance(target, sa.Engine):
        with target.begin() as connection:
            config = alembic_config(connection=connection, schema=schema)
            alembic.command.upgrade(config, revision)
        return
    engine = _engine_with_search_path(target)
    if engine is not None:
        try:
            upgrade(engine, schema=schema, revision=revision)
        finally:
            engine.dispose()
        return
    alembic.command.upgrade(alembic_config(target, schema=schema), revision)


def _engine_with_search_path(target: str | None) -> sa.Engine | None:
    """An engine for a URL that sets ``search_path`` (``?search_path=`` or
    ``options=-c search_path=...``), which the queue accepts and psycopg does not: its
    connections get that search path, so the tables land where the queue looks for
    them. None for any other URL."""
    from dataqueue.config import create_engine

    resolved = target or database_url_from_env()
    if resolved is None or "search_path" not in resolved:
        return None
    return create_engine(resolved, pool_size=1)


def downgrade(
    target: str | sa.Engine | None = None,
    *,
    schema: str | None = None,
    revision: str = "base",
) -> None:
    """Migrate the database down to ``revision``; the default ``"base"`` drops every
    dataqueue table (and all jobs in them). Tables that are not dataqueue's are untouched.
    """
    if isinstance(target, sa.Engine):
        with target.begin() as connection:
            config = alembic_config(connection=connection, schema=schema)
            alembic.command.downgrade(config, revision)
        return
    engine = _engine_with_search_path(target)
    if engine is not None:
        try:
            downgrade(engine, schema=schema, revision=revision)
        finally:
            engine.dispose()
        return
    alembic.command.downgrade(alembic_config(target, schema=schema), revision)


def current_revision(
    target: str | sa.Engine | None = None,
    *,
    schema: str | None = None,
) -> str | None:
    """Return the revision the database is at, or ``None`` if it was never migrated."""
    if isinstance(target, sa.Engine):
        with target.connect() as connection:
            return _read_revision(connection, schema)
    resolved = target or database_url_from_env()
    if resolved is None:
        raise ConfigurationError(f"No database configured: {_MISSING_URL_HINT}")
    engine = _engine_with_search_path(resolved) or sa.create_engine(
        sqlalchemy_url(resolved), poolclass=sa.NullPool
    )
    try:
        with engine.connect() as connection:
            return _read_revision(connection, schema)
    finally:
        engine.dispose()


def _read_revision(connection: sa.Connection, schema: str | None) -> str | None:
    opts: dict[str, str] = {"version_table": VERSION_TABLE}
    if schema is not None:
        opts["version_table_schema"] = _checked_schema(schema)
    context = MigrationContext.configure(connection, opts=opts)
    return context.get_current_revision()


def _offline_url(target: str | sa.Engine | None) -> str:
    """URL whose dialect renders ``--sql`` output; the database is never contacted."""
    if isinstance(target, sa.Engine):
        return target.url.render_as_string(hide_password=False)
    return target or database_url_from_env() or _OFFLINE_PLACEHOLDER_URL


def _checked_schema(schema: str) -> str:
    if not schema or not schema.strip():
        raise ConfigurationError("The schema name must be a non-empty string")
    return schema
