"""Wake-ups on Redis: pub/sub on ``P wakeup``, and the due time of scheduled jobs.

Publishing: the Lua scripts ``PUBLISH`` the job type on ``P wakeup`` (the key prefix
followed by ``wakeup``) when they make a job ready (``make_ready`` in
``scripts/_lib.lua``), once per type per script run. Redis delivers a message to the
subscribers connected at that moment and keeps nothing: a processor whose connection
is down misses it, which is why the processor's listener claims after every
(re)connect (:mod:`dataqueue.processing.wakeup`).

Listening (:class:`PubSubWakeups`, one per processor): one dedicated connection made
from the client's pool settings (its ``connection_class`` and ``connection_kwargs``:
the same host or unix socket, TLS, credentials, database and protocol) in a private
pool, so the user's pool never holds it and closing it never touches the user's client.
redis-py's own retries are off on it: a lost connection raises from ``wait`` rather
than being reconnected quietly, which would hide the wake-ups missed meanwhile; the
processor then opens a new one with backoff. A client without a ``connection_pool``
(Redis Cluster) cannot listen: :meth:`RedisWakeups.listen` returns None and processors
poll.

Interrupting a wait: a socket pair. ``wait`` blocks in ``select`` on the pub/sub socket
and the pair's read end; :meth:`PubSubWakeups.interrupt` writes one byte to the other
end. That is local, so it ends a wait at once from any thread even while Redis is
unreachable (publishing to a private channel instead would need the server, and a
processor stopping during an outage would hang in it); a byte written while no wait
runs ends the next one.

Dead connections: a peer that vanishes without closing the TCP connection sends no
EOF. After ``health_check_seconds`` without hearing from the server, ``wait`` sends a
``PING`` on the connection; one unanswered for as long again counts as a lost
connection.

Fork: a forked child must not read the parent's subscription nor end it; ``wait``
raises there (the child's processor opens its own) and ``interrupt``/``close`` leave
the parent's connection alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from collections.abc import Sequence
from typing import Any

from dataqueue.backends.redis._base import RedisPart
from dataqueue.backends.redis.settings import require_redis

logger = logging.getLogger("dataqueue.redis")

#: Silence after which ``wait`` pings the server, and the time a ping has to be answered.
HEALTH_CHECK_SECONDS = 20.0

#: How long the subscription's confirmation may take when listening starts.
_SUBSCRIBE_SECONDS = 10.0

#: How long the rest of a message whose first bytes arrived may take.
_READ_SECONDS = 5.0

#: Entries of each time index ``next_due`` looks at when filtering by job type.
NEXT_DUE_HEAD = 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def listening_pool(client: Any) -> Any | None:
    """A new, empty redis-py connection pool with ``client``'s connection settings and
    redis-py's retries off, or None if ``client`` has no ``connection_pool``."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return None
    redis = require_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    settings = dict(pool.connection_kwargs)
    settings["retry"] = Retry(NoBackoff(), 0)
    return redis.ConnectionPool(connection_class=pool.connection_class, **settings)


def _socket_of(connection: Any) -> socket.socket:
    """The socket under a connected redis-py connection.

    redis-py has no public name for it (``_sock`` in every version since 3.0); ``wait``
    selects on it together with the interrupt pair.
    """
    sock: socket.socket | None = getattr(connection, "_sock", None)
    if sock is None:
        raise require_redis().exceptions.ConnectionError("the listening connection is closed")
    return sock


