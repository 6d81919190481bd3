"""The ``ctx`` handed to handlers: progress, output, lock extension, timeouts."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from dataqueue.errors import InvalidJobError
from dataqueue.payload import encode_json
from dataqueue.processing.execution import Execution, TimeoutCallback

if TYPE_CHECKING:
    from dataqueue.processing.processor import Processor

logger = logging.getLogger("dataqueue.processor")


class JobContext:
    """What a running handler can do besides computing its result.

    Writes (progress, output, prolong) are best-effort: a database error is logged,
    not raised. They only reach the job while this worker still owns it, so a handler
    that outlived its timeout cannot change the job any more (W-TO-1, W-LOCK-1).
    """

    def __init__(self, processor: Processor, execution: Execution) -> None:
        self._processor = processor
        self._execution = execution
        self.output_json: str | None = None  # the last set_output value, encoded

    @property
    def job_id(self) -> int:
        return self._execution.job.id

    @property
    def job_type(self) -> str:
        return self._execution.job.job_type

    @property
    def attempts(self) -> int:
        """Attempts so far, including this one (1 on the first run)."""
        return self._execution.job.attempts

    @property
    def output_was_set(self) -> bool:
        return self.output_json is not None

    def prolong(self, ms: int | None = None) -> None:
        """Push the deadline to ``ms`` (default: the job's ``timeout_ms``) from now.

        Also refreshes the job's lock so ``reclaim_stuck_jobs`` leaves it alone, and
        writes a ``prolonged`` event. No-op for jobs without a timeout or ``ms <= 0``.
        """
        execution = self._execution
        if not execution.has_timeout:
            logger.debug("prolong() ignored: job %s has no timeout", self.job_id)
            return
        duration = execution.job.timeout_ms if ms is None else ms
        if duration is None or duration <= 0:
            return
        self._processor.extend_deadline(execution, int(duration))

    def on_timeout(self, callback: TimeoutCallback) -> None:
        """Call ``callback()`` when the deadline passes; a positive number it returns
        extends the deadline by that many ms. Replaces an earlier callback. No-op for
        jobs without a timeout."""
        if self._execution.has_timeout:
            self._execution.on_timeout = callback

    def set_progress(self, percent: float) -> None:
        """Record progress 0..100, rounded half up; emits ``job:progress``.

        Raises :class:`InvalidJobError` (a ValueError) outside 0..100 or for NaN.
        """
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise InvalidJobError(f"Progress must be between 0 and 100, got {percent!r}")
        if math.isnan(percent) or not 0 <= percent <= 100:
            raise InvalidJobError(f"Progress must be between 0 and 100, got {percent!r}")
        rounded = math.floor(percent + 0.5)
        self._processor.write_best_effort(
            "progress",
            lambda backend, worker: backend.update_progress(worker, self.job_id, rounded),
        )
        self._processor.emit("job:progress", {"job_id": self.job_id, "progress": rounded})

    def set_output(self, data: Any) -> None:
        """Store ``data`` (JSON) as the job's output now; it also wins over the value
        the handler returns. Emits ``job:output``. Each call replaces the last."""
        encoded = encode_json(data, what="output")
        self.output_json = encoded
        self._processor.write_best_effort(
            "output", lambda backend, worker: backend.update_output(worker, self.job_id, encoded)
        )
        self._processor.emit("job:output", {"job_id": self.job_id, "output": data})
