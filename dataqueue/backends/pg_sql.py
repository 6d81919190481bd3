"""The raw SQL statements of the PostgreSQL backend — the one place dataqueue writes SQL text.

Everything else is SQLAlchemy Core. These statements stay text because Core cannot
express them readably: data-modifying CTEs chained over unnested arrays, row locks
inside UNION branches, and window functions over locked rows.

**Enqueue** unnests one array per column
``WITH ORDINALITY``, pre-allocates ids from the ``job_queue`` sequence in input order,
resolves batch placeholders (``-(k+1)`` means "the job at index k") against those ids,
inserts the rows with ``ON CONFLICT DO NOTHING`` on the idempotency index, writes one
``added`` event per inserted row, and returns one row per input in input order. All of
that is one statement: one round trip, atomic even in autocommit, and usable on any
DB-API connection the caller passes as ``db=``.

Per-row lists (tags, dependencies) travel as JSON text because PostgreSQL arrays must
be rectangular.

**Advance** is the processor's whole cycle in one statement: it completes the jobs a
worker finished (guarded by ``status='processing' AND locked_by=<worker>``, W-LOCK-1),
writes their ``completed`` events, claims the next jobs with ``FOR UPDATE SKIP
LOCKED`` and writes their ``processing`` events (W-EV-2: same transaction). The claim
is three index-ordered, limited branches (pending by ``idx_job_queue_claimable``,
due retries by ``idx_job_queue_failed_retry``, due waits by ``idx_job_queue_wait_until``)
merged and limited again, so its cost does not grow with the backlog (W-PLAN-1).
Dependency checks run only for rows that have dependencies.

**Fail** records failures of many jobs at once: retry schedule, error history,
dead-letter job (its id drawn from the sequence inside the same UPDATE) and events.
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
            SELECT j.id, j.priority, j.created_at, j.group_id FROM {job_queue} AS j
            WHERE {condition}{type_filter}{dependencies}
            ORDER BY {order}
            LIMIT :scan_limit
            FOR UPDATE OF j SKIP LOCKED) AS {name}"""

