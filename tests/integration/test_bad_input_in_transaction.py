"""Values PostgreSQL would refuse are refused before any statement, in or out of ``db=``.

Every case raises :class:`InvalidJobError` naming the field and the value before a
statement is sent, so the caller's transaction stays usable: a later statement in it
succeeds, its own writes (a row of its own, a good job) commit, and no bad job exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import psycopg
import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.backends.postgres import enqueue as pg_enqueue
from tests.conftest import StatementCounter, libpq_url, run_sql
from tests.integration.bad_values import INT4_OVER, LONE, NUL, nested


class BadJob(NamedTuple):
    """add_job arguments that replace those of a good job; the error and its text."""

    options: dict[str, Any]
    error: type[Exception]
    message: str


#: (id, add_job arguments that replace those of a good job, error, text of the message)
BAD_JOBS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("job_type lone surrogate", {"job_type": "send" + LONE}, dq.InvalidJobError,
     "job_type contains a lone surrogate '\\ud800', got 'send\\ud800'"),
    ("job_type NUL", {"job_type": "send" + NUL}, dq.InvalidJobError,
     "job_type contains a NUL character, got 'send\\x00'"),
    ("job_type of 256 characters", {"job_type": "j" * 256}, dq.InvalidJobError,
     "job_type must be at most 255 characters, got 256 characters: 'jjjj"),
    ("tag lone surrogate", {"tags": ["ok", "x" + LONE]}, dq.InvalidJobError,
     "tags[1] contains a lone surrogate '\\ud800'"),
    ("tag NUL", {"tags": ["ok", "x" + NUL]}, dq.InvalidJobError,
     "tags[1] contains a NUL character"),
    ("tag of 1 MB", {"tags": ["t" * 1_000_000]}, dq.InvalidJobError,
     "tags[0] must be at most 255 characters, got 1000000 characters"),
    ("idempotency_key lone surrogate", {"idempotency_key": LONE}, dq.InvalidJobError,
     "idempotency_key contains a lone surrogate"),
    ("idempotency_key NUL", {"idempotency_key": "k" + NUL}, dq.InvalidJobError,
     "idempotency_key contains a NUL character"),
    ("idempotency_key of 256 characters", {"idempotency_key": "k" * 256}, dq.InvalidJobError,
     "idempotency_key must be at most 255 characters"),
    ("group id lone surrogate", {"group": {"id": LONE}}, dq.InvalidJobError,
     "group.id contains a lone surrogate"),
    ("group id NUL", {"group": {"id": "g" + NUL}}, dq.InvalidJobError,
     "group.id contains a NUL character"),
    ("group id of 256 characters", {"group": {"id": "g" * 256}}, dq.InvalidJobError,
     "group.id must be at most 255 characters"),
    ("group tier lone surrogate", {"group": dq.JobGroup(id="g", tier=LONE)}, dq.InvalidJobError,
     "group.tier contains a lone surrogate"),
    ("group tier of 256 characters", {"group": {"id": "g", "tier": "t" * 256}},
     dq.InvalidJobError, "group.tier must be at most 255 characters"),
    ("dead_letter_job_type lone surrogate", {"dead_letter_job_type": LONE}, dq.InvalidJobError,
     "dead_letter_job_type contains a lone surrogate"),
    ("dead_letter_job_type of 256 characters", {"dead_letter_job_type": "d" * 256},
     dq.InvalidJobError, "dead_letter_job_type must be at most 255 characters"),
    ("depends_on tag lone surrogate", {"depends_on": {"tags": [LONE]}}, dq.InvalidJobError,
     "depends_on.tags[0] contains a lone surrogate"),
    ("depends_on tag NUL", {"depends_on": dq.DependsOn(tags=["ok", NUL])}, dq.InvalidJobError,
     "depends_on.tags[1] contains a NUL character"),
    ("depends_on tag of 256 characters", {"depends_on": {"tags": ["t" * 256]}},
     dq.InvalidJobError, "depends_on.tags[0] must be at most 255 characters"),
    ("depends_on id beyond int4", {"depends_on": {"job_ids": [2**40]}}, dq.JobDependencyError,
     "depends_on.job_ids: 1099511627776 is neither a job id"),
    ("depends_on id just beyond int4", {"depends_on": {"job_ids": [INT4_OVER]}},
     dq.JobDependencyError, f"depends_on.job_ids: {INT4_OVER} is neither a job id"),
    ("depends_on id 0", {"depends_on": {"job_ids": [0]}}, dq.JobDependencyError,
     "depends_on.job_ids: 0 is neither a job id"),
    ("payload string lone surrogate", {"payload": {"a": [1, 2, LONE]}}, dq.InvalidJobError,
     "payload['a'][2] contains a lone surrogate '\\ud800'"),
    ("payload string NUL", {"payload": {"a": {"b": "x" + NUL}}}, dq.InvalidJobError,
     "payload['a']['b'] contains a NUL character"),
    ("payload key NUL", {"payload": {"a": {"k" + NUL: 1}}}, dq.InvalidJobError,
     "payload['a'] has a key that contains a NUL character: 'k\\x00'"),
    ("payload key lone surrogate", {"payload": {"\udc80": 1}}, dq.InvalidJobError,
     "payload has a key that contains a lone surrogate '\\udc80'"),
    ("payload nested 101 levels", {"payload": nested(101)}, dq.InvalidJobError,
     "payload nests containers more than 100 levels deep"),
    ("payload nested 100k levels", {"payload": nested(100_000)}, dq.InvalidJobError,
     "payload nests containers more than 100 levels deep"),
    ("max_attempts beyond int4", {"max_attempts": INT4_OVER}, dq.InvalidJobError,
     f"max_attempts must be between 1 and 2147483647, got {INT4_OVER}"),
    ("priority below int4", {"priority": -INT4_OVER - 1}, dq.InvalidJobError,
     "priority must be between -2147483648 and 2147483647"),
    ("timeout_ms beyond int4", {"timeout_ms": INT4_OVER}, dq.InvalidJobError,
     "timeout_ms must be between 0 and 2147483647"),
    ("retry_delay beyond int4", {"retry_delay": INT4_OVER}, dq.InvalidJobError,
     "retry_delay must be between 0 and 2147483647"),
    ("retry_delay_max beyond int8", {"retry_delay_max": 2**70}, dq.InvalidJobError,
     "retry_delay_max must be between 0 and 2147483647"),
]  # fmt: skip


class CallersSide:
    """The caller's side of ``db=``: its own table, and its open transactions."""

    table = "callers_own_rows"

    def __init__(self, engine: sa.Engine, database_url: str) -> None:
        self.engine = engine
        self._database_url = database_url

    @contextlib.contextmanager
    def transaction(self, kind: str) -> Iterator[tuple[Any, Callable[[str], object]]]:
        """An open transaction (``db``) and a function running SQL in it; commits."""
        if kind == "sqlalchemy":
            with self.engine.connect() as conn:
                conn.begin()
                yield conn, conn.exec_driver_sql
                conn.commit()
        else:
            with psycopg.connect(libpq_url(self._database_url)) as raw:
                yield raw, raw.execute
                assert raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
                raw.commit()

    def notes(self) -> list[str]:
        """What the caller committed to its own table."""
        return [row[0] for row in run_sql(self.engine, f"SELECT note FROM {self.table}")]

    def jobs_and_events(self) -> list[tuple[str, str]]:
        """Every job's type with each of its events, in id order."""
        rows = run_sql(
            self.engine,
            "SELECT j.job_type, e.event_type FROM job_queue j"
            " LEFT JOIN job_events e ON e.job_id = j.id ORDER BY j.id, e.id",
        )
        return [(row[0], row[1]) for row in rows]


