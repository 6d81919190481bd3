"""Calling a handler and turning what happened into an :class:`Outcome`."""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Callable
from typing import Any, Literal

import attrs

from dataqueue.backends.base import ClaimedJob
from dataqueue.enums import FailureReason

OutcomeKind = Literal["completed", "failed", "waiting"]


def handler_arity(handler: Callable[..., Any]) -> int:
    """How many of ``(payload, signal, ctx)`` to pass, from the handler's signature.

    Handlers with ``*args`` get all three. Raises TypeError for non-callables.
    """
    if not callable(handler):
        raise TypeError(f"handler {handler!r} is not callable")
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return 3  # builtins without a signature: pass everything
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return 3
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return min(positional, 3)


#: Characters PostgreSQL text cannot hold: NUL, and UTF-16 surrogates (never valid alone).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def error_message(error: BaseException) -> str:
    """The message stored for a failure: the exception's text, else its class name.

    NUL characters and lone surrogates, which PostgreSQL cannot store, are replaced by
    U+FFFD (the replacement character), so one odd message cannot block storing.
    """
    try:
        text = str(error) or type(error).__name__
    except Exception:  # a broken __str__ must not lose the failure
        text = type(error).__name__
    return _UNSTORABLE.sub("\ufffd", text)


def utc_timestamp() -> str:
    """Now as upstream writes it: ISO-8601 UTC with milliseconds and ``Z``."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@attrs.define
class Outcome:
    """How one invocation ended, before it is stored."""

    job: ClaimedJob
    kind: OutcomeKind
    output_json: str | None = None
    error: BaseException | None = None
    reason: FailureReason | None = None
    failed_at: str = ""
    wait_until: dt.datetime | None = None
    token_id: str | None = None
    step_data_json: str = "{}"
    #: Failures: the retry delay, computed once so a retried store schedules the same.
    retry_in_seconds: float | None = None
    retry_computed: bool = False
    #: Failures: the message was already ASCII-escaped because the store refused it.
    escaped: bool = False
    #: Seconds from the handler's start to this outcome (None: it never started).
    run_seconds: float | None = None

    @classmethod
    def completed(cls, job: ClaimedJob, output_json: str | None) -> Outcome:
        return cls(job, "completed", output_json=output_json)

    @classmethod
    def waiting(
        cls,
        job: ClaimedJob,
        wait_until: dt.datetime | None,
        token_id: str | None,
        step_data_json: str,
    ) -> Outcome:
        return cls(
            job, "waiting", wait_until=wait_until, token_id=token_id, step_data_json=step_data_json
        )

    @classmethod
    def failed(cls, job: ClaimedJob, error: BaseException, reason: FailureReason) -> Outcome:
        return cls(job, "failed", error=error, reason=reason, failed_at=utc_timestamp())
