"""Backoff and report-once for background loops that talk to the store.

While the database is away, every poll would fail; reporting each failure floods the
logs (and ``on_error``) and hammering the server slows its recovery. An
:class:`Outage` counts consecutive failures shared by a processor's threads: the
first failure of an outage is reported, the delay before the next try doubles up to
``cap`` seconds, and the first success after an outage logs that the store is back.
One lock guards the counters.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

logger = logging.getLogger("dataqueue.processor")

#: First and largest delay (seconds) between tries while the store fails.
BACKOFF_START = 0.25
BACKOFF_CAP = 30.0


class Outage:
    """Consecutive store failures of one processor (or one one-shot run)."""

    def __init__(
        self,
        report: Callable[[BaseException], None],
        *,
        start: float = BACKOFF_START,
        cap: float = BACKOFF_CAP,
        on_failure: Callable[[], None] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._report = report
        self._worker_id = worker_id  # named in the log records
        self._on_failure = on_failure  # told of every failure (metrics), reported or not
        self._start = start
        self._cap = cap
        self._lock = threading.Lock()
        self._failures = 0

    @property
    def ongoing(self) -> bool:
        return self._failures > 0

    def failed(self, error: BaseException) -> float:
        """Count a failure; report it if it starts an outage. Returns seconds to wait."""
        with self._lock:
            self._failures += 1
            failures = self._failures
        if self._on_failure is not None:
            self._on_failure()
        if failures == 1:
            self._report(error)
        else:
            logger.debug(
                "store still failing (%d tries): %s",
                failures,
                error,
                extra={
                    "action": "store_failing",
                    "worker_id": self._worker_id,
                    "tries": failures,
                    "error": str(error),
                },
            )
        delay: float = min(self._cap, self._start * 2.0 ** min(failures - 1, 16))
        return delay * (0.5 + random.random() / 2)  # jitter: processors do not retry in step

    def succeeded(self) -> None:
        """Count a success; log the end of an outage."""
        if not self._failures:
            return
        with self._lock:
            failures, self._failures = self._failures, 0
        if failures:
            logger.warning(
                "store reachable again after %d failed tries",
                failures,
                extra={
                    "action": "store_recovered",
                    "worker_id": self._worker_id,
                    "tries": failures,
                },
            )
