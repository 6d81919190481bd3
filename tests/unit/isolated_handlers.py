"""Module-level handlers for tests/unit/test_isolated.py.

They run in spawned child processes, which import them as ``tests.unit.isolated_handlers``:
keep this module free of heavy imports and of side effects at import time.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def echo(payload: Any, signal: Any) -> dict[str, Any]:
    """Return the payload and what the signal looks like in the child."""
    return {
        "payload": payload,
        "aborted": signal.aborted,
        "reason": signal.reason,
        "waited": signal.wait(0.01),
        "pid": os.getpid(),
    }


def double(payload: dict[str, int]) -> int:
    """A handler that accepts only the payload."""
    return payload["n"] * 2


def returns_nothing(payload: Any, signal: Any) -> None:
    """Completes without output."""


def returns_datetime(payload: Any, signal: Any) -> dict[str, Any]:
    """An output that needs dataqueue's JSON encoding."""
    return {"at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)}


def raises_value_error(payload: Any, signal: Any) -> None:
    """Fails with a message."""
    raise ValueError(f"bad input: {payload['n']}")


def raises_without_message(payload: Any, signal: Any) -> None:
    """Fails with an empty message."""
    raise RuntimeError


def returns_object(payload: Any, signal: Any) -> object:
    """An output JSON cannot hold."""
    return object()


def needs_ctx(payload: Any, signal: Any, ctx: Any) -> None:
    """Requires a ctx, which isolated handlers do not get."""


def exits_hard(payload: Any, signal: Any) -> None:
    """Ends the process without reporting."""
    os._exit(3)


def _record_pid(payload: dict[str, str]) -> None:
    path = Path(payload["pid_file"])
    path.with_suffix(".tmp").write_text(str(os.getpid()))
    path.with_suffix(".tmp").replace(path)


def sleeps_forever(payload: dict[str, str], signal: Any) -> None:
    """Writes its pid, then waits on the signal, which never fires in a child."""
    _record_pid(payload)
    signal.wait()


def ignores_sigterm(payload: dict[str, str], signal: Any) -> None:
    """Writes its pid, ignores SIGTERM and sleeps: only SIGKILL stops it."""
    _ignore_sigterm()
    _record_pid(payload)
    while True:
        time.sleep(0.05)


def _ignore_sigterm() -> None:
    # A separate function: inside handlers the parameter ``signal`` shadows the module.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def sleeps(payload: dict[str, float], signal: Any) -> str:
    """Sleeps for ``payload["seconds"]`` and completes."""
    time.sleep(payload["seconds"])
    return "slept"


class Greeter:
    """Owner of a bound method and a static method."""

    def greet(self, payload: Any, signal: Any) -> str:
        return "hello"

    @staticmethod
    def static_greet(payload: Any, signal: Any) -> str:
        return "hello"


def make_closure(prefix: str) -> Callable[[Any, Any], str]:
    """Return a nested function closing over ``prefix``."""

    def handler(payload: Any, signal: Any) -> str:
        return prefix + str(payload)

    return handler


module_level_lambda = lambda payload, signal: payload  # noqa: E731


def replaced(payload: Any, signal: Any) -> str:
    """Shadowed below: ``module:qualname`` names another object than this function."""
    return "original"


original_replaced = replaced


def replaced(payload: Any, signal: Any) -> str:  # type: ignore[no-redef]
    return "replacement"
