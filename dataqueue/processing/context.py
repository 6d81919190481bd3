"""The ``ctx`` handed to handlers: progress, output, lock extension, timeouts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dataqueue.durations import wait_duration
from dataqueue.errors import InvalidJobError, WaitSignal
from dataqueue.logs import job_fields
from dataqueue.payload import encode_json
from dataqueue.processing.execution import Execution, TimeoutCallback
from dataqueue.records import WaitToken, WaitTokenResult
from dataqueue.tracing import STEP_DATA_KEY
from dataqueue.validation import require_aware

if TYPE_CHECKING:
    from dataqueue.processing.processor import Processor

logger = logging.getLogger("dataqueue.processor")

T = TypeVar("T")

TOKEN_TIMED_OUT = "Token timed out"


def new_token_id() -> str:
    """``wp_`` followed by a random UUID, as upstream."""
    return f"wp_{uuid.uuid4()}"


def token_result(status: str, output: Any) -> dict[str, Any] | None:
    """The stored result of a settled token, or None while it is still waiting."""
    if status == "completed":
        return {"ok": True, "output": output}
    if status == "timed_out":
        return {"ok": False, "error": TOKEN_TIMED_OUT}
    return None


class JobContext:
    """What a running handler can do besides computing its result: the ``ctx`` argument.

    A handler receives it when it takes three positional parameters
    ``(payload, signal, ctx)``. It is only valid during that call.

    Writes (progress, output, steps, prolong) are best-effort: a database error is
    logged, not raised. They only reach the job while this worker still owns it, so a
    handler that outlived its timeout cannot change the job any more (W-TO-1,
    W-LOCK-1).
    """

    def __init__(self, processor: Processor, execution: Execution) -> None:
        self._processor = processor
        self._execution = execution
        self.output_json: str | None = None  # the last set_output value, encoded
        self.step_data: dict[str, Any] = execution.step_data
        self._wait_position = 0  # waits are keyed by position: __wait_0, __wait_1, …

    @property
    def job_id(self) -> int:
        """The running job's id."""
        return self._execution.job.id

    @property
    def job_type(self) -> str:
        """The running job's type."""
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
            logger.debug(
                "prolong() ignored: job %s has no timeout",
                self.job_id,
                extra=job_fields(execution.job, self._processor.worker_id, "prolong_ignored"),
            )
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

    # -- steps and waits ------------------------------------------------------------

    def run(self, step_name: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` once per job: a step completed in an earlier invocation (before a
        wait or a failed attempt) returns its stored result without calling ``fn``.

        The result must be JSON-serialisable (InvalidJobError otherwise) and comes back
        JSON-decoded on replay. Step names must be unique within the handler;
        ``"__dqTrace"`` is reserved (the job's trace context, kept across waits).
        """
        if not isinstance(step_name, str) or not step_name:
            raise InvalidJobError(f"step name must be a non-empty string, got {step_name!r}")
        if step_name == STEP_DATA_KEY:
            raise InvalidJobError(f"step name {step_name!r} is reserved for the trace context")
        entry = self.step_data.get(step_name)
        if isinstance(entry, dict) and entry.get("__completed"):
            return cast(T, entry.get("result"))
        result = fn()
        encode_json(result, what=f"result of step {step_name!r}")
        stored: dict[str, Any] = {"__completed": True}
        if result is not None:
            stored["result"] = result
        self.step_data[step_name] = stored
        self._persist_step_data()
        return result

    def wait_for(
        self,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        weeks: float = 0,
        months: float = 0,
        years: float = 0,
    ) -> None:
        """Pause the job for the given duration (months = 30 days, years = 365 days).

        The handler stops here (by raising ``WaitSignal``, a BaseException) and runs
        again from the top when the time has passed; completed ``run`` steps replay and
        this call returns at once. Waiting consumes no attempt. The total must be
        positive (InvalidJobError).
        """
        key = self._next_wait_key()
        if self._wait_completed(key):
            return
        duration = wait_duration(
            seconds=seconds,
            minutes=minutes,
            hours=hours,
            days=days,
            weeks=weeks,
            months=months,
            years=years,
        )
        self._wait(key, "duration", dt.datetime.now(dt.timezone.utc) + duration, None)

    def wait_until(self, when: dt.datetime) -> None:
        """Pause the job until ``when`` (timezone-aware; a past time resumes at once)."""
        key = self._next_wait_key()
        if self._wait_completed(key):
            return
        self._wait(key, "date", require_aware(when, "wait_until"), None)

    def create_token(
        self, *, timeout: str | dt.timedelta | None = None, tags: list[str] | None = None
    ) -> WaitToken:
        """Create a token linked to this job; someone calls ``queue.complete_token(id)``.

        ``timeout`` is ``"30s"``, ``"10m"``, ``"1h"``, ``"7d"`` or a ``timedelta``; anything
        else raises ValueError. Not memoised: wrap it in ``ctx.run`` to create it once.
        """
        return self._processor.create_token(self.job_id, timeout, tags)

    def wait_for_token(self, token_id: str) -> WaitTokenResult:
        """Pause until the token is completed or times out; return how it ended.

        ``ok=True`` with the completion's ``output``, or ``ok=False`` with
        ``error="Token timed out"``. Resuming consumes no attempt.
        """
        if not isinstance(token_id, str) or not token_id:
            raise InvalidJobError(f"token_id must be a non-empty string, got {token_id!r}")
        key = self._next_wait_key()
        entry = self.step_data.get(key)
        if isinstance(entry, dict) and entry.get("completed"):
            return _as_result(entry.get("result"))
        token = self._processor.get_token(token_id)
        if token is None:
            raise InvalidJobError(f"unknown token {token_id!r}")
        settled = token_result(token.status, token.output)
        if settled is not None:
            self.step_data[key] = {
                "type": "token",
                "tokenId": token_id,
                "completed": True,
                "result": settled,
            }
            self._persist_step_data()
            return _as_result(settled)
        self._wait(key, "token", None, token_id)
        raise AssertionError("unreachable")  # pragma: no cover

    def _next_wait_key(self) -> str:
        key = f"__wait_{self._wait_position}"
        self._wait_position += 1
        return key

    def _wait_completed(self, key: str) -> bool:
        entry = self.step_data.get(key)
        return isinstance(entry, dict) and bool(entry.get("completed"))

    def _wait(self, key: str, kind: str, until: dt.datetime | None, token_id: str | None) -> None:
        entry: dict[str, Any] = {"type": kind, "completed": False}
        if token_id is not None:
            entry["tokenId"] = token_id
        self.step_data[key] = entry
        raise WaitSignal(wait_until=until, token_id=token_id)

    def _persist_step_data(self) -> None:
        encoded = json.dumps(self.step_data, separators=(",", ":"))
        self._processor.write_best_effort(
            "step data",
            lambda backend, worker: backend.update_step_data(worker, self.job_id, encoded),
        )


def _as_result(stored: Any) -> WaitTokenResult:
    if isinstance(stored, dict) and stored.get("ok"):
        return WaitTokenResult(ok=True, output=stored.get("output"))
    error = stored.get("error") if isinstance(stored, dict) else None
    return WaitTokenResult(ok=False, error=error or TOKEN_TIMED_OUT)
