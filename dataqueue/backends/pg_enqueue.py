"""The enqueue statement of the PostgreSQL backend — the one raw SQL text of dataqueue.

Core cannot express this statement readably: it unnests one array per column
``WITH ORDINALITY``, pre-allocates ids from the ``job_queue`` sequence in input order,
resolves batch placeholders (``-(k+1)`` means "the job at index k") against those ids,
inserts the rows with ``ON CONFLICT DO NOTHING`` on the idempotency index, writes one
``added`` event per inserted row, and returns one row per input in input order. All of
that is one statement: one round trip, atomic even in autocommit, and usable on any
DB-API connection the caller passes as ``db=``.

Per-row lists (tags, dependencies) travel as JSON text because PostgreSQL arrays must
be rectangular.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
)

_ENQUEUE_SQL = """
WITH input AS MATERIALIZED (
    SELECT CAST(nextval(CAST(:sequence AS regclass)) AS integer) AS id, t.*
    FROM unnest({arrays}) WITH ORDINALITY AS t({names}, ord)
    ORDER BY t.ord
),
resolved AS (
    SELECT input.ord, COALESCE(existing.id, input.id) AS id, existing.id AS existing_id
    FROM input
    LEFT JOIN {job_queue} AS existing
      ON input.idempotency_key IS NOT NULL AND existing.idempotency_key = input.idempotency_key
),
inserted AS (
    INSERT INTO {job_queue} (
        id, job_type, payload, max_attempts, priority, run_at, timeout_ms,
        force_kill_on_timeout, tags, idempotency_key, retry_delay, retry_backoff,
        retry_delay_max, dead_letter_job_type, group_id, group_tier,
        depends_on_job_ids, depends_on_tags)
    SELECT input.id, input.job_type, CAST(input.payload AS jsonb), input.max_attempts,
        input.priority, COALESCE(input.run_at, CURRENT_TIMESTAMP), input.timeout_ms,
        input.force_kill_on_timeout,
        CASE WHEN input.tags IS NOT NULL THEN ARRAY(
            SELECT e.value FROM jsonb_array_elements_text(CAST(input.tags AS jsonb))
                WITH ORDINALITY AS e(value, n) ORDER BY e.n) END,
        input.idempotency_key, input.retry_delay, input.retry_backoff, input.retry_delay_max,
        input.dead_letter_job_type, input.group_id, input.group_tier,
        CASE WHEN input.depends_on_job_ids IS NOT NULL THEN ARRAY(
            SELECT CASE WHEN CAST(d.value AS integer) < 0 THEN ref.id
                        ELSE CAST(d.value AS integer) END
            FROM jsonb_array_elements_text(CAST(input.depends_on_job_ids AS jsonb))
                WITH ORDINALITY AS d(value, n)
            LEFT JOIN resolved AS ref ON ref.ord = -CAST(d.value AS integer)
            ORDER BY d.n) END,
        CASE WHEN input.depends_on_tags IS NOT NULL THEN ARRAY(
            SELECT e.value FROM jsonb_array_elements_text(CAST(input.depends_on_tags AS jsonb))
                WITH ORDINALITY AS e(value, n) ORDER BY e.n) END
    FROM input JOIN resolved ON resolved.ord = input.ord
    WHERE resolved.existing_id IS NULL
    ORDER BY input.ord
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, job_type, payload, tags, idempotency_key, depends_on_job_ids, depends_on_tags
),
added_events AS (
    INSERT INTO {job_events} (job_id, event_type, metadata)
    SELECT inserted.id, 'added',
        jsonb_build_object('jobType', inserted.job_type, 'payload', inserted.payload)
        || CASE WHEN inserted.tags IS NULL THEN '{{}}'::jsonb
                ELSE jsonb_build_object('tags', to_jsonb(inserted.tags)) END
        || CASE WHEN inserted.idempotency_key IS NULL THEN '{{}}'::jsonb
                ELSE jsonb_build_object('idempotencyKey', inserted.idempotency_key) END
        || CASE WHEN inserted.depends_on_job_ids IS NULL AND inserted.depends_on_tags IS NULL
                THEN '{{}}'::jsonb
                ELSE jsonb_build_object('dependsOn', jsonb_strip_nulls(jsonb_build_object(
                    'jobIds', to_jsonb(inserted.depends_on_job_ids),
                    'tags', to_jsonb(inserted.depends_on_tags)))) END
    FROM inserted
    ORDER BY inserted.id
)
SELECT resolved.ord, resolved.id, inserted.id IS NOT NULL AS was_inserted, resolved.existing_id
FROM resolved LEFT JOIN inserted ON inserted.id = resolved.id
ORDER BY resolved.ord
"""

_EXISTING_IDS_SQL = "SELECT id FROM {job_queue} WHERE id = ANY(CAST(:ids AS integer[]))"

_IDS_BY_KEY_SQL = (
    "SELECT idempotency_key, id FROM {job_queue} WHERE idempotency_key = ANY(CAST(:keys AS text[]))"
)


def _qualify(schema: str | None, name: str) -> str:
    if schema is None:
        return name
    return '"' + schema.replace('"', '""') + '".' + name


def render_statements(schema: str | None) -> dict[str, str]:
    """The SQL texts for ``schema`` (None: the connection's search_path)."""
    names = {
        "job_queue": _qualify(schema, "job_queue"),
        "job_events": _qualify(schema, "job_events"),
    }
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in INPUT_COLUMNS)
    columns = ", ".join(name for name, _ in INPUT_COLUMNS)
    return {
        "enqueue": _ENQUEUE_SQL.format(arrays=arrays, names=columns, **names),
        "existing_ids": _EXISTING_IDS_SQL.format(**names),
        "ids_by_key": _IDS_BY_KEY_SQL.format(**names),
        "sequence": _qualify(schema, "job_queue_id_seq"),
    }


def _json_list(values: Sequence[Any] | None) -> str | None:
    if values is None:
        return None
    import json

    return json.dumps(list(values), separators=(",", ":"))


def enqueue_parameters(jobs: Sequence[NewJob], sequence: str) -> dict[str, Any]:
    """Column arrays for the enqueue statement, one element per job."""
    params: dict[str, Any] = {name: [] for name, _ in INPUT_COLUMNS}
    for job in jobs:
        params["job_type"].append(job.job_type)
        params["payload"].append(job.payload_json)
        params["max_attempts"].append(job.max_attempts)
        params["priority"].append(job.priority)
        params["run_at"].append(job.run_at)
        params["timeout_ms"].append(job.timeout_ms)
        params["force_kill_on_timeout"].append(job.force_kill_on_timeout)
        params["tags"].append(_json_list(job.tags))
        params["idempotency_key"].append(job.idempotency_key)
        params["retry_delay"].append(job.retry_delay)
        params["retry_backoff"].append(job.retry_backoff)
        params["retry_delay_max"].append(job.retry_delay_max)
        params["dead_letter_job_type"].append(job.dead_letter_job_type)
        params["group_id"].append(job.group_id)
        params["group_tier"].append(job.group_tier)
        params["depends_on_job_ids"].append(_json_list(job.depends_on_job_ids))
        params["depends_on_tags"].append(_json_list(job.depends_on_tags))
    params["sequence"] = sequence
    return params