_BRANCHES = (
    (
        "pending",
        # run_at is compared as an expression on purpose: with stale statistics (a burst
        # of jobs right after the table was created or truncated) PostgreSQL would
        # otherwise AND idx_job_queue_run_at into a bitmap scan and sort every pending
        # row; this way the ordered idx_job_queue_claim_order scan is the only plan.
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
    SELECT id FROM candidates ORDER BY priority DESC, created_at, id LIMIT :claim_limit
),"""

# Group limits (W-GRP-1): callers run this variant in a transaction that first takes
# an advisory lock, so the processing counts below cannot race with another claim.
_PICK_GROUP_LIMITED = """
active AS (
    SELECT group_id, count(*) AS n FROM {job_queue}
    WHERE status = 'processing' AND group_id IS NOT NULL
    GROUP BY group_id
),
ranked AS (
    SELECT c.id, c.priority, c.created_at, c.group_id, COALESCE(a.n, 0) AS active,
        row_number() OVER (
            PARTITION BY c.group_id ORDER BY c.priority DESC, c.created_at, c.id) AS group_rank
    FROM candidates AS c LEFT JOIN active AS a ON a.group_id = c.group_id
),
picked AS (
    SELECT id FROM ranked
    WHERE group_id IS NULL OR group_rank <= :group_limit - active
    ORDER BY priority DESC, created_at, id
    LIMIT :claim_limit
),"""

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
),
candidates AS ({branches}
),{pick}
claimed AS (
    UPDATE {job_queue} AS j
    SET status = 'processing', locked_at = now(), locked_by = :worker_id, updated_at = now(),
        pending_reason = NULL, wait_until = NULL, started_at = COALESCE(j.started_at, now()),
        attempts = CASE WHEN j.status = 'waiting' THEN j.attempts ELSE j.attempts + 1 END,
        last_retried_at = CASE WHEN j.status <> 'waiting' AND j.attempts > 0 THEN now()
                               ELSE j.last_retried_at END
    FROM picked
    WHERE j.id = picked.id
    RETURNING {claimed_columns}, j.priority, j.created_at
),
claimed_events AS (
    INSERT INTO {job_events} (job_id, event_type) SELECT id, 'processing' FROM claimed
)
SELECT false AS is_done, {claimed_select} FROM (
    SELECT * FROM claimed ORDER BY priority DESC, created_at, id) AS c
UNION ALL
SELECT true, done.id, {done_nulls} FROM done
"""

_DONE_NULLS = (
    "NULL::varchar, NULL::jsonb, NULL::int, NULL::int, NULL::int, NULL::boolean, NULL::int,"
    " NULL::boolean, NULL::int, NULL::jsonb, NULL::varchar"
)


def render_advance(
    schema: str | None, *, type_filter: bool, group_limit: bool, scan_size: int
) -> str:
    """The advance statement for one processor configuration.

    The branch limits are literals (``scan_size``, the processor's largest claim), not
    parameters: with a parameter PostgreSQL's generic plan cannot see how few rows are
    wanted and plans a sort of every pending row. The actual claim size is the
    ``:claim_limit`` parameter, applied to the few merged candidates.
    """
    names = {
        "job_queue": _qualify(schema, "job_queue"),
        "job_events": _qualify(schema, "job_events"),
    }
    dependencies = _DEPENDENCIES_SATISFIED.format(**names)
    filter_sql = "\n      AND j.job_type = ANY(CAST(:job_types AS text[]))" if type_filter else ""
    branches = "\n        UNION ALL".join(
        _BRANCH.format(
            condition=condition,
            type_filter=filter_sql,
            dependencies=dependencies,
            order=order,
            name=name,
            **names,
        )
        for name, condition, order in _BRANCHES
    )
    pick = (_PICK_GROUP_LIMITED if group_limit else _PICK_UNLIMITED).format(**names)
    scan_limit = scan_size * (4 if group_limit else 1)
    sql = _ADVANCE_SQL.format(
        branches=branches,
        pick=pick,
        claimed_columns=", ".join(f"j.{c}" for c in CLAIMED_COLUMNS),
        claimed_select=", ".join(f"c.{c}" for c in CLAIMED_COLUMNS),
        done_nulls=_DONE_NULLS,
        **names,
    )
    return sql.replace(":scan_limit", str(int(scan_limit)))


GROUP_CLAIM_LOCK_SQL = "SELECT pg_advisory_xact_lock(:lock_key)"

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
            THEN CAST(nextval(CAST(:sequence AS regclass)) AS integer)
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
)
SELECT id, next_attempt_at IS NOT NULL AS will_retry, new_dead_letter_id FROM failed
"""


def render_fail(schema: str | None) -> str:
    """The batched fail statement."""
    return _FAIL_SQL.format(
        job_queue=_qualify(schema, "job_queue"), job_events=_qualify(schema, "job_events")
    )


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
    RETURNING j.id
),
waited_events AS (
    INSERT INTO {job_events} (job_id, event_type, metadata)
    SELECT id, 'waiting', jsonb_build_object('waitUntil', CAST(:wait_until_text AS text),
        'waitTokenId', CAST(:token_id AS text))
    FROM waited
)
SELECT id FROM waited
"""

# Resuming keeps the job 'waiting' with wait_until = now(): the claim's waiting branch
# takes it without consuming an attempt (W-TOK-3), exactly like a due time-based wait.
_RESUME_TOKEN_WAITERS_SQL = """
UPDATE {job_queue}
SET wait_token_id = NULL, wait_until = now(), updated_at = now()
WHERE status = 'waiting' AND wait_token_id = ANY(CAST(:token_ids AS varchar[]))
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
        pending_reason = jsonb_build_object('rootJobId', first_root.root_id,
            'dependencyCascade', true)::text
    FROM first_root
    WHERE j.id = first_root.id AND j.status IN ('pending', 'waiting')
    RETURNING j.id, first_root.root_id
)
INSERT INTO {job_events} (job_id, event_type, metadata)
SELECT id, 'cancelled', jsonb_build_object('rootJobId', root_id, 'dependencyCascade', true)
FROM cancelled
RETURNING job_id
"""


def render_named(schema: str | None) -> dict[str, str]:
    """The waits/tokens/cascade statements for ``schema``."""
    names = {
        "job_queue": _qualify(schema, "job_queue"),
        "job_events": _qualify(schema, "job_events"),
        "waitpoints": _qualify(schema, "waitpoints"),
    }
    return {
        "wait": _WAIT_SQL.format(**names),
        "resume_token_waiters": _RESUME_TOKEN_WAITERS_SQL.format(**names),
        "complete_token": _COMPLETE_TOKEN_SQL.format(**names),
        "expire_tokens": _EXPIRE_TOKENS_SQL.format(**names),
        "cascade": _CASCADE_SQL.format(**names),
    }
