"""Redis processing internals the shared tests cannot see.

A claim only ever looks at the heads of the ready queues (``P queue:<type>``): a job
that cannot run yet is moved out when first seen, to ``P blocked`` (dependencies
unmet), ``P group_wait:<group>`` (its group at the limit), or back to ``P delayed`` /
``P retry`` / ``P waiting`` (not due). These tests check that every such job comes
back when it can run (nothing stranded), that stale queue entries are dropped, and that
``P group:active`` always equals the number of processing jobs of each group.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import dataqueue as dq
from dataqueue.backends.base import ClaimedJob, ClaimRequest, Completion, Failure
from dataqueue.enums import FailureReason
from tests.integration.store_state import force_job, make_lock_stale

UTC = dt.timezone.utc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Store:
    """The Redis keys of one queue, and claims/outcomes written as a worker would."""

    def __init__(self, queue: dq.JobQueue, client: Any, prefix: str) -> None:
        self.queue = queue
        self.client = client
        self.prefix = prefix
        self.backend: Any = queue._backend

    # -- what the keys hold -------------------------------------------------------------

    def ready(self) -> list[int]:
        """Ids in every ready queue, in claim order (priority DESC, then id)."""
        entries: list[tuple[float, bytes]] = []
        for job_type in self.client.smembers(self.prefix + "queue_types"):
            key = self.prefix + "queue:" + _text(job_type)
            entries += [(s, m) for m, s in self.client.zrange(key, 0, -1, withscores=True)]
        return [int(member) for _, member in sorted(entries)]

    def parked(self, group: str) -> list[int]:
        members = self.client.zrange(self.prefix + "group_wait:" + group, 0, -1)
        return [int(member) for member in members]

    def blocked(self) -> set[int]:
        return {int(member) for member in self.client.smembers(self.prefix + "blocked")}

    def scheduled(self, index: str) -> set[int]:
        """Ids in ``P delayed``, ``P retry`` or ``P waiting``."""
        return {int(member) for member in self.client.zrange(self.prefix + index, 0, -1)}

    def group_active(self) -> dict[str, int]:
        raw = self.client.hgetall(self.prefix + "group:active")
        return {_text(k): int(v) for k, v in raw.items()}

    def processing_by_group(self) -> dict[str, int]:
        """Processing jobs per group, counted from the job hashes (the truth)."""
        counts: Counter[str] = Counter()
        for member in self.client.zrange(self.prefix + "all", 0, -1):
            status, group = self.client.hmget(
                f"{self.prefix}job:{_text(member)}", "status", "groupId"
            )
            if _text(status) == "processing" and group not in (None, b"", b"null"):
                counts[_text(group)] += 1
        return dict(counts)

    def assert_consistent(self) -> None:
        """``P group:active`` counts exactly the processing jobs of each group, and a
        group with parked jobs has a job running or one in a ready queue."""
        assert self.group_active() == self.processing_by_group()
        queued = {self.group_of(i) for i in self.ready()}
        for key in self.client.scan_iter(match=self.prefix + "group_wait:*"):
            group = _text(key)[len(self.prefix + "group_wait:") :]
            if self.client.zcard(key):
                assert self.group_active().get(group, 0) > 0 or group in queued, group

    def group_of(self, job_id: int) -> str | None:
        value = self.client.hget(f"{self.prefix}job:{job_id}", "groupId")
        return None if value in (None, b"", b"null") else _text(value)

    def status(self, job_id: int) -> str:
        job = self.queue.get_job(job_id)
        assert job is not None
        return job.status.value

    # -- acting as a worker -------------------------------------------------------------

    def claim(
        self,
        worker: str,
        limit: int = 10,
        group_limit: int | None = None,
        job_types: tuple[str, ...] | None = None,
    ) -> list[ClaimedJob]:
        request = ClaimRequest(limit=limit, job_types=job_types, group_limit=group_limit)
        _, claimed = self.backend.advance(worker, [], request)
        return list(claimed)

    def claim_ids(self, worker: str, **options: Any) -> list[int]:
        return [job.id for job in self.claim(worker, **options)]

    def complete(self, worker: str, *job_ids: int) -> list[int]:
        done, _ = self.backend.advance(
            worker, [Completion(i) for i in job_ids], ClaimRequest(limit=0)
        )
        return list(done)

    def fail(self, worker: str, job_id: int, retry_in: float | None) -> None:
        failure = Failure(job_id, "boom", FailureReason.HANDLER_ERROR, retry_in, "x")
        assert [r.job_id for r in self.backend.fail_jobs(worker, [failure])] == [job_id]


@pytest.fixture
def store(redis_queue: dq.JobQueue, redis_client: Any, redis_prefix: str) -> Store:
    return Store(redis_queue, redis_client, redis_prefix)


def _grouped(store: Store, group: str, count: int, **options: Any) -> list[int]:
    return store.queue.add_jobs(
        [{"job_type": "t", "payload": n, "group": {"id": group}, **options} for n in range(count)]
    )


# -- group limits: parking and return ----------------------------------------------------


def test_group_capped_jobs_are_parked_and_return_one_per_freed_slot(store: Store) -> None:
    a1, a2, a3, a4 = _grouped(store, "g", 4)
    free = store.queue.add_job("t", "ungrouped")
    assert store.claim_ids("w", group_limit=2) == [a1, a2, free]
    assert store.parked("g") == [a3, a4] and store.ready() == []
    assert store.group_active() == {"g": 2}
    store.complete("w", a1)
    assert store.ready() == [a3] and store.parked("g") == [a4]
    store.assert_consistent()
    store.complete("w", a2)  # the group has nothing running: every waiter comes back
    assert store.ready() == [a3, a4] and store.parked("g") == []
    assert store.group_active() == {}
    assert store.claim_ids("w", group_limit=2) == [a3, a4]
    store.assert_consistent()


def test_parked_jobs_keep_their_priority_order(store: Store) -> None:
    running = store.queue.add_job("t", 0, group={"id": "g"})
    assert store.claim_ids("w", group_limit=1) == [running]
    low, high, mid = (store.queue.add_job("t", p, group={"id": "g"}, priority=p) for p in (1, 9, 5))
    assert store.claim_ids("w", group_limit=1) == []
    assert store.parked("g") == [high, mid, low]
    store.complete("w", running)
    order = []
    while claimed := store.claim_ids("w", group_limit=1):
        order += claimed
        store.complete("w", *claimed)
    assert order == [high, mid, low]


def test_a_cancelled_returned_job_passes_its_slot_on(store: Store) -> None:
    a1, a2, a3, a4 = _grouped(store, "g", 4)
    assert store.claim_ids("w1", group_limit=2) == [a1, a2]
    store.complete("w1", a1)  # a3 comes back for the freed slot ...
    assert store.queue.cancel_job(a3)  # ... and is cancelled before anyone claims it
    store.assert_consistent()
    # a2 still runs: one slot of two is free, and a4 must get it now, as on PostgreSQL
    # (not only when a2 finishes).
    assert store.claim_ids("w2", group_limit=2) == [a4]
    store.assert_consistent()


def test_a_returned_job_that_cannot_run_passes_its_slot_on(store: Store) -> None:
    a1, a2 = _grouped(store, "g", 2)
    a3 = store.queue.add_job("t", "waits", group={"id": "g"}, depends_on={"tags": ["x"]})
    a4 = store.queue.add_job("t", "free to run", group={"id": "g"})
    assert store.claim_ids("w1", group_limit=2, job_types=("t",)) == [a1, a2]
    assert store.parked("g") == [a3, a4]
    store.complete("w1", a1)  # a3 comes back for the freed slot ...
    # ... but a job carrying its barrier tag appears before anyone claims it.
    store.queue.add_job("other", {}, tags=["x"], run_at=dt.datetime(2040, 1, 1, tzinfo=UTC))
    assert store.claim_ids("w2", group_limit=2, job_types=("t",)) == [a4]
    assert store.blocked() == {a3}
    store.assert_consistent()


def test_cancelling_returned_waiters_never_strands_the_rest(store: Store) -> None:
    first, *waiters = _grouped(store, "g", 40)
    assert store.claim_ids("w", group_limit=1) == [first]
    assert store.parked("g") == waiters
    store.complete("w", first)  # nothing of the group runs: a few waiters come back
    returned = store.ready()
    assert returned and set(returned) < set(waiters)
    for job_id in returned:  # all cancelled before anyone claims them
        assert store.queue.cancel_job(job_id)
    store.assert_consistent()
    left = [i for i in waiters if i not in returned]
    order = []
    while claimed := store.claim_ids("w", group_limit=1):
        order += claimed
        store.complete("w", *claimed)
    assert order == left


def test_group_limit_holds_with_mixed_processors(store: Store) -> None:
    # A processor without a limit claims grouped jobs too: they count (W-GRP-2).
    a1, a2, a3 = _grouped(store, "g", 3)
    assert store.claim_ids("free", limit=1) == [a1]
    assert store.group_active() == {"g": 1}
    assert store.claim_ids("capped", group_limit=1) == []
    assert store.parked("g") == [a2, a3]
    store.complete("free", a1)
    assert store.claim_ids("capped", group_limit=1) == [a2]
    store.assert_consistent()


# -- P group:active after every way out of processing ---------------------------------


def test_group_active_follows_every_transition(store: Store) -> None:
    ids = _grouped(store, "g", 6, retry_delay=0, retry_backoff=False)
    other = _grouped(store, "h", 2)
    store.backend.heartbeat("w", [], 60.0)
    claimed = store.claim("w", limit=8, group_limit=8)
    assert [j.id for j in claimed] == ids + other
    assert store.group_active() == {"g": 6, "h": 2}
    by_id = {job.id: job for job in claimed}

    store.complete("w", ids[0])
    store.assert_consistent()
    store.fail("w", ids[1], retry_in=0)  # a retry: failed, then due again
    store.assert_consistent()
    soon = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    assert store.backend.wait_job("w", ids[2], soon, None, "{}")
    store.assert_consistent()
    assert store.queue.retry_job(ids[3])  # a processing job sent back to pending
    store.assert_consistent()
    assert store.backend.release_jobs("w", [by_id[ids[4]]]) == [ids[4]]
    store.assert_consistent()
    store.fail("w", other[0], retry_in=None)  # failed for good
    store.assert_consistent()
    assert store.group_active() == {"g": 1, "h": 1}

    # The last two are abandoned by a dead worker and reclaimed.
    store.backend.heartbeat("w", [], 0.001)
    time.sleep(0.01)
    assert store.queue.reclaim_stuck_jobs(max_processing_time=dt.timedelta(hours=1)) == 2
    store.assert_consistent()
    assert store.group_active() == {}
    # Everything still to do is claimable again, and counted again when claimed.
    again = store.claim_ids("w2", limit=10, group_limit=10)
    assert sorted(again) == sorted([ids[1], ids[3], ids[4], ids[5], other[1]])
    assert store.group_active() == {"g": 4, "h": 1}
    store.assert_consistent()


def test_resumed_wait_and_its_release_keep_the_count(store: Store) -> None:
    [job_id] = _grouped(store, "g", 1)
    store.claim("w", group_limit=1)
    assert store.backend.wait_job("w", job_id, dt.datetime.now(UTC), None, "{}")
    assert store.group_active() == {}
    [resumed] = store.claim("w", group_limit=1)
    assert resumed.resumed and store.group_active() == {"g": 1}
    assert store.backend.release_jobs("w", [resumed]) == [job_id]
    assert store.status(job_id) == "waiting" and store.group_active() == {}
    assert store.claim_ids("w", group_limit=1) == [job_id]
    store.assert_consistent()


# -- dependencies: blocked jobs come back ----------------------------------------------


def test_dependency_completing_wakes_a_blocked_job(store: Store) -> None:
    prerequisite = store.queue.add_job("first", {})
    dependent = store.queue.add_job("second", {}, depends_on={"job_ids": [prerequisite]})
    assert store.claim_ids("w", job_types=("second",)) == []
    assert store.blocked() == {dependent} and dependent not in store.ready()
    [claimed] = store.claim_ids("w", job_types=("first",))
    assert store.claim_ids("w", job_types=("second",)) == []  # still running
    store.complete("w", claimed)
    assert store.blocked() == set() and store.ready() == [dependent]
    assert store.claim_ids("w", job_types=("second",)) == [dependent]


def test_every_prerequisite_must_complete_before_the_blocked_job_returns(store: Store) -> None:
    one, two = store.queue.add_jobs([{"job_type": "first", "payload": n} for n in range(2)])
    dependent = store.queue.add_job("second", {}, depends_on={"job_ids": [one, two]})
    assert store.claim_ids("w", job_types=("second",)) == []
    store.claim("w", job_types=("first",))
    store.complete("w", one)
    assert store.blocked() == {dependent}
    store.complete("w", two)
    assert store.claim_ids("w", job_types=("second",)) == [dependent]


def test_tag_barrier_is_released_when_the_last_tagged_job_finishes(store: Store) -> None:
    first, second = store.queue.add_jobs(
        [{"job_type": "load", "payload": n, "tags": ["etl", f"n{n}"]} for n in range(2)]
    )
    report = store.queue.add_job("report", {}, depends_on={"tags": ["etl"]})
    assert store.claim_ids("w", job_types=("report",)) == []
    assert store.blocked() == {report}
    assert store.claim_ids("w", job_types=("load",)) == [first, second]
    store.complete("w", first)
    assert store.blocked() == {report}  # the second load still carries the tag
    store.fail("w", second, retry_in=60)  # failed, awaiting retry: no longer active
    assert store.claim_ids("w", job_types=("report",)) == [report]


def test_tag_barrier_edited_away_releases_the_blocked_job(store: Store) -> None:
    barrier = store.queue.add_job(
        "load", {}, tags=["etl"], run_at=dt.datetime(2040, 1, 1, tzinfo=UTC)
    )
    report = store.queue.add_job("report", {}, depends_on={"tags": ["etl"]})
    assert store.claim_ids("w", job_types=("report",)) == []
    assert store.queue.edit_job(barrier, tags=["other"])
    assert store.claim_ids("w", job_types=("report",)) == [report]


def test_blocked_head_does_not_hold_back_ready_jobs(store: Store) -> None:
    prerequisite = store.queue.add_job("later", {}, run_at=dt.datetime(2040, 1, 1, tzinfo=UTC))
    store.queue.add_jobs(
        [
            {
                "job_type": "t",
                "payload": n,
                "priority": 9,
                "depends_on": {"job_ids": [prerequisite]},
            }
            for n in range(50)
        ]
    )
    ready = store.queue.add_job("t", "ready", priority=0)
    assert store.claim_ids("w", limit=1) == [ready]
    assert len(store.blocked()) == 50
    # Later claims do not look at the blocked jobs again.
    assert store.claim_ids("w", limit=1) == [] and store.ready() == []


# -- stale and misplaced entries ---------------------------------------------------------


def test_stale_queue_entries_are_dropped_and_never_claimed(store: Store) -> None:
    done, cancelled, running, future, exhausted, good = store.queue.add_jobs(
        [{"job_type": "t", "payload": n} for n in range(6)]
    )
    store.claim("other-worker", limit=3)  # done, cancelled and running
    store.complete("other-worker", done)
    force_job(store.queue, cancelled, status="cancelled")
    force_job(store.queue, exhausted, attempts=3)
    later = store.client.time()[0] * 1000 + 3_600_000
    store.client.hset(f"{store.prefix}job:{future}", "runAt", later)
    # Entries for all of them (and for a job that does not exist) in the ready queue.
    key = store.prefix + "queue:t"
    for job_id in (done, cancelled, running, future, exhausted, good, 999):
        store.client.zadd(key, {f"{job_id:020d}": 0})
    assert store.claim_ids("w", limit=10) == [good]
    assert store.ready() == []
    assert store.scheduled("delayed") == {future}
    assert [store.status(i) for i in (done, cancelled, running, exhausted)] == [
        "completed",
        "cancelled",
        "processing",
        "pending",
    ]
    job = store.queue.get_job(running)
    assert job is not None and job.locked_by == "other-worker"
    assert store.claim_ids("w", limit=10) == []


def test_due_entries_move_from_the_time_indexes_to_the_ready_queue(store: Store) -> None:
    soon = dt.datetime.now(UTC) + dt.timedelta(milliseconds=300)
    job_id = store.queue.add_job("t", {}, run_at=soon)
    assert store.scheduled("delayed") == {job_id}
    assert store.claim_ids("w") == []
    deadline = time.monotonic() + 10
    claimed: list[int] = []
    while not claimed:
        assert time.monotonic() < deadline, "the delayed job never became claimable"
        time.sleep(0.05)
        claimed = store.claim_ids("w")
    assert claimed == [job_id] and store.scheduled("delayed") == set()


def test_failed_job_waits_in_retry_until_due(store: Store) -> None:
    job_id = store.queue.add_job("t", {})
    store.claim("w")
    store.fail("w", job_id, retry_in=3600)
    assert store.scheduled("retry") == {job_id} and store.ready() == []
    assert store.claim_ids("w") == []
    store.client.zadd(store.prefix + "retry", {str(job_id): 0})
    store.client.hset(f"{store.prefix}job:{job_id}", "nextAttemptAt", 1)
    assert store.claim_ids("w") == [job_id]
    assert store.scheduled("retry") == set()


def test_reclaimed_job_goes_back_where_it_belongs(store: Store) -> None:
    job_id = store.queue.add_job("t", {}, group={"id": "g"})
    store.claim("node-worker", group_limit=1)  # an unregistered worker that died
    make_lock_stale(store.queue, job_id, 3600)
    assert store.queue.reclaim_stuck_jobs(max_processing_time=60) == 1
    assert store.ready() == [job_id] and store.group_active() == {}
    assert store.claim_ids("w", group_limit=1) == [job_id]


def test_concurrent_claims_never_exceed_the_group_limit(store: Store) -> None:
    groups = [f"g{n}" for n in range(4)]
    store.queue.add_jobs(
        [{"job_type": "t", "payload": n, "group": {"id": groups[n % 4]}} for n in range(400)]
    )
    seen: list[dict[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    deadline = time.monotonic() + 60

    def work(worker: str) -> None:
        try:
            while time.monotonic() < deadline:
                claimed = store.claim(worker, limit=3, group_limit=2)
                if not claimed:
                    if store.queue.get_jobs_by_status("pending", limit=1):
                        time.sleep(0.001)
                        continue
                    return
                with lock:
                    seen.append(store.group_active())
                store.complete(worker, *(job.id for job in claimed))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert all(count <= 2 for snapshot in seen for count in snapshot.values())
    assert any(count == 2 for snapshot in seen for count in snapshot.values())
    assert Counter(j.status.value for j in store.queue.get_all_jobs(limit=1000)) == {
        "completed": 400
    }
    assert store.group_active() == {}


# -- a lost reply is retried without acting twice ----------------------------------------


@pytest.fixture
def lose_next_reply(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[Any]]:
    """Arms a lost reply: the next script reply is lost (as when CLIENT KILL lands
    between a script and its reply) and the call retried. Returns the replies of the
    runs after arming; clearing that list arms it again."""
    import redis

    from dataqueue.backends.redis import backend as redis_backend

    real = redis_backend.retrying
    replies: list[Any] = []

    def losing(call: Any) -> Any:
        def flaky() -> Any:
            reply = call()
            replies.append(reply)
            if len(replies) == 1:
                raise redis.ConnectionError("reply lost")
            return reply

        return real(flaky)

    def arm() -> list[Any]:
        monkeypatch.setattr(redis_backend, "retrying", losing)
        return replies

    return arm


def test_a_claim_whose_reply_was_lost_returns_the_same_jobs(
    store: Store, lose_next_reply: Callable[[], list[Any]]
) -> None:
    first, second, third = store.queue.add_jobs(
        [
            {"job_type": "t", "payload": {"text": 'é "quoted" a/b \\ ✓', "n": 1}},
            {"job_type": "t", "payload": [], "group": {"id": "g"}, "timeout_ms": 500},
            {"job_type": "t", "payload": None},
        ]
    )
    replies = lose_next_reply()
    assert store.claim_ids("w", limit=2) == [first, second]
    assert len(replies) == 2 and replies[1] == replies[0]  # the same reply, replayed
    assert [store.status(i) for i in (first, second, third)] == [
        "processing",
        "processing",
        "pending",
    ]
    assert [e.event_type for e in store.queue.get_job_events(first)] == ["added", "processing"]


def test_a_completion_whose_reply_was_lost_is_reported_once(
    store: Store, lose_next_reply: Callable[[], list[Any]]
) -> None:
    job_id = store.queue.add_job("t", {})
    store.claim("w")
    lose_next_reply()
    assert store.complete("w", job_id) == [job_id]
    assert [e.event_type for e in store.queue.get_job_events(job_id)] == [
        "added",
        "processing",
        "completed",
    ]


def test_a_failure_and_a_wait_whose_replies_were_lost_are_reported_once(
    store: Store, lose_next_reply: Callable[[], list[Any]]
) -> None:
    failing, waiting = store.queue.add_jobs([{"job_type": "t", "payload": n} for n in range(2)])
    store.claim("w")
    replies = lose_next_reply()
    failure = Failure(failing, "boom", FailureReason.HANDLER_ERROR, 60.0, "x")
    [result] = store.backend.fail_jobs("w", [failure])
    assert (result.job_id, result.will_retry) == (failing, True)
    del replies[:]
    assert store.backend.wait_job("w", waiting, dt.datetime.now(UTC), None, "{}")
    for job_id, last in ((failing, "failed"), (waiting, "waiting")):
        events = [e.event_type for e in store.queue.get_job_events(job_id)]
        assert events == ["added", "processing", last]
