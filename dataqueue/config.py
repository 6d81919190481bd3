"""PostgreSQL engine construction and fork safety (upstream ``createPool``).

:func:`create_engine` turns a connection URL, a libpq keyword/value string or a
``database_config`` mapping into a SQLAlchemy :class:`~sqlalchemy.Engine` running on
psycopg 3. The translation itself is the pure-ish function :func:`build_connect_params`
(its only side effect is writing PEM text to private temporary files), so it can be
inspected and tested without a server.

Fork safety: a pooled connection is a socket. After ``os.fork()`` parent and child share
it, and two processes talking over one PostgreSQL session corrupt each other's traffic.
:func:`install_fork_safety` makes a child drop (never close) the inherited pool;
:func:`reset_engine_after_fork` does the same on demand, e.g. from a gunicorn ``post_fork``.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import functools
import logging
import math
import os
import re
import select
import tempfile
import threading
import weakref
from collections.abc import Mapping
from typing import Any, cast

import attrs
import psycopg
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from dataqueue.errors import ConfigurationError

__all__ = [
    "DATABASE_CONFIG_KEYS",
    "DATABASE_URL_ENV",
    "LEGACY_DATABASE_URL_ENV",
    "REDIS_URL_ENV",
    "SSL_CONFIG_KEYS",
    "ConnectParams",
    "build_connect_params",
    "create_engine",
    "database_url_from_env",
    "install_fork_safety",
    "parse_search_path",
    "redis_url_from_env",
    "reset_engine_after_fork",
]

logger = logging.getLogger("dataqueue.config")

#: Environment variable read when no PostgreSQL configuration is passed.
DATABASE_URL_ENV = "DATAQUEUE_DATABASE_URL"
#: Upstream's name for the same variable; read when ``DATAQUEUE_DATABASE_URL`` is unset.
LEGACY_DATABASE_URL_ENV = "PG_DATAQUEUE_DATABASE"
#: Environment variable read for the Redis backend.
REDIS_URL_ENV = "DATAQUEUE_REDIS_URL"

#: Keys accepted in ``database_config`` (keyword arguments of :func:`create_engine`).
DATABASE_CONFIG_KEYS = frozenset(
    {
        "connection_string",
        "host",
        "port",
        "database",
        "user",
        "password",
        "ssl",
        "max",
        "min",
        "pool_size",
        "max_overflow",
        "idle_timeout_millis",
        "connection_timeout_millis",
        "pool_recycle",
        "pool_pre_ping",
        "application_name",
    }
)
#: Keys accepted in ``database_config["ssl"]``.
SSL_CONFIG_KEYS = frozenset({"ca", "cert", "key", "reject_unauthorized"})

DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 0
DEFAULT_POOL_TIMEOUT_SECONDS = 30.0
DEFAULT_POOL_RECYCLE_SECONDS = 300
FALLBACK_APPLICATION_NAME = "dataqueue"

_PSYCOPG_DRIVER = "postgresql+psycopg"
_ACCEPTED_SCHEMES = frozenset({"postgres", "postgresql", _PSYCOPG_DRIVER})
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SIMPLE_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^[0-9A-Fa-f:.]+$")  # name, IPv4 or IPv6
_SSL_ENV = {"ca": "PGSSLROOTCERT", "cert": "PGSSLCERT", "key": "PGSSLKEY"}
_SSL_LIBPQ_KEYS = {"ca": "sslrootcert", "cert": "sslcert", "key": "sslkey"}
_PEM_MARKER = "-----BEGIN"
_FILE_PREFIX = "file://"
_MISSING_CONFIG_HINT = (
    "pass database_url='postgresql://user:password@host:5432/dbname', "
    "database_config={'host': ..., 'database': ...} (or {'connection_string': ...}), "
    f"or engine=<sqlalchemy.Engine>, or set the {DATABASE_URL_ENV} environment variable"
)

# Fork-safety bookkeeping lives on the engine itself (no module-level registry).
_FORK_GUARD_ATTRIBUTE = "_dataqueue_fork_guard"
_PID_INFO_KEY = "dataqueue.pid"
_FORK_GUARD_LOCK = threading.Lock()


# --------------------------------------------------------------------------- environment


def database_url_from_env() -> str | None:
    """The PostgreSQL URL configured in the environment, or ``None``.

    Reads ``DATAQUEUE_DATABASE_URL``, then upstream's ``PG_DATAQUEUE_DATABASE``. Empty or
    blank values count as unset.
    """
    for name in (DATABASE_URL_ENV, LEGACY_DATABASE_URL_ENV):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def redis_url_from_env() -> str | None:
    """The Redis URL in ``DATAQUEUE_REDIS_URL``, or ``None`` when unset or blank."""
    value = os.environ.get(REDIS_URL_ENV, "").strip()
    return value or None


# --------------------------------------------------------------------------- parameters


@attrs.frozen
class ConnectParams:
    """Everything :func:`create_engine` passes to :func:`sqlalchemy.create_engine`.

    ``url`` is the sanitized URL (driver ``postgresql+psycopg``; no ``search_path`` and no
    ``sslmode=no-verify``, which libpq would reject). ``connect_args`` are libpq parameters
    that override the URL's query. ``engine_kwargs`` are the pool options. ``search_path``
    holds the exact schema names to set on every new connection (empty: leave the server's).
    """

    url: sa.URL
    connect_args: dict[str, Any]
    engine_kwargs: dict[str, Any]
    search_path: tuple[str, ...] = ()

    @property
    def search_path_sql(self) -> str | None:
        """The ``SET search_path`` statement run on each new connection, or ``None``."""
        if not self.search_path:
            return None
        return "SET search_path TO " + ", ".join(_quote_identifier(n) for n in self.search_path)


def build_connect_params(
    database_url: str | sa.URL | None = None, **database_config: Any
) -> ConnectParams:
    """Translate dataqueue's connection options into SQLAlchemy/psycopg parameters.

    Accepts exactly what :func:`create_engine` accepts and raises the same
    :class:`~dataqueue.errors.ConfigurationError`; see there for the options. PEM text in
    ``ssl`` is written to private temporary files as a side effect.
    """
    config = _checked_config(database_config)
    url = _base_url(database_url, config)
    url = _apply_connection_fields(url, config)
    url, search_path = _extract_search_path(url)
    url, url_sslmode = _normalized_sslmode(url)
    connect_args: dict[str, Any] = {}
    if config.get("ssl") is not None:
        url = url.difference_update_query(["sslmode", *_SSL_LIBPQ_KEYS.values()])
        connect_args.update(_ssl_params(config["ssl"], url_sslmode))
    connect_args.update(_connect_timeout_params(config))
    if config.get("application_name") is not None:
        connect_args["application_name"] = config["application_name"]
    if "fallback_application_name" not in url.query:
        connect_args["fallback_application_name"] = FALLBACK_APPLICATION_NAME
    return ConnectParams(
        url=url,
        connect_args=connect_args,
        engine_kwargs=_engine_kwargs(config),
        search_path=search_path,
    )


def create_engine(database_url: str | sa.URL | None = None, **database_config: Any) -> sa.Engine:
    """Build the SQLAlchemy engine ``init_job_queue`` uses (``createPool`` in Node.js).

    Source of the connection, first match wins: ``database_url``; ``connection_string``;
    ``host``/``database`` (with ``port``, ``user``, ``password``); else the environment
    (:func:`database_url_from_env`). ``host``, ``port``, ``database``, ``user`` and
    ``password`` given together with a URL override the URL's parts (e.g. a password from a
    secret store). The URL may use ``postgres://``, ``postgresql://`` or
    ``postgresql+psycopg://`` (all run on psycopg 3) or be a libpq keyword/value string
    (``"host=db dbname=app"``). Passing both ``database_url`` and a different
    ``connection_string`` is an error.

    ``search_path``: the URL query parameter ``search_path=a,"B-c"`` (or ``-c search_path=…``
    inside a keyword string's ``options``) is removed from what libpq sees and set with
    ``SET search_path TO …`` on every new connection. Unquoted names fold to lower case and
    double-quoted names are kept exactly, as in PostgreSQL; every name is sent quoted, so no
    value can inject SQL (the Node.js library interpolates it unquoted).
    ``sslmode=no-verify`` (a node-postgres value libpq rejects) becomes
    ``sslmode=require``.

    ``ssl`` (a dict; ``True`` means ``{}``; ``False``/``None`` mean not given): keys ``ca``,
    ``cert``, ``key``, ``reject_unauthorized``. A value starting with ``file://`` names a file
    (must exist; passed to libpq by path); any other string must be PEM text and is written to
    a private (0600) temporary file removed at interpreter exit. Missing ``ca``/``cert``/``key``
    fall back to ``PGSSLROOTCERT``/``PGSSLCERT``/``PGSSLKEY`` (paths; ``file://`` and PEM text
    also accepted). ``reject_unauthorized`` (default ``True``) selects ``sslmode=verify-full``;
    ``False`` selects ``sslmode=require`` (note: libpq still checks the chain when a CA is
    given). The ``ssl`` dict overrides the URL's ``sslmode``; if the URL has one and a custom
    CA is present, a warning recommends removing ``sslmode``.

    Pool options (SQLAlchemy ``QueuePool``):

    - ``pool_size`` / ``max`` (synonyms, default 10): connections kept open.
    - ``max_overflow`` (default 0): extra connections beyond ``pool_size``, so like
      node-postgres' ``max`` the pool size is a hard cap; -1 means unlimited.
    - ``connection_timeout_millis``: milliseconds to wait for a free pooled connection
      (``pool_timeout``) and libpq ``connect_timeout`` (rounded up to whole seconds); 0 waits
      forever. Default: 30 s for a pool slot, libpq's own connect timeout. Differs from
      the Node.js library (default wait forever) because an exhausted pool should fail
      loudly.
    - ``idle_timeout_millis`` (milliseconds) or ``pool_recycle`` (seconds), not both:
      SQLAlchemy recycles by connection age at checkout, not idle time; 0 (or
      ``pool_recycle=-1``) disables it. Default 300 s, a cheap
      stand-in for node-postgres' 10 s idle close that does not reconnect on every poll.
    - ``min``: validated for compatibility and ignored (the pool opens connections lazily).
    - ``pool_pre_ping`` (default ``False``: it costs a round trip per checkout). Without
      it, a pooled connection the server closed while it sat idle (a restart,
      ``pg_terminate_backend``, an idle timeout) is still noticed at checkout without a
      round trip, by :func:`discard_closed_connection`, and replaced.
    - The pool hands out the most recently returned connection first (LIFO).
    - ``application_name``; otherwise libpq's ``fallback_application_name`` is ``dataqueue``.

    Connections are rolled back when returned to the pool, and :func:`install_fork_safety`
    is applied to the engine. ``None`` values count as not given.

    Raises:
        ConfigurationError: nothing configured (the message says what to pass), an unknown
            key (the message lists the accepted ones), a value of the wrong type or range,
            an unsupported URL scheme, a malformed keyword string or search_path, or a missing
            certificate file.
    """
    params = build_connect_params(database_url, **database_config)
    engine = sa.create_engine(params.url, connect_args=params.connect_args, **params.engine_kwargs)
    # JIT compilation only slows dataqueue's short statements down: upstream's claim paid
    # it on every call once a few thousand jobs were pending (W-PLAN-1).
    statements = [SESSION_SETTINGS_SQL]
    if params.search_path_sql is not None:
        statements.append(params.search_path_sql)
    # insert=True: run before the dialect's first-connect initialisation, which reads
    # current_schema().
    sa.event.listen(engine, "connect", _SessionSettings("; ".join(statements)), insert=True)
    install_fork_safety(engine)
    sa.event.listen(engine, "checkout", discard_closed_connection)
    logger.debug(
        "Created engine for %s",
        params.url.render_as_string(hide_password=True),
        extra={"action": "engine_created"},
    )
    return engine


# --------------------------------------------------------------------------- validation


def _checked_config(database_config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(database_config) - DATABASE_CONFIG_KEYS)
    if unknown:
        raise ConfigurationError(
            _unknown_key_message("database_config", unknown[0], DATABASE_CONFIG_KEYS)
        )
    config = {key: value for key, value in database_config.items() if value is not None}
    for key in ("connection_string", "host", "database", "user", "password", "application_name"):
        if key in config and not isinstance(config[key], str):
            raise ConfigurationError(
                f"database_config[{key!r}] must be a string, got {config[key]!r}"
            )
    if "host" in config and not config["host"].strip():
        raise ConfigurationError("database_config['host'] must not be empty")
    if "port" in config:
        config["port"] = _port(config["port"])
    _merge_pool_size(config)
    for key, minimum in (("min", 0), ("max_overflow", -1), ("pool_recycle", -1)):
        if key in config:
            config[key] = _int_option(key, config[key], minimum)
    for key in ("idle_timeout_millis", "connection_timeout_millis"):
        if key in config:
            config[key] = _millis_option(key, config[key])
    if "idle_timeout_millis" in config and "pool_recycle" in config:
        raise ConfigurationError(
            "Give either database_config['idle_timeout_millis'] or ['pool_recycle'], not both"
        )
    if "pool_pre_ping" in config and not isinstance(config["pool_pre_ping"], bool):
        raise ConfigurationError(
            "database_config['pool_pre_ping'] must be True or False, "
            f"got {config['pool_pre_ping']!r}"
        )
    if "min" in config and config["min"] > config["pool_size"]:
        raise ConfigurationError(
            f"database_config['min'] ({config['min']}) exceeds the pool size "
            f"({config['pool_size']})"
        )
    return config


def _unknown_key_message(where: str, key: str, accepted: frozenset[str]) -> str:
    message = f"Unknown {where} key {key!r}."
    close = difflib.get_close_matches(key, sorted(accepted), n=1)
    if close:
        message += f" Did you mean {close[0]!r}?"
    return message + " Accepted keys: " + ", ".join(sorted(accepted)) + "."


def _merge_pool_size(config: dict[str, Any]) -> None:
    """Fold the synonyms ``max`` and ``pool_size`` into ``config["pool_size"]``."""
    sizes = {
        key: _int_option(key, config.pop(key), 1) for key in ("pool_size", "max") if key in config
    }
    if len(set(sizes.values())) > 1:
        raise ConfigurationError(
            "database_config['pool_size'] and ['max'] are synonyms but differ: "
            f"{sizes['pool_size']} vs {sizes['max']}"
        )
    config["pool_size"] = next(iter(sizes.values()), DEFAULT_POOL_SIZE)


def _int_option(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"database_config[{key!r}] must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _millis_option(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(
            f"database_config[{key!r}] must be a number of milliseconds >= 0, got {value!r}"
        )
    if math.isinf(value):
        raise ConfigurationError(f"database_config[{key!r}] must be finite, got {value!r}")
    return float(value)


def _port(value: Any) -> int:
    port = value
    if isinstance(value, str) and value.strip().isdigit():
        port = int(value.strip())
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(
            f"database_config['port'] must be an integer from 1 to 65535, got {value!r}"
        )
    return port


# --------------------------------------------------------------------------- URL


def _base_url(database_url: str | sa.URL | None, config: Mapping[str, Any]) -> sa.URL:
    """The URL to start from: argument, ``connection_string``, fields, or environment."""
    url_text = _url_text(database_url)
    connection_string = _url_text(config.get("connection_string"))
    if url_text is not None and connection_string is not None and url_text != connection_string:
        raise ConfigurationError(
            "Both database_url and database_config['connection_string'] are given and differ; "
            "pass only one"
        )
    source = url_text or connection_string
    if source is None and "host" not in config and "database" not in config:
        source = database_url_from_env()
        if source is None:
            raise ConfigurationError(f"No PostgreSQL connection configured: {_MISSING_CONFIG_HINT}")
    if source is None:
        return sa.URL.create(_PSYCOPG_DRIVER)
    if _URL_SCHEME.match(source):
        return _parse_url(source)
    return _parse_keyword_string(source)


def _url_text(value: str | sa.URL | None) -> str | None:
    if isinstance(value, sa.URL):
        return value.render_as_string(hide_password=False)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"database_url must be a string or sqlalchemy.URL, got {value!r}")
    if value is None or not value.strip():
        return None
    return value.strip()


def _parse_url(text: str) -> sa.URL:
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError as error:
        raise ConfigurationError(f"Cannot parse the database URL: {error}") from None
    if url.drivername not in _ACCEPTED_SCHEMES:
        raise ConfigurationError(
            f"Unsupported database URL scheme {url.drivername!r}: dataqueue connects with "
            "psycopg 3; use postgresql://, postgres:// or postgresql+psycopg://"
        )
    return url.set(drivername=_PSYCOPG_DRIVER)


def _parse_keyword_string(text: str) -> sa.URL:
    """Convert a libpq ``key=value`` string into an equivalent psycopg URL."""
    try:
        params = conninfo_to_dict(text)
    except psycopg.Error as error:
        raise ConfigurationError(
            f"The database connection string is neither a postgresql:// URL nor a valid "
            f"libpq keyword/value string: {error}"
        ) from None
    values = {key: str(value) for key, value in params.items()}
    host = values.pop("host", None)
    port = values.pop("port", None)
    url = sa.URL.create(
        _PSYCOPG_DRIVER,
        username=values.pop("user", None),
        password=values.pop("password", None),
        database=values.pop("dbname", None),
        query=values,
    )
    return _with_host_port(url, host, port)


def _with_host_port(url: sa.URL, host: str | None, port: str | int | None) -> sa.URL:
    """Set host/port as URL parts when they fit there, else as libpq query parameters.

    Unix-socket directories and multi-host lists only work as query parameters.
    """
    if host is None and port is None:
        return url
    if host is not None and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # bracketed IPv6 literal
    simple_host = host is None or bool(_SIMPLE_HOST.match(host))
    simple_port = port is None or isinstance(port, int) or port.isdigit()
    if simple_host and simple_port and "host" not in url.query:
        return url.set(
            host=host if host is not None else url.host,
            port=int(port) if port is not None else url.port,
        )
    query = dict(url.query)
    if host is not None:
        query["host"] = host
        url = url.set(host=None)
    if port is not None:
        query["port"] = str(port)
        url = url.set(port=None)
    elif url.port is not None:
        query["port"] = str(url.port)
        url = url.set(port=None)
    return url.set(query=query)


def _apply_connection_fields(url: sa.URL, config: Mapping[str, Any]) -> sa.URL:
    """Let explicit ``database_config`` fields override the URL's parts."""
    parts = {
        name: config[key]
        for key, name in (("user", "username"), ("password", "password"), ("database", "database"))
        if key in config
    }
    if parts:
        url = url.set(**parts)
    return _with_host_port(url, config.get("host"), config.get("port"))


def _single_query_value(url: sa.URL, name: str) -> str | None:
    value = url.query.get(name)
    if isinstance(value, tuple):
        raise ConfigurationError(f"The database URL repeats the {name!r} parameter: {value!r}")
    return value


# --------------------------------------------------------------------------- search_path


def _extract_search_path(url: sa.URL) -> tuple[sa.URL, tuple[str, ...]]:
    """Remove ``search_path`` (query or ``options=-c search_path=…``) from the URL."""
    from_query = _single_query_value(url, "search_path")
    url = url.difference_update_query(["search_path"])
    options = _single_query_value(url, "options")
    from_options = None
    if options is not None:
        remaining, from_options = _split_search_path_option(options)
        url = url.difference_update_query(["options"])
        if remaining:
            url = url.update_query_dict({"options": remaining})
    if from_query is not None and from_options is not None and from_query != from_options:
        raise ConfigurationError(
            "search_path is given both as a URL parameter and in 'options' with different "
            f"values: {from_query!r} vs {from_options!r}"
        )
    value = from_query if from_query is not None else from_options
    return url, (parse_search_path(value) if value is not None else ())


def _split_search_path_option(options: str) -> tuple[str, str | None]:
    """Split libpq ``options`` into (other options, search_path value or None).

    Follows the server's parsing: whitespace separates arguments, a backslash escapes the
    next character; settings appear as ``-c name=value``, ``-cname=value`` or
    ``--name=value``.
    """
    tokens = _split_options(options)
    kept: list[str] = []
    search_path: str | None = None
    index = 0
    while index < len(tokens):
        token = tokens[index]
        setting: str | None = None
        consumed = 1
        if token == "-c" and index + 1 < len(tokens):
            setting, consumed = tokens[index + 1], 2
        elif (token.startswith("-c") and len(token) > 2) or (
            token.startswith("--") and "=" in token
        ):
            setting = token[2:]
        name, _, value = (setting or "").partition("=")
        if setting is not None and name.strip().lower().replace("-", "_") == "search_path":
            search_path = value
        else:
            kept.extend(tokens[index : index + consumed])
        index += consumed
    return " ".join(_escape_option(token) for token in kept), search_path


def _split_options(options: str) -> list[str]:
    tokens: list[str] = []
    current: list[str] = []
    in_token = False
    chars = iter(options)
    for char in chars:
        if char.isspace():
            if in_token:
                tokens.append("".join(current))
                current, in_token = [], False
            continue
        in_token = True
        if char == "\\":
            current.append(next(chars, ""))
        else:
            current.append(char)
    if in_token:
        tokens.append("".join(current))
    return tokens


def _escape_option(token: str) -> str:
    return re.sub(r"(\s|\\)", r"\\\1", token)


def parse_search_path(value: str) -> tuple[str, ...]:
    """Parse a PostgreSQL ``search_path`` list into exact schema names.

    Elements are comma-separated; a double-quoted element is taken literally (``""`` is a
    quote), an unquoted one is trimmed and folded to lower case (ASCII), as the server does.
    ``$user`` keeps its special meaning. Raises
    :class:`~dataqueue.errors.ConfigurationError` for empty elements or unbalanced quotes.
    """
    names: list[str] = []
    position = 0
    while True:
        name, position = _search_path_element(value, position)
        names.append(name)
        position = _skip_spaces(value, position)
        if position >= len(value):
            return tuple(names)
        if value[position] != ",":
            raise ConfigurationError(
                f"Malformed search_path {value!r}: expected ',' at position {position}"
            )
        position += 1


def _search_path_element(value: str, position: int) -> tuple[str, int]:
    position = _skip_spaces(value, position)
    if position < len(value) and value[position] == '"':
        chars: list[str] = []
        position += 1
        while position < len(value):
            if value[position] == '"':
                if value.startswith('""', position):
                    chars.append('"')
                    position += 2
                    continue
                if not chars:
                    break
                return "".join(chars), position + 1
            chars.append(value[position])
            position += 1
        raise ConfigurationError(
            f"Malformed search_path {value!r}: empty or unterminated quoted name"
        )
    end = value.find(",", position)
    end = len(value) if end == -1 else end
    bare = value[position:end].strip()
    if not bare or '"' in bare:
        raise ConfigurationError(f"Malformed search_path {value!r}: empty or misquoted name")
    return bare.translate(_ASCII_LOWER), position + len(value[position:end].rstrip())


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _skip_spaces(value: str, position: int) -> int:
    while position < len(value) and value[position].isspace():
        position += 1
    return position


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: Run on every new connection of an engine dataqueue creates.
SESSION_SETTINGS_SQL = "SET jit = off"


class _SessionSettings:
    """Pool ``connect`` listener running dataqueue's ``SET`` statements on each new
    DBAPI connection (``jit = off`` and the URL's ``search_path``)."""

    def __init__(self, statement: str) -> None:
        self.statement = statement

    def __call__(self, dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        connection = cast("psycopg.Connection[Any]", dbapi_connection)
        # Autocommit so the SET is not undone by the pool's rollback-on-return.
        autocommit = connection.autocommit
        connection.autocommit = True
        try:
            connection.execute(self.statement)
        finally:
            connection.autocommit = autocommit


# --------------------------------------------------------------------------- TLS


def _normalized_sslmode(url: sa.URL) -> tuple[sa.URL, str | None]:
    """Map node-postgres' ``sslmode=no-verify`` to libpq's ``require``; return the original."""
    sslmode = _single_query_value(url, "sslmode")
    if sslmode == "no-verify":
        url = url.update_query_dict({"sslmode": "require"})
    return url, sslmode


def _ssl_params(ssl: Any, url_sslmode: str | None) -> dict[str, str]:
    if ssl is True:
        ssl = {}
    if ssl is False:
        return {}
    if not isinstance(ssl, Mapping):
        raise ConfigurationError(
            "database_config['ssl'] must be a dict with keys "
            f"{', '.join(sorted(SSL_CONFIG_KEYS))}, got {ssl!r}"
        )
    unknown = sorted(set(ssl) - SSL_CONFIG_KEYS)
    if unknown:
        raise ConfigurationError(
            _unknown_key_message("database_config['ssl']", unknown[0], SSL_CONFIG_KEYS)
        )
    reject_unauthorized = ssl.get("reject_unauthorized")
    if reject_unauthorized is None:
        reject_unauthorized = True
    if not isinstance(reject_unauthorized, bool):
        raise ConfigurationError(
            "database_config['ssl']['reject_unauthorized'] must be True or False, "
            f"got {reject_unauthorized!r}"
        )
    params = {"sslmode": "verify-full" if reject_unauthorized else "require"}
    for name, libpq_key in _SSL_LIBPQ_KEYS.items():
        path = _certificate_path(name, ssl.get(name))
        if path is not None:
            params[libpq_key] = path
    if url_sslmode is not None and "sslrootcert" in params:
        logger.warning(
            "The connection string sets sslmode=%s and a custom CA is configured "
            "(ssl.ca or PGSSLROOTCERT); the two may conflict. Remove sslmode from the "
            "connection string: the ssl settings decide (sslmode=%s).",
            url_sslmode,
            params["sslmode"],
            extra={"action": "sslmode_conflict"},
        )
    return params


def _certificate_path(name: str, value: Any) -> str | None:
    """A file path libpq can read for ``ssl[name]``, or ``None`` when not configured."""
    if value is None:
        return _certificate_path_from_env(name)
    where = f"database_config['ssl'][{name!r}]"
    if not isinstance(value, str):
        raise ConfigurationError(f"{where} must be a string, got {value!r}")
    return _certificate_file(value, where)


def _certificate_path_from_env(name: str) -> str | None:
    env_name = _SSL_ENV[name]
    value = os.environ.get(env_name, "").strip()
    where = f"environment variable {env_name}"
    if not value:
        return None
    if name == "ca" and value == "system":
        return value  # libpq keyword: use the system's trusted CA store
    if value.startswith(_FILE_PREFIX) or _PEM_MARKER in value:
        return _certificate_file(value, where)
    return _existing_file(value, where)


def _certificate_file(value: str, where: str) -> str:
    """Resolve a ``file://`` path or write PEM text to a private file; return the path."""
    if value.startswith(_FILE_PREFIX):
        return _existing_file(value[len(_FILE_PREFIX) :], where)
    if _PEM_MARKER not in value:
        raise ConfigurationError(
            f"{where} is neither PEM text (no '{_PEM_MARKER}' line) nor a file:// path; "
            "to read a file write 'file:///path/to/file.pem'"
        )
    return _write_private_pem(value)


def _existing_file(path: str, where: str) -> str:
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise ConfigurationError(f"Certificate file {path!r} from {where} does not exist")
    return path


def _write_private_pem(pem: str) -> str:
    """Write PEM text to a new 0600 temporary file removed when this process exits."""
    descriptor, path = tempfile.mkstemp(prefix="dataqueue-ssl-", suffix=".pem")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(pem if pem.endswith("\n") else pem + "\n")
    # Only the creating process removes it: forked workers share the file with the parent.
    atexit.register(_remove_file, path, os.getpid())
    return path


def _remove_file(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


# --------------------------------------------------------------------------- pool options


def _connect_timeout_params(config: Mapping[str, Any]) -> dict[str, str]:
    millis = config.get("connection_timeout_millis")
    if not millis:
        return {}
    return {"connect_timeout": str(max(1, math.ceil(millis / 1000)))}


def _engine_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    pool_timeout: float | None = DEFAULT_POOL_TIMEOUT_SECONDS
    if "connection_timeout_millis" in config:
        millis = config["connection_timeout_millis"]
        pool_timeout = millis / 1000 if millis else None  # None: wait forever
    pool_recycle = config.get("pool_recycle", DEFAULT_POOL_RECYCLE_SECONDS)
    if "idle_timeout_millis" in config:
        millis = config["idle_timeout_millis"]
        pool_recycle = max(1, math.ceil(millis / 1000)) if millis else -1
    if pool_recycle == 0:
        pool_recycle = -1
    return {
        "pool_size": config["pool_size"],
        "max_overflow": config.get("max_overflow", DEFAULT_MAX_OVERFLOW),
        "pool_timeout": pool_timeout,
        "pool_recycle": pool_recycle,
        "pool_pre_ping": config.get("pool_pre_ping", False),
        "pool_reset_on_return": "rollback",
        # The connection used last comes back first: its server process is the one
        # most likely still warm (a claim right after an enqueue runs on the backend
        # that just served it), and connections beyond the working set stay idle.
        "pool_use_lifo": True,
    }


# --------------------------------------------------------------------------- fork safety


class _ForkGuard:
    """Pool listeners that keep a process from using connections opened by another one.

    ``install_pid`` is the process that installed the guard; connections opened before the
    install are assumed to belong to it.
    """

    def __init__(self, install_pid: int) -> None:
        self.install_pid = install_pid

    def on_connect(self, dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_PID_INFO_KEY] = os.getpid()

    def on_checkout(
        self,
        dbapi_connection: DBAPIConnection,
        record: ConnectionPoolEntry,
        proxy: PoolProxiedConnection,
    ) -> None:
        owner = record.info.get(_PID_INFO_KEY, self.install_pid)
        pid = os.getpid()
        if owner != pid:
            # Forget the connection without closing it: closing would end the owner's
            # session. The pool then reconnects this record (SQLAlchemy's documented recipe).
            record.dbapi_connection = None  # type: ignore[misc]
            proxy.dbapi_connection = None  # type: ignore[misc]
            raise sa.exc.DisconnectionError(
                f"Connection opened by process {owner} was checked out in process {pid}"
            )


def install_fork_safety(engine: sa.Engine) -> None:
    """Make ``engine`` safe to use in processes forked from this one. Idempotent.

    Registers, once per engine, an ``os.register_at_fork`` child hook that calls
    ``engine.dispose(close=False)``: the child starts with an empty pool and never touches
    the sockets the parent keeps using. The hook holds only a weak reference, so it does
    not keep the engine alive. Also adds pool listeners that record which process opened
    each connection and discard (without closing) one checked out in another process.

    The child must not use or close a connection that was checked out when it forked (for
    example by leaving a ``with engine.connect()`` block the fork happened in); end such
    children with ``os._exit``, as ``multiprocessing`` does.
    """
    with _FORK_GUARD_LOCK:
        if isinstance(getattr(engine, _FORK_GUARD_ATTRIBUTE, None), _ForkGuard):
            return
        guard = _ForkGuard(os.getpid())
        setattr(engine, _FORK_GUARD_ATTRIBUTE, guard)
    sa.event.listen(engine, "connect", guard.on_connect)
    sa.event.listen(engine, "checkout", guard.on_checkout)
    os.register_at_fork(after_in_child=functools.partial(_dispose_in_child, weakref.ref(engine)))


def _dispose_in_child(engine_ref: weakref.ref[sa.Engine]) -> None:
    engine = engine_ref()
    if engine is None:
        return
    try:
        engine.dispose(close=False)
    except Exception:
        # An exception escaping an at-fork hook is only printed; log it properly instead.
        logger.exception(
            "Could not reset the database connection pool after fork",
            extra={"action": "fork_reset_failed"},
        )


def reset_engine_after_fork(engine: sa.Engine) -> None:
    """Give ``engine`` a fresh, empty connection pool; for a server's ``post_fork`` hook.

    In a process forked after :func:`install_fork_safety` (the pid differs from the
    installing one) the old pool is dropped without closing its connections, which the
    parent still uses: ``engine.dispose(close=False)``. In the installing process the pooled
    connections are closed: ``engine.dispose()``. For an engine never passed to
    :func:`install_fork_safety` the process of origin is unknown, so the pool is dropped
    without closing (safe in both; in the parent the connections close once garbage
    collected). Connections checked out at the time keep working until returned.
    """
    guard = getattr(engine, _FORK_GUARD_ATTRIBUTE, None)
    if isinstance(guard, _ForkGuard) and guard.install_pid == os.getpid():
        engine.dispose()
    else:
        engine.dispose(close=False)


def discard_closed_connection(
    dbapi_connection: Any, connection_record: Any, connection_proxy: Any
) -> None:
    """Pool ``checkout`` hook: replace a connection the server has closed while idle.

    An idle connection has nothing to read unless the server sent something on its own:
    the notice that it is terminating the session, or end-of-file. A non-blocking
    ``select`` on the socket sees that without a round trip, and raising
    ``DisconnectionError`` makes the pool discard the connection and open another, so
    the first statement after the server killed idle connections succeeds. (A rare
    unsolicited message on a live connection costs one reconnect, nothing else.)
    """
    try:
        fileno = dbapi_connection.fileno()
    except Exception:  # closed or broken already
        raise sa.exc.DisconnectionError("connection is closed") from None
    try:
        readable, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError):
        raise sa.exc.DisconnectionError("connection socket is unusable") from None
    if readable:
        raise sa.exc.DisconnectionError("the server closed this idle connection")