class PubSubWakeups:
    """One subscription to a queue's wake-up channel: see
    :class:`dataqueue.backends.base.Wakeups`.

    ``wait`` and ``close`` belong to one thread; ``interrupt`` may be called from any.
    Build it with :meth:`open`.
    """

    def __init__(
        self, pool: Any, pubsub: Any, *, health_check_seconds: float = HEALTH_CHECK_SECONDS
    ) -> None:
        self._pool = pool
        self._pubsub = pubsub
        self._connection = pubsub.connection
        self._socket = _socket_of(self._connection)
        self._pid = os.getpid()
        self._health_check_seconds = health_check_seconds
        self._heard_at = time.monotonic()
        self._ping_sent_at: float | None = None
        # Written by interrupt() to end a wait from another thread.
        self._interrupt_reader, self._interrupt_writer = socket.socketpair()
        self._interrupt_reader.setblocking(False)
        self._interrupt_writer.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._socket, selectors.EVENT_READ)
        self._selector.register(self._interrupt_reader, selectors.EVENT_READ)

    @classmethod
    def open(
        cls, client: Any, channel: str, *, health_check_seconds: float = HEALTH_CHECK_SECONDS
    ) -> PubSubWakeups | None:
        """Subscribe to ``channel`` on a new connection with ``client``'s settings.

        Returns once Redis confirmed the subscription, so every message published
        afterwards is received. None if ``client`` has no connection pool to copy
        settings from. Raises what connecting raises.
        """
        pool = listening_pool(client)
        if pool is None:
            return None
        redis = require_redis()
        pubsub = redis.Redis(connection_pool=pool).pubsub()
        try:
            pubsub.subscribe(channel)
            reply = pubsub.get_message(timeout=_SUBSCRIBE_SECONDS)
            if reply is None or _text(reply["type"]) != "subscribe":
                raise redis.exceptions.ConnectionError(
                    f"Redis did not confirm the subscription to {channel!r} (got {reply!r})"
                )
            wakeups = cls(pool, pubsub, health_check_seconds=health_check_seconds)
        except BaseException:
            pubsub.close()
            pool.disconnect()
            raise
        logger.debug(
            "listening for wake-ups on %r",
            channel,
            extra={"action": "listening", "channel": channel},
        )
        return wakeups

    def wait(self, timeout: float) -> list[str] | None:
        """Job types published within ``timeout`` seconds (``[]``: none).

        None when :meth:`interrupt` ended the wait. Raises ``redis.ConnectionError``
        when the connection is lost (closed by the server, e.g. ``CLIENT KILL``, or a
        ping unanswered), and in a process forked after it was opened.
        """
        if os.getpid() != self._pid:
            raise require_redis().exceptions.ConnectionError(
                "the listening connection belongs to the parent process"
            )
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            now = time.monotonic()
            self._check_connection()
            self._check_health(now)
            # Bytes already read (redis-py's buffer, TLS records) do not wake select.
            buffered = self._connection.can_read(timeout=0)
            wait_for = 0.0 if buffered else min(deadline, self._next_health_check()) - now
            ready = self._selector.select(max(wait_for, 0.0))
            if any(key.fileobj is self._interrupt_reader for key, _ in ready):
                with contextlib.suppress(BlockingIOError):
                    self._interrupt_reader.recv(64)
                return None
            if buffered or ready:
                payloads = self._read_available()
                if payloads:
                    return payloads
            if time.monotonic() >= deadline:
                return []

    def _read_available(self) -> list[str]:
        """The payloads of the messages that arrived (raises if the server closed)."""
        payloads: list[str] = []
        while self._connection.can_read(timeout=0):
            message = self._pubsub.get_message(timeout=_READ_SECONDS)
            self._heard_at = time.monotonic()
            self._ping_sent_at = None
            if message is not None and _text(message["type"]) == "message":
                payloads.append(_text(message["data"]))
        return payloads

    def _check_connection(self) -> None:
        """Raise if the connection is no longer the one subscribed at first.

        redis-py reconnects a pub/sub connection by itself in a few cases (e.g. while
        raising a read error); messages published meanwhile were missed, so this
        counts as a lost connection, and ``can_read`` must not reconnect it either.
        """
        if getattr(self._connection, "_sock", None) is not self._socket:
            raise require_redis().exceptions.ConnectionError(
                "the listening connection was closed or re-established"
            )

    def _next_health_check(self) -> float:
        """When :meth:`_check_health` has something to do next (monotonic time)."""
        since = self._heard_at if self._ping_sent_at is None else self._ping_sent_at
        return since + self._health_check_seconds

    def _check_health(self, now: float) -> None:
        """Ping after a silence; raise if a ping went unanswered."""
        if now < self._next_health_check():
            return
        if self._ping_sent_at is not None:
            raise require_redis().exceptions.ConnectionError(
                f"Redis did not answer a PING on the listening connection within "
                f"{self._health_check_seconds:g} s"
            )
        self._pubsub.ping()
        self._ping_sent_at = now

    def interrupt(self) -> None:
        """End a :meth:`wait` in progress, or the next one, at once; from any thread.

        Needs no server. Does nothing in a forked child, nor after :meth:`close`.
        """
        if os.getpid() != self._pid:
            return  # the pair is shared with the parent: this would end its wait
        # BlockingIOError: an interrupt is already pending; OSError: closed.
        with contextlib.suppress(OSError):
            self._interrupt_writer.send(b"\0")

    def close(self) -> None:
        """Close the listening connection and its private pool (never the client's).

        In a forked child only the interrupt pair is closed: the connection is the
        parent's (redis-py, when it collects it, closes only the child's descriptor).
        """
        self._selector.close()
        self._interrupt_reader.close()
        self._interrupt_writer.close()
        if os.getpid() == self._pid:  # a forked child must not end the parent's session
            self._pubsub.close()
            self._pool.disconnect()


class RedisWakeups(RedisPart):
    """The wake-up methods of :class:`~dataqueue.backends.redis.backend.RedisBackend`."""

    def listen(self) -> PubSubWakeups | None:
        """A subscription to ``P wakeup`` on a connection of its own (see the module),
        or None for a client without a connection pool (Redis Cluster)."""
        return PubSubWakeups.open(self.client, self.keys.wakeup)

    def next_due_in(self, job_types: Sequence[str] | None) -> float | None:
        """Seconds until the earliest scheduled job of ``job_types`` becomes due, by the
        Redis server's clock; None if none is scheduled.

        With a type filter the answer may be earlier than the truth (a lower bound)
        when many jobs of other types are scheduled before it: see
        ``scripts/next_due.lua``. Costs O(log n + 200) whatever is scheduled.
        """
        if job_types is not None and not job_types:
            return None
        millis = self._run("next_due", NEXT_DUE_HEAD, *(job_types or ()))
        return None if millis is None else int(millis) / 1000.0
