"""``async def`` handlers: one event loop per processor, in a thread of its own.

A job whose handler returns an awaitable keeps its worker thread (so ``concurrency``
counts async jobs like any other) while the coroutine runs on the processor's loop.
Aborting the job (its timeout, or the processor being told to stop it) cancels the
task: the coroutine sees ``asyncio.CancelledError`` at its next ``await``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable
from typing import Any

from dataqueue.errors import JobAbortedError
from dataqueue.processing.signal import AbortSignal


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class EventLoopThread:
    """An asyncio loop running in a daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name=self._name, daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def run(self, awaitable: Awaitable[Any], signal: AbortSignal) -> Any:
        """Run ``awaitable`` on the loop and block the calling thread for its result.

        Raises what the coroutine raises; :class:`JobAbortedError` when ``signal``
        aborted it.
        """
        loop = self._running_loop()
        future = asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop)
        signal.on_abort(future.cancel)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise JobAbortedError(signal.reason) from None

    def close(self) -> None:
        """Stop the loop (tasks still running are cancelled) and wait for its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not threading.current_thread():
                thread.join(10)
