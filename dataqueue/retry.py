"""When a failed job runs again: the retry delay formulas of the Node.js dataqueue.

Pure functions; the processor passes the result to the backend, which stores
``next_attempt_at = now + delay`` using the database clock.
"""

from __future__ import annotations

#: Upstream's "no cap" value for ``retry_delay_max``.
NO_CAP_SECONDS = 2_147_483_647
#: Default base delay when any retry field is set but ``retry_delay`` is not.
DEFAULT_RETRY_DELAY_SECONDS = 60
#: The legacy formula doubles without bound (W-API-11); past 2**19 minutes (about a
#: year) the delay stops growing so the timestamp can never overflow.
LEGACY_MAX_EXPONENT = 19


def retry_delay_seconds(
    attempts: int,
    max_attempts: int,
    *,
    retry_delay: int | None = None,
    retry_backoff: bool | None = None,
    retry_delay_max: int | None = None,
    jitter: float = 0.0,
) -> float | None:
    """Seconds until the next attempt, or None when the job has failed for good.

    ``attempts`` counts the attempt that just failed (>= 1 for a claimed job).
    ``jitter`` is a uniform random number in [0, 1), used by exponential backoff only.

    - exhausted (``attempts >= max_attempts``): None;
    - legacy (no retry field set): ``2**attempts`` minutes, no jitter;
    - exponential (backoff None or True): ``min(cap, base * 2**attempts) * (0.5 + 0.5 * jitter)``
      with ``base = retry_delay`` (60 when None; 0 retries at once) and
      ``cap = retry_delay_max`` (no cap when None); the cap bounds the delay after
      jitter;
    - fixed (backoff False): ``retry_delay`` seconds (60 when None).
    """
    if attempts >= max_attempts:
        return None
    if retry_delay is None and retry_backoff is None and retry_delay_max is None:
        return float((1 << min(max(attempts, 0), LEGACY_MAX_EXPONENT)) * 60)
    base = DEFAULT_RETRY_DELAY_SECONDS if retry_delay is None else retry_delay
    if retry_backoff is False:
        return float(base)
    cap = NO_CAP_SECONDS if retry_delay_max is None else retry_delay_max
    # Bound the exponent before multiplying so huge attempt counts stay finite.
    grown = base * (1 << min(max(attempts, 0), 62))
    return min(cap, grown) * (0.5 + 0.5 * jitter)
