"""Concurrent enqueues sharing idempotency keys, in any order, never deadlock.

Real threads on a real PostgreSQL: every scenario starts eight callers together on
the same keys, each in its own shuffled order, and runs a few rounds (fresh keys each
round) so that a regression shows as ``DeadlockDetected``. Every caller must get the
one job's id for every key, and each key must be stored once, with one ``added``
event. Keyed rows are written in key order, so the last tests check what must not
change with it: ids in input order, and placeholders naming a contested key.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.backends.postgres import enqueue as pg_enqueue
from tests.conftest import run_sql, wait_for_lock_waiter

CALLERS = 8
KEYS = 300
ROUNDS = 4

#: Returns the id each key got, as one caller saw it.
Caller = Callable[[], dict[str, int]]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipeline every batch of more than 40 jobs (the first chunk holds 10)."""
    monkeypatch.setattr(pg_enqueue, "PIPELINE_CHUNK", 40)


def _rounds() -> Iterator[tuple[list[str], random.Random]]:
    """Fresh keys for each round, and a seeded shuffler so a failure can be replayed."""
    for round_number in range(ROUNDS):
        yield [f"r{round_number}-k{i}" for i in range(KEYS)], random.Random(round_number)


def _shuffled(keys: list[str], rng: random.Random) -> list[str]:
    order = list(keys)
    rng.shuffle(order)
    return order


def _keyed(keys: list[str], caller: int) -> list[dict[str, Any]]:
    return [
        {"job_type": "keyed", "payload": {"caller": caller}, "idempotency_key": key} for key in keys
    ]


def _race(callers: list[Caller]) -> list[dict[str, int]]:
    """Start ``callers`` together, each on its own thread; raise the first error."""
    barrier = threading.Barrier(len(callers))
    results: list[dict[str, int] | None] = [None] * len(callers)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[n] = callers[n]()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(n,), name=f"dataqueue-test-enqueue-{n}")
        for n in range(len(callers))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a caller never returned"
    assert errors == [], f"{len(errors)} of {len(callers)} callers failed: {errors[0]!r}"
    return [result for result in results if result is not None]


def _assert_one_job_per_key(engine: sa.Engine, keys: list[str], seen: list[dict[str, int]]) -> None:
    """Each key is one row with one ``added`` event, and every caller got that row's id."""
    stored = run_sql(
        engine,
        "SELECT j.idempotency_key, j.id, count(e.id) FROM job_queue AS j"
        " LEFT JOIN job_events AS e ON e.job_id = j.id AND e.event_type = 'added'"
        " WHERE j.idempotency_key = ANY(:keys) GROUP BY j.id",
        keys=keys,
    )
    assert sorted(row[0] for row in stored) == sorted(keys)  # one row per key
    assert all(row[2] == 1 for row in stored)
    ids = {row[0]: row[1] for row in stored}
    for result in seen:
        assert result == {key: ids[key] for key in result}


def _add_jobs(queue: dq.JobQueue, jobs: list[dict[str, Any]]) -> Caller:
    def call() -> dict[str, int]:
        ids = queue.add_jobs(jobs)
        return {job["idempotency_key"]: job_id for job, job_id in zip(jobs, ids, strict=True)}

    return call


def _add_job_each(queue: dq.JobQueue, keys: list[str], caller: int) -> Caller:
    def call() -> dict[str, int]:
        return {
            key: queue.add_job("single", {"caller": caller}, idempotency_key=key) for key in keys
        }

    return call


