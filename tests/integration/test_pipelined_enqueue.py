"""Large add_jobs batches: pipelined chunks, all or nothing.

On the queue's own connection a batch is one transaction; in a caller's transaction
(``db=``) it runs under a savepoint. Most tests shrink the chunk size to 10 jobs so a
few dozen jobs cross several chunks (the first chunk is a quarter of the size). One
test uses the real size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import dataqueue as dq
from dataqueue.backends.postgres import enqueue as pg_enqueue
from dataqueue.backends.postgres.enqueue import PIPELINE_CHUNK
from dataqueue.migrate import upgrade
from tests.conftest import libpq_url, run_sql, wait_for_lock_waiter

SMALL_CHUNK = 10


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_enqueue, "PIPELINE_CHUNK", SMALL_CHUNK)


@pytest.fixture
def own_database(fresh_database_url: str) -> Iterator[tuple[dq.JobQueue, sa.Engine]]:
    """A queue on a database of its own (tests add triggers) with a one-connection pool,
    so a connection left broken by a failed batch would fail the next call."""
    upgrade(fresh_database_url)
    engine = dq.create_engine(fresh_database_url, pool_size=1)
    queue = dq.init_job_queue(engine=engine)
    yield queue, engine
    queue.close()
    engine.dispose()


def _counts(engine: sa.Engine) -> tuple[int, int]:
    row = run_sql(
        engine,
        "SELECT (SELECT count(*) FROM job_queue),"
        " (SELECT count(*) FROM job_events WHERE event_type = 'added')",
    )[0]
    return int(row[0]), int(row[1])


def _transactions(engine: sa.Engine) -> int:
    """How many transactions wrote the jobs and events now stored."""
    return int(
        run_sql(
            engine,
            "SELECT count(DISTINCT xmin::text) FROM"
            " (SELECT xmin FROM job_queue UNION ALL SELECT xmin FROM job_events) AS rows",
        )[0][0]
    )


def _refuse_job_type_refused(engine: sa.Engine) -> None:
    """Make PostgreSQL raise "refused by trigger" when a job of type 'refused' is inserted."""
    run_sql(
        engine,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " 'BEGIN IF NEW.job_type = ''refused'' THEN RAISE EXCEPTION ''refused by trigger'';"
        " END IF; RETURN NEW; END';"
        " CREATE TRIGGER refuse BEFORE INSERT ON job_queue"
        " FOR EACH ROW EXECUTE FUNCTION refuse()",
    )


def _jobs(count: int, **options: Any) -> list[dict[str, Any]]:
    return [{"job_type": "bulk", "payload": {"i": i}, **options} for i in range(count)]


def test_large_batch_keeps_input_order_in_one_transaction(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    count = 2 * PIPELINE_CHUNK + 500
    seen: list[Any] = []
    pg_queue.on("job:added", seen.append)
    ids = pg_queue.add_jobs(_jobs(count))
    assert len(ids) == len(set(ids)) == count and ids == sorted(ids)
    payloads = dict(run_sql(engine, "SELECT id, payload FROM job_queue"))
    assert [payloads[job_id] for job_id in ids] == [{"i": i} for i in range(count)]
    assert _counts(engine) == (count, count)
    assert _transactions(engine) == 1
    assert [event["job_id"] for event in seen] == ids


def test_large_batch_is_sent_as_several_statements(
    small_chunks: None, own_database: tuple[dq.JobQueue, sa.Engine]
) -> None:
    queue, engine = own_database
    run_sql(
        engine,
        "CREATE TABLE insert_statements (n int);"
        " CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS"
        " 'BEGIN INSERT INTO insert_statements VALUES (1); RETURN NULL; END';"
        " CREATE TRIGGER count_insert AFTER INSERT ON job_queue"
        " FOR EACH STATEMENT EXECUTE FUNCTION count_insert()",
    )
    ids = queue.add_jobs(_jobs(35))
    assert len(ids) == 35 and ids == sorted(ids)
    statements = run_sql(engine, "SELECT count(*) FROM insert_statements")[0][0]
    assert statements >= 35 // SMALL_CHUNK
    assert _counts(engine) == (35, 35)
    assert _transactions(engine) == 1


def test_batch_at_the_chunk_size_is_one_statement(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ids = pg_queue.add_jobs(_jobs(SMALL_CHUNK))
    assert len(ids) == SMALL_CHUNK and ids == sorted(ids)
    assert _counts(engine) == (SMALL_CHUNK, SMALL_CHUNK)


def test_placeholders_resolve_within_and_across_chunks(
    small_chunks: None, pg_queue: dq.JobQueue
) -> None:
    jobs = _jobs(40)
    jobs[3]["idempotency_key"] = "shared"
    jobs[21]["idempotency_key"] = "shared"  # repeats job 3: same id, not written
    jobs[25]["depends_on"] = {"job_ids": [dq.batch_dep_ref(0), dq.batch_dep_ref(24)]}
    jobs[26]["depends_on"] = {"job_ids": [dq.batch_dep_ref(21)]}
    jobs[39]["depends_on"] = {"job_ids": [dq.batch_dep_ref(25), dq.batch_dep_ref(38)]}
    ids = pg_queue.add_jobs(jobs)
    assert ids[21] == ids[3]
    for position, expected in ((25, [ids[0], ids[24]]), (26, [ids[3]]), (39, [ids[25], ids[38]])):
        job = pg_queue.get_job(ids[position])
        assert job is not None and job.depends_on_job_ids == expected
        [event] = pg_queue.get_job_events(ids[position])
        assert event.metadata is not None
        assert event.metadata["dependsOn"] == {"jobIds": expected}
    assert len(pg_queue.get_all_jobs(limit=100)) == 39


def test_existing_and_repeated_keys_across_chunks_get_one_id_each(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    existing = pg_queue.add_job("old", {}, idempotency_key="existing")
    jobs = _jobs(30)
    for position in (1, 14, 28):
        jobs[position]["idempotency_key"] = "repeated"
    jobs[22]["idempotency_key"] = "existing"
    jobs[29]["depends_on"] = {"job_ids": [dq.batch_dep_ref(22), dq.batch_dep_ref(28)]}
    ids = pg_queue.add_jobs(jobs)
    assert ids[1] == ids[14] == ids[28] and ids[22] == existing
    assert len(set(ids)) == 28
    job = pg_queue.get_job(ids[29])
    assert job is not None and job.depends_on_job_ids == [existing, ids[1]]
    assert len(pg_queue.get_job_events(existing)) == 1  # no new event for the existing key
    assert _counts(engine) == (28, 28)  # the existing job + 27 new ones


@pytest.mark.parametrize("position", [0, 17, 34])
def test_invalid_entry_in_any_chunk_writes_nothing(
    position: int, small_chunks: None, own_database: tuple[dq.JobQueue, sa.Engine]
) -> None:
    queue, engine = own_database
    jobs = _jobs(35)
    jobs[position]["payload"] = {"bad": float("nan")}
    with pytest.raises(dq.InvalidJobError, match="nan"):
        queue.add_jobs(jobs)
    assert _counts(engine) == (0, 0)
    # The one pooled connection is healthy: the next batch goes through.
    assert len(queue.add_jobs(_jobs(35))) == 35
    assert _counts(engine) == (35, 35)


def test_unknown_prerequisite_in_a_later_chunk_writes_nothing(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    existing = pg_queue.add_job("old", {})
    jobs = _jobs(30)
    jobs[2]["depends_on"] = {"job_ids": [existing]}
    jobs[27]["depends_on"] = {"job_ids": [existing, 99_999]}
    with pytest.raises(dq.JobDependencyError, match="do not exist \\(99999\\)") as info:
        pg_queue.add_jobs(jobs)
    assert info.value.job_ids == [99_999]
    assert _counts(engine) == (1, 1)


@pytest.mark.parametrize("position", [1, 22, 34])
def test_database_error_in_any_chunk_rolls_back_every_chunk(
    position: int, small_chunks: None, own_database: tuple[dq.JobQueue, sa.Engine]
) -> None:
    queue, engine = own_database
    _refuse_job_type_refused(engine)
    jobs = _jobs(35)
    jobs[position]["job_type"] = "refused"
    # The same exception class as every other path (SQLAlchemy's, the driver's inside).
    with pytest.raises(sa.exc.DBAPIError, match="refused by trigger") as info:
        queue.add_jobs(jobs)
    assert isinstance(info.value.orig, psycopg.errors.RaiseException)
    assert _counts(engine) == (0, 0)
    assert len(queue.add_jobs(_jobs(35))) == 35
    assert _counts(engine) == (35, 35)


def test_connection_lost_mid_batch_is_invalidated_and_nothing_written(
    small_chunks: None, own_database: tuple[dq.JobQueue, sa.Engine]
) -> None:
    queue, engine = own_database
    run_sql(
        engine,
        "CREATE FUNCTION hang_up() RETURNS trigger LANGUAGE plpgsql AS"
        " 'BEGIN IF NEW.job_type = ''hang_up'' THEN PERFORM pg_terminate_backend(pg_backend_pid());"
        " END IF; RETURN NEW; END';"
        " CREATE TRIGGER hang_up BEFORE INSERT ON job_queue"
        " FOR EACH ROW EXECUTE FUNCTION hang_up()",
    )
    jobs = _jobs(35)
    jobs[23]["job_type"] = "hang_up"
    with pytest.raises(sa.exc.OperationalError) as info:
        queue.add_jobs(jobs)
    assert info.value.connection_invalidated
    assert _counts(engine) == (0, 0)
    # The pool's only connection was replaced, not handed out again broken.
    assert len(queue.add_jobs(_jobs(35))) == 35


def test_key_committed_by_another_transaction_mid_batch_resolves_for_later_chunks(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    # Chunk 2 waits for the other transaction's key, then skips it; a placeholder in
    # a later chunk must get the other job's id, not the id the skipped row drew.
    jobs = _jobs(30)
    jobs[5]["idempotency_key"] = "contested"
    jobs[27]["depends_on"] = {"job_ids": [dq.batch_dep_ref(5)]}
    results: list[list[int]] = []
    with psycopg.connect(libpq_url(database_url)) as other:
        row = other.execute(
            "INSERT INTO job_queue (job_type, payload, idempotency_key)"
            " VALUES ('first', '{}', 'contested') RETURNING id"
        ).fetchone()
        assert row is not None
        thread = threading.Thread(target=lambda: results.append(pg_queue.add_jobs(jobs)))
        thread.start()
        wait_for_lock_waiter(engine)
        other.commit()
        thread.join(timeout=30)
    [ids] = results
    assert ids[5] == row[0]
    job = pg_queue.get_job(ids[27])
    assert job is not None and job.depends_on_job_ids == [row[0]]
    assert _counts(engine) == (30, 29)  # the other transaction's job has no event


def test_engine_binding_on_the_client_sends_large_batches_as_one_statement(
    small_chunks: None, client_cursor_engine: sa.Engine, engine: sa.Engine
) -> None:
    queue = dq.init_job_queue(engine=client_cursor_engine)
    ids = queue.add_jobs(_jobs(35, tags=["it's", "%s"]))
    assert len(ids) == 35 and ids == sorted(ids)
    job = queue.get_job(ids[-1])
    assert job is not None and job.tags == ["it's", "%s"] and job.payload == {"i": 34}


# -- in the caller's transaction (db=) ------------------------------------------------


def test_large_batch_in_a_caller_transaction_commits_and_rolls_back_with_it(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    with engine.connect() as conn, conn.begin() as transaction:
        ids = pg_queue.add_jobs(_jobs(35), db=conn)
        assert len(ids) == 35 and ids == sorted(ids)
        transaction.rollback()
    assert _counts(engine) == (0, 0)
    with engine.connect() as conn, conn.begin():
        pg_queue.add_job("mine", {}, db=conn)
        ids = pg_queue.add_jobs(_jobs(35), db=conn)
    assert _counts(engine) == (36, 36)


def test_large_batch_on_a_connection_that_has_not_begun_joins_its_transaction(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    # SQLAlchemy's autobegin: the batch begins the transaction, the caller commits it.
    with engine.connect() as conn:
        pg_queue.add_jobs(_jobs(35), db=conn)
        assert conn.in_transaction()
        conn.commit()
    with engine.connect() as conn:
        pg_queue.add_jobs(_jobs(35), db=conn)  # closed without commit: rolled back
    with Session(engine) as session:
        pg_queue.add_jobs(_jobs(35), db=session)
        session.commit()
    # psycopg outside autocommit: the batch opens the transaction and leaves it open.
    with psycopg.connect(libpq_url(database_url)) as raw:
        pg_queue.add_jobs(_jobs(35), db=raw)
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        raw.rollback()
    assert _counts(engine) == (70, 70)


def test_large_batch_on_an_autocommit_connection_is_atomic_and_committed(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as raw:
        bad = _jobs(35)
        bad[30]["priority"] = "high"
        with pytest.raises(dq.InvalidJobError, match="high"):
            pg_queue.add_jobs(bad, db=raw)
        assert _counts(engine) == (0, 0)
        pg_queue.add_jobs(_jobs(35), db=raw)
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert _counts(engine) == (35, 35)


def test_invalid_entry_in_a_caller_transaction_undoes_only_the_batch(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # W-TX-1: the caller's transaction stays usable and keeps its own writes.
    jobs = _jobs(35)
    jobs[30]["max_attempts"] = 0
    with engine.connect() as conn, conn.begin():
        pg_queue.add_job("kept", {}, db=conn)
        with pytest.raises(dq.InvalidJobError, match="max_attempts"):
            pg_queue.add_jobs(jobs, db=conn)
        assert conn.exec_driver_sql("SELECT count(*) FROM job_queue").scalar() == 1
        ids = pg_queue.add_jobs(_jobs(35), db=conn)
    assert len(ids) == 35
    assert _counts(engine) == (36, 36)


def test_database_error_in_a_caller_transaction_undoes_only_the_batch(
    small_chunks: None, own_database: tuple[dq.JobQueue, sa.Engine], fresh_database_url: str
) -> None:
    queue, engine = own_database
    _refuse_job_type_refused(engine)
    jobs = _jobs(35)
    jobs[27]["job_type"] = "refused"
    with engine.connect() as conn, conn.begin():
        queue.add_job("kept", {}, db=conn)
        with pytest.raises(sa.exc.DBAPIError, match="refused by trigger"):
            queue.add_jobs(jobs, db=conn)
        queue.add_job("also kept", {}, db=conn)
    with psycopg.connect(libpq_url(fresh_database_url)) as raw:
        raw.execute("INSERT INTO job_queue (job_type, payload) VALUES ('raw', '{}')")
        with pytest.raises(psycopg.errors.RaiseException):  # a raw connection: raw errors
            queue.add_jobs(jobs, db=raw)
        raw.commit()
    types = sorted(row[0] for row in run_sql(engine, "SELECT job_type FROM job_queue"))
    assert types == ["also kept", "kept", "raw"]


def test_caller_connection_already_in_pipeline_mode_gets_one_statement(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    # Inside the caller's own pipeline our savepoint could not be rolled back to: an
    # invalid entry must still leave the caller's transaction usable (W-TX-1).
    jobs = _jobs(35)
    jobs[30]["depends_on"] = {"job_ids": [dq.batch_dep_ref(2)]}
    bad = _jobs(35)
    bad[30]["payload"] = float("nan")
    with psycopg.connect(libpq_url(database_url)) as raw:
        with raw.pipeline():
            raw.execute("INSERT INTO job_queue (job_type, payload) VALUES ('mine', '{}')")
            with pytest.raises(dq.InvalidJobError, match="nan"):
                pg_queue.add_jobs(bad, db=raw)
            ids = pg_queue.add_jobs(jobs, db=raw)
        raw.commit()
    assert len(ids) == 35 and ids == sorted(ids)
    job = pg_queue.get_job(ids[30])
    assert job is not None and job.depends_on_job_ids == [ids[2]]
    assert _counts(engine) == (36, 35)
