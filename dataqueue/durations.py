"""Durations of waits and token timeouts (pure rules)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from dataqueue.errors import InvalidJobError

_TIMEOUT_PATTERN = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TOKEN_TIMEOUT = dt.timedelta(days=365)

#: wait_for fields and their length in seconds (months are 30 days, years 365).
WAIT_UNITS = {
    "seconds": 1,
    "minutes": 60,
    "hours": 3600,
    "days": 86400,
    "weeks": 7 * 86400,
    "months": 30 * 86400,
    "years": 365 * 86400,
}


def token_timeout(value: Any) -> dt.timedelta | None:
    """Parse a token timeout: ``"30s"``, ``"10m"``, ``"1h"``, ``"7d"`` or a ``timedelta``.

    None means no timeout. ``"0s"`` expires at once. Anything else, negative values and
    more than 365 days raise :class:`InvalidJobError` (a ValueError) naming the value.
    """
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        duration = value
    elif isinstance(value, str) and (match := _TIMEOUT_PATTERN.match(value)):
        duration = dt.timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    else:
        raise InvalidJobError(
            f'Invalid timeout format: "{value}". Expected format like "10m", "1h", "24h", "7d" '
            "or a timedelta."
        )
    if duration < dt.timedelta(0):
        raise InvalidJobError(f"Timeout must not be negative, got {value!r}")
    if duration > MAX_TOKEN_TIMEOUT:
        raise InvalidJobError(f'Timeout value "{value}" is too large. Maximum allowed is 365 days.')
    return duration


def wait_duration(**fields: Any) -> dt.timedelta:
    """Sum ``wait_for`` fields (months = 30 days, years = 365 days).

    Raises :class:`InvalidJobError` for unknown fields, non-numbers, or a total that is
    not positive.
    """
    unknown = set(fields) - set(WAIT_UNITS)
    if unknown:
        raise TypeError(f"unknown wait_for field(s): {', '.join(sorted(unknown))}")
    total = 0.0
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidJobError(f"wait_for {name} must be a number, got {value!r}")
        total += value * WAIT_UNITS[name]
    if not total > 0:
        raise InvalidJobError(
            "wait_for duration must be positive. Provide at least one positive duration "
            f"field, got {fields!r}"
        )
    return dt.timedelta(seconds=total)
