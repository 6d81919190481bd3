"""PostgreSQL backend: SQLAlchemy Core statements on :mod:`dataqueue.schema`.

Every operation is a single SQL statement run in autocommit mode: one round trip,
and atomic by itself. A state change and the events it writes are one statement
(data-modifying CTEs), so an event can never be lost or written for a change that
did not happen (W-EV-1, W-EV-2). Only ``add_jobs`` may run on the caller's
connection (``db=``), where it joins the caller's transaction; large batches go in
pipelined chunks (:mod:`dataqueue.backends.postgres.enqueue`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import socket
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from dataqueue import schema
from dataqueue.backends.base import (
    ClaimedJob,
    ClaimRequest,
    Completion,
    FailResult,
    Failure,
)
from dataqueue.backends.postgres import enqueue as pg_enqueue
from dataqueue.backends.postgres import notify as pg_notify
from dataqueue.backends.postgres import sql as pg_sql
from dataqueue.backends.postgres import stats as pg_stats
from dataqueue.backends.postgres.enqueue import Enqueuer
from dataqueue.config import reset_engine_after_fork
from dataqueue.enums import FailureReason, JobEventType, JobStatus, TagMatch
from dataqueue.errors import (
    DuplicateScheduleError,
    SchemaNotReadyError,
)
from dataqueue.rate_limits import RateLimit
from dataqueue.records import (
    CronScheduleRecord,
    JobEvent,
    JobRecord,
    JobTypeStats,
    WaitpointRecord,
    iso_text,
)
from dataqueue.validation import EDITED_KEYS, JobFilter, NewJob

logger = logging.getLogger("dataqueue.postgres")
_T = TypeVar("_T")

jq = schema.job_queue
je = schema.job_events
wp = schema.waitpoints
cs = schema.cron_schedules
dw = schema.dataqueue_workers

_ONE_MS = sa.text("interval '1 millisecond'")

#: ``sa.text(sql)``, built once per statement text: the constructor parses the statement
#: for its binds (about 0.15 ms for the claim statement), on every call otherwise.
_clause = functools.lru_cache(maxsize=1024)(sa.text)

# A job of a registered worker whose heartbeat (locked_at) is older than that worker's
# heartbeat timeout: the worker died or lost track of it.
_ABANDONED = sa.and_(
    dw.c.worker_id.isnot(None),
    jq.c.locked_at < sa.func.now() - dw.c.heartbeat_timeout_ms * _ONE_MS,
)

_UNIQUE_VIOLATION = "23505"

_UNDEFINED_TABLE = "42P01"
_UNDEFINED_COLUMN = "42703"
_INVALID_SCHEMA_NAME = "3F000"  # e.g. the sequence literal of a schema never migrated


# Advisory lock keys of dataqueue live in their own range (arbitrary constant).
_GROUP_LOCK_BASE = 0x64715F0000
# A claimed row: is_done, then the ClaimedJob fields (a rate-limited claim adds a column).
_CLAIMED_END = 1 + len(pg_sql.CLAIMED_COLUMNS) + 1

_RECLAIM_MESSAGE = (
    "Job was reclaimed after exceeding its processing time on its last attempt "
    "(the worker stopped or lost its lock)"
)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.timezone.utc)


def job_record_from_row(row: sa.RowMapping | Mapping[str, Any]) -> JobRecord:
    """Build a :class:`JobRecord` from a ``job_queue`` row mapping."""
    reason = row["failure_reason"]
    created_at = _utc(row["created_at"])
    assert created_at is not None
    return JobRecord(
        id=row["id"],
        job_type=row["job_type"],
        payload=row["payload"],
        status=JobStatus(row["status"] or "pending"),
        created_at=created_at,
        updated_at=_utc(row["updated_at"]) or created_at,
        locked_at=_utc(row["locked_at"]),
        locked_by=row["locked_by"],
        attempts=row["attempts"] or 0,
        max_attempts=row["max_attempts"] if row["max_attempts"] is not None else 3,
        next_attempt_at=_utc(row["next_attempt_at"]),
        priority=row["priority"] or 0,
        run_at=_utc(row["run_at"]) or created_at,
        pending_reason=row["pending_reason"],
        error_history=list(row["error_history"] or []),
        timeout_ms=row["timeout_ms"],
        force_kill_on_timeout=bool(row["force_kill_on_timeout"]),
        failure_reason=FailureReason(reason) if reason else None,
        completed_at=_utc(row["completed_at"]),
        started_at=_utc(row["started_at"]),
        last_retried_at=_utc(row["last_retried_at"]),
        last_failed_at=_utc(row["last_failed_at"]),
        last_cancelled_at=_utc(row["last_cancelled_at"]),
        tags=row["tags"],
        idempotency_key=row["idempotency_key"],
        wait_until=_utc(row["wait_until"]),
        wait_token_id=row["wait_token_id"],
        step_data=row["step_data"],
        progress=row["progress"],
        output=row["output"],
        retry_delay=row["retry_delay"],
        retry_backoff=row["retry_backoff"],
        retry_delay_max=row["retry_delay_max"],
        dead_letter_job_type=row["dead_letter_job_type"],
        dead_lettered_at=_utc(row["dead_lettered_at"]),
        dead_letter_job_id=row["dead_letter_job_id"],
        group_id=row["group_id"],
        group_tier=row["group_tier"],
        depends_on_job_ids=row["depends_on_job_ids"],
        depends_on_tags=row["depends_on_tags"],
    )


def job_event_from_row(row: sa.RowMapping | Mapping[str, Any]) -> JobEvent:
    """Build a :class:`JobEvent` from a ``job_events`` row mapping."""
    created_at = _utc(row["created_at"])
    assert created_at is not None
    return JobEvent(
        id=row["id"],
        job_id=row["job_id"],
        event_type=JobEventType(row["event_type"]),
        created_at=created_at,
        metadata=row["metadata"],
    )


def cron_record_from_row(row: sa.RowMapping | Mapping[str, Any]) -> CronScheduleRecord:
    """Build a :class:`CronScheduleRecord` from a ``cron_schedules`` row mapping."""
    created_at = _utc(row["created_at"])
    assert created_at is not None
    return CronScheduleRecord(
        id=row["id"],
        schedule_name=row["schedule_name"],
        cron_expression=row["cron_expression"],
        job_type=row["job_type"],
        payload=row["payload"],
        max_attempts=row["max_attempts"] if row["max_attempts"] is not None else 3,
        priority=row["priority"] or 0,
        timeout_ms=row["timeout_ms"],
        force_kill_on_timeout=bool(row["force_kill_on_timeout"]),
        tags=row["tags"],
        timezone=row["timezone"] or "UTC",
        allow_overlap=bool(row["allow_overlap"]),
        status=row["status"] or "active",
        last_enqueued_at=_utc(row["last_enqueued_at"]),
        last_job_id=row["last_job_id"],
        next_run_at=_utc(row["next_run_at"]),
        created_at=created_at,
        updated_at=_utc(row["updated_at"]) or created_at,
        retry_delay=row["retry_delay"],
        retry_backoff=row["retry_backoff"],
        retry_delay_max=row["retry_delay_max"],
        dead_letter_job_type=row["dead_letter_job_type"],
    )


def _job_from_schedule(row: sa.RowMapping | Mapping[str, Any]) -> NewJob:
    """The job a schedule enqueues: its job fields, due now, nothing else."""
    return NewJob(
        job_type=row["job_type"],
        payload_json=json.dumps(row["payload"], separators=(",", ":")),
        max_attempts=row["max_attempts"] if row["max_attempts"] is not None else 3,
        priority=row["priority"] or 0,
        timeout_ms=row["timeout_ms"],
        force_kill_on_timeout=bool(row["force_kill_on_timeout"]),
        tags=row["tags"],
        retry_delay=row["retry_delay"],
        retry_backoff=row["retry_backoff"],
        retry_delay_max=row["retry_delay_max"],
        dead_letter_job_type=row["dead_letter_job_type"],
    )


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


def _schema_error(exc: BaseException) -> SchemaNotReadyError | None:
    if _sqlstate(exc) in (_UNDEFINED_TABLE, _UNDEFINED_COLUMN, _INVALID_SCHEMA_NAME):
        return SchemaNotReadyError(
            "the dataqueue tables are missing or out of date in this database: run "
            "`dataqueue migrate` (or `alembic upgrade head`) first. "
            f"Database said: {getattr(exc, 'orig', exc)}"
        )
    return None


def _tag_condition(mode: TagMatch, values: Sequence[str]) -> sa.ColumnElement[bool]:
    tags = jq.c.tags
    array = sa.cast(list(values), pg.ARRAY(sa.Text))
    if mode is TagMatch.ALL:
        return tags.contains(array)
    if mode is TagMatch.ANY:
        overlap: sa.ColumnElement[bool] = tags.overlap(array)
        return overlap
    if mode is TagMatch.NONE:
        return sa.or_(tags.is_(None), sa.not_(tags.overlap(array)))
    return sa.and_(tags.contains(array), tags.contained_by(array))


_RUN_AT_OPS = {
    "gt": lambda c, v: c > v,
    "gte": lambda c, v: c >= v,
    "lt": lambda c, v: c < v,
    "lte": lambda c, v: c <= v,
    "eq": lambda c, v: c == v,
}


def filter_conditions(filters: JobFilter) -> list[sa.ColumnElement[bool]]:
    """WHERE conditions for a validated :class:`JobFilter`."""
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.status is not None:
        conditions.append(jq.c.status == filters.status.value)
    if filters.job_type is not None:
        conditions.append(jq.c.job_type == filters.job_type)
    if filters.priority is not None:
        conditions.append(jq.c.priority == filters.priority)
    for op, value in filters.run_at:
        conditions.append(_RUN_AT_OPS[op](jq.c.run_at, value))
    if filters.tag_values or filters.match_tags_when_empty:
        conditions.append(_tag_condition(filters.tag_mode, filters.tag_values))
    if filters.cursor is not None:
        conditions.append(jq.c.id < filters.cursor)
    return conditions


def _events_for(changed: sa.CTE, event_type: JobEventType, metadata: Any = None) -> sa.Insert:
    """``INSERT INTO job_events … SELECT id FROM changed`` with the CTE on top."""
    meta: sa.ColumnElement[Any] = (
        sa.null() if metadata is None else sa.cast(sa.literal(json.dumps(metadata)), pg.JSONB)
    )
    rows = sa.select(changed.c.id, sa.literal(event_type.value), meta).order_by(changed.c.id)
    return (
        sa.insert(je)
        .from_select(["job_id", "event_type", "metadata"], rows)
        .add_cte(changed)
        .returning(je.c.job_id)
    )


def _update_values(updates: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"updated_at": sa.func.now()}
    for name, value in updates.items():
        if name == "payload":
            values[name] = sa.cast(sa.literal(value), pg.JSONB)
        elif name == "run_at" and value is None:
            values[name] = sa.func.now()
        else:
            values[name] = value
    return values


def _edit_metadata(updates: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name, value in updates.items():
        recorded = value
        if name == "payload":
            recorded = json.loads(value)
        elif name == "run_at" and value is not None:
            recorded = iso_text(value)
        meta[EDITED_KEYS[name]] = recorded
    return meta


def _free_types(
    claim: ClaimRequest, limited: tuple[tuple[str, RateLimit], ...]
) -> tuple[pg_sql.FreeTypes | None, list[str]]:
    """How a rate-limited claim finds the types without a limit, and their list."""
    if not limited:
        return None, []
    if claim.job_types is None:
        return "unlisted", []
    names = {t for t, _ in limited}
    free = [t for t in claim.job_types if t not in names]
    return ("listed" if free else "none"), free


class PostgresBackend:
    """The :class:`dataqueue.backends.base.Backend` on PostgreSQL.

    ``engine`` is shared, never disposed here unless ``owns_engine``. ``schema`` names
    the PostgreSQL schema of the tables (None: the connection's search_path).

    Wake-ups (:mod:`.notify`): every statement that makes jobs due notifies
    ``notify_channel`` (default ``dataqueue``, or ``dataqueue.<schema>``), and
    :meth:`listen` listens on it. ``notify=False`` sends no notifications (processors
    of this queue still listen, e.g. for other processes that notify).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        schema: str | None = None,
        owns_engine: bool = False,
        notify: bool = True,
        notify_channel: str | None = None,
    ):
        self.engine = engine
        self.schema = schema
        self._owns_engine = owns_engine
        self.notify_channel = (
            pg_notify.default_channel(schema)
            if notify_channel is None
            else pg_notify.check_channel(notify_channel)
        )
        channel = self.notify_channel if notify else None
        self._notify_params = None if channel is None else {"channel": channel}
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}
        if schema is not None:
            options["schema_translate_map"] = {None: schema}
        # Most operations are one statement, so autocommit saves BEGIN/COMMIT round trips.
        self._autocommit = engine.execution_options(**options)
        del options["isolation_level"]
        self._transactional = engine.execution_options(**options)
        self._sql = pg_sql.render_statements(schema, channel)
        self._enqueuer = Enqueuer(self._sql, schema, engine.dialect, channel)
        self._fail_sql = pg_sql.render_fail(schema, channel)
        self._named = pg_sql.render_named(schema, channel)
        self._advance_cache: dict[
            tuple[bool, bool, int, pg_sql.FreeTypes | None], tuple[sa.TextClause, str]
        ] = {}
        self._rate_lock_keys: dict[str, int] = {}
        # One advisory lock serialises claims under a group limit (W-GRP-1).
        self._lock_key = _GROUP_LOCK_BASE + zlib.crc32((schema or "").encode())
        self._completed_counts = pg_stats.CompletedCounts()  # get_stats

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            schema_error = _schema_error(exc)
            if schema_error is not None:
                raise schema_error from exc
            raise

    def _rows(self, statement: sa.Executable) -> list[sa.Row[Any]]:
        with self._translate_errors(), self._autocommit.connect() as conn:
            return list(conn.execute(statement).all())

    def _count(self, statement: sa.Executable) -> int:
        with self._translate_errors(), self._autocommit.connect() as conn:
            return conn.execute(statement).rowcount

    def _rows_notifying(
        self,
        statement: sa.Executable,
        changed: Callable[[list[sa.Row[Any]]], bool] = bool,
    ) -> list[sa.Row[Any]]:
        """:meth:`_rows`, plus a wake-up in the same transaction if ``changed(rows)``
        (by default: if rows came back).

        For the rarer statements that make jobs due (manual retry, release, reclaim,
        edits of ``run_at``): one more statement only when something changed.
        """
        if self._notify_params is None:
            return self._rows(statement)
        with self._translate_errors(), self._transaction() as conn:
            rows = list(conn.execute(statement).all())
            if changed(rows):
                conn.execute(_clause(pg_notify.NOTIFY_SQL), self._notify_params)
        return rows

    # -- enqueue --------------------------------------------------------------------

    def add_jobs(
        self,
        jobs: Iterable[NewJob],
        count: int,
        db: Any = None,
        inserted: list[bool] | None = None,
    ) -> list[int]:
        if count == 0:
            return []
        with self._translate_errors():
            if db is not None:
                return self._enqueuer.add_on(db, jobs, count, inserted)
            if count <= pg_enqueue.PIPELINE_CHUNK:
                jobs = list(jobs)  # validated before a pooled connection is taken
            # On the psycopg connection directly: SQLAlchemy's execution layer was about
            # a third of a single add_job, and 0.5-1 ms of an add_jobs of 100.
            return self._on_psycopg(
                lambda raw: self._enqueuer.add_on(raw, jobs, count, inserted),
                lambda conn: self._enqueuer.add_on(conn, jobs, count, inserted),
            )

    def _on_psycopg(
        self, work: Callable[[psycopg.Connection[Any]], _T], fallback: Callable[[sa.Connection], _T]
    ) -> _T:
        """Run ``work`` on a pooled psycopg connection in autocommit, without SQLAlchemy's
        execution layer, for the hot paths (single enqueue, the processor's cycle).
        Errors are raised as SQLAlchemy raises them, and a connection found broken is
        dropped from the pool. ``fallback`` runs on an autocommit SQLAlchemy connection
        when the pool holds another driver's connections.
        """
        fairy = self.engine.raw_connection()
        raw = fairy.dbapi_connection
        if not isinstance(raw, psycopg.Connection) or raw.autocommit:
            fairy.close()
            with self._autocommit.connect() as conn:  # another driver: the usual path
                return fallback(conn)
        try:
            raw.autocommit = True  # idle connection: no round trip
            try:
                return work(raw)
            except psycopg.Error as exc:
                error: Any = exc
                disconnected = self.engine.dialect.is_disconnect(error, raw, None)
                if disconnected:
                    fairy.invalidate()
                raise sa.exc.DBAPIError.instance(
                    None,
                    None,
                    exc,
                    psycopg.Error,
                    connection_invalidated=disconnected,
                    dialect=self.engine.dialect,
                ) from exc
            finally:
                if not raw.closed:
                    raw.autocommit = False
        finally:
            fairy.close()

    # -- reads ----------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        rows = self._rows(sa.select(jq).where(jq.c.id == job_id))
        return job_record_from_row(rows[0]._mapping) if rows else None

    def list_jobs(self, filters: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        statement = (
            sa.select(jq)
            .where(*filter_conditions(filters))
            .order_by(jq.c.created_at.desc(), jq.c.id.desc())
            .limit(limit)
        )
        if filters.cursor is None and offset:
            statement = statement.offset(offset)
        return [job_record_from_row(row._mapping) for row in self._rows(statement)]

    def get_job_events(self, job_id: int) -> list[JobEvent]:
        statement = sa.select(je).where(je.c.job_id == job_id).order_by(je.c.created_at, je.c.id)
        return [job_event_from_row(row._mapping) for row in self._rows(statement)]

    def get_stats(self, window_seconds: float) -> tuple[dt.datetime, list[JobTypeStats]]:
        # One snapshot (and one now()) for every count: a job moving on meanwhile is
        # counted once. Read-only, so it never blocks or waits for a writer.
        snapshot = self._transactional.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        with self._translate_errors(), snapshot.connect() as conn, conn.begin():
            return pg_stats.collect(conn, window_seconds, self._completed_counts)

    # -- management -----------------------------------------------------------------

    def retry_job(self, job_id: int) -> bool:
        changed = (
            sa.update(jq)
            .where(jq.c.id == job_id, jq.c.status.in_(["failed", "processing"]))
            .values(
                status="pending",
                updated_at=sa.func.now(),
                locked_at=None,
                locked_by=None,
                next_attempt_at=sa.func.now(),
                last_retried_at=sa.func.now(),
                # A manual retry of an exhausted job grants one more attempt (W-RT-1).
                max_attempts=sa.func.greatest(jq.c.max_attempts, jq.c.attempts + 1),
            )
            .returning(jq.c.id)
            .cte("changed")
        )
        return bool(self._rows_notifying(_events_for(changed, JobEventType.RETRIED)))

    def cancel_job(self, job_id: int) -> bool:
        return bool(self._cancel(jq.c.id == job_id, jq.c.status.in_(["pending", "waiting"])))

    def cancel_upcoming_jobs(self, filters: JobFilter) -> list[int]:
        return self._cancel(jq.c.status == "pending", *filter_conditions(filters))

    def _cancel(self, *conditions: sa.ColumnElement[bool]) -> list[int]:
        """Cancel matching jobs and, in the same transaction, their dependents."""
        changed = (
            sa.update(jq)
            .where(*conditions)
            .values(
                status="cancelled",
                updated_at=sa.func.now(),
                last_cancelled_at=sa.func.now(),
                wait_until=None,
                wait_token_id=None,
            )
            .returning(jq.c.id)
            .cte("changed")
        )
        statement = _events_for(changed, JobEventType.CANCELLED)
        with self._translate_errors(), self._transaction() as conn:
            ids = [row[0] for row in conn.execute(statement).all()]
            self._cascade(conn, ids)
        return ids

    def _cascade(self, conn: sa.Connection, seed_ids: Sequence[int]) -> None:
        """Cancel jobs that depend on ``seed_ids`` (failed for good or cancelled)."""
        if seed_ids:
            conn.execute(_clause(self._named["cascade"]), {"seed_ids": list(seed_ids)})

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction on one pooled connection, for multi-statement operations."""
        with self._transactional.begin() as conn:
            yield conn

    def edit_job(self, job_id: int, updates: dict[str, Any]) -> bool:
        return bool(self._edit(updates, jq.c.id == job_id))

    def edit_pending_jobs(self, filters: JobFilter, updates: dict[str, Any]) -> int:
        return self._edit(updates, *filter_conditions(filters))

    def _edit(self, updates: dict[str, Any], *conditions: sa.ColumnElement[bool]) -> int:
        if not updates:
            return 0
        changed = (
            sa.update(jq)
            .where(jq.c.status == "pending", *conditions)
            .values(_update_values(updates))
            .returning(jq.c.id)
            .cte("changed")
        )
        statement = _events_for(changed, JobEventType.EDITED, _edit_metadata(updates))
        if "run_at" in updates:  # possibly due sooner: processors look again
            return len(self._rows_notifying(statement))
        return len(self._rows(statement))

    def cleanup_old_jobs(self, days_to_keep: int, batch_size: int) -> int:
        cutoff = sa.func.now() - sa.func.make_interval(0, 0, 0, days_to_keep)
        completed = (
            sa.select(jq.c.id)
            .where(jq.c.status == "completed", jq.c.updated_at < cutoff)
            .order_by(jq.c.updated_at)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        total = self._delete_in_batches(sa.delete(jq).where(jq.c.id.in_(completed)), batch_size)
        # Finished for good too (W-UB-7): cancelled jobs and failed ones with no retry
        # left. Fewer rows than completed ones; the status index finds them.
        for final in (
            jq.c.status == "cancelled",
            sa.and_(jq.c.status == "failed", jq.c.next_attempt_at.is_(None)),
        ):
            batch = (
                sa.select(jq.c.id)
                .where(final, jq.c.updated_at < cutoff)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            )
            total += self._delete_in_batches(sa.delete(jq).where(jq.c.id.in_(batch)), batch_size)
        return total

    def cleanup_old_job_events(self, days_to_keep: int, batch_size: int) -> int:
        cutoff = sa.func.now() - sa.func.make_interval(0, 0, 0, days_to_keep)
        batch = (
            sa.select(je.c.id)
            .where(je.c.created_at < cutoff)
            .order_by(je.c.created_at)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        return self._delete_in_batches(sa.delete(je).where(je.c.id.in_(batch)), batch_size)

    def _delete_in_batches(self, statement: sa.Delete, batch_size: int) -> int:
        total = 0
        while True:
            deleted = self._count(statement)
            total += deleted
            if deleted < batch_size:
                return total

    def reclaim_stuck_jobs(self, max_processing_seconds: float) -> int:
        allowed = sa.func.greatest(
            sa.func.make_interval(0, 0, 0, 0, 0, 0, float(max_processing_seconds)),
            sa.func.coalesce(jq.c.timeout_ms, 0) * _ONE_MS,
        )
        unregistered = sa.and_(dw.c.worker_id.is_(None), jq.c.locked_at < sa.func.now() - allowed)
        reclaimed = self._reclaim(sa.or_(_ABANDONED, unregistered))
        forgotten = sa.delete(dw).where(
            dw.c.heartbeat_at < sa.func.now() - sa.text("interval '1 hour'"),
            ~sa.exists().where(jq.c.status == "processing", jq.c.locked_by == dw.c.worker_id),
        )
        self._count(forgotten)
        return reclaimed

    def reclaim_abandoned_jobs(self) -> int:
        return self._reclaim(_ABANDONED)

    def _reclaim(self, condition: sa.ColumnElement[bool]) -> int:
        """Release the ``processing`` jobs matching ``condition`` (jobs LEFT JOIN workers)."""
        stuck = (
            sa.select(jq.c.id, (jq.c.attempts >= jq.c.max_attempts).label("exhausted"))
            .select_from(jq.outerjoin(dw, dw.c.worker_id == jq.c.locked_by))
            .where(jq.c.status == "processing", condition)
            .with_for_update(of=jq, skip_locked=True)
            .cte("stuck")
        )
        released = (
            sa.update(jq)
            .where(jq.c.id == stuck.c.id, sa.not_(stuck.c.exhausted))
            .values(status="pending", locked_at=None, locked_by=None, updated_at=sa.func.now())
            .returning(jq.c.id)
            .cte("released")
        )
        # A job on its last attempt would be pending but never claimable again; it
        # fails for good instead, with reason "timeout" (W-RT-1).
        entry = sa.func.jsonb_build_object(
            "message",
            _RECLAIM_MESSAGE,
            "timestamp",
            sa.func.to_char(
                sa.func.timezone("UTC", sa.func.now()), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
            ),
        )
        failed = (
            sa.update(jq)
            .where(jq.c.id == stuck.c.id, stuck.c.exhausted)
            .values(
                status="failed",
                next_attempt_at=None,
                failure_reason=FailureReason.TIMEOUT.value,
                last_failed_at=sa.func.now(),
                updated_at=sa.func.now(),
                error_history=sa.func.coalesce(jq.c.error_history, sa.text("'[]'::jsonb")).op("||")(
                    sa.func.jsonb_build_array(entry)
                ),
            )
            .returning(jq.c.id)
            .cte("failed")
        )
        meta = {"message": _RECLAIM_MESSAGE, "failureReason": "timeout", "deadLetterJobId": None}
        failed_events = (
            sa.insert(je)
            .from_select(
                ["job_id", "event_type", "metadata"],
                sa.select(
                    failed.c.id,
                    sa.literal(JobEventType.FAILED.value),
                    sa.cast(sa.literal(json.dumps(meta)), pg.JSONB),
                ),
            )
            .cte("failed_events")
        )
        statement = sa.select(
            sa.select(sa.func.count()).select_from(released).scalar_subquery()
            + sa.select(sa.func.count()).select_from(failed).scalar_subquery()
        ).add_cte(stuck, released, failed, failed_events)
        rows = self._rows_notifying(statement, changed=lambda rows: bool(rows[0][0]))
        return int(rows[0][0])

    # -- worker registry and heartbeats ---------------------------------------------

    def heartbeat(
        self, worker_id: str, job_ids: Sequence[int], timeout_seconds: float
    ) -> list[int]:
        values = {
            "worker_id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat_timeout_ms": max(1, round(timeout_seconds * 1000)),
        }
        insert = pg.insert(dw).values(**values)
        registered = insert.on_conflict_do_update(
            index_elements=[dw.c.worker_id],
            set_={
                "heartbeat_at": sa.func.now(),
                "hostname": insert.excluded.hostname,
                "pid": insert.excluded.pid,
                "heartbeat_timeout_ms": insert.excluded.heartbeat_timeout_ms,
            },
        ).cte("registered")
        ids = sa.bindparam("job_ids", list(job_ids), type_=pg.ARRAY(sa.Integer))
        refreshed = (
            sa.update(jq)
            .where(
                jq.c.id == sa.any_(ids),
                jq.c.status == "processing",
                jq.c.locked_by == worker_id,
            )
            .values(locked_at=sa.func.now())
            .returning(jq.c.id)
            .add_cte(registered)
        )
        return [row[0] for row in self._rows(refreshed)]

    def unregister_worker(self, worker_id: str) -> None:
        self._count(sa.delete(dw).where(dw.c.worker_id == worker_id))

    def release_jobs(self, worker_id: str, jobs: Sequence[ClaimedJob]) -> list[int]:
        if not jobs:
            return []
        ids = sa.bindparam("ids", [j.id for j in jobs], type_=pg.ARRAY(sa.Integer))
        resumed = sa.bindparam(
            "resumed", [j.id for j in jobs if j.resumed], type_=pg.ARRAY(sa.Integer)
        )
        was_waiting = jq.c.id == sa.any_(resumed)
        statement = (
            sa.update(jq)
            .where(
                jq.c.id == sa.any_(ids), jq.c.status == "processing", jq.c.locked_by == worker_id
            )
            .values(
                status=sa.case((was_waiting, "waiting"), else_="pending"),
                wait_until=sa.case((was_waiting, sa.func.now()), else_=jq.c.wait_until),
                attempts=sa.case(
                    (was_waiting, jq.c.attempts), else_=sa.func.greatest(jq.c.attempts - 1, 0)
                ),
                # A first claim set started_at; the job never started after all.
                started_at=sa.case(
                    (sa.and_(sa.not_(was_waiting), jq.c.attempts <= 1), None),
                    else_=jq.c.started_at,
                ),
                locked_at=None,
                locked_by=None,
                updated_at=sa.func.now(),
            )
            .returning(jq.c.id)
        )
        return [row[0] for row in self._rows_notifying(statement)]

    # -- processing -----------------------------------------------------------------

    def advance(
        self, worker_id: str, completions: Sequence[Completion], claim: ClaimRequest
    ) -> tuple[list[int], list[ClaimedJob]]:
        if claim.job_types is not None and not claim.job_types:
            claim = attrs.evolve(claim, limit=0)  # an empty type filter matches nothing
        if not completions and claim.limit <= 0:
            return [], []
        limited = claim.limited_types() if claim.limit > 0 else ()
        params = {
            "worker_id": worker_id,
            "done_ids": [c.job_id for c in completions],
            "done_outputs": [c.output_json for c in completions],
            "claim_limit": max(claim.limit, 0),
            "job_types": list(claim.job_types or ()),
            "group_limit": claim.group_limit or 0,
        }
        free_types = _free_types(claim, limited)
        if limited:
            params.update(
                rate_types=[t for t, _ in limited],
                rate_limits=[limit.limit for _, limit in limited],
                rate_periods=[limit.per for _, limit in limited],
                free_types=free_types[1],
            )
        statement, native = self._advance_sql(claim, free_types[0])
        with self._translate_errors():
            if limited:
                # Per limited type (and the group lock): no two claims count the same room.
                keys = [self._rate_lock_key(t) for t, _ in limited]
                if claim.group_limit:
                    keys.append(self._lock_key)
                with self._transaction() as conn:
                    conn.execute(_clause(pg_sql.RATE_LOCK_SQL), {"lock_keys": keys})
                    rows = conn.execute(statement, params).all()
            elif claim.group_limit and claim.limit > 0:
                with self._transaction() as conn:
                    conn.execute(_clause(pg_sql.GROUP_CLAIM_LOCK_SQL), {"lock_key": self._lock_key})
                    rows = conn.execute(statement, params).all()
            else:
                rows = self._on_psycopg(
                    lambda raw: raw.execute(native, params).fetchall(),
                    lambda conn: list(conn.execute(statement, params).all()),
                )
        done: list[int] = []
        claimed: list[ClaimedJob] = []
        for row in rows:
            if row[0] is None:  # rate-limited claims only: when a full type has room again
                if claim.on_rate_limited is not None:
                    claim.on_rate_limited(max(float(row[-1]), 0.0))
            elif row[0]:
                done.append(row[1])
            else:
                claimed.append(ClaimedJob(*row[1:_CLAIMED_END]))
        return done, claimed

    def _advance_sql(
        self, claim: ClaimRequest, rate_limited: pg_sql.FreeTypes | None
    ) -> tuple[sa.TextClause, str]:
        """The advance statement for ``claim``: as a text() clause and for psycopg (both
        built once: text() parses the statement, about 0.15 ms)."""
        scan = max(claim.limit, claim.scan_size, 1)
        key = (claim.job_types is not None, bool(claim.group_limit), scan, rate_limited)
        cached = self._advance_cache.get(key)
        if cached is None:
            sql = pg_sql.render_advance(
                self.schema,
                type_filter=key[0],
                group_limit=key[1],
                scan_size=scan,
                rate_limited=rate_limited,
            )
            cached = self._advance_cache[key] = (sa.text(sql), pg_sql.native_statement(sql))
        return cached

    def _rate_lock_key(self, job_type: str) -> int:
        """The advisory lock of ``job_type``'s rate limit in this schema (a signed int8)."""
        key = self._rate_lock_keys.get(job_type)
        if key is None:
            digest = hashlib.blake2b(
                f"{self.schema or ''}\x00{job_type}".encode(), digest_size=8, person=b"dq-rate"
            ).digest()
            key = self._rate_lock_keys[job_type] = int.from_bytes(digest, "big", signed=True)
        return key

    def fail_jobs(self, worker_id: str, failures: Sequence[Failure]) -> list[FailResult]:
        if not failures:
            return []
        params = {
            "worker_id": worker_id,
            "ids": [f.job_id for f in failures],
            "messages": [f.message for f in failures],
            "reasons": [None if f.reason is None else f.reason.value for f in failures],
            "delays": [f.retry_in_seconds for f in failures],
            "failed_at": [f.failed_at for f in failures],
        }
        if all(f.retry_in_seconds is not None for f in failures):
            with self._translate_errors(), self._autocommit.connect() as conn:
                rows = conn.execute(_clause(self._fail_sql), params).all()
        else:
            # Dependents are cancelled only when a prerequisite fails for good (W-DEP-1),
            # in the same transaction.
            with self._translate_errors(), self._transaction() as conn:
                rows = conn.execute(_clause(self._fail_sql), params).all()
                self._cascade(conn, [r[0] for r in rows if not r[1]])
        return [FailResult(job_id=r[0], will_retry=r[1], dead_letter_job_id=r[2]) for r in rows]

    def _owned(self, worker_id: str, job_id: int) -> sa.ColumnElement[bool]:
        return sa.and_(jq.c.id == job_id, jq.c.status == "processing", jq.c.locked_by == worker_id)

    def prolong_job(self, worker_id: str, job_id: int) -> bool:
        changed = (
            sa.update(jq)
            .where(self._owned(worker_id, job_id))
            .values(locked_at=sa.func.now(), updated_at=sa.func.now())
            .returning(jq.c.id)
            .cte("changed")
        )
        return bool(self._rows(_events_for(changed, JobEventType.PROLONGED)))

    def update_progress(self, worker_id: str, job_id: int, progress: int) -> bool:
        statement = (
            sa.update(jq)
            .where(self._owned(worker_id, job_id))
            .values(progress=progress, updated_at=sa.func.now())
        )
        return self._count(statement) > 0

    def update_output(self, worker_id: str, job_id: int, output_json: str) -> bool:
        statement = (
            sa.update(jq)
            .where(self._owned(worker_id, job_id))
            .values(output=sa.cast(sa.literal(output_json), pg.JSONB), updated_at=sa.func.now())
        )
        return self._count(statement) > 0

    def update_step_data(self, worker_id: str, job_id: int, step_data_json: str) -> bool:
        statement = (
            sa.update(jq)
            .where(self._owned(worker_id, job_id))
            .values(
                step_data=sa.cast(sa.literal(step_data_json), pg.JSONB), updated_at=sa.func.now()
            )
        )
        return self._count(statement) > 0

    def wait_job(
        self,
        worker_id: str,
        job_id: int,
        wait_until: dt.datetime | None,
        token_id: str | None,
        step_data_json: str,
    ) -> bool:
        params = {
            "worker_id": worker_id,
            "job_id": job_id,
            "token_id": token_id,
            "wait_until": wait_until,
            "wait_until_text": None if wait_until is None else iso_text(wait_until),
            "step_data": step_data_json,
        }
        with self._translate_errors(), self._autocommit.connect() as conn:
            return bool(conn.execute(_clause(self._named["wait"]), params).all())

    # -- tokens ---------------------------------------------------------------------

    def create_token(
        self,
        token_id: str,
        job_id: int | None,
        timeout: dt.timedelta | None,
        tags: list[str] | None,
    ) -> None:
        timeout_at = None if timeout is None else sa.func.now() + timeout
        statement = sa.insert(wp).values(
            id=token_id, job_id=job_id, status="waiting", timeout_at=timeout_at, tags=tags
        )
        self._count(statement)

    def get_token(self, token_id: str) -> WaitpointRecord | None:
        rows = self._rows(sa.select(wp).where(wp.c.id == token_id))
        if not rows:
            return None
        row = rows[0]._mapping
        created_at = _utc(row["created_at"])
        assert created_at is not None
        return WaitpointRecord(
            id=row["id"],
            job_id=row["job_id"],
            status=row["status"],
            output=row["output"],
            timeout_at=_utc(row["timeout_at"]),
            created_at=created_at,
            completed_at=_utc(row["completed_at"]),
            tags=row["tags"],
        )

    def complete_token(self, token_id: str, output_json: str | None) -> bool | None:
        with self._translate_errors(), self._transaction() as conn:
            done = conn.execute(
                _clause(self._named["complete_token"]),
                {"token_id": token_id, "output": output_json},
            ).all()
            if not done:
                exists = conn.execute(sa.select(wp.c.id).where(wp.c.id == token_id)).first()
                return False if exists else None
            # A new statement, so it sees a job that started waiting while we waited
            # for the token's row lock (W-TOK-2).
            conn.execute(_clause(self._named["resume_token_waiters"]), {"token_ids": [token_id]})
        return True

    def expire_timed_out_tokens(self) -> int:
        with self._translate_errors(), self._transaction() as conn:
            expired = [r[0] for r in conn.execute(_clause(self._named["expire_tokens"])).all()]
            if expired:
                conn.execute(_clause(self._named["resume_token_waiters"]), {"token_ids": expired})
        return len(expired)

    # -- cron -----------------------------------------------------------------------

    def add_cron_schedule(self, values: dict[str, Any]) -> int:
        statement = sa.insert(cs).values(**values).returning(cs.c.id)
        try:
            return int(self._rows(statement)[0][0])
        except sa.exc.IntegrityError as exc:
            if _sqlstate(exc) == _UNIQUE_VIOLATION:
                raise DuplicateScheduleError(
                    f'Cron schedule with name "{values["schedule_name"]}" already exists'
                ) from None
            raise

    def get_cron_schedule(
        self, schedule_id: int | None = None, name: str | None = None
    ) -> CronScheduleRecord | None:
        condition = cs.c.id == schedule_id if name is None else cs.c.schedule_name == name
        rows = self._rows(sa.select(cs).where(condition))
        return cron_record_from_row(rows[0]._mapping) if rows else None

    def list_cron_schedules(self, status: str | None) -> list[CronScheduleRecord]:
        statement = sa.select(cs).order_by(cs.c.created_at, cs.c.id)
        if status is not None:
            statement = statement.where(cs.c.status == status)
        return [cron_record_from_row(row._mapping) for row in self._rows(statement)]

    def update_cron_schedule(self, schedule_id: int, values: dict[str, Any]) -> bool:
        statement = (
            sa.update(cs).where(cs.c.id == schedule_id).values(**values, updated_at=sa.func.now())
        )
        return self._count(statement) > 0

    def remove_cron_schedule(self, schedule_id: int) -> bool:
        return self._count(sa.delete(cs).where(cs.c.id == schedule_id)) > 0

    def enqueue_due_cron_jobs(
        self, next_run: Callable[[str, str, dt.datetime], dt.datetime | None]
    ) -> int:
        last_job = jq.alias("last_job")
        due = (
            sa.select(cs, last_job.c.status.label("last_job_status"), sa.func.now().label("now"))
            .outerjoin(last_job, last_job.c.id == cs.c.last_job_id)
            .where(cs.c.status == "active", cs.c.next_run_at <= sa.func.now())
            .order_by(cs.c.next_run_at, cs.c.id)
            .with_for_update(of=cs, skip_locked=True)
        )
        enqueued = 0
        # One transaction: the schedules stay locked until they are advanced, so two
        # processors ticking together cannot both enqueue an occurrence (W-CRON-1).
        with self._translate_errors(), self._transaction() as conn:
            for row in conn.execute(due).mappings().all():
                values: dict[str, Any] = {
                    "last_enqueued_at": sa.func.now(),
                    "updated_at": sa.func.now(),
                    "next_run_at": next_run(row["cron_expression"], row["timezone"], row["now"]),
                }
                overlapping = not row["allow_overlap"] and row["last_job_status"] in (
                    "pending",
                    "processing",
                    "waiting",
                )
                if not overlapping:
                    [job_id] = self._enqueuer.enqueue(
                        [_job_from_schedule(row)],
                        lambda sql, p: list(conn.execute(_clause(sql), dict(p)).all()),
                    )
                    values["last_job_id"] = job_id
                    enqueued += 1
                conn.execute(sa.update(cs).where(cs.c.id == row["id"]).values(**values))
        return enqueued

    # -- wake-ups -------------------------------------------------------------------

    def listen(self) -> pg_notify.PostgresWakeups | None:
        connection = pg_notify.listening_connection(self.engine)
        if connection is None:
            return None
        try:
            return pg_notify.PostgresWakeups(connection, self.notify_channel)
        except BaseException:
            connection.close()
            raise

    def next_due_in(self, job_types: Sequence[str] | None) -> float | None:
        types = None if job_types is None else list(job_types)
        with self._translate_errors(), self._autocommit.connect() as conn:
            value = conn.execute(
                _clause(self._named["next_due"]), {"job_types": types or [], "all": types is None}
            ).scalar()
        return None if value is None else float(value)

    # -- lifecycle ------------------------------------------------------------------

    def is_data_error(self, error: BaseException) -> bool:
        state = _sqlstate(error) or ""
        # 22: data exception (e.g. 22P05 "\u0000 cannot be converted to text",
        # 22021 invalid byte sequence, 22003 out of range); 54: program limit exceeded
        # (an index row too large).
        if state[:2] in ("22", "54"):
            return True
        # Text psycopg cannot encode (lone surrogates) fails before reaching the server.
        cause = getattr(error, "orig", None) or error.__cause__ or error
        return isinstance(error, UnicodeError) or isinstance(cause, UnicodeError)

    def reset_after_fork(self) -> None:
        reset_engine_after_fork(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()
