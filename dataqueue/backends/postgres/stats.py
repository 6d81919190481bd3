"""``get_stats`` on PostgreSQL: index-backed reads in one read-only snapshot.

Each statement uses an index made for it (revision ``0006_stats_indexes``), so its cost
follows the jobs it is about, never the whole table:

- counts of every status but ``completed``: index-only scan of
  ``idx_job_queue_stats_active`` (the jobs not completed);
- failed jobs awaiting a retry: ``idx_job_queue_failed_retry`` (only those jobs);
- counts of ``completed``: index-only scan of ``idx_job_queue_stats_completed``,
  O(completed jobs kept), the largest part; above :data:`COMPLETED_RECOUNT_ABOVE`
  completed jobs they are recounted at most every :data:`COMPLETED_RECOUNT_SECONDS`
  (:class:`CompletedCounts`);
- oldest due pending job per type: one probe of ``idx_job_queue_stats_active``;
- completions in the window per type: a range of ``idx_job_queue_stats_completed``
  (``job_type, completed_at``), and the run times of the newest :data:`RUN_SAMPLES` of
  them (the same range backwards, one heap fetch each);
- failed attempts in the window: ``idx_job_events_failed_recent`` (``failed`` events).

The statuses are SQL literals, not bind parameters: PostgreSQL matches a partial index
when it plans, and a generic plan of a prepared statement would not know the value.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from dataqueue import schema
from dataqueue.records import JobTypeStats

jq = schema.job_queue
je = schema.job_events

#: Completions per type whose run times make the percentiles (the newest ones).
RUN_SAMPLES = 1000

#: With more completed jobs than this, their counts are reused for up to
#: :data:`COMPLETED_RECOUNT_SECONDS` (counting them is O(completed jobs)).
COMPLETED_RECOUNT_ABOVE = 100_000
COMPLETED_RECOUNT_SECONDS = 30.0

#: ``JobTypeStats`` field of each stored status (``failed`` is split afterwards).
_STATUS_FIELDS = {
    "pending": "pending",
    "processing": "processing",
    "waiting": "waiting",
    "cancelled": "cancelled",
    "failed": "failed_final",
}


def _literal(text: str) -> sa.ColumnElement[Any]:
    return sa.literal_column(f"'{text}'", sa.String)


def _since(window_seconds: float) -> sa.ColumnElement[Any]:
    return sa.func.now() - sa.func.make_interval(
        0, 0, 0, 0, 0, 0, sa.literal(window_seconds, sa.Float)
    )


def _types(job_types: list[str]) -> Any:
    """``unnest(:job_types) AS anon(job_type)``, to run a subquery per type."""
    return (
        sa.func.unnest(sa.cast(sa.literal(job_types), pg.ARRAY(sa.Text)))
        .table_valued("job_type")
        .render_derived()
    )


def active_counts() -> sa.Select[Any]:
    """(job_type, status, jobs) for every status but ``completed``."""
    return (
        sa.select(jq.c.job_type, jq.c.status, sa.func.count())
        .where(jq.c.status != _literal("completed"))
        .group_by(jq.c.job_type, jq.c.status)
    )


def completed_counts() -> sa.Select[Any]:
    """(job_type, jobs) of the completed jobs."""
    return (
        sa.select(jq.c.job_type, sa.func.count())
        .where(jq.c.status == _literal("completed"))
        .group_by(jq.c.job_type)
    )


def retrying_counts() -> sa.Select[Any]:
    """(job_type, jobs) of the failed jobs that are not final (see ``JobRecord.is_final``)."""
    return (
        sa.select(jq.c.job_type, sa.func.count())
        .where(
            jq.c.status == _literal("failed"),
            jq.c.next_attempt_at.isnot(None),
            jq.c.attempts < jq.c.max_attempts,
        )
        .group_by(jq.c.job_type)
    )


def oldest_pending_ages(job_types: list[str]) -> sa.Select[Any]:
    """(job_type, seconds since the earliest ``run_at`` that has passed) per type."""
    wanted = _types(job_types)
    earliest = (
        sa.select(sa.func.min(jq.c.run_at))
        .where(
            jq.c.status == _literal("pending"),
            jq.c.job_type == wanted.c.job_type,
            jq.c.run_at <= sa.func.now(),
        )
        .scalar_subquery()
    )
    return sa.select(wanted.c.job_type, sa.func.extract("epoch", sa.func.now() - earliest))


def completed_recently(job_types: list[str], window_seconds: float) -> sa.Select[Any]:
    """(job_type, completions in the window, p50, p95 of the run times in seconds of
    the newest :data:`RUN_SAMPLES` of them) per type; percentiles NULL for none."""
    wanted = _types(job_types)
    since = _since(window_seconds)
    in_window = sa.and_(
        jq.c.status == _literal("completed"),
        jq.c.job_type == wanted.c.job_type,
        jq.c.completed_at >= since,
    )
    done = sa.select(sa.func.count()).where(in_window).scalar_subquery()
    newest = (
        sa.select(sa.func.extract("epoch", jq.c.completed_at - jq.c.started_at).label("run"))
        .where(in_window)
        .order_by(jq.c.completed_at.desc())
        .limit(RUN_SAMPLES)
        .lateral("newest")
    )
    return (
        sa.select(
            wanted.c.job_type,
            done,
            sa.func.percentile_cont(0.5).within_group(newest.c.run),
            sa.func.percentile_cont(0.95).within_group(newest.c.run),
        )
        .select_from(wanted.outerjoin(newest, sa.true()))
        .group_by(wanted.c.job_type)
    )


def failed_recently(window_seconds: float) -> sa.Select[Any]:
    """(job_type, failed attempts) of the window, from the ``failed`` events."""
    return (
        sa.select(jq.c.job_type, sa.func.count())
        .select_from(je.join(jq, jq.c.id == je.c.job_id))
        .where(je.c.event_type == _literal("failed"), je.c.created_at >= _since(window_seconds))
        .group_by(jq.c.job_type)
    )


class CompletedCounts:
    """Completed jobs per type, recounted at most every :data:`COMPLETED_RECOUNT_SECONDS`
    once there are more than :data:`COMPLETED_RECOUNT_ABOVE` (below that, every time).

    One per backend; thread-safe (one lock). Callers that find the counts due count
    them in their own snapshot; two may count at once, the later result is kept.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._counted_at = -float("inf")

    def read(self, conn: sa.Connection) -> dict[str, int]:
        """The counts, from ``conn`` when they are due."""
        with self._lock:
            total = sum(self._counts.values())
            fresh = time.monotonic() - self._counted_at < COMPLETED_RECOUNT_SECONDS
            if total > COMPLETED_RECOUNT_ABOVE and fresh:
                return dict(self._counts)
        counts = {job_type: int(n) for job_type, n in conn.execute(completed_counts())}
        with self._lock:
            self._counts, self._counted_at = counts, time.monotonic()
        return dict(counts)


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def collect(
    conn: sa.Connection, window_seconds: float, completed: CompletedCounts
) -> tuple[dt.datetime, list[JobTypeStats]]:
    """Run the statements on ``conn`` (in one snapshot) and build one record per type."""
    # Statistics are read every few seconds: they may not take parallel workers (cores)
    # from the statements that run the queue. Raw SQL: Core has no SET.
    conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
    now = conn.execute(sa.select(sa.func.now())).scalar_one()
    fields: dict[str, dict[str, Any]] = {}

    def add(rows: Iterable[Any], name: str) -> None:
        for row in rows:
            fields.setdefault(row[0], {})[name] = int(row[-1])

    for job_type, status, count in conn.execute(active_counts()):
        name = _STATUS_FIELDS.get(status)
        if name is not None:  # a status this library never writes is left out
            fields.setdefault(job_type, {})[name] = int(count)
    add(completed.read(conn).items(), "completed")
    for job_type, retrying in conn.execute(retrying_counts()):
        counts = fields.setdefault(job_type, {})
        counts["failed_retrying"] = int(retrying)
        counts["failed_final"] = counts.get("failed_final", 0) - int(retrying)
    add(conn.execute(failed_recently(window_seconds)), "failed_recent")
    if fields:
        rows = conn.execute(completed_recently(sorted(fields), window_seconds))
        for job_type, done, p50, p95 in rows:
            fields[job_type].update(
                completed_recent=int(done), run_time_p50=_seconds(p50), run_time_p95=_seconds(p95)
            )
    pending = sorted(t for t, f in fields.items() if f.get("pending"))
    if pending:
        for job_type, age in conn.execute(oldest_pending_ages(pending)):
            fields[job_type]["oldest_pending_age"] = _seconds(age)
    stats = [JobTypeStats(job_type=t, **f) for t, f in fields.items()]
    return now.astimezone(dt.timezone.utc), stats