@pytest.fixture
def caller(engine: sa.Engine, database_url: str) -> Iterator[CallersSide]:
    """The caller's side, with a table of its own outside dataqueue's."""
    side = CallersSide(engine, database_url)
    run_sql(engine, f"CREATE TABLE IF NOT EXISTS {side.table} (note text)")
    run_sql(engine, f"TRUNCATE {side.table}")
    yield side
    run_sql(engine, f"DROP TABLE {side.table}")


def _enqueue_bad(queue: dq.JobQueue, call: str, options: dict[str, Any], db: Any) -> None:
    job: dict[str, Any] = {"job_type": "bad", "payload": {}, **options}
    if call == "add_job":
        queue.add_job(job.pop("job_type"), job.pop("payload"), db=db, **job)
    else:
        queue.add_jobs([{"job_type": "good of the batch", "payload": {}}, job], db=db)


_CASES = [BadJob(*case[1:]) for case in BAD_JOBS]
_CASE_IDS = [case[0] for case in BAD_JOBS]
#: (kind of caller connection, enqueue method)
_ROUTES = [(kind, call) for kind in ("sqlalchemy", "psycopg") for call in ("add_job", "add_jobs")]


@pytest.mark.parametrize("route", _ROUTES, ids=["-".join(route) for route in _ROUTES])
@pytest.mark.parametrize("case", _CASES, ids=_CASE_IDS)
def test_bad_job_in_callers_transaction_raises_and_leaves_it_usable(
    queue: dq.JobQueue, caller: CallersSide, route: tuple[str, str], case: BadJob
) -> None:
    kind, call = route
    with caller.transaction(kind) as (db, execute):
        execute(f"INSERT INTO {caller.table} VALUES ('before')")
        queue.add_job("kept", {"n": 1}, db=db)
        with StatementCounter() as counter, pytest.raises(case.error) as info:
            _enqueue_bad(queue, call, case.options, db)
        assert case.message in str(info.value)
        assert counter.statements == []
        execute(f"INSERT INTO {caller.table} VALUES ('after')")
    assert caller.notes() == ["before", "after"]
    assert caller.jobs_and_events() == [("kept", "added")]