def _wait_for_lock_waiters(engine: sa.Engine, count: int) -> None:
    """Wait until ``count`` sessions wait for a lock, or 10 s passed (some may have failed)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = run_sql(
            engine,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )[0][0]
        if waiting >= count:
            return
        time.sleep(0.01)


def test_add_jobs_with_overlapping_keys_in_any_order_get_one_id_per_key(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    for keys, rng in _rounds():
        callers = [_add_jobs(pg_queue, _keyed(_shuffled(keys, rng), n)) for n in range(CALLERS)]
        seen = _race(callers)
        assert all(len(result) == KEYS for result in seen)
        _assert_one_job_per_key(engine, keys, seen)


def _commit_once_waited_for(engine: sa.Engine, conn: sa.Connection) -> None:
    _wait_for_lock_waiters(engine, CALLERS)
    conn.commit()


def test_add_jobs_released_together_by_a_transaction_holding_a_key_get_one_id_per_key(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # The batches all stop at the held key (wherever their order puts it) and go on
    # together when it commits: the statements surely overlap, however the threads ran.
    for keys, rng in _rounds():
        held = rng.choice(keys)
        callers = [_add_jobs(pg_queue, _keyed(_shuffled(keys, rng), n)) for n in range(CALLERS)]
        with engine.connect() as conn:
            conn.begin()
            held_id = pg_queue.add_job("holder", {}, idempotency_key=held, db=conn)
            releaser = threading.Thread(
                target=_commit_once_waited_for,
                args=(engine, conn),
                name="dataqueue-test-enqueue-releaser",
            )
            releaser.start()
            seen = _race(callers)
            releaser.join(timeout=30)
        assert all(len(result) == KEYS and result[held] == held_id for result in seen)
        _assert_one_job_per_key(engine, keys, seen)


def test_add_job_and_add_jobs_sharing_keys_get_one_id_per_key(
    pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    for keys, rng in _rounds():
        callers = [
            _add_jobs(pg_queue, _keyed(_shuffled(keys, rng), n)) for n in range(CALLERS // 2)
        ]
        # Single adds walk a shuffled fifth of the keys each, while the batches run.
        callers += [
            _add_job_each(pg_queue, _shuffled(keys, rng)[: KEYS // 5], n)
            for n in range(CALLERS // 2)
        ]
        _assert_one_job_per_key(engine, keys, _race(callers))


def _pipelined_batch(keys: list[str], caller: int) -> list[dict[str, Any]]:
    """Keyless jobs first (a different number per caller, so some chunks hold no key),
    then the keys with a keyless job after every tenth."""
    jobs: list[dict[str, Any]] = [
        {"job_type": "plain", "payload": {"caller": caller, "i": i}} for i in range(15 * caller)
    ]
    for i, job in enumerate(_keyed(keys, caller)):
        jobs.append(job)
        if i % 10 == 9:
            jobs.append({"job_type": "plain", "payload": {"caller": caller}})
    return jobs


def _pipelined_add_jobs(queue: dq.JobQueue, jobs: list[dict[str, Any]]) -> Caller:
    def call() -> dict[str, int]:
        ids = queue.add_jobs(jobs)
        keyless = [
            job_id for job, job_id in zip(jobs, ids, strict=True) if "idempotency_key" not in job
        ]
        # Jobs that were surely written by this call: their ids increase in input order.
        assert keyless == sorted(keyless) and len(set(keyless)) == len(keyless)
        return {
            job["idempotency_key"]: job_id
            for job, job_id in zip(jobs, ids, strict=True)
            if "idempotency_key" in job
        }

    return call


def test_pipelined_batches_with_overlapping_keys_get_one_id_per_key(
    small_chunks: None, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    for keys, rng in _rounds():
        callers = [
            _pipelined_add_jobs(pg_queue, _pipelined_batch(_shuffled(keys, rng), n))
            for n in range(CALLERS)
        ]
        seen = _race(callers)
        assert all(len(result) == KEYS for result in seen)
        _assert_one_job_per_key(engine, keys, seen)


@pytest.mark.parametrize("chunked", [False, True], ids=["one-statement", "pipelined"])
def test_caller_transactions_with_overlapping_keys_get_one_id_per_key(
    chunked: bool, monkeypatch: pytest.MonkeyPatch, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    if chunked:
        monkeypatch.setattr(pg_enqueue, "PIPELINE_CHUNK", 40)

    def in_transaction(jobs: list[dict[str, Any]]) -> Caller:
        def call() -> dict[str, int]:
            with engine.begin() as conn:
                ids = pg_queue.add_jobs(jobs, db=conn)
                conn.exec_driver_sql("SELECT pg_sleep(0.01)")  # the caller's own work
            return {job["idempotency_key"]: i for job, i in zip(jobs, ids, strict=True)}

        return call

    for keys, rng in _rounds():
        callers = [in_transaction(_keyed(_shuffled(keys, rng), n)) for n in range(CALLERS)]
        seen = _race(callers)
        assert all(len(result) == KEYS for result in seen)
        _assert_one_job_per_key(engine, keys, seen)


@pytest.mark.parametrize("chunked", [False, True], ids=["one-statement", "pipelined"])
def test_placeholder_naming_a_key_written_meanwhile_gets_that_job(
    chunked: bool, monkeypatch: pytest.MonkeyPatch, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    # The batch waits for the other transaction's key, then skips its own job: the
    # dependents in the same statement must name the other transaction's job.
    if chunked:
        monkeypatch.setattr(pg_enqueue, "PIPELINE_CHUNK", 10)
    jobs: list[dict[str, Any]] = [{"job_type": "bulk", "payload": {"i": i}} for i in range(30)]
    jobs[5]["idempotency_key"] = "contested"
    jobs[6]["depends_on"] = {"job_ids": [dq.batch_dep_ref(5)]}
    jobs[27]["depends_on"] = {"job_ids": [dq.batch_dep_ref(0), dq.batch_dep_ref(5)]}
    results: list[list[int]] = []
    with engine.connect() as conn:
        conn.begin()
        other = pg_queue.add_job("first", {}, idempotency_key="contested", db=conn)
        thread = threading.Thread(
            target=lambda: results.append(pg_queue.add_jobs(jobs)),
            name="dataqueue-test-enqueue-batch",
        )
        thread.start()
        wait_for_lock_waiter(engine)
        conn.commit()
        thread.join(timeout=30)
    [ids] = results
    assert ids[5] == other
    for position, expected in ((6, [other]), (27, [ids[0], other])):
        job = pg_queue.get_job(ids[position])
        assert job is not None and job.depends_on_job_ids == expected
        [event] = pg_queue.get_job_events(ids[position])
        assert event.metadata is not None and event.metadata["dependsOn"] == {"jobIds": expected}


def test_keys_out_of_key_order_get_ids_in_input_order(pg_queue: dq.JobQueue) -> None:
    keys = ["m", "b", None, "z", "a", "b"]
    jobs = [
        {"job_type": "t", "payload": {"i": i}, "idempotency_key": key} for i, key in enumerate(keys)
    ]
    ids = pg_queue.add_jobs(jobs)
    assert ids[5] == ids[1]  # the repeated key
    assert ids[:5] == sorted(ids[:5]) and len(set(ids[:5])) == 5
    for i, job_id in enumerate(ids[:5]):
        job = pg_queue.get_job(job_id)
        assert job is not None and (job.payload, job.idempotency_key) == ({"i": i}, keys[i])
