"""Checking the time settings of processors, supervisors and reclaim.

Durations of the durability settings are seconds (``int``/``float``) or a
``datetime.timedelta``; the upstream-compatible ones keep upstream's units
(``poll_interval`` and ``interval_ms`` in milliseconds). Every check rejects booleans,
NaN and infinities: an infinite poll interval would kill the background thread and
NaN would silently stop polling.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from dataqueue.errors import ConfigurationError


def seconds(value: Any, name: str, *, minimum: float = 0.0, maximum: float = 86_400.0) -> float:
    """``value`` (seconds or a ``timedelta``) as float seconds within ``(minimum, maximum]``.

    Raises ``TypeError`` for other types and :class:`ConfigurationError` (a
    ``ValueError``) for values that are not finite or out of range, naming ``name``.
    """
    if isinstance(value, dt.timedelta):
        number = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
    if number <= minimum or number > maximum:
        raise ConfigurationError(
            f"{name} must be more than {minimum:g} and at most {maximum:g} seconds, got {value!r}"
        )
    return number


def milliseconds(value: Any, name: str, *, allow_zero: bool = True) -> float:
    """A finite, non-negative number of milliseconds (``> 0`` unless ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of milliseconds, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number of milliseconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be {bound}, got {value!r}")
    # A day is far beyond any sensible interval; larger values overflow timers.
    if value > 86_400_000:
        raise ConfigurationError(f"{name} must be at most 86400000 ms (a day), got {value!r}")
    return float(value)


def stuck_timeout_seconds(
    minutes: float | None, timeout: float | dt.timedelta | None, names: tuple[str, str]
) -> float:
    """The stuck-job limit in seconds from either spelling (default 10 minutes)."""
    if minutes is not None and timeout is not None:
        raise ConfigurationError(f"pass {names[0]} or {names[1]}, not both")
    if timeout is not None:
        return seconds(timeout, names[1], maximum=365 * 86_400.0)
    if minutes is None:
        return 600.0
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        raise TypeError(f"{names[0]} must be a number of minutes, got {minutes!r}")
    if not math.isfinite(minutes) or minutes <= 0 or minutes > 365 * 1440:
        raise ConfigurationError(
            f"{names[0]} must be more than 0 and at most a year of minutes, got {minutes!r}"
        )
    return float(minutes) * 60
