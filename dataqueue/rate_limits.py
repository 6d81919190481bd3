"""Global rate limits: at most ``limit`` starts of a job type in any window of ``per`` seconds.

Pure rules (no store): the :class:`RateLimit` value, its validation, the processor
option's checks and the ``TYPE=N/SECONDS`` text of ``dataqueue worker --rate-limit``.
The limit itself is enforced inside the claim, by the store (see
``docs/guides/workers.md``, "Rate limits").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from dataqueue import intervals
from dataqueue.errors import ConfigurationError

#: Most starts a limit may allow per window. Every claim of a limited type counts the
#: starts of the current window, so the cost of a claim grows with the limit.
MAX_LIMIT = 1_000_000
#: Shortest window: the Redis store counts in whole milliseconds.
MIN_PERIOD_SECONDS = 0.001
#: Longest window (31 days): the store keeps one entry per start for a whole window.
MAX_PERIOD_SECONDS = 31 * 86_400.0

_CLI_PATTERN = re.compile(r"^(?P<type>[^=]+)=(?P<limit>[^/]+)(?:/(?P<per>.+))?$")


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"RateLimit limit must be an integer number of starts, got {value!r}")
    if value < 1 or value > MAX_LIMIT:
        raise ConfigurationError(
            f"RateLimit limit must be between 1 and {MAX_LIMIT:,} starts, got {value!r}"
        )
    return value


def _period(value: Any) -> float:
    seconds = intervals.seconds(value, "RateLimit per", maximum=MAX_PERIOD_SECONDS)
    if seconds < MIN_PERIOD_SECONDS:
        raise ConfigurationError(
            f"RateLimit per must be at least {MIN_PERIOD_SECONDS:g} seconds (1 ms), got {value!r}"
        )
    return seconds


@attrs.frozen
class RateLimit:
    """At most ``limit`` job starts in any window of ``per`` seconds, across all workers.

    ``RateLimit(20, per=1.0)``: never more than 20 starts in any one second, counted
    over every processor and process that sets this limit for the job type. The window
    slides: it is not reset at whole seconds, and there is no burst beyond ``limit``.

    A start is a claim: a first attempt, a retry, a resumed wait and a job reclaimed
    from a dead worker each count once, whether the handler then succeeds or not.

    ``RateLimit(limit, per=1.0)``; ``TypeError`` for a non-integer ``limit`` or a
    ``per`` that is not a number or ``timedelta``,
    :class:`~dataqueue.errors.ConfigurationError` for values out of range, naming them.

    Attributes:
        limit: Most starts per window, 1 to 1,000,000.
        per: The window in seconds (given as seconds or a ``timedelta``): at least
            1 ms, at most 31 days; default one second.
    """

    limit: int = attrs.field(converter=_limit)
    per: float = attrs.field(default=1.0, converter=_period)

    @property
    def per_milliseconds(self) -> int:
        """The window in whole milliseconds, rounded up (Redis counts milliseconds)."""
        return math.ceil(round(self.per * 1000, 6))

    def __str__(self) -> str:
        return f"{self.limit}/{self.per:g}s"


def rate_limits_option(
    value: Any, claimed_types: tuple[str, ...] | None
) -> tuple[tuple[str, RateLimit], ...]:
    """The processor's ``rate_limits`` option as (job type, limit) pairs sorted by type.

    ``value`` maps job types to :class:`RateLimit`; None or ``{}`` means no limits.
    ``claimed_types`` is the processor's claim filter (None: every type). A type the
    processor does not claim is rejected, since its limit could never apply.
    """
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TypeError(f"rate_limits must be a mapping of job type to RateLimit, got {value!r}")
    pairs: list[tuple[str, RateLimit]] = []
    for job_type, limit in value.items():
        if not isinstance(job_type, str) or not job_type:
            raise TypeError(f"rate_limits keys must be job type strings, got {job_type!r}")
        if not isinstance(limit, RateLimit):
            raise TypeError(
                f"rate_limits[{job_type!r}] must be a dataqueue.RateLimit, got {limit!r}"
            )
        if claimed_types is not None and job_type not in claimed_types:
            raise ConfigurationError(
                f"rate_limits names job type {job_type!r}, which this processor does not "
                f"claim (it claims: {', '.join(claimed_types) or 'nothing'})"
            )
        pairs.append((job_type, limit))
    return tuple(sorted(pairs, key=lambda pair: pair[0]))


def parse_rate_limit(text: str) -> tuple[str, RateLimit]:
    """``"email=20/1.5"`` -> ``("email", RateLimit(20, per=1.5))``; ``"email=20"`` is per second.

    Raises :class:`ConfigurationError` naming the text when it does not parse.
    """
    match = _CLI_PATTERN.match(text.strip())
    if match is None:
        raise ConfigurationError(f"rate limit must read TYPE=N or TYPE=N/SECONDS, got {text!r}")
    try:
        limit = int(match["limit"])
        per = float(match["per"]) if match["per"] is not None else 1.0
    except ValueError:
        raise ConfigurationError(
            f"rate limit must read TYPE=N or TYPE=N/SECONDS, got {text!r}"
        ) from None
    try:
        return match["type"].strip(), RateLimit(limit, per=per)
    except (TypeError, ConfigurationError) as exc:
        raise ConfigurationError(f"rate limit {text!r}: {exc}") from None
