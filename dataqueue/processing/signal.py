"""Cooperative cancellation handed to handlers as ``signal``."""

from __future__ import annotations

import threading
from collections.abc import Callable

from dataqueue.errors import JobAbortedError


class AbortSignal:
    """Tells a handler that its job was aborted (for example because it timed out).

    Python threads cannot be killed, so a handler that may run long should check
    ``signal.aborted`` (or call ``raise_if_aborted()``) and stop; ``wait(seconds)`` is
    a sleep that ends early on abort. An ``async def`` handler is cancelled instead:
    its task gets ``asyncio.CancelledError`` at its next ``await``.
    """

    def __init__(self) -> None:
        # One is made per claimed job and most are never waited on or aborted, so the
        # Event (a Condition and its lock) and the callback list are made on first use.
        self._event: threading.Event | None = None
        self._reason: str | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] | None = None

    def _get_event(self) -> threading.Event:
        with self._lock:
            if self._event is None:
                self._event = threading.Event()
                if self._reason is not None:
                    self._event.set()
            return self._event

    @property
    def aborted(self) -> bool:
        """True once the job was aborted."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why the job was aborted, or None while it was not."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds (forever if None); True if aborted meanwhile."""
        if self._reason is not None:
            return True
        return self._get_event().wait(timeout)

    def raise_if_aborted(self) -> None:
        """Raise :class:`JobAbortedError` if the job was aborted."""
        reason = self._reason
        if reason is not None:
            raise JobAbortedError(reason)

    def on_abort(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` when the job is aborted (at once if it already was)."""
        with self._lock:
            if self._reason is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback()

    def abort(self, reason: str) -> None:
        """Abort: set the reason (first one wins), wake every ``wait``, run callbacks."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            if self._event is not None:
                self._event.set()
            callbacks, self._callbacks = self._callbacks or [], None
        for callback in callbacks:
            callback()
