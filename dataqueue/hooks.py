"""In-process event hooks (``queue.on("job:completed", listener)``).

Listeners run synchronously in the thread that emits, in registration order. A
listener that raises is logged under ``dataqueue.hooks`` and never breaks the code
that emitted (differs from upstream, W-EV-4). Emitting an event nobody listens to
does nothing. One lock guards the listener lists; listeners are called outside it,
so a listener may register or remove listeners.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from dataqueue.errors import InvalidJobError

logger = logging.getLogger("dataqueue.hooks")

#: Every event name a queue emits.
EVENT_NAMES = frozenset(
    {
        "job:added",
        "job:processing",
        "job:completed",
        "job:failed",
        "job:cancelled",
        "job:retried",
        "job:waiting",
        "job:progress",
        "job:output",
        "error",
    }
)

Listener = Callable[[Any], object]


def _check_event(event: str) -> None:
    if event not in EVENT_NAMES:
        raise InvalidJobError(f"unknown event {event!r}; expected one of {sorted(EVENT_NAMES)}")


class EventHooks:
    """A small thread-safe event emitter with isolated listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Each entry is (listener, once). Lists are replaced, never mutated, so emit can
        # iterate a snapshot without holding the lock.
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}

    def on(self, event: str, listener: Listener) -> None:
        """Call ``listener(payload)`` every time ``event`` is emitted."""
        self._add(event, listener, once=False)

    def once(self, event: str, listener: Listener) -> None:
        """Call ``listener(payload)`` the next time ``event`` is emitted, then forget it."""
        self._add(event, listener, once=True)

    def off(self, event: str, listener: Listener) -> None:
        """Remove the first registration of exactly ``listener`` for ``event``, if any."""
        _check_event(event)
        with self._lock:
            current = self._listeners.get(event, [])
            for index, (registered, _) in enumerate(current):
                if registered is listener:
                    self._listeners[event] = current[:index] + current[index + 1 :]
                    return

    def remove_all_listeners(self, event: str | None = None) -> None:
        """Remove every listener of ``event``, or of all events when ``event`` is None."""
        if event is not None:
            _check_event(event)
        with self._lock:
            if event is None:
                self._listeners.clear()
            else:
                self._listeners.pop(event, None)

    def has_listeners(self, event: str) -> bool:
        """Whether anything listens to ``event`` (lets callers skip building payloads)."""
        return bool(self._listeners.get(event))

    def emit(self, event: str, payload: Any) -> None:
        """Call the listeners of ``event``; exceptions are logged, never raised."""
        listeners = self._listeners.get(event)
        if not listeners:
            return
        if any(once for _, once in listeners):
            with self._lock:
                current = self._listeners.get(event, [])
                self._listeners[event] = [entry for entry in current if not entry[1]]
        for listener, _ in listeners:
            try:
                listener(payload)
            except Exception:
                logger.exception(
                    "listener %r for %r raised",
                    listener,
                    event,
                    extra={"action": "listener_raised", "event": event},
                )

    def _add(self, event: str, listener: Listener, *, once: bool) -> None:
        _check_event(event)
        if not callable(listener):
            raise InvalidJobError(f"listener for {event!r} must be callable, got {listener!r}")
        with self._lock:
            self._listeners[event] = [*self._listeners.get(event, []), (listener, once)]


ErrorCallback = Callable[[BaseException], object]


def report_error(
    error: BaseException,
    on_error: ErrorCallback | None,
    log: logging.Logger,
    default_message: str,
    *,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Hand a loop-level error to ``on_error``, or log it with ``default_message``.

    A raising ``on_error`` is logged, never propagated. (Emitting the ``error`` event is
    the caller's choice: loop-level errors of processors and supervisors go to both,
    handler failures to neither; they become ``job:failed``.) ``extra``: the log
    record's fields (see :mod:`dataqueue.logs`).
    """
    fields = dict(extra or {})
    if on_error is None:
        log.error("%s %s", default_message, error, exc_info=error, extra=fields)
        return
    try:
        on_error(error)
    except Exception:
        log.exception("on_error callback raised", extra={**fields, "action": "on_error_raised"})
