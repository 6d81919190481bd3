"""One job's run: its abort signal, its deadline, and who settles it first.

A job settles exactly once: by its handler returning or raising, or by its deadline
(the watchdog). Whatever comes second is dropped, so a handler that keeps running
after its timeout cannot complete the job (W-TO-1).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dataqueue.backends.base import ClaimedJob
from dataqueue.logs import job_fields
from dataqueue.processing.invoke import Outcome
from dataqueue.processing.signal import AbortSignal

logger = logging.getLogger("dataqueue.processor")

TimeoutCallback = Callable[[], Any]

#: An idle watchdog thread exits after this long (a processor used once, e.g. by the
#: dashboard's "Process jobs" button, must not leave a thread behind).
_IDLE_EXIT_SECONDS = 2.0


class Execution:
    """State of one claimed job while a worker runs it. ``lock`` guards settling."""

    def __init__(
        self,
        job: ClaimedJob,
        deliver: Callable[[Outcome], None],
        woken_at: float | None = None,
    ) -> None:
        self.job = job
        #: perf_counter() of the wake-up that led to the claim (None: a poll, a one-shot).
        self.woken_at = woken_at
        #: perf_counter() when the run started (set by the processor), for its run time.
        self.started_at: float | None = None
        self.signal = AbortSignal()
        self.on_timeout: TimeoutCallback | None = None
        self.thread: threading.Thread | None = None
        self._deliver = deliver
        self._lock = threading.Lock()
        self._settled = False
        self.armed_ms = 0  # duration of the last arming, reported in the timeout message
        self.armed = False  # a deadline was set at least once (disarm has work to do)
        self.abandoned = False  # timed out while its handler still runs
        # The job's memo of completed steps and waits (__wait_<n>), shared with ctx.
        self.step_data: dict[str, Any] = dict(job.step_data or {})

    @property
    def has_timeout(self) -> bool:
        return self.job.timeout_ms is not None and self.job.timeout_ms > 0

    def settle(self, outcome: Outcome) -> bool:
        """Deliver ``outcome`` unless the job already settled; True if delivered."""
        with self._lock:
            if self._settled:
                return False
            self._settled = True
        if self.started_at is not None:
            outcome.run_seconds = time.perf_counter() - self.started_at
        self._deliver(outcome)
        return True

    @property
    def settled(self) -> bool:
        return self._settled


class Watchdog:
    """Fires job deadlines from one thread (``dataqueue-timeouts-<worker_id>``).

    ``arm`` (re)sets a job's deadline; the newest arming wins. On expiry the job's
    ``on_timeout`` callback may extend it (a positive number of ms); otherwise
    ``expire(execution)`` is called. One lock guards the heap.
    """

    def __init__(
        self,
        name: str,
        expire: Callable[[Execution], None],
        extend: Callable[[Execution, int], None],
    ) -> None:
        self._name = name
        self._expire = expire
        self._extend = extend
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Execution]] = []
        self._generation: dict[int, int] = {}  # id(execution) -> latest arming
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, execution: Execution, ms: int) -> None:
        """Fire ``ms`` milliseconds from now (replacing any earlier deadline)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            generation = next(self._counter)
            self._generation[id(execution)] = generation
            execution.armed_ms = ms
            execution.armed = True
            heapq.heappush(self._heap, (time.monotonic() + ms / 1000, generation, execution))
            self._cond.notify()

    def disarm(self, execution: Execution) -> None:
        """Forget the job's deadline (it settled)."""
        if not execution.armed:  # never armed (no timeout): nothing to forget
            return
        with self._cond:
            self._generation.pop(id(execution), None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _next_due(self) -> Execution | None:
        with self._cond:
            while not self._closed:
                while self._heap and self._generation.get(id(self._heap[0][2])) != self._heap[0][1]:
                    heapq.heappop(self._heap)  # stale arming
                if not self._heap:
                    if not self._cond.wait(_IDLE_EXIT_SECONDS) and not self._heap:
                        # Nothing to watch: let the thread end; arm() starts a new one.
                        self._thread = None
                        return None
                    continue
                due, _, execution = self._heap[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._generation.pop(id(execution), None)
                return execution
            return None

    def _run(self) -> None:
        while (execution := self._next_due()) is not None:
            if execution.settled:
                continue
            try:
                self._fire(execution)
            except Exception:
                logger.exception(
                    "timeout handling of job %s failed",
                    execution.job.id,
                    extra=job_fields(execution.job, None, "timeout_handling_failed"),
                )

    def _fire(self, execution: Execution) -> None:
        extension = 0
        if execution.on_timeout is not None:
            try:
                extension = _positive_ms(execution.on_timeout())
            except Exception:
                logger.exception(
                    "on_timeout callback of job %s raised",
                    execution.job.id,
                    extra=job_fields(execution.job, None, "on_timeout_raised"),
                )
        if extension > 0:
            self._extend(execution, extension)
            self.arm(execution, extension)
        else:
            self._expire(execution)


def _positive_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if value > 0 else 0
