"""Token timeouts and wait_for durations."""

from __future__ import annotations

import datetime as dt

import pytest

import dataqueue as dq
from dataqueue.durations import token_timeout, wait_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10),
        ("5m", 300),
        ("1h", 3600),
        ("24h", 86400),
        ("7d", 604800),
        ("365d", 31536000),
        ("0s", 0),
    ],
)
def test_valid_token_timeouts(value: str, seconds: int) -> None:
    assert token_timeout(value) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["10", "1.5h", "10 m", "1w", "10ms", "5M", "", 10])
def test_invalid_token_timeouts(value: object) -> None:
    with pytest.raises(dq.InvalidJobError, match="Invalid timeout format"):
        token_timeout(value)


def test_token_timeouts_are_capped_at_a_year() -> None:
    with pytest.raises(ValueError, match="too large"):
        token_timeout("366d")
    with pytest.raises(ValueError, match="too large"):
        token_timeout(dt.timedelta(days=400))
    assert token_timeout(None) is None


def test_wait_duration_sums_fields() -> None:
    assert wait_duration(hours=1, minutes=30) == dt.timedelta(minutes=90)
    assert wait_duration(months=1, years=1) == dt.timedelta(days=395)
    assert wait_duration(days=2, hours=-1) == dt.timedelta(hours=47)


def test_wait_duration_rejects_non_positive_and_bad_fields() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        wait_duration()
    with pytest.raises(ValueError, match="must be positive"):
        wait_duration(seconds=-1)
    with pytest.raises(ValueError, match="'1'"):
        wait_duration(seconds="1")
    with pytest.raises(TypeError, match="fortnights"):
        wait_duration(fortnights=1)
