"""The enqueue statement on every connection kind, in every shape of batch.

``add_job`` (and a one-job ``add_jobs``) takes a single-row statement, batches the
unnest statement (with or without an idempotency-key lookup), its columns sent as
array literals; psycopg 3 connections with server-side binding get psycopg's own
placeholders, client-side-binding connections the text statement compiled by
SQLAlchemy. Whatever the path, the rows, ids and ``added``
events are the same.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import dataqueue as dq
from dataqueue import validation as v
from dataqueue.backends.postgres import sql as pg_sql
from dataqueue.backends.postgres.enqueue import PIPELINE_CHUNK
from dataqueue.migrate import upgrade
from tests.conftest import libpq_url, run_sql, truncate_all, wait_for_lock_waiter

UTC = dt.timezone.utc

#: Values that need escaping in PostgreSQL's text array syntax or in JSON.
AWKWARD = [
    "a,b",
    "{c}",
    '"q"',
    "back\\slash",
    '\\"',
    "NULL",
    "",
    " spaced ",
    "tab\there",
    "new\nline",
    "é ü 東京",
    "it's",
    "%s",
    ":x",
]

#: Every column add_job sets, except the idempotency key (and the id). A run_at left
#: to its default (the enqueue time) reads as NULL.
_ROW_SQL = (
    "SELECT job_type, payload, max_attempts, priority, NULLIF(run_at, created_at), timeout_ms,"
    " force_kill_on_timeout, tags, retry_delay, retry_backoff, retry_delay_max,"
    " dead_letter_job_type, group_id, group_tier, depends_on_job_ids, depends_on_tags,"
    " status FROM job_queue WHERE id = :id"
)


def _row(engine: sa.Engine, job_id: int) -> tuple[Any, ...]:
    return tuple(run_sql(engine, _ROW_SQL, id=job_id)[0])


def _added_metadata(queue: dq.JobQueue, job_id: int) -> Any:
    [event] = queue.get_job_events(job_id)
    assert event.event_type == "added"
    return event.metadata


def _every_option(key: str, prerequisite: int) -> dict[str, Any]:
    return {
        "job_type": "full",
        "payload": {"text": AWKWARD, "nested": {"n": None, "f": 1.5}},
        "max_attempts": 5,
        "priority": -7,
        "run_at": dt.datetime(2031, 5, 5, 5, 5, 5, 123456, tzinfo=UTC),
        "timeout_ms": 1500,
        "force_kill_on_timeout": True,
        "tags": AWKWARD,
        "idempotency_key": key,
        "retry_delay": 4,
        "retry_backoff": False,
        "retry_delay_max": 60,
        "dead_letter_job_type": "full_dlq",
        "group": {"id": "tenant,1", "tier": "gold"},
        "depends_on": {"job_ids": [prerequisite], "tags": AWKWARD[:3]},
    }


def test_add_job_and_one_job_add_jobs_store_the_same_row_and_event(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    prerequisite = pg_queue.add_job("first", {})
    options = _every_option("key-one", prerequisite)
    single = pg_queue.add_job(options.pop("job_type"), options.pop("payload"), **options)
    [batch] = pg_queue.add_jobs([_every_option("key-batch", prerequisite)])
    # A two-job batch takes the unnest statement: the same columns once more.
    unnest, _ = pg_queue.add_jobs(
        [_every_option("key-unnest", prerequisite), {"job_type": "x", "payload": None}]
    )
    rows = [_row(engine, job_id) for job_id in (single, batch, unnest)]
    assert rows[0] == rows[1] == rows[2]
    assert rows[0][7] == AWKWARD
    assert (rows[0][14], rows[0][15]) == ([prerequisite], AWKWARD[:3])
    expected = {
        "jobType": "full",
        "payload": {"text": AWKWARD, "nested": {"n": None, "f": 1.5}},
        "tags": AWKWARD,
        "dependsOn": {"jobIds": [prerequisite], "tags": AWKWARD[:3]},
    }
    for job_id, key in ((single, "key-one"), (batch, "key-batch"), (unnest, "key-unnest")):
        assert _added_metadata(pg_queue, job_id) == {**expected, "idempotencyKey": key}


def test_empty_tag_list_is_stored_as_an_empty_array_on_every_path(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    single = pg_queue.add_job("a", {}, tags=[])
    batch, _ = pg_queue.add_jobs([{"job_type": "a", "payload": {}, "tags": []}] * 2)
    for job_id in (single, batch):
        assert _row(engine, job_id)[7] == []
        assert _added_metadata(pg_queue, job_id) == {"jobType": "a", "payload": {}, "tags": []}


def test_one_job_add_jobs_with_an_existing_key_returns_its_id_and_writes_nothing(
    pg_queue: dq.JobQueue,
) -> None:
    first = pg_queue.add_job("a", {"v": 1}, idempotency_key="k")
    assert pg_queue.add_jobs([{"job_type": "b", "payload": 2, "idempotency_key": "k"}]) == [first]
    assert pg_queue.add_job("c", 3, idempotency_key="k") == first
    assert [j.id for j in pg_queue.get_all_jobs()] == [first]
    assert len(pg_queue.get_job_events(first)) == 1


def test_placeholder_to_a_job_whose_key_already_exists_resolves_to_the_existing_id(
    pg_queue: dq.JobQueue,
) -> None:
    existing = pg_queue.add_job("a", {}, idempotency_key="known")
    ids = pg_queue.add_jobs(
        [
            {"job_type": "b", "payload": 0, "idempotency_key": "known"},
            {"job_type": "c", "payload": 1},
            {"job_type": "d", "payload": 2, "depends_on": {"job_ids": [-1, -2]}},
        ]
    )
    assert ids[0] == existing and ids[0] < ids[1] < ids[2]
    job = pg_queue.get_job(ids[2])
    assert job is not None and job.depends_on_job_ids == [existing, ids[1]]
    assert _added_metadata(pg_queue, ids[2])["dependsOn"] == {"jobIds": [existing, ids[1]]}


def test_batches_with_and_without_keys_return_increasing_ids_in_input_order(
    pg_queue: dq.JobQueue,
) -> None:
    plain = pg_queue.add_jobs([{"job_type": "p", "payload": i} for i in range(300)])
    keyed = pg_queue.add_jobs(
        [{"job_type": "k", "payload": i, "idempotency_key": f"k{i}"} for i in range(300)]
    )
    for ids in (plain, keyed):
        assert ids == sorted(ids) and len(set(ids)) == 300
    assert [j.payload for j in reversed(pg_queue.get_jobs({"job_type": "k"}, limit=300))] == list(
        range(300)
    )


# -- connection kinds -----------------------------------------------------------------


def _add_everything(queue: dq.JobQueue, db: Any = None) -> list[int]:
    """One single add and one batch with keys, placeholders and awkward text."""
    ids = [queue.add_job("one", {"s": AWKWARD}, tags=AWKWARD, idempotency_key="it's", db=db)]
    ids += queue.add_jobs(
        [
            {"job_type": "b", "payload": AWKWARD, "tags": AWKWARD, "idempotency_key": "%s"},
            {"job_type": "b", "payload": 1, "depends_on": {"job_ids": [-1], "tags": AWKWARD}},
            {"job_type": "b", "payload": 2, "idempotency_key": "it's"},
        ],
        db=db,
    )
    return ids


def _stored(queue: dq.JobQueue, engine: sa.Engine, ids: list[int]) -> list[Any]:
    return [(_row(engine, i), _added_metadata(queue, i)) for i in sorted(set(ids))]


def _run_on(kind: str, database_url: str, engine: sa.Engine, add: Callable[[Any], Any]) -> None:
    if kind == "engine":
        add(None)
    elif kind == "sqlalchemy":
        with engine.begin() as conn:
            add(conn)
    else:
        factory = psycopg.ClientCursor if kind == "psycopg_client_cursor" else psycopg.Cursor
        with psycopg.connect(libpq_url(database_url), cursor_factory=factory) as raw:
            add(raw)
            raw.commit()


@pytest.mark.parametrize("kind", ["sqlalchemy", "psycopg", "psycopg_client_cursor"])
def test_every_connection_kind_stores_what_the_engine_stores(
    kind: str, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    reference_ids = _add_everything(pg_queue)
    reference = _stored(pg_queue, engine, reference_ids)
    truncate_all(engine)
    result: list[list[int]] = []
    _run_on(kind, database_url, engine, lambda db: result.append(_add_everything(pg_queue, db)))
    assert result == [reference_ids]
    assert _stored(pg_queue, engine, result[0]) == reference


def test_engine_with_client_side_binding_stores_what_the_default_engine_stores(
    pg_queue: dq.JobQueue, engine: sa.Engine, client_cursor_engine: sa.Engine
) -> None:
    reference_ids = _add_everything(pg_queue)
    reference = _stored(pg_queue, engine, reference_ids)
    truncate_all(engine)
    queue = dq.init_job_queue(engine=client_cursor_engine)
    ids = _add_everything(queue)
    assert ids == reference_ids
    assert _stored(pg_queue, engine, ids) == reference


@pytest.mark.parametrize("with_gaps", [False, True], ids=["every_value_set", "some_none"])
def test_awkward_text_in_every_text_column_of_a_batch_round_trips(
    with_gaps: bool, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # The batch sends each column as one array literal; a column without None is
    # escaped in one pass, a column with None element by element.
    names = [value for value in AWKWARD if value]
    entries: list[dict[str, Any]] = []
    for n, value in enumerate(names):
        gap = with_gaps and n % 3 == 0
        entries.append(
            {
                "job_type": value,
                "payload": value,
                "idempotency_key": None if gap else f"key {value}",
                "dead_letter_job_type": None if gap else value,
                "group": None if gap else {"id": value, "tier": value},
                "tags": None if gap else [value, "x"],
            }
        )
    ids = pg_queue.add_jobs(entries)
    rows = run_sql(
        engine,
        "SELECT job_type, payload, idempotency_key, dead_letter_job_type, group_id,"
        " group_tier, tags FROM job_queue WHERE id = ANY(:ids) ORDER BY id",
        ids=ids,
    )
    expected = []
    for entry in entries:
        group = entry["group"] or {"id": None, "tier": None}
        expected.append(
            (
                entry["job_type"],
                entry["payload"],
                entry["idempotency_key"],
                entry["dead_letter_job_type"],
                group["id"],
                group["tier"],
                entry["tags"],
            )
        )
    assert [tuple(row) for row in rows] == expected


# -- cost, concurrency, schema ------------------------------------------------------


def _explain_cost(engine: sa.Engine, statement: str, parameters: Any) -> float:
    with engine.connect() as conn:
        plan = conn.execute(sa.text("EXPLAIN (FORMAT JSON) " + statement), parameters).scalar()
    return float(plan[0]["Plan"]["Total Cost"])


def test_batch_cost_estimate_grows_linearly_and_stays_under_the_jit_threshold(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # A cost estimate growing with the square of the batch made servers with JIT spend
    # longer compiling the statement than running it. The heaviest batch statement
    # (keys and placeholders), at the sizes it is sent at: a batch's keyed rest goes
    # as one statement, however large.
    statement = pg_queue._backend._sql["enqueue"]  # type: ignore[attr-defined]
    costs = []
    for size in (1_000, 10_000):
        jobs = [
            v.build_new_job(
                "a",
                i,
                {
                    "idempotency_key": f"{size}-{i}",
                    "depends_on": {"job_ids": [dq.batch_dep_ref(i - 1)]} if i else None,
                },
            )
            for i in range(size)
        ]
        costs.append(_explain_cost(engine, statement, pg_sql.enqueue_parameters(jobs)))
    assert costs[1] < 100_000  # PostgreSQL's default jit_above_cost
    assert costs[1] / costs[0] < 20  # ten times the jobs, about ten times the cost


def _add_contested_single(queue: dq.JobQueue) -> int:
    return queue.add_job("late", {}, idempotency_key="contested")


def _add_contested_in_batch(queue: dq.JobQueue) -> int:
    return queue.add_jobs(
        [
            {"job_type": "late", "payload": 0},
            {"job_type": "late", "payload": 1, "idempotency_key": "contested"},
        ]
    )[1]


@pytest.mark.parametrize("add", [_add_contested_single, _add_contested_in_batch])
def test_key_committed_by_another_transaction_during_the_insert_returns_its_id(
    add: Callable[[dq.JobQueue], int],
    pg_queue: dq.JobQueue,
    engine: sa.Engine,
    database_url: str,
) -> None:
    # The add's snapshot misses the other job, its insert waits for and then skips
    # it: the id comes from the follow-up lookup.
    results: list[int] = []
    with psycopg.connect(libpq_url(database_url)) as other:
        row = other.execute(
            "INSERT INTO job_queue (job_type, payload, idempotency_key)"
            " VALUES ('first', '{}', 'contested') RETURNING id"
        ).fetchone()
        assert row is not None
        thread = threading.Thread(target=lambda: results.append(add(pg_queue)))
        thread.start()
        wait_for_lock_waiter(engine)
        other.commit()
        thread.join(timeout=30)
    assert results == [row[0]]
    assert pg_queue.get_job_events(row[0]) == []  # the other insert wrote no event


def test_concurrent_batches_with_overlapping_keys_agree_on_every_id(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    barrier = threading.Barrier(6)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def add(worker: int) -> None:
        keys = [f"k{(worker + i) % 40}" for i in range(30)]
        try:
            barrier.wait()
            results[worker] = pg_queue.add_jobs(
                [{"job_type": "race", "payload": k, "idempotency_key": k} for k in keys]
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    by_key = {
        row[0]: row[1] for row in run_sql(engine, "SELECT idempotency_key, id FROM job_queue")
    }
    for worker, ids in results.items():
        assert ids == [by_key[f"k{(worker + i) % 40}"] for i in range(30)]
    events = run_sql(engine, "SELECT count(*) FROM job_events WHERE event_type = 'added'")
    assert events[0][0] == len(by_key) == 35


@pytest.fixture
def odd_schema_queue(fresh_database_url: str) -> Iterator[tuple[dq.JobQueue, str]]:
    schema = 'odd "jobs" % :x'
    upgrade(fresh_database_url, schema=schema)
    queue = dq.init_job_queue(database_url=fresh_database_url, schema=schema)
    yield queue, fresh_database_url
    queue.close()


def test_schema_with_quotes_percent_and_colon_in_its_name(
    odd_schema_queue: tuple[dq.JobQueue, str],
) -> None:
    queue, url = odd_schema_queue
    first = queue.add_job("a", {"x": 1}, idempotency_key="k", tags=["t"])
    ids = queue.add_jobs(
        [
            {"job_type": "b", "payload": 2},
            {
                "job_type": "c",
                "payload": 3,
                "idempotency_key": "k",
                "depends_on": {"job_ids": [-1]},
            },
            {"job_type": "d", "payload": 4, "depends_on": {"job_ids": [-1, first]}},
        ]
    )
    with psycopg.connect(libpq_url(url)) as raw:
        ids.append(queue.add_job("e", {}, depends_on={"job_ids": [first]}, db=raw))
        raw.commit()
    assert ids[1] == first and ids[0] < ids[2] < ids[3]
    job = queue.get_job(ids[2])
    assert job is not None and job.depends_on_job_ids == [ids[0], first]
    assert len(queue.get_all_jobs()) == 4
    bulk: list[dict[str, Any]] = [{"job_type": "bulk", "payload": i} for i in range(1200)]
    bulk[1100]["depends_on"] = {"job_ids": [-1, first]}  # pipelined, across chunks
    bulk_ids = queue.add_jobs(bulk)
    job = queue.get_job(bulk_ids[1100])
    assert job is not None and job.depends_on_job_ids == [bulk_ids[0], first]
    assert len(queue.get_all_jobs(limit=2000)) == 4 + 1200
    engine = queue.get_engine()
    assert run_sql(engine, "SELECT to_regclass('public.job_queue')")[0][0] is None


def test_unmigrated_schema_raises_schema_not_ready_on_every_path(engine: sa.Engine) -> None:
    queue = dq.init_job_queue(engine=engine, schema="no_such_schema")
    with pytest.raises(dq.SchemaNotReadyError):
        queue.add_job("a", {})
    with pytest.raises(dq.SchemaNotReadyError):
        queue.add_jobs([{"job_type": "a", "payload": i} for i in range(2)])
    with pytest.raises(dq.SchemaNotReadyError):
        queue.add_jobs([{"job_type": "a", "payload": i, "idempotency_key": "k"} for i in range(2)])
    with pytest.raises(dq.SchemaNotReadyError):  # pipelined in chunks
        queue.add_jobs([{"job_type": "a", "payload": i} for i in range(PIPELINE_CHUNK + 1)])


def test_failures_and_dead_letters_work_in_a_schema_with_odd_characters(
    odd_schema_queue: tuple[dq.JobQueue, str],
) -> None:
    # The failure statement draws the dead-letter job's id from the schema's sequence.
    queue, _ = odd_schema_queue

    def fail(payload: Any) -> None:
        raise RuntimeError("boom")

    retried = queue.add_job("flaky", {}, max_attempts=2)
    final = queue.add_job("flaky", {"n": 1}, max_attempts=1, dead_letter_job_type="flaky_dlq")
    processor = queue.create_processor({"flaky": fail}, job_type="flaky")
    assert processor.start() == 2
    first = queue.get_job(retried)
    assert first is not None and first.status == "failed" and first.next_attempt_at is not None
    last = queue.get_job(final)
    assert last is not None and last.status == "failed" and last.dead_letter_job_id is not None
    dead_letter = queue.get_job(last.dead_letter_job_id)
    assert dead_letter is not None and dead_letter.job_type == "flaky_dlq"


def test_waits_tokens_and_cascades_work_in_a_schema_with_odd_characters(
    odd_schema_queue: tuple[dq.JobQueue, str],
) -> None:
    queue, _ = odd_schema_queue
    token = queue.create_token(timeout="1h")

    def approve(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
        return ctx.wait_for_token(token.id).output

    waiter = queue.add_job("approve", {})
    processor = queue.create_processor({"approve": approve}, job_type="approve")
    assert processor.start() == 1
    parked = queue.get_job(waiter)
    assert parked is not None and parked.status == "waiting"
    assert queue.complete_token(token.id, {"ok": 1}) is True
    assert processor.start() == 1
    done = queue.get_job(waiter)
    assert done is not None and done.status == "completed" and done.output == {"ok": 1}

    prerequisite = queue.add_job("later", {})
    dependent = queue.add_job("later", {}, depends_on={"job_ids": [prerequisite]})
    assert queue.cancel_job(prerequisite) is True
    cascaded = queue.get_job(dependent)
    assert cascaded is not None and cascaded.status == "cancelled"


def test_single_add_job_after_its_pooled_connection_was_terminated(database_url: str) -> None:
    # add_job's fast path uses a pooled psycopg connection directly; the pool's checkout
    # still notices a connection the server closed and replaces it, so no error.
    queue = dq.init_job_queue(database_url, database_config={"pool_size": 1})
    try:
        first = queue.add_job("t", {})
        with queue.get_engine().connect() as own:  # the pool's only connection
            pid = own.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        admin = sa.create_engine(make_url(database_url), poolclass=sa.NullPool)
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        admin.dispose()
        time.sleep(0.1)
        second = queue.add_job("t", {})  # the dead connection is replaced at checkout
        assert second > first
        assert queue.get_job(second) is not None
        with pytest.raises(dq.InvalidJobError, match="job_type"):
            queue.add_job("", {})
        assert [j.id for j in queue.get_all_jobs()][:2] == [second, first]
    finally:
        queue.close()
