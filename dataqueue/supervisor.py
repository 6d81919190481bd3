"""The supervisor: periodic maintenance (reclaim, cleanup, token expiry).

One run executes, in this order, each task isolated from the others' failures:
reclaim stuck jobs (jobs whose worker stopped heartbeating, and jobs of workers that
do not heartbeat locked longer than ``stuck_jobs_timeout``), clean up old completed
jobs, clean up old events, expire timed-out tokens. Every task is a guarded statement,
so several supervisors (in several processes) may run at once. Background mode uses
one daemon thread ``dataqueue-supervisor-<n>`` (losing it at exit loses nothing); runs
never overlap.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs

from dataqueue import intervals
from dataqueue.backends.base import Backend
from dataqueue.errors import ConfigurationError
from dataqueue.hooks import EventHooks, report_error

logger = logging.getLogger("dataqueue.supervisor")

_serial = itertools.count(1)


@attrs.frozen
class SupervisorRunResult:
    """What one maintenance run did (a task that failed or is disabled counts 0).

    Attributes:
        reclaimed_jobs: Jobs of dead workers put back to pending (or failed for good
            when on their last attempt).
        cleaned_up_jobs: Completed jobs deleted.
        cleaned_up_events: Events deleted.
        expired_tokens: Tokens timed out (their waiting jobs resume with ``ok=False``).
    """

    reclaimed_jobs: int = 0
    cleaned_up_jobs: int = 0
    cleaned_up_events: int = 0
    expired_tokens: int = 0


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


class Supervisor:
    """Maintenance loop. Create it with ``queue.create_supervisor``.

    One run does, in this order, each task isolated from the others' failures:
    reclaim jobs of workers that stopped heartbeating (and of non-heartbeating
    workers locked longer than the stuck-job limit), delete old completed jobs,
    delete old events, expire timed-out tokens. A failing task is passed to
    ``on_error`` and the queue's ``error`` hook. Every task is a guarded statement,
    so several supervisors (in several processes or machines) may run at once.
    """

    def __init__(
        self,
        backend: Backend,
        hooks: EventHooks,
        *,
        interval_ms: float = 60000,
        stuck_jobs_timeout_minutes: float | None = None,
        stuck_jobs_timeout: float | dt.timedelta | None = None,
        cleanup_jobs_days_to_keep: int = 30,
        cleanup_events_days_to_keep: int = 30,
        cleanup_batch_size: int = 1000,
        reclaim_stuck_jobs: bool = True,
        expire_timed_out_tokens: bool = True,
        on_error: Callable[[BaseException], object] | None = None,
        verbose: bool = False,
    ) -> None:
        interval = intervals.milliseconds(interval_ms, "interval_ms", allow_zero=False)
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable, got {on_error!r}")
        self._backend = backend
        self._hooks = hooks
        self.interval_seconds = interval / 1000
        #: Limit for jobs of workers that do not heartbeat (upstream's Node.js processor).
        self.stuck_jobs_timeout_seconds = intervals.stuck_timeout_seconds(
            stuck_jobs_timeout_minutes,
            stuck_jobs_timeout,
            ("stuck_jobs_timeout_minutes", "stuck_jobs_timeout"),
        )
        # Zero or negative retention disables that cleanup, as upstream.
        self.cleanup_jobs_days_to_keep = _int(
            cleanup_jobs_days_to_keep, "cleanup_jobs_days_to_keep", -(2**31)
        )
        self.cleanup_events_days_to_keep = _int(
            cleanup_events_days_to_keep, "cleanup_events_days_to_keep", -(2**31)
        )
        self.cleanup_batch_size = _int(cleanup_batch_size, "cleanup_batch_size", 1)
        self.reclaim_enabled = _bool(reclaim_stuck_jobs, "reclaim_stuck_jobs")
        self.expire_enabled = _bool(expire_timed_out_tokens, "expire_timed_out_tokens")
        self._on_error = on_error
        self._log_level = logging.INFO if verbose else logging.DEBUG
        self._lock = threading.Lock()  # guards _thread; _stop is an Event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = f"dataqueue-supervisor-{next(_serial)}"

    def start(self) -> SupervisorRunResult:
        """Run every enabled task once, in order, and return the counts."""
        counts = {
            "reclaimed_jobs": self._task(
                "reclaim stuck jobs",
                self.reclaim_enabled,
                lambda: self._backend.reclaim_stuck_jobs(self.stuck_jobs_timeout_seconds),
            ),
            "cleaned_up_jobs": self._task(
                "clean up old jobs",
                self.cleanup_jobs_days_to_keep > 0,
                lambda: self._backend.cleanup_old_jobs(
                    self.cleanup_jobs_days_to_keep, self.cleanup_batch_size
                ),
            ),
            "cleaned_up_events": self._task(
                "clean up old job events",
                self.cleanup_events_days_to_keep > 0,
                lambda: self._backend.cleanup_old_job_events(
                    self.cleanup_events_days_to_keep, self.cleanup_batch_size
                ),
            ),
            "expired_tokens": self._task(
                "expire timed-out tokens",
                self.expire_enabled,
                self._backend.expire_timed_out_tokens,
            ),
        }
        return SupervisorRunResult(**counts)

    def start_in_background(self) -> None:
        """Run now, then every ``interval_ms`` after each run ends; no-op if running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stop,), name=self._name, daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop scheduling runs; returns at once (a run in progress finishes)."""
        self._stop.set()

    def stop_and_drain(self, timeout_ms: float = 30000) -> None:
        """Stop, then wait up to ``timeout_ms`` for a run in progress to finish."""
        self.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(timeout_ms, 0) / 1000)

    def is_running(self) -> bool:
        """True while the background loop is scheduled."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def _loop(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.start()
                stop.wait(self.interval_seconds)
        except BaseException as exc:  # a bug: say so, and let is_running() tell the truth
            stop.set()
            report_error(
                exc, self._on_error, logger, "Supervisor loop died:", extra={"action": "loop_died"}
            )
            self._hooks.emit("error", exc)

    def _task(self, name: str, enabled: bool, run: Callable[[], int]) -> int:
        if not enabled:
            return 0
        try:
            count = run()
        except Exception as exc:
            report_error(
                exc,
                self._on_error,
                logger,
                f"Supervisor maintenance error ({name}):",
                extra={"action": "maintenance_failed", "task": name},
            )
            self._hooks.emit("error", exc)
            return 0
        if count:
            logger.log(
                self._log_level,
                "supervisor: %s: %d",
                name,
                count,
                extra={"action": "maintenance_done", "task": name, "count": count},
            )
        return count
