"""Retry delay formulas (SEMANTICS §4.2 and the test vectors of Appendix B)."""

from __future__ import annotations

import pytest

from dataqueue.retry import retry_delay_seconds


def test_exhausted_job_has_no_next_attempt() -> None:
    assert retry_delay_seconds(3, 3) is None
    assert retry_delay_seconds(5, 3, retry_delay=1) is None


def test_legacy_formula_doubles_minutes() -> None:
    assert [retry_delay_seconds(a, 10) for a in (1, 2, 3)] == [120.0, 240.0, 480.0]


def test_legacy_formula_is_capped() -> None:
    # W-API-11: upstream overflowed the timestamp range for large attempt counts.
    assert retry_delay_seconds(60, 100) == retry_delay_seconds(19, 100) == 2**19 * 60


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999])
def test_exponential_backoff_with_jitter(jitter: float) -> None:
    delay = retry_delay_seconds(1, 3, retry_delay=5, retry_backoff=True, jitter=jitter)
    assert delay is not None and 5 <= delay < 10
    assert delay == pytest.approx(10 * (0.5 + 0.5 * jitter))


def test_cap_bounds_the_delay_after_jitter() -> None:
    low = retry_delay_seconds(1, 3, retry_delay=100, retry_delay_max=30, jitter=0.0)
    high = retry_delay_seconds(1, 3, retry_delay=100, retry_delay_max=30, jitter=0.999)
    assert low == 15 and high is not None and 29.9 < high < 30


def test_defaults_when_only_some_fields_are_set() -> None:
    assert retry_delay_seconds(1, 3, retry_backoff=True, jitter=1.0 - 1e-9) == pytest.approx(120)
    assert retry_delay_seconds(2, 3, retry_delay_max=10, jitter=0.0) == 5


def test_fixed_delay() -> None:
    assert retry_delay_seconds(1, 3, retry_delay=10, retry_backoff=False) == 10
    assert retry_delay_seconds(2, 3, retry_backoff=False) == 60


def test_zero_delay_with_backoff_retries_immediately() -> None:
    assert retry_delay_seconds(1, 3, retry_delay=0, retry_backoff=True, jitter=0.3) == 0


def test_huge_attempt_counts_stay_finite() -> None:
    delay = retry_delay_seconds(10_000, 20_000, retry_delay=1)
    assert delay is not None and delay <= 2_147_483_647
