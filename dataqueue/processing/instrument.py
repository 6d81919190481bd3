"""The instrumentation seam: what a processor reports to a metrics library, and when.

A processor calls one :class:`Instrumentation` at these points:

- ``claimed(count, seconds)``: after every claim statement that answered (the loop's
  ``Backend.advance`` that also stores completions, or a one-shot ``start()``'s claim);
  ``count`` may be 0 (an empty poll).
- ``job_started(job_type, wakeup_seconds)``: on the worker thread, just before a
  claimed job's handler runs. ``wakeup_seconds`` is the time since the wake-up (a
  pushed notification, or the listener (re)connecting) that made the loop claim this
  job; None when the job was claimed by a poll, a timed wake-up or a one-shot run.
- ``job_finished(job_type, outcome, reason, will_retry, run_seconds)``: once the store
  answered for the job's run. ``outcome`` is ``"completed"``, ``"failed"``,
  ``"waiting"`` (the handler parked the job in a wait) or ``"dropped"`` (not stored:
  the worker no longer owned the job, or the store refused even an escaped failure).
  ``reason`` is the :class:`~dataqueue.enums.FailureReason` value of a failure (else
  None); ``will_retry`` whether a failed job will run again; ``run_seconds`` the time
  from the handler's start to its outcome (a timeout's outcome: to the deadline).
- ``store_failed()``: a call to the store by one of the processor's threads (claim and
  store, heartbeat, wake-up listener) raised; each try during an outage counts.
- ``store_retried(count)``: ``count`` outcomes whose write failed were kept, to be
  written again after a backoff.

The default, :data:`NO_INSTRUMENTATION`, does nothing, so an uninstrumented processor
pays a handful of empty method calls per job. Calls come from several threads at once
(the loop, the worker threads, the heartbeat and listener threads): implementations
must be thread-safe and quick. An implementation that raises is logged (once per
method) and otherwise ignored: it never fails a job or stops the loop.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal, Protocol

logger = logging.getLogger("dataqueue.processor")

JobOutcome = Literal["completed", "failed", "waiting", "dropped"]


class Instrumentation(Protocol):
    """What a processor reports; pass one as ``create_processor(instrumentation=...)``.

    :class:`NoInstrumentation` implements every method as a no-op: subclass it to
    implement only some. ``dataqueue.contrib.prometheus.PrometheusMetrics`` is the
    bundled implementation.
    """

    def claimed(self, count: int, seconds: float) -> None:
        """A claim statement returned ``count`` jobs after ``seconds``."""

    def job_started(self, job_type: str, wakeup_seconds: float | None) -> None:
        """A handler is about to run; ``wakeup_seconds`` since the wake-up that led here."""

    def job_finished(
        self,
        job_type: str,
        outcome: JobOutcome,
        reason: str | None,
        will_retry: bool,
        run_seconds: float | None,
    ) -> None:
        """The store answered for a job's run (see the module docstring)."""

    def store_failed(self) -> None:
        """A call to the store raised."""

    def store_retried(self, count: int) -> None:
        """``count`` outcomes are kept to be written again after a backoff."""


class NoInstrumentation:
    """Reports nothing: the default, and a base class implementing every method."""

    def claimed(self, count: int, seconds: float) -> None:
        """Do nothing."""

    def job_started(self, job_type: str, wakeup_seconds: float | None) -> None:
        """Do nothing."""

    def job_finished(
        self,
        job_type: str,
        outcome: JobOutcome,
        reason: str | None,
        will_retry: bool,
        run_seconds: float | None,
    ) -> None:
        """Do nothing."""

    def store_failed(self) -> None:
        """Do nothing."""

    def store_retried(self, count: int) -> None:
        """Do nothing."""


#: The processor's default instrumentation.
NO_INSTRUMENTATION = NoInstrumentation()


class GuardedInstrumentation(NoInstrumentation):
    """Passes every call to ``inner``; logs what it raises (once per method), never raises.

    One lock guards the set of methods already reported.
    """

    def __init__(self, inner: Instrumentation) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._reported: set[str] = set()

    def claimed(self, count: int, seconds: float) -> None:
        try:
            self._inner.claimed(count, seconds)
        except Exception:
            self._raised("claimed")

    def job_started(self, job_type: str, wakeup_seconds: float | None) -> None:
        try:
            self._inner.job_started(job_type, wakeup_seconds)
        except Exception:
            self._raised("job_started")

    def job_finished(
        self,
        job_type: str,
        outcome: JobOutcome,
        reason: str | None,
        will_retry: bool,
        run_seconds: float | None,
    ) -> None:
        try:
            self._inner.job_finished(job_type, outcome, reason, will_retry, run_seconds)
        except Exception:
            self._raised("job_finished")

    def store_failed(self) -> None:
        try:
            self._inner.store_failed()
        except Exception:
            self._raised("store_failed")

    def store_retried(self, count: int) -> None:
        try:
            self._inner.store_retried(count)
        except Exception:
            self._raised("store_retried")

    def _raised(self, method: str) -> None:
        with self._lock:
            first = method not in self._reported
            self._reported.add(method)
        level = logging.ERROR if first else logging.DEBUG
        logger.log(
            level,
            "instrumentation %s.%s raised (ignored%s)",
            type(self._inner).__name__,
            method,
            "; later errors of this method are logged at DEBUG" if first else "",
            exc_info=True,
            extra={"action": "instrumentation_error", "method": method},
        )


def guarded(instrumentation: Instrumentation | None) -> Instrumentation:
    """What a processor calls: the no-op default for None, else ``instrumentation`` guarded."""
    if instrumentation is None:
        return NO_INSTRUMENTATION
    if not all(
        callable(getattr(instrumentation, name, None))
        for name in ("claimed", "job_started", "job_finished", "store_failed", "store_retried")
    ):
        raise TypeError(
            "instrumentation must implement claimed, job_started, job_finished, store_failed "
            f"and store_retried (see dataqueue.processing.instrument), got {instrumentation!r}"
        )
    return GuardedInstrumentation(instrumentation)
