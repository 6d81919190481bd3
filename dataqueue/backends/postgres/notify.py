"""Wake-ups on PostgreSQL: LISTEN/NOTIFY.

The statements that make jobs due call ``pg_notify(<channel>, <payload>)`` once each
(see :mod:`dataqueue.backends.postgres.sql`); PostgreSQL delivers the notification when
the transaction commits, so a rolled-back enqueue wakes nobody. The payload is the job
type when the statement wrote one job, else empty ("any type").

A processor listens on one dedicated connection (:class:`PostgresWakeups`): a psycopg 3
connection taken from the engine (so it has the engine's URL, SSL and session
settings), detached from the pool, in autocommit mode, running ``LISTEN <channel>``.
Poolers in transaction mode (pgbouncer) deliver NOTIFY but cannot keep a LISTEN: turn
listening off there (``create_processor(listen=False)``) or listen on a direct URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import socket
import zlib
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from dataqueue.errors import ConfigurationError

logger = logging.getLogger("dataqueue.postgres")

#: A wake-up as a statement of its own (the rarer paths; see ``_rows_notifying``).
NOTIFY_SQL = "SELECT pg_notify(:channel, '')"

#: The channel of a queue without ``schema=``.
DEFAULT_CHANNEL = "dataqueue"

# PostgreSQL truncates identifiers to 63 bytes; LISTEN takes an identifier. Plain
# characters only, so the channel is the same text in every statement it appears in.
_CHANNEL = re.compile(r"[A-Za-z0-9_.\-]{1,63}")


def check_channel(channel: Any) -> str:
    """``channel`` if it is a valid channel name, else raise :class:`ConfigurationError`."""
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise ConfigurationError(
            "notify_channel must be 1 to 63 characters of letters, digits, '_', '.' or '-', "
            f"got {channel!r}"
        )
    return channel


def default_channel(schema: str | None) -> str:
    """``dataqueue``, or ``dataqueue.<schema>`` so that queues in different schemas of
    one database do not wake each other (a schema name that does not fit a channel
    name is replaced by its CRC-32)."""
    if schema is None:
        return DEFAULT_CHANNEL
    channel = f"{DEFAULT_CHANNEL}.{schema}"
    if _CHANNEL.fullmatch(channel):
        return channel
    return f"{DEFAULT_CHANNEL}.{zlib.crc32(schema.encode()):08x}"


def listening_connection(engine: sa.Engine) -> psycopg.Connection[Any] | None:
    """A new psycopg 3 connection of ``engine``'s, outside its pool, in autocommit mode.

    None if the engine's driver is not psycopg 3 (no LISTEN support here). The pool's
    ``connect`` listeners (search_path, fork safety) have run on it.
    """
    if engine.dialect.driver != "psycopg":
        return None
    connection = engine.connect()
    try:
        connection.detach()  # closing it now closes the DB-API connection
        raw = connection.connection.dbapi_connection
        if not isinstance(raw, psycopg.Connection):
            connection.close()
            return None
        raw.autocommit = True
        return raw
    except BaseException:
        connection.close()
        raise


class PostgresWakeups:
    """One listening connection: see :class:`dataqueue.backends.base.Wakeups`.

    ``wait`` and ``close`` belong to one thread; ``interrupt`` may be called from any.
    """

    def __init__(self, connection: psycopg.Connection[Any], channel: str) -> None:
        self._connection = connection
        self._pid = os.getpid()
        # Written by interrupt() to end a wait from another thread.
        self._interrupt_reader, self._interrupt_writer = socket.socketpair()
        self._interrupt_reader.setblocking(False)
        self._interrupt_writer.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(connection.fileno(), selectors.EVENT_READ)
        self._selector.register(self._interrupt_reader, selectors.EVENT_READ)
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    @property
    def backend_pid(self) -> int:
        """The server process of the listening connection."""
        return self._connection.info.backend_pid

    def wait(self, timeout: float) -> list[str] | None:
        """Notification payloads received within ``timeout`` seconds ([]: none).

        None when :meth:`interrupt` ended the wait. Raises ``psycopg.Error`` when the
        connection is lost.
        """
        events = self._selector.select(timeout)
        if any(key.fileobj is self._interrupt_reader for key, _ in events):
            with contextlib.suppress(BlockingIOError):
                self._interrupt_reader.recv(64)
            return None
        if not events:
            return []
        # Readable: read what arrived without blocking (timeout=0 polls once).
        payloads = [n.payload for n in self._connection.notifies(timeout=0)]
        if self._connection.pgconn.status != psycopg.pq.ConnStatus.OK:
            # The server ended the session (e.g. pg_terminate_backend) and said so.
            raise psycopg.OperationalError("the listening connection was closed by the server")
        return payloads

    def interrupt(self) -> None:
        # BlockingIOError: an interrupt is already pending; OSError: closed.
        with contextlib.suppress(OSError):
            self._interrupt_writer.send(b"\0")

    def close(self) -> None:
        self._selector.close()
        self._interrupt_reader.close()
        self._interrupt_writer.close()
        if os.getpid() == self._pid:  # a forked child must not end the parent's session
            self._connection.close()
