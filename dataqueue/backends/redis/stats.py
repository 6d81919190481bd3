"""``get_stats`` on Redis: counters the scripts keep, read by one script.

Layout (the header of ``scripts/_lib.lua`` has the details):

- ``P stats:counts``: a hash of jobs per (status, job type), and of failed jobs awaiting
  a retry per type, changed by every script that changes a status (``set_status``),
  creates a job or deletes one. ``P stats:retrying`` holds the ids of those failed
  jobs (so that a job leaving ``failed`` is taken from the right count).
- ``P stats:completed:<type>``, ``P stats:failed:<type>``: a running total of the type's
  completions (failed attempts) and, for each second of the last hour that had one,
  the total before it (``P stats:completed_at:<type>`` lists those seconds): the count
  since any second is two lookups. A type's keys expire an hour after its last
  completion or failure.
- ``P stats:runs:<type>``: ``completedAt:ms`` of the type's newest completions, at
  least :data:`RUN_SAMPLES` (cut back every 100 pushes).

Counts are kept once asked for: the first ``get_stats`` on a store counts the jobs it
already holds with ``stats_rebuild.lua``, :data:`REBUILD_STEP` ids per script run
(5 ms of Redis's time each, measured), while the scripts count every job created or
changed meanwhile. ``stats.lua`` checks the counts against the sizes of the
``P status:<s>`` sets on every call and counts again when they differ (keys written by
something else than these scripts, or by an older dataqueue during an upgrade).

What a call costs Redis: ``stats.lua`` reads the counters (O(job types)), per type the
window's two tallies (O(log n) each) and, for types with pending jobs, the first
pending job of each priority level of the type's ready queue (O(levels x log n)),
plus up to 1,000 due entries of ``P delayed``: under a millisecond for 10 types. Then
one pipelined ``LRANGE`` reads as many run times per type as completed in the window
(at most :data:`RUN_SAMPLES`), which this process parses. What the other scripts pay:
two ``HINCRBY`` per status change once counts are kept; per completion an ``LPUSH``
and an ``HINCRBY`` (plus a mark per type and second); per failed attempt an
``HINCRBY``. ``advance.lua`` gathers them and writes each count, tally and list once
per run (``stats_defer``/``stats_flush``): about 2-3 µs of Redis time per claimed and
completed job.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from typing import Any

from dataqueue.backends.redis._base import RedisPart
from dataqueue.errors import DataQueueError
from dataqueue.records import JobTypeStats

logger = logging.getLogger("dataqueue.redis")

#: Run times kept per job type (``STATS_RUNS`` in ``scripts/_lib.lua``).
RUN_SAMPLES = 1000

#: Ids counted per ``stats_rebuild.lua`` run (about 5 ms of Redis's time each).
REBUILD_STEP = 1000

#: How many times a call starts counting over before it gives up (another process may
#: keep writing the status sets without counting).
_MAX_REBUILDS = 3

_COUNT_NAMES = (
    "pending",
    "processing",
    "waiting",
    "completed",
    "cancelled",
    "failed",
    "failed_retrying",
)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of ``values``, interpolated as PostgreSQL's
    ``percentile_cont`` does (between the two nearest ranks); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _job_type_stats(
    now_ms: int, job_type: str, fields: Sequence[Any], runs: list[float]
) -> JobTypeStats:
    """One type's record from the 10 reply fields after its name, and its run times (s)."""
    counts = dict(zip(_COUNT_NAMES, (int(v) for v in fields[:7]), strict=True))
    oldest = _text(fields[7])
    return JobTypeStats(
        job_type=job_type,
        pending=counts["pending"],
        processing=counts["processing"],
        waiting=counts["waiting"],
        completed=counts["completed"],
        cancelled=counts["cancelled"],
        failed_retrying=counts["failed_retrying"],
        failed_final=counts["failed"] - counts["failed_retrying"],
        oldest_pending_age=None if oldest == "" else max(0, now_ms - int(oldest)) / 1000,
        completed_recent=int(fields[8]),
        failed_recent=int(fields[9]),
        run_time_p50=percentile(runs, 0.5),
        run_time_p95=percentile(runs, 0.95),
    )


def _run_times(entries: Sequence[Any], since_ms: int) -> list[float]:
    """Run times (seconds) of the ``completedAt:ms`` entries completed at ``since_ms`` or later."""
    times = []
    for entry in entries:
        done_at, _, run_ms = _text(entry).partition(":")
        if int(done_at) >= since_ms:
            times.append(int(run_ms) / 1000)
    return times


class RedisStats(RedisPart):
    """``get_stats`` of the Redis backend."""

    def get_stats(self, window_seconds: float) -> tuple[dt.datetime, list[JobTypeStats]]:
        window_ms = max(1, round(window_seconds * 1000))
        for attempt in range(_MAX_REBUILDS + 1):
            # The last try answers even if the counts still differ from the sets.
            last = attempt == _MAX_REBUILDS
            if last:
                logger.warning(
                    "Redis statistics: the status sets kept changing without the job "
                    "counts while they were recounted (an older dataqueue writing to key "
                    "prefix %r?); the counts may be off",
                    self.prefix,
                    extra={"action": "stats_recount_failed", "key_prefix": self.prefix},
                )
            reply = self._run("stats", window_ms, "1" if last else "0")
            state = _text(reply[0])
            if state == "ok":
                return self._stats_from(reply, window_ms)
            if not last:
                self._count_stored_jobs(start=state == "start")
        raise DataQueueError(
            "the Redis job counts could not be recounted: another process keeps starting over"
        )

    def _stats_from(
        self, reply: Sequence[Any], window_ms: int
    ) -> tuple[dt.datetime, list[JobTypeStats]]:
        """The records of a ``stats.lua`` reply, with the run times of the window (read
        here, in one pipelined round trip, so that Redis does not parse them)."""
        now_ms = int(reply[1])
        types = _types_and_fields(reply)
        # Newest first, and no more entries than completions in the window.
        wanted = {t: min(int(fields[8]), RUN_SAMPLES) for t, fields in types}
        pipe = self.client.pipeline(transaction=False)
        for job_type, count in wanted.items():
            if count:
                pipe.lrange(f"{self.prefix}stats:runs:{job_type}", 0, count - 1)
        read = iter(pipe.execute() if any(wanted.values()) else [])
        samples = [next(read) if wanted[job_type] else [] for job_type, _ in types]
        stats = [
            _job_type_stats(now_ms, job_type, fields, _run_times(runs, now_ms - window_ms))
            for (job_type, fields), runs in zip(types, samples, strict=True)
        ]
        return dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc), stats

    def _count_stored_jobs(self, *, start: bool) -> None:
        """Run ``stats_rebuild.lua`` until every stored job is counted."""
        first = "start" if start else "step"
        lo, hi = (int(v) for v in self._run("stats_rebuild", first, REBUILD_STEP))
        while lo < hi:
            lo, hi = (int(v) for v in self._run("stats_rebuild", "step", REBUILD_STEP))


def _types_and_fields(reply: Sequence[Any]) -> list[tuple[str, Sequence[Any]]]:
    """(job type, its 10 fields) from a ``stats.lua`` reply."""
    return [(_text(reply[k]), reply[k + 1 : k + 11]) for k in range(2, len(reply), 11)]
