"""Heartbeats: a processor keeps the locks of its jobs fresh, and recovers dead workers'.

Every ``interval`` seconds one statement registers the worker (``dataqueue_workers``)
and refreshes ``locked_at`` of every job it holds: claimed, running, or finished but
not yet stored, whether or not the job has a ``timeout_ms``. A live job is therefore
never older than ``interval``, and ``reclaim`` only takes jobs whose worker stopped
heartbeating for ``timeout`` seconds — a crashed process, never a slow handler.
Right after, the same thread reclaims such abandoned jobs of any worker, so recovery
does not wait for a supervisor.

Thread: ``dataqueue-heartbeat-<worker_id>``, a daemon: when the process dies, the
heartbeats stop, which is exactly what lets other workers recover its jobs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dataqueue.backends.base import Backend
from dataqueue.processing.outage import Outage

logger = logging.getLogger("dataqueue.processor")

#: Defaults (seconds): a SIGKILLed worker's jobs are due again within about
#: ``DEFAULT_TIMEOUT + DEFAULT_INTERVAL``.
DEFAULT_INTERVAL = 5.0
DEFAULT_TIMEOUT = 20.0
#: A timeout must cover this many intervals, so a late beat or two never looks like death.
MIN_BEATS_PER_TIMEOUT = 3


class Heartbeat:
    """Beats for one processor until stopped.

    ``held()`` returns the ids to refresh; ``on_lost(ids)`` is told about held jobs the
    store says this worker no longer owns; ``on_reclaimed(n)`` about abandoned jobs
    that became due again.
    """

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        *,
        interval: float,
        timeout: float,
        held: Callable[[], list[int]],
        on_lost: Callable[[list[int]], None],
        on_reclaimed: Callable[[int], None],
        outage: Outage,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._interval = interval
        self._timeout = timeout
        self._held = held
        self._on_lost = on_lost
        self._on_reclaimed = on_reclaimed
        self._outage = outage
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> None:
        """Register the worker now (raises what the store raises)."""
        self._backend.heartbeat(self._worker_id, [], self._timeout)

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._stop,),
            name=f"dataqueue-heartbeat-{self._worker_id}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def beat(self) -> None:
        """Refresh held locks and reclaim abandoned jobs once (raises store errors)."""
        held = self._held()
        owned = set(self._backend.heartbeat(self._worker_id, held, self._timeout))
        missing = [job_id for job_id in held if job_id not in owned]
        if missing:
            # Jobs stored or released while the statement ran are not lost.
            still_held = set(self._held())
            lost = [job_id for job_id in missing if job_id in still_held]
            if lost:
                self._on_lost(lost)
        reclaimed = self._backend.reclaim_abandoned_jobs()
        if reclaimed:
            self._on_reclaimed(reclaimed)

    def _run(self, stop: threading.Event) -> None:
        delay = self._interval
        while not stop.wait(delay):
            try:
                self.beat()
            except Exception as exc:
                # Retry sooner than the interval: a missed beat eats into the timeout.
                delay = min(self._interval, self._outage.failed(exc))
                continue
            self._outage.succeeded()
            delay = self._interval
