"""The raw SQL statements of the PostgreSQL backend — the one place dataqueue writes SQL text.

Everything else is SQLAlchemy Core. These statements stay text because Core cannot
express them readably: data-modifying CTEs chained over unnested arrays, row locks
inside UNION branches, and window functions over locked rows.

**Enqueue** unnests one array per column
``WITH ORDINALITY``, pre-allocates ids from the ``job_queue`` sequence in input order,
looks up keys that already exist, resolves batch placeholders (``-(k+1)`` means "the
job at index k") against an ``id_map`` array of the batch's ids, inserts the rows with
``ON CONFLICT DO NOTHING`` on the idempotency index (in key order, so that batches
sharing keys cannot deadlock), writes one ``added`` event per inserted row, and
returns one ``(ord, id, was_inserted, existing_id)`` row per input in input order.
All of that is one statement: one round trip, atomic even in autocommit, and usable
on any DB-API connection the caller passes as ``db=``. Its cost estimate
grows linearly with the batch (placeholders are array subscripts, not joins), so it
stays under ``jit_above_cost`` on servers with JIT. A single job takes a plain
``INSERT … VALUES`` of the same shape (**enqueue_one**).

Every column travels as the text of one array literal (``{"a","b",NULL}``), built
with a few string operations per column; per-row lists (tags, dependencies) are
array literals nested as elements of a text array, because PostgreSQL arrays must be
rectangular, and each row casts its own. The enqueue statements are written with
SQLAlchemy ``:name`` binds and also rendered for psycopg 3
(:func:`render_native_statements`), whitespace compacted (psycopg caches parsing only
for queries under 4 KiB).

**Advance** is the processor's whole cycle in one statement: it completes the jobs a
worker finished (guarded by ``status='processing' AND locked_by=<worker>``, W-LOCK-1),
writes their ``completed`` events, claims the next jobs with ``FOR UPDATE SKIP
LOCKED`` and writes their ``processing`` events (W-EV-2: same transaction). The claim
is three index-ordered, limited branches (pending by ``idx_job_queue_claim_order``,
due retries by ``idx_job_queue_failed_retry``, due waits by ``idx_job_queue_wait_until``)
merged and limited again, so its cost does not grow with the backlog (W-PLAN-1).
Dependency checks run only for rows that have dependencies.

**Fail** records failures of many jobs at once: retry schedule, error history,
dead-letter job (its id drawn from the sequence inside the same UPDATE) and events.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Literal, cast

from dataqueue.validation import NewJob

#: (parameter name, PostgreSQL array element type), in unnest order.
INPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("job_type", "text"),
    ("payload", "text"),
    ("max_attempts", "int"),
    ("priority", "int"),
    ("run_at", "timestamptz"),
    ("timeout_ms", "int"),
    ("force_kill_on_timeout", "boolean"),
    ("tags", "text"),
    ("idempotency_key", "text"),
    ("retry_delay", "int"),
    ("retry_backoff", "boolean"),
    ("retry_delay_max", "int"),
    ("dead_letter_job_type", "text"),
    ("group_id", "text"),
    ("group_tier", "text"),
    ("depends_on_job_ids", "text"),
    ("depends_on_tags", "text"),
    ("step_data", "text"),
)

_INSERT_COLUMNS = """
        job_type, payload, max_attempts, priority, run_at, timeout_ms,
        force_kill_on_timeout, tags, idempotency_key, retry_delay, retry_backoff,
        retry_delay_max, dead_letter_job_type, group_id, group_tier,
        depends_on_job_ids, depends_on_tags, step_data"""

_INSERTED_RETURNING = (
    "RETURNING id, job_type, payload, tags, idempotency_key, depends_on_job_ids, depends_on_tags"
)

# The ``added`` event of every row in ``inserted``: {jobType, payload, tags?,
# idempotencyKey?, dependsOn?}, with placeholders already resolved to ids. Each ``||``
# rebuilds the whole object (payload included), so a plain job builds it once.
_ADDED_EVENTS = """
added_events AS (
    INSERT INTO {job_events} (job_id, event_type, metadata)
    SELECT inserted.id, 'added',
        CASE WHEN inserted.tags IS NULL AND inserted.idempotency_key IS NULL
            AND inserted.depends_on_job_ids IS NULL AND inserted.depends_on_tags IS NULL
        THEN jsonb_build_object('jobType', inserted.job_type, 'payload', inserted.payload)
        ELSE jsonb_build_object('jobType', inserted.job_type, 'payload', inserted.payload)
        || CASE WHEN inserted.tags IS NULL THEN '{{}}'::jsonb
                ELSE jsonb_build_object('tags', to_jsonb(inserted.tags)) END
        || CASE WHEN inserted.idempotency_key IS NULL THEN '{{}}'::jsonb
                ELSE jsonb_build_object('idempotencyKey', inserted.idempotency_key) END
        || CASE WHEN inserted.depends_on_job_ids IS NULL AND inserted.depends_on_tags IS NULL
                THEN '{{}}'::jsonb
                ELSE jsonb_build_object('dependsOn', jsonb_strip_nulls(jsonb_build_object(
                    'jobIds', to_jsonb(inserted.depends_on_job_ids),
                    'tags', to_jsonb(inserted.depends_on_tags)))) END
        END
    FROM inserted
    ORDER BY inserted.id
)"""

# ``input`` draws the ids: nextval runs in ``ord`` order (it is computed above the
# ORDER BY; PostgreSQL postpones volatile output columns past a sort), so ids increase
# in input order. ``resolved`` adds the ids of keys that already exist; for a batch
# without keys the join condition is ``false`` (enqueue_without_keys), so it never
# reads job_queue and its cost does not grow with the table. ``id_map`` is read only
# through a scalar subquery, so a batch without placeholders never builds it.
_ENQUEUE_SQL = """
WITH input AS MATERIALIZED (
    SELECT CAST(nextval({sequence}) AS integer) AS new_id, t.*
    FROM unnest({arrays}) WITH ORDINALITY AS t({names}, ord)
    ORDER BY t.ord
),
resolved AS MATERIALIZED (
    SELECT input.*, existing.id AS existing_id, COALESCE(existing.id, input.new_id) AS id
    FROM input
    LEFT JOIN {job_queue} AS existing ON {existing_key}
),
id_map AS MATERIALIZED (
    SELECT array_agg(resolved.id ORDER BY resolved.ord) AS ids FROM resolved
),
inserted AS (
    INSERT INTO {job_queue} (id,{insert_columns})
    SELECT r.id, r.job_type, CAST(r.payload AS jsonb), r.max_attempts, r.priority,
        COALESCE(r.run_at, CURRENT_TIMESTAMP), r.timeout_ms, r.force_kill_on_timeout,
        CAST(r.tags AS text[]), r.idempotency_key, r.retry_delay, r.retry_backoff,
        r.retry_delay_max, r.dead_letter_job_type, r.group_id, r.group_tier,
        CASE WHEN r.depends_on_job_ids IS NOT NULL THEN ARRAY(
            SELECT CASE WHEN d.id < 0 THEN (SELECT id_map.ids FROM id_map)[-d.id] ELSE d.id END
            FROM unnest(CAST(r.depends_on_job_ids AS integer[])) WITH ORDINALITY AS d(id, n)
            ORDER BY d.n) END,
        CAST(r.depends_on_tags AS text[]), {step_data}
    FROM resolved AS r
    WHERE r.existing_id IS NULL
    ORDER BY {insert_order}{on_conflict}
    {returning}
),{added_events}{notify}
SELECT resolved.ord, resolved.id, inserted.id IS NOT NULL AS was_inserted, resolved.existing_id
FROM resolved LEFT JOIN inserted ON inserted.id = resolved.id{notified}
ORDER BY resolved.ord
"""

# A batch without idempotency keys and without placeholders: every row is inserted,
# so nothing is looked up, joined or materialised. The id column's default draws the
# ids above the function scan, whose output PostgreSQL knows is in ``ord`` order (it
# would sort otherwise), so ids increase in input order and ``ORDER BY id`` returns
# the rows in input order. About 5% less server time than _ENQUEUE_SQL.
_ENQUEUE_PLAIN_SQL = """
WITH inserted AS (
    INSERT INTO {job_queue} ({insert_columns})
    SELECT t.job_type, CAST(t.payload AS jsonb), t.max_attempts, t.priority,
        COALESCE(t.run_at, CURRENT_TIMESTAMP), t.timeout_ms, t.force_kill_on_timeout,
        CAST(t.tags AS text[]), t.idempotency_key, t.retry_delay, t.retry_backoff,
        t.retry_delay_max, t.dead_letter_job_type, t.group_id, t.group_tier,
        CAST(t.depends_on_job_ids AS integer[]), CAST(t.depends_on_tags AS text[]),
        {step_data}
    FROM unnest({arrays}) WITH ORDINALITY AS t({names}, ord)
    ORDER BY t.ord
    {returning}
),{added_events}{notify}
SELECT 0 AS ord, inserted.id, true AS was_inserted, CAST(NULL AS integer) AS existing_id
FROM inserted{notified}
ORDER BY inserted.id
"""

# One job (add_job, or a batch that is one job after de-duplicating keys; placeholders
# cannot occur, they must point at an earlier job). Same result shape as the batch, as
# zero or one row: none when a concurrent transaction inserted the key after this
# statement's snapshot (the caller then looks the key up in a new statement). The
# existing-key branch cannot see the row ``inserted`` writes (same snapshot).
_ENQUEUE_ONE_SQL = """
WITH inserted AS (
    INSERT INTO {job_queue} ({insert_columns})
    VALUES (CAST(:job_type AS text), CAST(:payload AS jsonb), CAST(:max_attempts AS integer),
        CAST(:priority AS integer), COALESCE(CAST(:run_at AS timestamptz), CURRENT_TIMESTAMP),
        CAST(:timeout_ms AS integer), CAST(:force_kill_on_timeout AS boolean),
        CAST(:tags AS text[]), CAST(:idempotency_key AS text), CAST(:retry_delay AS integer),
        CAST(:retry_backoff AS boolean), CAST(:retry_delay_max AS integer),
        CAST(:dead_letter_job_type AS text), CAST(:group_id AS text),
        CAST(:group_tier AS text), CAST(:depends_on_job_ids AS integer[]),
        CAST(:depends_on_tags AS text[]), {step_data})
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    {returning}
),{added_events}{notify_one}
SELECT 1 AS ord, inserted.id, true AS was_inserted, CAST(NULL AS integer) AS existing_id
FROM inserted{notified}
UNION ALL
SELECT 1, existing.id, false, existing.id FROM {job_queue} AS existing
WHERE existing.idempotency_key = CAST(:idempotency_key AS text)
"""

_EXISTING_IDS_SQL = "SELECT id FROM {job_queue} WHERE id = ANY(CAST(:ids AS integer[]))"

_IDS_BY_KEY_SQL = (
    "SELECT idempotency_key, id FROM {job_queue} WHERE idempotency_key = ANY(CAST(:keys AS text[]))"
)

# A batch placeholder names a job whose key a concurrent transaction wrote after the
# batch's snapshot was taken: the batch skipped that job, but its dependents in the same
# statement were written with the id the skipped job drew (``id_map``). Rewrites those
# ids (``wrong_ids``, never any row's id) to the other transaction's job (``right_ids``)
# in the dependents (``ids``, rows of this transaction) and in their ``added`` events.
_REPAIR_PLACEHOLDERS_SQL = """
WITH repair AS (
    SELECT * FROM unnest(CAST(:wrong_ids AS integer[]), CAST(:right_ids AS integer[]))
        AS t(wrong_id, right_id)
),
repaired AS (
    UPDATE {job_queue} AS j
    SET depends_on_job_ids = ARRAY(
        SELECT COALESCE(repair.right_id, d.id)
        FROM unnest(j.depends_on_job_ids) WITH ORDINALITY AS d(id, n)
        LEFT JOIN repair ON repair.wrong_id = d.id
        ORDER BY d.n)
    WHERE j.id = ANY(CAST(:ids AS integer[]))
    RETURNING j.id, j.depends_on_job_ids
)
UPDATE {job_events} AS e
SET metadata = jsonb_set(e.metadata, ARRAY['dependsOn', 'jobIds'],
    to_jsonb(repaired.depends_on_job_ids))
