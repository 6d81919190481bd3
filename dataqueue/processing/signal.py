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
        self._event = threading.Event()
        self._reason: str | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []

    @property
    def aborted(self) -> bool:
        """True once the job was aborted."""
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why the job was aborted, or None while it was not."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds (forever if None); True if aborted meanwhile."""
        return self._event.wait(timeout)

    def raise_if_aborted(self) -> None:
        """Raise :class:`JobAbortedError` if the job was aborted."""
        if self._event.is_set():
            raise JobAbortedError(self._reason)

    def on_abort(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` when the job is aborted (at once if it already was)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def abort(self, reason: str) -> None:
        """Abort: set the reason (first one wins), wake every ``wait``, run callbacks."""
        with self._lock:
            if self._event.is_set():
                return
            self._reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