@pytest.mark.parametrize("call", ["add_job", "add_jobs"])
@pytest.mark.parametrize("case", _CASES, ids=_CASE_IDS)
def test_bad_job_without_db_raises_before_any_statement(
    queue: dq.JobQueue, caller: CallersSide, call: str, case: BadJob
) -> None:
    with StatementCounter() as counter, pytest.raises(case.error) as info:
        _enqueue_bad(queue, call, case.options, None)
    assert case.message in str(info.value)
    assert counter.statements == []
    assert caller.jobs_and_events() == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tags": [LONE]}, "tags[0] contains a lone surrogate"),
        ({"payload": {"k": NUL}}, "payload['k'] contains a NUL character"),
        ({"depends_on": {"job_ids": [2**40]}}, "depends_on.job_ids: 1099511627776"),
        ({"payload": nested(101)}, "more than 100 levels deep"),
    ],
    ids=["tag", "payload", "dependency", "depth"],
)
def test_bad_entry_late_in_a_pipelined_batch_undoes_only_the_batch(
    monkeypatch: pytest.MonkeyPatch,
    queue: dq.JobQueue,
    caller: CallersSide,
    options: dict[str, Any],
    message: str,
) -> None:
    # Chunks of 10: the first chunks are sent before entry 30 is checked.
    monkeypatch.setattr(pg_enqueue, "PIPELINE_CHUNK", 10)
    jobs: list[dict[str, Any]] = [{"job_type": "bulk", "payload": {"i": i}} for i in range(35)]
    jobs[30].update(options)
    with caller.transaction("sqlalchemy") as (db, execute):
        execute(f"INSERT INTO {caller.table} VALUES ('before')")
        queue.add_job("kept", {}, db=db)
        with pytest.raises(dq.InvalidJobError) as info:
            queue.add_jobs(jobs, db=db)
        assert message in str(info.value)
        execute(f"INSERT INTO {caller.table} VALUES ('after')")
    assert caller.notes() == ["before", "after"]
    assert caller.jobs_and_events() == [("kept", "added")]
