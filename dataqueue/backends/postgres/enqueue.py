"""Enqueue on PostgreSQL: one batch statement, or pipelined chunks for large batches.

Every batch is written by :data:`pg_sql`'s enqueue statements: rows, ids and ``added``
events in one statement. A batch of up to :data:`PIPELINE_CHUNK` jobs, or one on a
connection that cannot pipeline (Django's, client-side binding), is validated whole
and goes as one statement, so an invalid entry never reaches the database. A larger
batch on a psycopg 3 connection goes as one statement per chunk in psycopg's pipeline
mode: the server writes chunk *k* while Python validates and encodes chunk *k + 1*.
It is all or nothing: on our own connection in one transaction, in a caller's
transaction under a savepoint that a failure rolls back to.

Overlapping idempotency keys never deadlock, in whatever order they are given.
Inserting a key that another open transaction has written waits for that transaction,
so writing keys is taking locks on them, and every batch takes them in one global
order: a statement writes its keyed rows in key order (see :mod:`pg_sql`), and a
pipelined batch sends chunks only up to the first chunk holding a key, then the rest
of the batch as one statement, so all its keys are written by one statement. A batch
waits for a key only after writing its keys that sort before it: along any chain of
waiting transactions the keys waited for increase, and the chain cannot close into a
cycle. Nothing needs retrying. (A caller's transaction that enqueues keys in two
``add_job``/``add_jobs`` calls takes them in two runs, and can deadlock with another
that does the same, as any transaction locking rows in two statements can.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

import attrs
import psycopg
import sqlalchemy as sa
from psycopg import pq
from sqlalchemy.orm import Session, scoped_session

from dataqueue.backends.postgres import sql as pg_sql
from dataqueue.errors import InvalidJobError, JobDependencyError
from dataqueue.validation import NewJob

logger = logging.getLogger("dataqueue.postgres")

#: Runs one enqueue statement (by its text) with its parameters; returns the rows.
Execute = Callable[[str, Mapping[str, Any]], list[Any]]

#: Jobs per statement of a pipelined batch (the first chunk is a quarter of it), and
#: the batch size above which a batch is pipelined. Smaller chunks start the server
#: sooner and overlap more; each statement costs a little fixed work on the server.
#: Measured in alternating runs on 2 cores, 200 against 1,000: 1,000 jobs per call
#: 16% faster, 500 per call 18%, 10,000 per call 26% (100 and 200 were alike).
PIPELINE_CHUNK = 200


class _EnqueueStatements:
    """The enqueue statements of one schema, ready for every kind of connection.

    ``text`` is :func:`pg_sql.render_statements`' result (``:name`` binds); the other
    renderings are looked up by that text, so any ``execute(sql, params)`` callable
    given the text statements keeps working. Built once per backend; its cache only
    ever gains entries of the same value, so threads may share it.
    """

    def __init__(
        self,
        text: Mapping[str, str],
        schema: str | None,
        dialect: sa.Dialect,
        channel: str | None = None,
    ) -> None:
        native = pg_sql.render_native_statements(schema, channel)
        self._native = {text[name]: native[name] for name in pg_sql.ENQUEUE_STATEMENTS}
        self._clauses = {text[name]: sa.text(text[name]) for name in pg_sql.ENQUEUE_STATEMENTS}
        self._dialect = dialect
        self._compiled: dict[str, sa.engine.Compiled] = {}

    def native(self, sql: str) -> str:
        """``sql`` with psycopg 3 placeholders."""
        return self._native[sql]

    def clause(self, sql: str) -> sa.TextClause:
        """``sql`` as a SQLAlchemy text clause (built once, so its compiled form is cached)."""
        return self._clauses[sql]

    def compiled(self, sql: str) -> sa.engine.Compiled:
        """``sql`` compiled for a DB-API connection (``pyformat`` binds)."""
        compiled = self._compiled.get(sql)
        if compiled is None:
            compiled = self._compiled[sql] = self.clause(sql).compile(dialect=self._dialect)
        return compiled


_CLIENT_SIDE_CURSORS = tuple(
    cls for cls in (psycopg.ClientCursor, getattr(psycopg, "RawCursor", None)) if cls is not None
)


def binds_on_server(dbapi_connection: Any) -> bool:
    """True for a psycopg 3 connection whose cursors bind parameters on the server.

    Those are psycopg's default cursors; they get the psycopg-native statements. A
    ``ClientCursor`` (Django's default with psycopg 3) and a ``RawCursor`` (``$1``
    placeholders) get the text statements, compiled for the driver.
    """
    if not isinstance(dbapi_connection, psycopg.Connection):
        return False
    factory = dbapi_connection.cursor_factory
    return issubclass(factory, psycopg.Cursor) and not issubclass(factory, _CLIENT_SIDE_CURSORS)


class _CallerConnection:
    """Runs the enqueue statements on an open connection, the caller's or ours.

    Never begins, commits, rolls back or closes it. SQLAlchemy ``Connection`` and
    ``Session`` run the statements through SQLAlchemy; any other object with a
    ``cursor()`` method is treated as a DB-API connection (psycopg 3, psycopg2,
    Django's ``django.db.connection``). On psycopg 3 with server-side binding (the
    SQLAlchemy ``psycopg`` dialect, a raw psycopg connection) the statements go as
    psycopg-native SQL; everywhere else as the text statements, compiled for the
    driver.
    """

    def __init__(self, db: Any, statements: _EnqueueStatements) -> None:
        self._statements = statements
        self._sa: sa.Connection | None = None
        self._dbapi: Any = None
        self._native = False
        if isinstance(db, Session | scoped_session):
            db = db.connection()
        if isinstance(db, sa.Connection):
            if db.closed or db.invalidated:
                raise InvalidJobError(f"db connection {db!r} is closed")
            if db.dialect.name != "postgresql":
                raise InvalidJobError(
                    f"db must be a PostgreSQL connection, got a {db.dialect.name} connection"
                )
            self._sa = db
            self._native = binds_on_server(db.connection.dbapi_connection)
        elif callable(getattr(db, "cursor", None)):
            if getattr(db, "closed", False):
                raise InvalidJobError(f"db connection {db!r} is closed")
            self._dbapi = db
            self._native = binds_on_server(db)
        else:
            raise InvalidJobError(
                "db must be a SQLAlchemy Connection or Session, or a DB-API connection "
                f"(psycopg, Django's connection), got {db!r}"
            )

    @property
    def sqlalchemy(self) -> sa.Connection | None:
        """The SQLAlchemy connection, when the statements run through one."""
        return self._sa

    def pipeline_connection(self) -> psycopg.Connection[Any] | None:
        """The psycopg 3 connection to pipeline a batch on, or None if there is none.

        Only connections that bind on the server and are not already in pipeline
        mode qualify (psycopg's own pipelines need libpq 14 or later).
        """
        raw = self._sa.connection.dbapi_connection if self._sa is not None else self._dbapi
        if not (self._native and isinstance(raw, psycopg.Connection)):
            return None
        if raw.pgconn.pipeline_status != pq.PipelineStatus.OFF:
            return None
        return raw if psycopg.Pipeline.is_supported() else None

    def command(self, sql: str) -> None:
        """Run a statement without parameters or rows (through SQLAlchemy if there).

        Through SQLAlchemy, a connection that has not begun its transaction begins it
        here, so that SQLAlchemy commits what follows.
        """
        if self._sa is not None:
            self._sa.exec_driver_sql(sql)
        else:
            with self._dbapi.cursor() as cursor:
                cursor.execute(sql)

    def execute(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        """Run one of the enqueue statements (by its text) and return its rows."""
        if self._sa is not None:
            if self._native:
                result = self._sa.exec_driver_sql(self._statements.native(sql), dict(params))
            else:
                result = self._sa.execute(self._statements.clause(sql), dict(params))
            return list(result.all())
        with self._dbapi.cursor() as cursor:
            if self._native:
                cursor.execute(self._statements.native(sql), params)
            else:
                compiled = self._statements.compiled(sql)
                cursor.execute(compiled.string, compiled.construct_params(dict(params)))
            return list(cursor.fetchall())


class _UniqueJobs:
    """Numbers a batch's jobs among its *unique* ones, chunk by chunk.

    A job repeating an earlier job's idempotency key is dropped and gets that job's
    number (its id, later). Placeholders (``-n``: the batch's job ``n - 1``) are made
    relative to the chunk being taken; one naming a job of an earlier chunk becomes
    that job's id, which ``id_of`` supplies.
    """

    def __init__(self) -> None:
        self.jobs: list[NewJob] = []
        self.index_map: list[int] = []  # input position -> unique index
        self._first_by_key: dict[str, int] = {}

    def take(
        self, chunk: Iterable[NewJob], id_of: Callable[[int], int] | None = None
    ) -> list[NewJob]:
        """The unique jobs of ``chunk`` (the batch's next jobs), ready to send."""
        first = len(self.jobs)
        taken: list[NewJob] = []
        for entry in chunk:
            key = entry.idempotency_key
            if key is not None and key in self._first_by_key:
                self.index_map.append(self._first_by_key[key])
                continue
            if key is not None:
                self._first_by_key[key] = len(self.jobs)
            job = entry
            if entry.depends_on_job_ids and any(i < 0 for i in entry.depends_on_job_ids):
                job = self._localise(entry, first, id_of)
            self.index_map.append(len(self.jobs))
            self.jobs.append(job)
            taken.append(job)
        return taken

    def _localise(self, job: NewJob, first: int, id_of: Callable[[int], int] | None) -> NewJob:
        localised = []
        for job_id in job.depends_on_job_ids or ():
            if job_id >= 0:
                localised.append(job_id)
                continue
            target = self.index_map[-job_id - 1]
            if target >= first:
                localised.append(-(target - first + 1))
            elif id_of is None:  # cannot happen: one chunk starts at 0
                raise InvalidJobError(f"placeholder {job_id} names a job of an earlier chunk")
            else:
                localised.append(id_of(target))
        return attrs.evolve(job, depends_on_job_ids=localised)


#: The savepoint a pipelined batch runs under in a caller's transaction.
_SAVEPOINT = "dataqueue_add_jobs"


def _roll_back_to_savepoint(conn: psycopg.Connection[Any]) -> None:
    """Undo a failed batch in the caller's transaction (errors logged, not raised:
    the batch's own exception is the one to report)."""
    if conn.closed or conn.broken:
        return
    try:
        conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}")
    except psycopg.Error:
        logger.warning(
            "could not roll back to savepoint %s",
            _SAVEPOINT,
            exc_info=True,
            extra={"action": "savepoint_rollback_failed"},
        )


def _as_sqlalchemy_error(exc: psycopg.Error, conn: sa.Connection) -> BaseException:
    """``exc`` (raised on ``conn``'s psycopg connection) as SQLAlchemy raises it elsewhere.

    Every ``add_jobs`` path through SQLAlchemy then raises the same classes
    (``sqlalchemy.exc.DBAPIError`` subclasses, the driver's error as ``.orig``). A
    lost connection is invalidated, so the pool does not hand it out again.
    """
    error: Any = exc  # SQLAlchemy types it as its DB-API protocol's Error
    disconnected = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, None)
    if disconnected:
        conn.invalidate()
    return sa.exc.DBAPIError.instance(
        None, None, exc, psycopg.Error, connection_invalidated=disconnected, dialect=conn.dialect
    )


def _missing_prerequisites(missing: list[int]) -> JobDependencyError:
    return JobDependencyError(
        f"depends_on.job_ids: one or more job ids do not exist ({', '.join(map(str, missing))})",
        missing,
    )


def _unresolved_key(key: str | None) -> InvalidJobError:
    return InvalidJobError(
        f"Failed to insert job and could not find existing job with idempotency key {key!r}"
    )


def _input_flags(index_map: Sequence[int], unique_flags: Sequence[bool]) -> list[bool]:
    """Per input position: its unique job was inserted, and it is that job's first
    occurrence (a repeat of an earlier key in the batch inserted nothing)."""
    seen: set[int] = set()
    flags: list[bool] = []
    for n in index_map:
        flags.append(unique_flags[n] and n not in seen)
        seen.add(n)
    return flags


def _read_rows(jobs: Sequence[NewJob], rows: Sequence[Any]) -> tuple[list[int], dict[str, int]]:
    """Ids from an enqueue statement's rows, and the keys it could not resolve.

    A row that was neither inserted nor matched an existing key lost a race: a
    concurrent transaction inserted the key after the statement's snapshot was taken.
    Those keys map to their index in ``jobs``; a new statement sees them.
    """
    if len(rows) != len(jobs):
        raise InvalidJobError(
            f"Failed to insert jobs: the database returned {len(rows)} rows for {len(jobs)} jobs"
        )
    ids: list[int] = [row[1] for row in rows]
    unresolved = {
        key: n
        for n, (job, row) in enumerate(zip(jobs, rows, strict=True))
        if (key := job.idempotency_key) is not None and not row[2] and row[3] is None
    }
    return ids, unresolved


def _dependents_of(
    jobs: Sequence[NewJob], rows: Sequence[Any], targets: Iterable[int]
) -> list[int]:
    """Ids of the rows one statement inserted whose placeholders name ``targets``.

    ``targets`` are positions in ``jobs`` (the statement's) of jobs it skipped for a
    key that a concurrent transaction wrote meanwhile: the statement resolved their
    placeholders to the id the skipped job drew, which :func:`_repair_parameters` mends.
    """
    placeholders = {-(n + 1) for n in targets}
    return [
        row[1]
        for job, row in zip(jobs, rows, strict=True)
        if row[2] and job.depends_on_job_ids and not placeholders.isdisjoint(job.depends_on_job_ids)
    ]


def _repair_parameters(dependents: list[int], repairs: Mapping[int, int]) -> dict[str, list[int]]:
    """Parameters of the ``repair_placeholders`` statement (``repairs``: wrong id -> id)."""
    return {"ids": dependents, "wrong_ids": list(repairs), "right_ids": list(repairs.values())}


class Enqueuer:
    """Runs the enqueue statements of one schema (``sql``: :func:`pg_sql.render_statements`,
    rendered for the same wake-up ``channel``)."""

    def __init__(
        self,
        sql: Mapping[str, str],
        schema: str | None,
        dialect: sa.Dialect,
        channel: str | None = None,
    ) -> None:
        self._sql = sql
        self._statements = _EnqueueStatements(sql, schema, dialect, channel)

    def add_on(
        self,
        db: Any,
        jobs: Iterable[NewJob],
        count: int,
        inserted: list[bool] | None = None,
    ) -> list[int]:
        """Insert the ``count`` jobs of ``jobs`` on ``db`` (a caller's connection or ours).

        ``jobs`` may validate each job as it is drawn. A batch of up to
        :data:`PIPELINE_CHUNK` jobs, or one on a connection that cannot pipeline, is
        drawn whole and sent as one statement. A larger one is pipelined in chunks,
        all or nothing (see :meth:`_add_pipelined`), up to its first idempotency key.
        """
        connection = _CallerConnection(db, self._statements)
        raw = connection.pipeline_connection() if count > PIPELINE_CHUNK else None
        if raw is None:
            unique = _UniqueJobs()
            flags: list[bool] | None = None if inserted is None else []
            ids = self.enqueue(unique.take(jobs), connection.execute, flags)
            if inserted is not None and flags is not None:
                inserted.extend(_input_flags(unique.index_map, flags))
            return [ids[i] for i in unique.index_map]
        try:
            return self._add_pipelined(connection, raw, jobs, inserted)
        except psycopg.Error as exc:
            if connection.sqlalchemy is None:
                raise
            raise _as_sqlalchemy_error(exc, connection.sqlalchemy) from exc

    def enqueue(
        self, jobs: Sequence[NewJob], execute: Execute, inserted: list[bool] | None = None
    ) -> list[int]:
        """Insert ``jobs`` (keys unique) and their events; return ids in input order.

        ``execute(sql, params)`` runs one of the text statements on an open
        connection and returns its rows. A key that a concurrent transaction wrote
        while the statement ran is looked up afterwards, and the jobs whose
        placeholders name it are given that transaction's job.
        """
        self._check_prerequisites(jobs, execute)
        if len(jobs) == 1 and not any(i < 0 for i in jobs[0].depends_on_job_ids or ()):
            params = pg_sql.enqueue_one_parameters(jobs[0])
            rows = execute(self._sql["enqueue_one"], params) or [(1, None, False, None)]
        else:
            params = pg_sql.enqueue_parameters(jobs)
            rows = execute(self._sql[_batch_statement(jobs)], params)
        ids, unresolved = _read_rows(jobs, rows)
        if inserted is not None:
            inserted.extend(bool(row[2]) for row in rows)
        if unresolved:
            found = self._ids_by_key(list(unresolved), execute)
            repairs: dict[int, int] = {}
            for key, n in unresolved.items():
                if key not in found:
                    raise _unresolved_key(key)
                repairs[ids[n]] = found[key]  # the id the skipped job drew -> the job's
                ids[n] = found[key]
            dependents = _dependents_of(jobs, rows, unresolved.values())
            if dependents:
                execute(self._sql["repair_placeholders"], _repair_parameters(dependents, repairs))
        if None in ids:  # cannot happen: only a key can make the insert skip a row
            raise InvalidJobError("Failed to insert job: the database returned no id")
        return ids

    def _add_pipelined(
        self,
        connection: _CallerConnection,
        conn: psycopg.Connection[Any],
        jobs: Iterable[NewJob],
        inserted: list[bool] | None = None,
    ) -> list[int]:
        """Insert ``jobs`` on ``conn`` in pipelined chunks, all or nothing.

        With no transaction to join (our autocommit connection, or a caller's in
        autocommit mode) the batch is a transaction of its own: as atomic as one
        statement, committed at the end. In a caller's transaction (open, or opened
        here as one statement would open it) the batch runs under a savepoint: an
        exception from ``jobs`` (validation) or from a statement undoes the batch
        alone and leaves the caller's transaction usable and unchanged.
        """
        if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
            # Pipeline first: BEGIN and COMMIT then travel with the statements.
            with conn.pipeline() as pipeline, conn.transaction():
                return self._send(conn, jobs, pipeline, inserted)
        connection.command(f"SAVEPOINT {_SAVEPOINT}")
        try:
            with conn.pipeline() as pipeline:
                ids = self._send(conn, jobs, pipeline, inserted)
        except BaseException:
            _roll_back_to_savepoint(conn)
            raise
        conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return ids

    def _send(
        self,
        conn: psycopg.Connection[Any],
        jobs: Iterable[NewJob],
        pipeline: psycopg.Pipeline,
        inserted: list[bool] | None = None,
    ) -> list[int]:
        """Send ``jobs`` chunk by chunk, then read and check every result.

        From the first chunk that holds an idempotency key on, the rest of the batch
        is drawn and sent as one statement: keys written by two statements of one
        transaction would be locked in two runs of key order, which another batch
        holding the same keys could interleave with into a deadlock. Earlier chunks
        hold no key, so they lock nothing another enqueue waits for. The price: the
        keyed rest is validated and encoded before the server starts on it, instead
        of while it writes the previous chunk.
        """
        batch = _PipelinedBatch(conn, self._native)
        iterator = iter(jobs)
        # The first chunk is smaller so that the server starts sooner.
        size = max(1, PIPELINE_CHUNK // 4)
        while chunk := list(islice(iterator, size)):
            if any(job.idempotency_key is not None for job in chunk):
                chunk.extend(iterator)
            batch.send(chunk, pipeline)
            size = PIPELINE_CHUNK
        pipeline.sync()
        ids = batch.finish(pipeline)
        if inserted is not None:
            inserted.extend(batch.inserted_flags())
        return ids

    def _native(self, name: str) -> str:
        return self._statements.native(self._sql[name])

    def _check_prerequisites(self, jobs: Sequence[NewJob], execute: Execute) -> None:
        """Raise :class:`JobDependencyError` unless every positive prerequisite id exists."""
        prerequisites = sorted({i for job in jobs for i in job.depends_on_job_ids or () if i > 0})
        if not prerequisites:
            return
        found = {row[0] for row in execute(self._sql["existing_ids"], {"ids": prerequisites})}
        missing = [i for i in prerequisites if i not in found]
        if missing:
            raise _missing_prerequisites(missing)

    def _ids_by_key(self, keys: list[str], execute: Execute) -> dict[str, int]:
        return {row[0]: row[1] for row in execute(self._sql["ids_by_key"], {"keys": keys})}


def _batch_statement(jobs: Sequence[NewJob]) -> str:
    """The leanest batch statement that can write ``jobs``."""
    if any(job.idempotency_key is not None for job in jobs):
        return "enqueue"
    if any(i < 0 for job in jobs if job.depends_on_job_ids for i in job.depends_on_job_ids):
        return "enqueue_without_keys"
    return "enqueue_plain"


class _PipelinedBatch:
    """The state of one pipelined ``add_jobs`` batch while its chunks are sent.

    Jobs are numbered as :class:`_UniqueJobs` does. A placeholder naming a job of an
    earlier chunk needs that job's id, read back first: the only case that waits for
    the server mid-batch.
    """

    def __init__(self, conn: psycopg.Connection[Any], native: Callable[[str], str]) -> None:
        self._conn = conn
        self._native = native
        self._unique = _UniqueJobs()
        self._ids: list[int | None] = []  # by unique index; None until read
        self._unread: list[tuple[psycopg.Cursor[Any], int, int]] = []  # cursor, first, count
        self._prerequisite_checks: list[tuple[psycopg.Cursor[Any], list[int]]] = []
        self._unresolved: dict[str, int] = {}
        self._dependents: list[int] = []  # see _dependents_of
        self._inserted: list[bool] = []  # by unique index: this batch wrote the row

    def send(self, chunk: list[NewJob], pipeline: psycopg.Pipeline) -> None:
        """Queue the statements of ``chunk`` (the next jobs of the batch)."""
        first = len(self._unique.jobs)
        jobs = self._unique.take(chunk, lambda index: self._id_of(index, pipeline))
        if not jobs:
            return
        self._ids.extend([None] * len(jobs))
        # Ids that replaced placeholders are jobs of this transaction: they exist.
        prerequisites = {i for job in jobs for i in job.depends_on_job_ids or () if i > 0}
        if prerequisites:
            ids = sorted(prerequisites)
            check = self._conn.cursor()
            check.execute(self._native("existing_ids"), {"ids": ids})
            self._prerequisite_checks.append((check, ids))
        cursor = self._conn.cursor()
        cursor.execute(self._native(_batch_statement(jobs)), pg_sql.enqueue_parameters(jobs))
        self._unread.append((cursor, first, len(jobs)))

    def _id_of(self, index: int, pipeline: psycopg.Pipeline) -> int:
        """The id of unique job ``index`` of an earlier chunk (waits for its rows)."""
        key = self._unique.jobs[index].idempotency_key
        if self._ids[index] is None or key in self._unresolved:
            pipeline.sync()
            self._read()
            self._resolve_keys(pipeline)
        job_id = self._ids[index]
        assert job_id is not None  # read above
        return job_id

    def finish(self, pipeline: psycopg.Pipeline) -> list[int]:
        """After the pipeline synced: check, resolve, and return the ids in input order."""
        self._read()
        for check, wanted in self._prerequisite_checks:
            found = {row[0] for row in check.fetchall()}
            check.close()
            missing = [i for i in wanted if i not in found]
            if missing:
                raise _missing_prerequisites(missing)
        self._resolve_keys(pipeline)
        result: list[int] = []
        for n in self._unique.index_map:
            job_id = self._ids[n]
            if job_id is None:  # cannot happen: every unique job's rows were read
                raise InvalidJobError("Failed to insert job: the database returned no id")
            result.append(job_id)
        return result

    def inserted_flags(self) -> list[bool]:
        """Per input job: True if this batch wrote it (not an idempotent duplicate)."""
        return _input_flags(self._unique.index_map, self._inserted)

    def _read(self) -> None:
        """Read the rows of every statement sent and not read yet (the pipeline synced)."""
        for cursor, first, count in self._unread:
            rows = cursor.fetchall()
            cursor.close()
            jobs = self._unique.jobs[first : first + count]
            ids, unresolved = _read_rows(jobs, rows)
            self._ids[first : first + count] = ids
            self._inserted[first : first + count] = [bool(row[2]) for row in rows]
            if unresolved:
                self._unresolved.update((key, first + n) for key, n in unresolved.items())
                self._dependents += _dependents_of(jobs, rows, unresolved.values())
        self._unread.clear()

    def _resolve_keys(self, pipeline: psycopg.Pipeline) -> None:
        """Look up keys a concurrent transaction inserted during the batch.

        Their jobs' dependents in the same statement get those jobs' ids too.
        """
        if not self._unresolved:
            return
        with self._conn.cursor() as cursor:
            cursor.execute(self._native("ids_by_key"), {"keys": list(self._unresolved)})
            pipeline.sync()
            found = {row[0]: row[1] for row in cursor.fetchall()}
        repairs: dict[int, int] = {}
        for key, n in self._unresolved.items():
            if key not in found:
                raise _unresolved_key(key)
            drawn = self._ids[n]
            if drawn is not None:
                repairs[drawn] = found[key]
            self._ids[n] = found[key]
        self._unresolved.clear()
        if self._dependents:
            parameters = _repair_parameters(self._dependents, repairs)
            self._dependents = []
            with self._conn.cursor() as cursor:
                cursor.execute(self._native("repair_placeholders"), parameters)
                pipeline.sync()
