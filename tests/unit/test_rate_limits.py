"""RateLimit values, the processor option's checks and the CLI's ``TYPE=N/SECONDS`` text."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

import dataqueue as dq
from dataqueue.rate_limits import parse_rate_limit, rate_limits_option


def test_rate_limit_defaults_to_one_second() -> None:
    limit = dq.RateLimit(20)
    assert (limit.limit, limit.per) == (20, 1.0)
    assert str(limit) == "20/1s"


def test_rate_limit_takes_seconds_or_a_timedelta() -> None:
    assert dq.RateLimit(5, per=dt.timedelta(minutes=1)).per == 60.0
    assert dq.RateLimit(5, per=0.25).per == 0.25


def test_redis_window_is_rounded_up_to_whole_milliseconds() -> None:
    assert dq.RateLimit(1, per=1.0).per_milliseconds == 1000
    assert dq.RateLimit(1, per=0.0015).per_milliseconds == 2
    assert dq.RateLimit(1, per=0.001).per_milliseconds == 1


@pytest.mark.parametrize("limit", [0, -1, 1_000_001])
def test_out_of_range_limits_are_refused_by_value(limit: int) -> None:
    with pytest.raises(dq.ConfigurationError, match=f"got {limit}"):
        dq.RateLimit(limit)


@pytest.mark.parametrize("limit", [1.5, "20", None, True])
def test_limits_that_are_not_integers_are_refused(limit: Any) -> None:
    with pytest.raises(TypeError, match="RateLimit limit"):
        dq.RateLimit(limit)


@pytest.mark.parametrize("per", [0, -1, 0.0009, math.nan, math.inf, 32 * 86_400, dt.timedelta(0)])
def test_bad_windows_are_refused_by_value(per: Any) -> None:
    with pytest.raises(dq.ConfigurationError, match="RateLimit per"):
        dq.RateLimit(1, per=per)


@pytest.mark.parametrize("per", ["1s", None, True])
def test_windows_that_are_not_durations_are_refused(per: Any) -> None:
    with pytest.raises(TypeError, match="RateLimit per"):
        dq.RateLimit(1, per=per)


def test_rate_limits_are_values() -> None:
    assert dq.RateLimit(3, per=2) == dq.RateLimit(3, per=2.0)
    with pytest.raises(AttributeError):
        dq.RateLimit(3).limit = 4  # type: ignore[misc]


def test_option_is_sorted_by_type_and_checked_against_the_claimed_types() -> None:
    limits = {"sms": dq.RateLimit(1), "email": dq.RateLimit(2)}
    assert rate_limits_option(limits, ("email", "sms")) == (
        ("email", dq.RateLimit(2)),
        ("sms", dq.RateLimit(1)),
    )
    assert rate_limits_option(limits, None) == rate_limits_option(limits, ("email", "sms"))
    assert rate_limits_option(None, ("email",)) == ()
    with pytest.raises(dq.ConfigurationError, match="'sms'"):
        rate_limits_option(limits, ("email",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email=20/1", ("email", dq.RateLimit(20, per=1.0))),
        ("email=20", ("email", dq.RateLimit(20))),
        ("bulk mail=5/0.5", ("bulk mail", dq.RateLimit(5, per=0.5))),
        (" email = 3 / 60 ", ("email", dq.RateLimit(3, per=60))),
    ],
)
def test_cli_text_parses(text: str, expected: tuple[str, dq.RateLimit]) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["email", "=20/1", "email=x/1", "email=20/x", "email=0/1"])
def test_bad_cli_text_is_refused_naming_it(text: str) -> None:
    with pytest.raises(dq.ConfigurationError, match="rate limit"):
        parse_rate_limit(text)
