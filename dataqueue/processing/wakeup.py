"""Wake-ups: a processor claims as soon as jobs become due, not at its next poll.

Two sources, both ending in the same call (``wake()``: "claim now", the loop's claim
request):

- **Pushed** (:class:`Listener`): the store tells listening processors when a
  statement made jobs due (PostgreSQL: LISTEN/NOTIFY, delivered on commit). One
  dedicated connection per processor, on the thread ``dataqueue-listener-<worker_id>``.
  A payload naming a job type this processor does not claim is ignored. When the
  connection is lost, the thread reconnects with backoff (the processor's shared
  :class:`~dataqueue.processing.outage.Outage` reports an outage once) and wakes
  the loop after each (re)connect, for what was enqueued while it was away.
  Polling stays the fallback throughout.
- **Timed**: the loop asks the store for the next future due time (``run_at``,
  ``next_attempt_at``, ``wait_until``) after a claim came back short, and sleeps
  until then or its next poll, whichever is first (see ``Processor._run_loop``).

The listener thread is a daemon (losing it loses nothing: polling goes on) and stops
on :meth:`Listener.stop`, which interrupts its wait.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dataqueue.backends.base import Backend, Wakeups
from dataqueue.processing.outage import BACKOFF_CAP, BACKOFF_START, Outage

logger = logging.getLogger("dataqueue.processor")

# A wait that ends now and then lets the thread notice a stop even if an interrupt
# were lost; wake-ups themselves end it at once.
_WAIT_SECONDS = 30.0


class Listener:
    """Listens for one processor until stopped; calls ``wake()`` on each relevant wake-up.

    ``job_types`` is the processor's claim filter (None: every type).
    """

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        *,
        job_types: tuple[str, ...] | None,
        wake: Callable[[], None],
        outage: Outage,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._job_types = None if job_types is None else frozenset(job_types)
        self._wake = wake
        self._outage = outage
        # _lock guards _wakeups (the connection in use), _stop and _thread.
        self._lock = threading.Lock()
        self._wakeups: Wakeups | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop,),
                name=f"dataqueue-listener-{self._worker_id}",
                daemon=True,
            )
            thread = self._thread
        thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection; waits up to 5 s for the thread."""
        with self._lock:
            self._stop.set()
            wakeups, thread = self._wakeups, self._thread
        if wakeups is not None:
            wakeups.interrupt()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                wakeups = self._backend.listen()
            except Exception as exc:
                failures += 1
                stop.wait(self._failed(exc, failures))
                continue
            if wakeups is None:
                logger.info(
                    "processor %s: this store cannot push wake-ups; polling only",
                    self._worker_id,
                    extra={"action": "polling_only", "worker_id": self._worker_id},
                )
                return
            if failures:
                logger.info(
                    "processor %s: listening for wake-ups again",
                    self._worker_id,
                    extra={"action": "listening_again", "worker_id": self._worker_id},
                )
                self._outage.succeeded()
            failures = 0
            self._wake()  # whatever became due while nobody listened
            try:
                self._listen(wakeups, stop)
            except Exception as exc:
                failures += 1
                stop.wait(self._failed(exc, failures))
            finally:
                self._close(wakeups)

    def _listen(self, wakeups: Wakeups, stop: threading.Event) -> None:
        with self._lock:
            if stop.is_set():
                return
            self._wakeups = wakeups
        while not stop.is_set():
            payloads = wakeups.wait(_WAIT_SECONDS)
            if payloads and self._relevant(payloads):
                self._wake()

    def _relevant(self, payloads: list[str]) -> bool:
        if self._job_types is None:
            return True
        return any(not p or p in self._job_types for p in payloads)

    def _failed(self, error: BaseException, failures: int) -> float:
        """Report (once per outage) and return the delay before reconnecting."""
        self._outage.failed(error)
        logger.debug(
            "processor %s: listening failed (%d): %s",
            self._worker_id,
            failures,
            error,
            extra={
                "action": "listen_failed",
                "worker_id": self._worker_id,
                "tries": failures,
                "error": str(error),
            },
        )
        # Its own backoff: the loop's successes reset the shared outage, and a store
        # that cannot listen while it answers queries must not be retried in a hot loop.
        return float(min(BACKOFF_CAP, BACKOFF_START * 2.0 ** min(failures - 1, 16)))

    def _close(self, wakeups: Wakeups) -> None:
        with self._lock:
            self._wakeups = None
        try:
            wakeups.close()
        except Exception:
            logger.debug(
                "could not close the listening connection (ignored)",
                exc_info=True,
                extra={"action": "listen_close_failed", "worker_id": self._worker_id},
            )
