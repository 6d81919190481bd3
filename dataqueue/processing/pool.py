"""Worker threads that run executions from a queue."""

from __future__ import annotations

import queue as queue_module
import threading
from collections.abc import Callable

from dataqueue.processing.execution import Execution


class WorkerPool:
    """Threads ``<name>-<n>`` running executions in submission order.

    Grows by one thread when a handler is abandoned after its timeout, so the slot stays
    usable while the stuck thread finishes on its own. ``take_queued`` removes the
    executions no thread has started, for a shutdown that gives them back.
    """

    def __init__(self, name: str, size: int, run: Callable[[Execution], None]) -> None:
        self._name = name
        self._run = run
        self._queue: queue_module.SimpleQueue[Execution | None] = queue_module.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._serial = 0
        for _ in range(size):
            self.add_thread()

    def add_thread(self) -> None:
        with self._lock:
            self._serial += 1
            self._threads += 1
            name = f"{self._name}-{self._serial}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def submit(self, execution: Execution) -> None:
        self._queue.put(execution)

    def take_queued(self) -> list[Execution]:
        """Remove and return every execution that no thread has started yet."""
        taken: list[Execution] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue_module.Empty:
                return taken
            if item is None:  # a shutdown sentinel: keep it for the threads
                self._queue.put(None)
                return taken
            taken.append(item)

    def shutdown(self) -> None:
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._queue.put(None)

    def _work(self) -> None:
        while (execution := self._queue.get()) is not None:
            execution.thread = threading.current_thread()
            self._run(execution)
            if execution.abandoned:
                break  # a replacement took this thread's place when the job timed out
        with self._lock:
            self._threads -= 1