FROM repaired
WHERE e.job_id = repaired.id AND e.event_type = 'added'
RETURNING e.job_id
"""

#: Names of the statements :func:`render_statements` and :func:`render_native_statements`
#: return.
ENQUEUE_STATEMENTS = (
    "enqueue",
    "enqueue_without_keys",
    "enqueue_plain",
    "enqueue_one",
    "existing_ids",
    "ids_by_key",
    "repair_placeholders",
)

# SQLAlchemy's own pattern for ``:name`` binds in text(); ``::type`` casts do not match.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def _qualify(schema: str | None, name: str) -> str:
    if schema is None:
        return name
    return '"' + schema.replace('"', '""') + '".' + name


# -- wake-ups ---------------------------------------------------------------------------
#
# A statement that makes jobs due (or schedules them) also calls ``pg_notify`` once, so
# listening processors claim at once (see :mod:`dataqueue.backends.postgres.notify`).
# PostgreSQL delivers it when the transaction commits: a rolled-back ``db=`` enqueue
# wakes nobody. It sits in a MATERIALIZED CTE over the statement's changed rows (LIMIT
# 1: one call, none when nothing changed) that the final SELECT reads once as a
# one-time filter; a CTE that nothing reads would never run, and a call in a per-row
# position would run per row. The payload is the job type when the statement wrote
# one job, else empty ("any type").

#: Filter of the final SELECT that runs the ``notified`` CTE (count(*) is never NULL).
_NOTIFIED = "\nWHERE (SELECT count(*) FROM notified) >= 0"


def _notify_cte(channel_literal: str, payload: str, source: str) -> str:
    """``, notified AS (...)``: one ``pg_notify`` if ``source`` has a row."""
    return (
        ",\nnotified AS MATERIALIZED (\n"
        f"    SELECT pg_notify({channel_literal}, {payload}) FROM {source} LIMIT 1\n)"
    )


def channel_literal(channel: str) -> str:
    """``channel`` as an SQL string literal."""
    return "'" + channel.replace("'", "''") + "'"


# Speculative insertion (ON CONFLICT) costs an extra heap write and WAL record per row,
# so only batches that carry keys pay for it.
_ON_CONFLICT = "\n    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"


# A job's first step_data: the JSON the caller sent (the trace context a traced enqueue
# carries, see dataqueue.tracing) or, for NULL, the column's default (an empty object).
# Written as a call, not a literal, because the templates are formatted twice.
def _step_data(value: str) -> str:
    return f"COALESCE(CAST({value} AS jsonb), jsonb_build_object())"


# A row whose key another open transaction has written waits for that transaction, so
# inserting a key is taking a lock on it. Keyed rows are inserted in one global order
# (the keys' bytes; rows without a key last, in input order): two statements that
# share keys then wait for each other in one direction only and cannot deadlock. Their
# ids were drawn in input order before (``input``), so the order of ids is unchanged.
_KEY_ORDER = 'r.idempotency_key COLLATE "C", r.ord'


def _templates(notify: bool) -> dict[str, str]:
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in INPUT_COLUMNS)
    # The channel literal is filled in by the second format() call, with the schema's names.
    channel = "{notify_channel}"
    shared = {
        "insert_columns": _INSERT_COLUMNS,
        "returning": _INSERTED_RETURNING,
        "added_events": _ADDED_EVENTS,
        # Left for the second format() call, which fills in the schema's names.
        "job_queue": "{job_queue}",
        "job_events": "{job_events}",
        "sequence": "{sequence}",
        "notify": _notify_cte(channel, "''", "inserted") if notify else "",
        "notified": _NOTIFIED if notify else "",
    }
    names = ", ".join(name for name, _ in INPUT_COLUMNS)
    keyed = "existing.idempotency_key = input.idempotency_key"
    return {
        "enqueue": _ENQUEUE_SQL.format(
            arrays=arrays,
            names=names,
            step_data=_step_data("r.step_data"),
            existing_key=keyed,
            insert_order=_KEY_ORDER,
            on_conflict=_ON_CONFLICT,
            **shared,
        ),
        # Without keys: no lookup of existing rows, no conflict to resolve, no lock to order.
        "enqueue_without_keys": _ENQUEUE_SQL.format(
            arrays=arrays,
            names=names,
            step_data=_step_data("r.step_data"),
            existing_key="false",
            insert_order="r.ord",
            on_conflict="",
            **shared,
        ),
        "enqueue_plain": _ENQUEUE_PLAIN_SQL.format(
            arrays=arrays, names=names, step_data=_step_data("t.step_data"), **shared
        ),
        "enqueue_one": _ENQUEUE_ONE_SQL.format(
            step_data=_step_data(":step_data"),
            # One job: its type tells processors of other types that they may sleep on.
            notify_one=_notify_cte(channel, "CAST(:job_type AS text)", "inserted")
            if notify
            else "",
            **shared,
        ),
        "existing_ids": _EXISTING_IDS_SQL,
        "ids_by_key": _IDS_BY_KEY_SQL,
        "repair_placeholders": _REPAIR_PLACEHOLDERS_SQL,
    }


# A quoted identifier or a string literal (their doubled quotes included).
_QUOTED = re.compile(r"(\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*')")


def native_statement(sql: str) -> str:
    """A statement rendered for SQLAlchemy ``text()`` (``:name`` binds, ``\\:`` for a
    literal colon; no comments), for a psycopg 3 cursor: ``%(name)s`` placeholders,
    ``%`` doubled, and runs of whitespace outside quotes made one space, so that
    psycopg caches the parsing of a statement that fits in 4 KiB. Quoted identifiers
    (a schema name) and string literals are kept as they are.
    """
    parts = _QUOTED.split(sql)
    for i, part in enumerate(parts):
        escaped = part.replace("%", "%%")
        if i % 2 == 0:  # outside quotes
            escaped = _BIND.sub(r"%(\1)s", re.sub(r"\s+", " ", escaped))
        parts[i] = escaped.replace("\\:", ":")
    return "".join(parts).strip()


def _compact(sql: str) -> str:
    # The templates hold no comments and no string literal with repeated spaces.
    return " ".join(sql.split())


def _table_names(
    schema: str | None, escape: Callable[[str], str], channel: str | None = None
) -> dict[str, str]:
    # The sequence is a regclass literal, resolved once when the statement is parsed
    # (a bound name would be looked up again for every row).
    sequence = "CAST('" + _qualify(schema, "job_queue_id_seq").replace("'", "''") + "' AS regclass)"
    return {
        "job_queue": escape(_qualify(schema, "job_queue")),
        "job_events": escape(_qualify(schema, "job_events")),
        "waitpoints": escape(_qualify(schema, "waitpoints")),
        "rate_limit_starts": escape(_qualify(schema, "dataqueue_rate_limit_starts")),
        "sequence": escape(sequence),
        "notify_channel": "" if channel is None else escape(channel_literal(channel)),
    }


def _text_names(schema: str | None, channel: str | None = None) -> dict[str, str]:
    """The schema's names for statements run through SQLAlchemy ``text()``.

    A colon in a quoted schema name must not read as a bind parameter there.
    """
    return _table_names(schema, lambda sql: sql.replace(":", "\\:"), channel)


def render_statements(schema: str | None, channel: str | None = None) -> dict[str, str]:
    """The SQL texts for ``schema`` (None: the connection's search_path).

    The enqueue statements (:data:`ENQUEUE_STATEMENTS`) use SQLAlchemy ``:name`` binds.
    With a ``channel``, the enqueue statements notify it (see ``_notify_cte``).
    """
    names = _text_names(schema, channel)
    templates = _templates(channel is not None)
    return {name: _compact(sql).format(**names) for name, sql in templates.items()}


def render_native_statements(schema: str | None, channel: str | None = None) -> dict[str, str]:
    """The enqueue statements (:data:`ENQUEUE_STATEMENTS`) for a psycopg 3 cursor.

    Same SQL and parameter names as :func:`render_statements`, with ``%(name)s``
    placeholders, so psycopg sends them without SQLAlchemy compiling anything.
    """
    names = _table_names(schema, lambda sql: sql.replace("%", "%%"), channel)
    return {
        name: _BIND.sub(r"%(\1)s", _compact(sql).replace("%", "%%")).format(**names)
        for name, sql in _templates(channel is not None).items()
    }


# -- batch parameters ------------------------------------------------------------------
#
# The batch statement takes one array per column. Each travels as the text of a
# PostgreSQL array literal (``{"a","b",NULL}``), built here with a few C-level string
# operations per column: a fraction of the cost of letting the driver adapt 10,000
# Python objects one by one, and the same on every driver. Text elements are always
# quoted, so any text fits; validation has rejected NUL characters (which text cannot
# hold), so NUL can serve as a separator while escaping a whole column at once.

_BOOL_TEXT = {True: "t", False: "f", None: "NULL"}


def _quote_all(joined: str) -> str:
    return joined.replace("\\", "\\\\").replace('"', '\\"')


def _quote_element(value: str | None) -> str:
    return "NULL" if value is None else '"' + _quote_all(value) + '"'


def text_array_literal(values: Sequence[str | None]) -> str:
    """A ``text[]`` literal of ``values`` (None as NULL)."""
    if not values:
        return "{}"
    if None not in values:
        joined = "\x00".join(cast("Sequence[str]", values))
        if joined.count("\x00") == len(values) - 1:
            return '{"' + _quote_all(joined).replace("\x00", '","') + '"}'
    return "{" + ",".join(map(_quote_element, values)) + "}"


def _int_text(value: int | None) -> str:
    return "NULL" if value is None else str(value)


def int_array_literal(values: Sequence[int | None]) -> str:
    """An ``int[]`` literal of ``values`` (None as NULL)."""
    return "{" + ",".join(map(str if None not in values else _int_text, values)) + "}"


def bool_array_literal(values: Sequence[bool | None]) -> str:
    """A ``boolean[]`` literal of ``values`` (None as NULL)."""
    return "{" + ",".join(map(_BOOL_TEXT.__getitem__, values)) + "}"


def _timestamp_text(value: dt.datetime | None) -> str:
    return "NULL" if value is None else '"' + value.isoformat() + '"'


def timestamp_array_literal(values: Sequence[dt.datetime | None]) -> str:
    """A ``timestamptz[]`` literal of aware datetimes (None as NULL)."""
    return "{" + ",".join(map(_timestamp_text, values)) + "}"


def _text_array(values: Sequence[str] | None) -> str | None:
    """One row's list as an array literal (an element of a ``text[]`` column array)."""
    return None if values is None else text_array_literal(values)


def _int_array(values: Sequence[int] | None) -> str | None:
    """One row's list of ids as an array literal."""
    return None if values is None else int_array_literal(values)


_LITERALS: dict[str, Callable[[Any], str]] = {
    "text": text_array_literal,
    "int": int_array_literal,
    "boolean": bool_array_literal,
    "timestamptz": timestamp_array_literal,
}

#: Columns whose :class:`NewJob` attribute is named after their JSON text.
_JSON_ATTRIBUTES = {"payload": "payload_json", "step_data": "step_data_json"}

#: Per column of :data:`INPUT_COLUMNS`: the :class:`NewJob` attribute it reads, and
#: the literal of the whole column. Lists (one per row) are nested array literals.
_BATCH_COLUMNS: tuple[tuple[str, str, Callable[[list[Any]], str]], ...] = tuple(
    (name, _JSON_ATTRIBUTES.get(name, name), _LITERALS[kind]) for name, kind in INPUT_COLUMNS
)
_ROW_LISTS: dict[str, Callable[[Any], str | None]] = {
    "tags": _text_array,
    "depends_on_job_ids": _int_array,
    "depends_on_tags": _text_array,
}


def enqueue_parameters(jobs: Sequence[NewJob]) -> dict[str, str | None]:
    """Parameters of the batch statement: one array literal per column.

    A column that is NULL for every job is sent as a NULL array, which unnest pads
    with NULLs.
    """
    params: dict[str, str | None] = {}
    for name, attribute, literal in _BATCH_COLUMNS:
        values = list(map(attrgetter(attribute), jobs))
        if name in _ROW_LISTS:
            values = list(map(_ROW_LISTS[name], values))
        params[name] = None if values.count(None) == len(values) else literal(values)
    return params


def enqueue_one_parameters(job: NewJob) -> dict[str, Any]:
    """Parameters of the single-job statement (lists as real arrays).

    ``job`` must not hold batch placeholders (negative ids).
    """
    return {name: getattr(job, attribute) for name, attribute, _ in _BATCH_COLUMNS}


# -- processor statements -------------------------------------------------------------

_DEPENDENCIES_SATISFIED = """
      AND (j.depends_on_job_ids IS NULL OR NOT EXISTS (
            SELECT 1 FROM {job_queue} AS p
            WHERE p.id = ANY(j.depends_on_job_ids) AND p.status <> 'completed'))
      AND (j.depends_on_tags IS NULL OR NOT EXISTS (
            SELECT 1 FROM {job_queue} AS o
            WHERE o.tags @> j.depends_on_tags AND o.id <> j.id
              AND o.status IN ('pending', 'processing', 'waiting')))"""

_BRANCH = """
        SELECT * FROM (
            SELECT j.id, j.priority, j.created_at, j.group_id, j.status, j.job_type
            FROM {job_queue} AS j
            WHERE {condition}{type_filter}{dependencies}
            ORDER BY {order}
            LIMIT {limit}
            FOR UPDATE OF j SKIP LOCKED) AS {name}"""

_BRANCHES = (
    (
        "pending",
        # run_at is compared as an expression on purpose: with stale statistics (a burst
        # of jobs right after the table was created or truncated) PostgreSQL would
        # otherwise AND idx_job_queue_pending_run_at into a bitmap scan and sort every
        # pending row; this way the ordered idx_job_queue_claim_order scan is the only plan.
        "j.status = 'pending' AND j.run_at - now() <= interval '0' AND j.attempts < j.max_attempts",
        "j.priority DESC, j.created_at, j.id",
    ),
    (
        "retrying",
        "j.status = 'failed' AND j.next_attempt_at <= now() AND j.attempts < j.max_attempts"
        " AND j.run_at - now() <= interval '0'",
        "j.next_attempt_at",
    ),
    (
        "resuming",
        "j.status = 'waiting' AND j.wait_until IS NOT NULL AND j.wait_until <= now()"
        " AND j.wait_token_id IS NULL",
        "j.wait_until",
    ),
)

_PICK_UNLIMITED = """
picked AS (
    SELECT id, status FROM candidates ORDER BY priority DESC, created_at, id
    LIMIT :claim_limit
),"""

# Group limits (W-GRP-1): callers run this variant in a transaction that first takes
# an advisory lock, so the processing counts below cannot race with another claim.
_GROUP_RANKED = """
active AS (
    SELECT group_id, count(*) AS n FROM {job_queue}
    WHERE status = 'processing' AND group_id IS NOT NULL
    GROUP BY group_id
),
ranked AS (
    SELECT c.id, c.priority, c.created_at, c.group_id, c.status, c.job_type,
        COALESCE(a.n, 0) AS active,
        row_number() OVER (
            PARTITION BY c.group_id ORDER BY c.priority DESC, c.created_at, c.id) AS group_rank
    FROM candidates AS c LEFT JOIN active AS a ON a.group_id = c.group_id
),"""

_PICK_GROUP_LIMITED = (
    _GROUP_RANKED
    + """
picked AS (
    SELECT id, status FROM ranked
    WHERE group_id IS NULL OR group_rank <= :group_limit - active
    ORDER BY priority DESC, created_at, id
    LIMIT :claim_limit
),"""
)

CLAIMED_COLUMNS = (
    "id",
    "job_type",
    "payload",
    "attempts",
    "max_attempts",
    "timeout_ms",
    "force_kill_on_timeout",
    "retry_delay",
    "retry_backoff",
    "retry_delay_max",
    "step_data",
    "group_id",
)

_ADVANCE_SQL = """
WITH done_input AS (
    SELECT * FROM unnest(CAST(:done_ids AS integer[]), CAST(:done_outputs AS text[]))
        AS t(id, output)
),
done AS (
    UPDATE {job_queue} AS j
    SET status = 'completed', updated_at = now(), completed_at = now(), step_data = NULL,
        wait_until = NULL, wait_token_id = NULL,
        output = COALESCE(CAST(done_input.output AS jsonb), j.output)
    FROM done_input
    WHERE j.id = ANY(CAST(:done_ids AS integer[])) AND j.id = done_input.id
      AND j.status = 'processing' AND j.locked_by = :worker_id
    RETURNING j.id
),
done_events AS (
    INSERT INTO {job_events} (job_id, event_type) SELECT id, 'completed' FROM done
),{candidates}{pick}
claimed AS (
    UPDATE {job_queue} AS j
    SET status = 'processing', locked_at = now(), locked_by = :worker_id, updated_at = now(),
        pending_reason = NULL, wait_until = NULL, started_at = COALESCE(j.started_at, now()),
        attempts = CASE WHEN j.status = 'waiting' THEN j.attempts ELSE j.attempts + 1 END,
        last_retried_at = CASE WHEN j.status <> 'waiting' AND j.attempts > 0 THEN now()
                               ELSE j.last_retried_at END
    FROM picked
    WHERE j.id = picked.id
    RETURNING {claimed_columns}, picked.status = 'waiting' AS resumed, j.priority, j.created_at
),
claimed_events AS (
    INSERT INTO {job_events} (job_id, event_type) SELECT id, 'processing' FROM claimed
){rate_log}
SELECT false AS is_done, {claimed_select}, c.resumed{rate_null} FROM (
    SELECT * FROM claimed ORDER BY priority DESC, created_at, id) AS c
UNION ALL
SELECT true, done.id, {done_nulls}{rate_null} FROM done{rate_wait_row}
"""

_CANDIDATES = """
candidates AS ({branches}
),"""

_DONE_NULLS = (
    "NULL::varchar, NULL::jsonb, NULL::int, NULL::int, NULL::int, NULL::boolean, NULL::int,"
    " NULL::boolean, NULL::int, NULL::jsonb, NULL::varchar, NULL::boolean"
)


# Rate limits (a processor's ``rate_limits``). Callers run this variant in a transaction
# that first takes the advisory lock of every limited type (RATE_LOCK_SQL), so two claims
# cannot both count the same room. ``limits`` counts each limited type's logged starts
# since the window began, including any stamped later than this claim's now() (a claim
# that waited for the lock began its transaction earlier): the last start logged in
# any window then counted every other start of that window, so no window of ``per``
# holds more than ``max_starts``, whatever order the claims commit in.
_RATE_LIMITS = """
limits AS MATERIALIZED (
    SELECT t.job_type, t.max_starts, t.seconds * interval '1 second' AS per,
        t.max_starts - (
            SELECT count(*) FROM {rate_limit_starts} AS s
            WHERE s.job_type = t.job_type
              AND s.started_at >= now() - t.seconds * interval '1 second') AS room
    FROM unnest(CAST(:rate_types AS text[]), CAST(:rate_limits AS integer[]),
        CAST(:rate_periods AS double precision[])) AS t(job_type, max_starts, seconds)
),"""

# Each limited type with room gets branches of its own, limited to its room, so a
# limited type's backlog never fills the rows the other types are picked from; the
# pick caps the three branches of a type together at its room.
_RATE_LIMITED_BRANCHES = """
        SELECT limited.* FROM limits AS l CROSS JOIN LATERAL ({branches}
        ) AS limited
        WHERE l.room > 0"""

# The rows of each limited type (after the group limit, if any) capped at its room.
_RATE_PICK = """
typed AS (
    SELECT c.id, c.priority, c.created_at, c.status, l.room, row_number() OVER (
            PARTITION BY c.job_type ORDER BY c.priority DESC, c.created_at, c.id) AS type_rank
    FROM {source} AS c LEFT JOIN limits AS l ON l.job_type = c.job_type{where}
),
picked AS (
    SELECT id, status FROM typed
    WHERE room IS NULL OR type_rank <= room
    ORDER BY priority DESC, created_at, id
    LIMIT :claim_limit
),"""

# One row per claimed job of a limited type, stamped with the claim's now() like its
# locked_at and processing event; rows older than the window go. ``room_wait``: seconds
# until the first type this claim left full has room again, i.e. until its
# ``max_starts``-th newest start (counting the ones just claimed) leaves the window.
_RATE_LOG = """,
started AS (
    INSERT INTO {rate_limit_starts} (job_type, started_at)
    SELECT claimed.job_type, now() FROM claimed JOIN limits ON limits.job_type = claimed.job_type
),
pruned AS (
    DELETE FROM {rate_limit_starts} AS s USING limits AS l
    WHERE s.job_type = l.job_type AND s.started_at < now() - l.per
),
room_wait AS (
    SELECT extract(epoch FROM min(
        CASE WHEN l.taken >= l.max_starts THEN now()
        ELSE (SELECT s.started_at FROM {rate_limit_starts} AS s
              WHERE s.job_type = l.job_type AND s.started_at >= now() - l.per
              ORDER BY s.started_at DESC
              OFFSET l.max_starts - l.taken - 1 LIMIT 1) END + l.per)
        - clock_timestamp()) AS seconds
    FROM (SELECT limits.*,
            (SELECT count(*) FROM claimed WHERE claimed.job_type = limits.job_type) AS taken
          FROM limits) AS l
    WHERE l.taken >= l.room
)"""

_RATE_WAIT_ROW = """
UNION ALL
SELECT NULL, NULL::int, {done_nulls}, seconds FROM room_wait WHERE seconds IS NOT NULL"""

#: Which job types the unlimited branches of a rate-limited claim look at: those in
#: ``:free_types``, every type but the limited ones, or none (only limited types).
FreeTypes = Literal["listed", "unlisted", "none"]


def _branches(names: dict[str, str], type_filter: str, limit: str) -> str:
    dependencies = _DEPENDENCIES_SATISFIED.format(**names)
    return "\n        UNION ALL".join(
        _BRANCH.format(
            condition=condition,
            type_filter=type_filter,
            dependencies=dependencies,
            order=order,
            name=name,
            limit=limit,
            **names,
        )
        for name, condition, order in _BRANCHES
    )


def _rate_candidates(names: dict[str, str], free_types: FreeTypes, group_limit: bool) -> str:
    # Under a group limit some rows of the room may be held back, so look further. (The
    # room is below 0 when another processor's higher limit logged more starts.)
    limit = ":scan_limit" if group_limit else "greatest(least(l.room, :scan_limit), 0)"
    limited = _RATE_LIMITED_BRANCHES.format(
        branches=_branches(names, "\n      AND j.job_type = l.job_type", limit).replace(
            "\n", "\n    "
        )
    )
    if free_types == "none":
        return _CANDIDATES.format(branches=limited)
    free_filter = (
        "\n      AND j.job_type = ANY(CAST(:free_types AS text[]))"
        if free_types == "listed"
        else "\n      AND NOT (j.job_type = ANY(CAST(:rate_types AS text[])))"
    )
    free = _branches(names, free_filter, ":scan_limit")
    return _CANDIDATES.format(branches=free + "\n        UNION ALL" + limited)


def _rate_pick(names: dict[str, str], group_limit: bool) -> str:
    if not group_limit:
        return _RATE_PICK.format(source="candidates", where="")
    where = "\n    WHERE c.group_id IS NULL OR c.group_rank <= :group_limit - c.active"
    return _GROUP_RANKED.format(**names) + _RATE_PICK.format(source="ranked", where=where)


def render_advance(
    schema: str | None,
    *,
    type_filter: bool,
    group_limit: bool,
    scan_size: int,
    rate_limited: FreeTypes | None = None,
) -> str:
    """The advance statement for one processor configuration.

    The branch limits are literals (``scan_size``, the processor's largest claim), not
    parameters: with a parameter PostgreSQL's generic plan cannot see how few rows are
    wanted and plans a sort of every pending row. The actual claim size is the
    ``:claim_limit`` parameter, applied to the few merged candidates.

    ``rate_limited`` (a processor with ``rate_limits``; see :data:`FreeTypes`) adds the
    rate-limit CTEs, the ``:rate_*`` parameters and a last column: a row whose
    ``is_done`` is NULL carries the seconds until a type this claim left full has room.
    """
    names = _text_names(schema)
    if rate_limited is None:
        filter_sql = (
            "\n      AND j.job_type = ANY(CAST(:job_types AS text[]))" if type_filter else ""
        )
        candidates = _CANDIDATES.format(branches=_branches(names, filter_sql, ":scan_limit"))
        pick = (_PICK_GROUP_LIMITED if group_limit else _PICK_UNLIMITED).format(**names)
        rate_parts = {"rate_log": "", "rate_null": "", "rate_wait_row": ""}
    else:
        candidates = _RATE_LIMITS.format(**names) + _rate_candidates(
            names, rate_limited, group_limit
        )
        pick = _rate_pick(names, group_limit)
        rate_parts = {
            "rate_log": _RATE_LOG.format(**names),
            "rate_null": ", NULL::double precision",
            "rate_wait_row": _RATE_WAIT_ROW.format(done_nulls=_DONE_NULLS),
        }
    scan_limit = scan_size * (4 if group_limit else 1)
    sql = _ADVANCE_SQL.format(
        candidates=candidates,
        pick=pick,
        claimed_columns=", ".join(f"j.{c}" for c in CLAIMED_COLUMNS),
        claimed_select=", ".join(f"c.{c}" for c in CLAIMED_COLUMNS),
        done_nulls=_DONE_NULLS,
        **rate_parts,
        **names,
    )
    return sql.replace(":scan_limit", str(int(scan_limit)))


GROUP_CLAIM_LOCK_SQL = "SELECT pg_advisory_xact_lock(:lock_key)"

# The claim locks of a rate-limited claim (its group lock too, if any), taken in one
# order by every claim (volatile output columns are computed after the sort), so two
# claims that need the same locks cannot deadlock. It also makes the transaction's
# advance statement use its generic plan: left to choose, PostgreSQL keeps planning
# the rate-limited statement afresh on every claim (about 1.5 ms), for the same plan.
RATE_LOCK_SQL = (
    "SELECT pg_advisory_xact_lock(k), set_config('plan_cache_mode', 'force_generic_plan', true)"
    " FROM unnest(CAST(:lock_keys AS bigint[])) AS k ORDER BY k"
)

_FAIL_SQL = """
WITH input AS (
    SELECT * FROM unnest(
        CAST(:ids AS integer[]), CAST(:messages AS text[]), CAST(:reasons AS text[]),
        CAST(:delays AS double precision[]), CAST(:failed_at AS text[]))
        AS t(id, message, reason, delay, failed_at)
),
failed AS (
    UPDATE {job_queue} AS j
    SET status = 'failed', updated_at = now(), last_failed_at = now(),
        failure_reason = input.reason,
        next_attempt_at = CASE WHEN input.delay IS NULL THEN NULL
                               ELSE now() + input.delay * interval '1 second' END,
        error_history = COALESCE(j.error_history, '[]'::jsonb) || jsonb_build_array(
            jsonb_build_object('message', input.message, 'timestamp', input.failed_at)),
        dead_letter_job_id = CASE WHEN input.delay IS NULL AND j.dead_letter_job_type IS NOT NULL
            THEN CAST(nextval({sequence}) AS integer)
            ELSE j.dead_letter_job_id END,
        dead_lettered_at = CASE WHEN input.delay IS NULL AND j.dead_letter_job_type IS NOT NULL
            THEN now() ELSE j.dead_lettered_at END
    FROM input
    WHERE j.id = ANY(CAST(:ids AS integer[])) AND j.id = input.id
      AND j.status = 'processing' AND j.locked_by = :worker_id
    RETURNING j.id, j.job_type, j.payload, j.attempts, j.max_attempts, j.next_attempt_at,
        j.dead_letter_job_type, input.message, input.reason, input.failed_at,
        CASE WHEN input.delay IS NULL AND j.dead_letter_job_type IS NOT NULL
             THEN j.dead_letter_job_id END AS new_dead_letter_id
),
dead_letters AS (
    INSERT INTO {job_queue} (id, job_type, payload, max_attempts, priority, run_at)
    SELECT new_dead_letter_id, dead_letter_job_type, jsonb_build_object(
            'originalJob', jsonb_build_object('id', id, 'jobType', job_type,
                'attempts', attempts, 'maxAttempts', max_attempts),
            'originalPayload', payload,
            'failure', jsonb_build_object('message', message, 'reason', reason,
                'failedAt', failed_at)),
        1, 0, now()
    FROM failed WHERE new_dead_letter_id IS NOT NULL
),
dead_letter_events AS (
    INSERT INTO {job_events} (job_id, event_type, metadata)
    SELECT new_dead_letter_id, 'added', jsonb_build_object('jobType', dead_letter_job_type,
        'sourceJobId', id, 'sourceJobType', job_type)
    FROM failed WHERE new_dead_letter_id IS NOT NULL
),
failed_events AS (
    INSERT INTO {job_events} (job_id, event_type, metadata)
    SELECT id, 'failed', jsonb_build_object('message', message)
        || CASE WHEN reason IS NULL THEN '{{}}'::jsonb
                ELSE jsonb_build_object('failureReason', reason) END
        || jsonb_build_object('deadLetterJobId', new_dead_letter_id)
    FROM failed
){notify}
SELECT id, next_attempt_at IS NOT NULL AS will_retry, new_dead_letter_id FROM failed{notified}
"""


def _notify_names(names: dict[str, str], source: str) -> dict[str, str]:
    """``notify``/``notified`` fragments for a one-pass template (none without a channel)."""
    channel = names["notify_channel"]
    if not channel:
        return {"notify": "", "notified": ""}
    return {"notify": _notify_cte(channel, "''", source), "notified": _NOTIFIED}


def render_fail(schema: str | None, channel: str | None = None) -> str:
    """The batched fail statement; with a ``channel``, retries and dead letters notify it."""
    names = _text_names(schema, channel)
    notify = _notify_names(
        names, "failed WHERE next_attempt_at IS NOT NULL OR new_dead_letter_id IS NOT NULL"
    )
    return _FAIL_SQL.format(**names, **notify)


# -- waits, tokens and dependency cascades --------------------------------------------

# W-TOK-2: the waitpoint row is locked, so a complete_token running at the same moment
# either finishes first (then the job goes straight back to being due) or waits for
# this statement and then sees the job waiting on its token. W-TOK-1: the waitpoint is
# linked to the job even when it was created outside a handler.
_WAIT_SQL = """
WITH token AS (
    SELECT id, status FROM {waitpoints} WHERE id = :token_id FOR UPDATE
),
settled AS (
    SELECT count(*) > 0 AS done FROM token WHERE status <> 'waiting'
),
link AS (
    UPDATE {waitpoints} AS w SET job_id = :job_id
    FROM token WHERE w.id = token.id AND w.job_id IS NULL
),
waited AS (
    UPDATE {job_queue} AS j
    SET status = 'waiting', updated_at = now(), locked_at = NULL, locked_by = NULL,
        step_data = CAST(:step_data AS jsonb),
        wait_until = CASE WHEN (SELECT done FROM settled) THEN now()
                          ELSE CAST(:wait_until AS timestamptz) END,
        wait_token_id = CASE WHEN (SELECT done FROM settled) THEN NULL
                             ELSE CAST(:token_id AS varchar) END
    WHERE j.id = :job_id AND j.status = 'processing' AND j.locked_by = :worker_id
    RETURNING j.id, j.wait_until
),
waited_events AS (
    INSERT INTO {job_events} (job_id, event_type, metadata)
    SELECT id, 'waiting', jsonb_build_object('waitUntil', CAST(:wait_until_text AS text),
        'waitTokenId', CAST(:token_id AS text))
    FROM waited
){notify}
SELECT id FROM waited{notified}
"""

# Resuming keeps the job 'waiting' with wait_until = now(): the claim's waiting branch
# takes it without consuming an attempt (W-TOK-3), exactly like a due time-based wait.
_RESUME_TOKEN_WAITERS_SQL = """
WITH resumed AS (
    UPDATE {job_queue}
    SET wait_token_id = NULL, wait_until = now(), updated_at = now()
    WHERE status = 'waiting' AND wait_token_id = ANY(CAST(:token_ids AS varchar[]))
    RETURNING id
){notify}
SELECT id FROM resumed{notified}
"""

_COMPLETE_TOKEN_SQL = """
UPDATE {waitpoints} SET status = 'completed', output = CAST(:output AS jsonb),
    completed_at = now()
WHERE id = :token_id AND status = 'waiting'
RETURNING id
"""

_EXPIRE_TOKENS_SQL = """
UPDATE {waitpoints} SET status = 'timed_out'
WHERE status = 'waiting' AND timeout_at <= now()
RETURNING id
"""

# Dependents of failed-for-good or cancelled jobs are cancelled transitively: by job
# id, or by a tag barrier the seed's tags satisfy. rootJobId is always the seed.
_CASCADE_SQL = """
WITH RECURSIVE doomed(id, root_id) AS (
    SELECT j.id, s.id
    FROM {job_queue} AS s
    JOIN {job_queue} AS j
      ON j.id <> s.id AND j.status IN ('pending', 'waiting')
     AND (j.depends_on_job_ids @> ARRAY[s.id]
          OR (j.depends_on_tags IS NOT NULL AND s.tags @> j.depends_on_tags))
    WHERE s.id = ANY(CAST(:seed_ids AS integer[]))
    UNION
    SELECT j.id, d.root_id
    FROM doomed AS d
    JOIN {job_queue} AS s ON s.id = d.id
    JOIN {job_queue} AS j
      ON j.id <> s.id AND j.status IN ('pending', 'waiting')
     AND (j.depends_on_job_ids @> ARRAY[s.id]
          OR (j.depends_on_tags IS NOT NULL AND s.tags @> j.depends_on_tags))
),
first_root AS (
    SELECT DISTINCT ON (id) id, root_id FROM doomed ORDER BY id, root_id
),
cancelled AS (
    UPDATE {job_queue} AS j
    SET status = 'cancelled', updated_at = now(), last_cancelled_at = now(),
        wait_until = NULL, wait_token_id = NULL,
        pending_reason = '{{"rootJobId":' || first_root.root_id || ',"dependencyCascade"\\:true}}'
    FROM first_root
    WHERE j.id = first_root.id AND j.status IN ('pending', 'waiting')
    RETURNING j.id, first_root.root_id
)
INSERT INTO {job_events} (job_id, event_type, metadata)
SELECT id, 'cancelled', jsonb_build_object('rootJobId', root_id, 'dependencyCascade', true)
FROM cancelled
RETURNING job_id
"""


# The processor's timed wake-up: seconds until the earliest future due time it could
# claim, by the database's clock. Each branch is one probe of an index (run_at, the
# failed-retry and wait_until partial indexes); times already passed are left out, so
# a due job that cannot be claimed (unmet dependencies) does not make it spin.
_NEXT_DUE_SQL = """
SELECT extract(epoch FROM least(
    (SELECT min(run_at) FROM {job_queue}
     WHERE status = 'pending' AND run_at > now() AND attempts < max_attempts{type_filter}),
    (SELECT min(next_attempt_at) FROM {job_queue}
     WHERE status = 'failed' AND next_attempt_at > now() AND attempts < max_attempts{type_filter}),
    (SELECT min(wait_until) FROM {job_queue}
     WHERE status = 'waiting' AND wait_until IS NOT NULL AND wait_until > now()
       AND wait_token_id IS NULL{type_filter})
) - now())
"""

_NEXT_DUE_TYPES = (
    "\n       AND (CAST(:all AS boolean) OR job_type = ANY(CAST(:job_types AS text[])))"
)


def render_named(schema: str | None, channel: str | None = None) -> dict[str, str]:
    """The waits/tokens/cascade statements for ``schema``.

    With a ``channel``, a wait with a due time and a token's resumed waiters notify it.
    """
    names = _text_names(schema, channel)
    return {
        "wait": _WAIT_SQL.format(
            **names, **_notify_names(names, "waited WHERE wait_until IS NOT NULL")
        ),
        "resume_token_waiters": _RESUME_TOKEN_WAITERS_SQL.format(
            **names, **_notify_names(names, "resumed")
        ),
        "complete_token": _COMPLETE_TOKEN_SQL.format(**names),
        "expire_tokens": _EXPIRE_TOKENS_SQL.format(**names),
        "cascade": _CASCADE_SQL.format(**names),
        "next_due": _NEXT_DUE_SQL.format(type_filter=_NEXT_DUE_TYPES, **names),
    }
