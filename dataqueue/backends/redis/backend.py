"""Redis backend: Lua scripts over upstream's key layout (see :mod:`.keys`, :mod:`.codec`).

Every state change and the events it writes happen in one Lua script (atomic, one
round trip, events numbered inside it); timestamps come from the Redis server's clock
(``TIME``) inside the scripts. Behaviour follows our PostgreSQL backend, not upstream's
Redis backend (SEMANTICS §10.6): status guards, no second ``added`` event for an
idempotent duplicate (W-R-3), dependency validation (W-DEP-4), set-based tag modes
(W-API-1), edits of ``run_at``/``priority`` that take effect at once (W-R-2), cascades
that set ``pending_reason``, and cleanup that keeps concurrently appended events
(W-UB-6) and leaves no index entries behind (W-UB-7).

What the reads cost (n: jobs stored, k: candidates after the set filters):

- ``get_job``: one ``HGETALL``. ``get_job_events``: one ``LRANGE`` of the job's list.
- ``get_stats``: one read-only script on counters the other scripts keep (O(job types)),
  then a pipelined ``LRANGE`` of the newest run times per type (:mod:`.stats`).
- ``list_jobs`` without filters (``get_all_jobs``): one read-only script on ``P all``,
  O(log n + limit + jobs created in the page's boundary milliseconds), then one
  pipelined ``HGETALL`` per job of the page. Jobs of one ``add_jobs`` call share a
  millisecond, and Redis orders equal scores by member text, so a page inside a
  10,000-job batch reads the whole batch's ids (tens of milliseconds).
- ``list_jobs`` filtered only by status, job type and/or tags in mode ``all``, when
  the smallest of those sets is large compared with the page: a read-only script
  walks ``P all`` from the newest job and keeps members of every set (``SMISMEMBER``),
  O((offset + limit) · n / k) for k jobs in the smallest set. E.g. the newest page of
  ``pending`` jobs when most jobs are pending.
- ``list_jobs`` with other filters: the candidate ids come from set operations on the indexes
  (``SINTER`` of ``status:<s>``, ``type:<t>`` and, for tag modes ``all``/``exact``,
  ``tag:<t>``; ``SUNION`` of ``tag:<t>`` for ``any``/``none``), or every id of
  ``P all`` when no set applies (only ``priority``/``run_at``/``cursor`` filters). The
  k candidates are ordered by their ``P all`` scores (``ZMSCORE``) in Python; the
  ``priority``/``run_at`` filters and ``exact`` mode read one or two fields per
  candidate (pipelined ``HMGET``/``SCARD``); only the page's hashes are loaded.
  Empty tag lists in modes ``all``/``exact`` read the ``tags`` field of every
  candidate (there is no index of tagged jobs).

Bulk operations (``edit_pending_jobs``, ``cancel_upcoming_jobs``) select ids as
``list_jobs`` does, then change them in scripts of up to 5,000 jobs that re-check each
job's status (each script atomic, not the whole operation as on PostgreSQL); a job
whose filtered fields change in between is still changed under its old values.

Writes: ``add_jobs`` is one script for the whole batch, O(batch). ``cancel_job`` and
its dependency cascade are one script, O(dependents reached) through the
``P dep:<id>``/``P tagdep:<tag>`` indexes (never a scan of pending jobs).
``cleanup_old_jobs`` runs one script per ``SSCAN`` step of ``P status:completed``,
``P status:cancelled`` and ``P status:failed`` (``batch_size`` is the COUNT hint);
``cleanup_old_job_events`` one script per ``ZSCAN`` step of ``P all``, reading only the
old head of each job's event list.

Processing: ``advance`` completes a worker's finished jobs and claims the next ones in
one script, O(log n) per job looked at (see ``scripts/_lib.lua`` for where a job lives
by status and how jobs that cannot be claimed are parked). Tokens, cron and wake-ups
live in :mod:`.tokens`, :mod:`.cron` and :mod:`.wakeups`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from dataqueue.backends.base import (
    ClaimedJob,
    ClaimRequest,
    Completion,
    FailResult,
    Failure,
)
from dataqueue.backends.redis import codec, scripts
from dataqueue.backends.redis.cron import RedisCron
from dataqueue.backends.redis.keys import Keys
from dataqueue.backends.redis.stats import RedisStats
from dataqueue.backends.redis.tokens import RedisTokens
from dataqueue.backends.redis.wakeups import RedisWakeups
from dataqueue.enums import JobStatus, TagMatch
from dataqueue.errors import ConfigurationError, JobDependencyError, UnsupportedOperationError
from dataqueue.records import JobEvent, JobRecord, iso_text
from dataqueue.validation import JobFilter, NewJob

logger = logging.getLogger("dataqueue.redis")

#: Ids per ``ZMSCORE``/pipeline round trip, and per bulk edit/cancel script.
_CHUNK = 5000

#: More jobs than one Redis can hold: larger offsets find nothing, larger limits mean "all".
_MAX_JOBS = 2**40

#: The error message of a job reclaimed on its last attempt (as on PostgreSQL).
RECLAIM_MESSAGE = (
    "Job was reclaimed after exceeding its processing time on its last attempt "
    "(the worker stopped or lost its lock)"
)

_DB_UNSUPPORTED = (
    "The db option is not supported with the Redis backend. "
    "Transactional job creation is only available with PostgreSQL."
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


#: Pauses before the retries of a command whose connection was lost (then it raises).
_RETRY_PAUSES = (0.0, 0.05, 0.25, 1.0)


def retrying(call: Callable[[], Any]) -> Any:
    """``call()``, again after a lost connection or a timeout, up to 4 more times.

    A connection the server closed (``CLIENT KILL``, a restart, an idle timeout) fails
    the next command sent on it; redis-py then drops that connection, and the retry
    runs on a new one. Other errors (a script error, a refused write) are raised at
    once.
    """
    import redis

    for pause in _RETRY_PAUSES:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.debug(
                "Redis connection lost (%s); retrying in %.2f s",
                exc,
                pause,
                extra={"action": "redis_retry", "error": str(exc), "delay_ms": pause * 1000},
            )
            time.sleep(pause)
    return call()


def _run_at_matches(run_at_ms: int, ops: Sequence[tuple[str, dt.datetime]]) -> bool:
    for op, when in ops:
        bound = codec.to_ms(when)
        if not {
            "gt": run_at_ms > bound,
            "gte": run_at_ms >= bound,
            "lt": run_at_ms < bound,
            "lte": run_at_ms <= bound,
            "eq": run_at_ms == bound,
        }[op]:
            return False
    return True


class RedisBackend(RedisTokens, RedisCron, RedisWakeups, RedisStats):
    """The :class:`dataqueue.backends.base.Backend` on Redis.

    ``client`` is a ``redis.Redis``; it is closed by :meth:`close` only if
    ``owns_client``. ``prefix`` starts every key (default ``dq:``); queues with
    different prefixes on one Redis never see each other's jobs.
    """

    def __init__(self, client: Any, *, prefix: str = "dq:", owns_client: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._owns_client = owns_client
        if _is_cluster(client) and not _has_hash_tag(prefix):
            raise ConfigurationError(
                f"key_prefix {prefix!r} has no hash tag: with Redis Cluster every key of a "
                "queue must live in one slot, so use a prefix such as '{dq}:'"
            )
        self._scripts = scripts.load(client)
        self._process_token = uuid.uuid4().hex

    def _run(self, name: str, *args: Any) -> Any:
        """Run script ``name``; retried after a lost connection (see :func:`retrying`).

        Only for scripts that are harmless to run twice (reads, and changes guarded by
        the state they expect). Scripts that are not go through :meth:`_run_once`.
        """
        script = self._scripts[name]
        return retrying(lambda: script(keys=[self.prefix], args=list(args)))

    def _run_once(self, name: str, *args: Any) -> Any:
        """Run a script whose effect must happen once although a lost reply is retried.

        The script receives ``ARGV[1]`` a caller id (this process and thread) and
        ``ARGV[2]`` a token for this call before ``args``; it keeps its reply under
        ``P call:<caller>`` (60 s) and, called again with the same token, returns that
        reply instead of acting again.
        """
        script = self._scripts[name]
        caller = f"{self._process_token}:{threading.get_ident()}"
        token = uuid.uuid4().hex
        tries = [0]

        def call() -> Any:
            # 'f' marks the first try (no kept reply to look for), 'r' a retry.
            marked = ("r" if tries[0] else "f") + token
            tries[0] += 1
            return script(keys=[self.prefix], args=[caller, marked, *args])

        return retrying(call)

    # -- enqueue --------------------------------------------------------------------

    def add_jobs(
        self,
        jobs: Iterable[NewJob],
        count: int,
        db: Any = None,
        inserted: list[bool] | None = None,
    ) -> list[int]:
        if db is not None:
            raise UnsupportedOperationError(_DB_UNSUPPORTED)
        if count == 0:
            return []
        batch = list(jobs)  # validated whole before anything is sent
        reply = self._run_once("add_jobs", codec.encode_batch(batch))
        values = [int(v) for v in reply[1:]]
        if int(reply[0]) == 1:
            raise JobDependencyError(
                "depends_on.job_ids: one or more job ids do not exist "
                f"({', '.join(map(str, values))})",
                values,
            )
        if inserted is not None:
            inserted.extend(v > 0 for v in values)
        return [abs(v) for v in values]

    # -- reads ----------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        raw = self.client.hgetall(self.keys.job(job_id))
        return codec.job_record_from_hash(raw) if raw else None

    def _load(self, ids: Sequence[int]) -> list[JobRecord]:
        """The records of ``ids`` in that order (jobs deleted meanwhile are skipped)."""
        records: list[JobRecord] = []
        for chunk in _chunks(ids):
            pipe = self.client.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hgetall(self.keys.job(job_id))
            records += [codec.job_record_from_hash(raw) for raw in pipe.execute() if raw]
        return records

    def list_jobs(self, filters: JobFilter, limit: int, offset: int) -> list[JobRecord]:
        if limit == 0 or offset >= _MAX_JOBS:
            return []
        # Scripts see numbers as doubles: keep offset + limit exact.
        limit = min(limit, _MAX_JOBS)
        if filters == JobFilter():
            page = self._run("page_all", offset, limit)
            return self._load([int(v) for v in page])
        sets = self._scannable_sets(filters, offset + limit)
        if sets:
            page = self._run("page_scan", offset, limit, *sets)
            return self._load([int(v) for v in page])
        ordered = self._select(filters)
        start = 0 if filters.cursor is not None else offset
        return self._load(ordered[start : start + limit])

    def _scannable_sets(self, filters: JobFilter, wanted: int) -> list[str]:
        """The sets (names after the prefix) to walk ``P all`` with, or ``[]``.

        Only for filters that are set memberships (status, job type, tags in mode
        ``all``), and only when walking is expected to be cheaper: about
        ``wanted · n / k`` jobs walked (n jobs, k in the smallest set) against ``k``
        ids read by the set operations.
        """
        plain = attrs.evolve(
            filters, status=None, job_type=None, tag_values=(), match_tags_when_empty=False
        )
        tags = bool(filters.tag_values) or filters.match_tags_when_empty
        if plain != JobFilter(tag_mode=filters.tag_mode) or (
            tags and (filters.tag_mode is not TagMatch.ALL or not filters.tag_values)
        ):
            return []
        names: list[str] = []
        if filters.status is not None:
            names.append(f"status:{filters.status.value}")
        if filters.job_type is not None:
            names.append(f"type:{filters.job_type}")
        names += [f"tag:{v}" for v in sorted(set(filters.tag_values))]
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.keys.all)
        for name in names:
            pipe.scard(self.prefix + name)
        total, *sizes = pipe.execute()
        smallest = min(sizes)
        return names if wanted * total < smallest * smallest else []

    def _select(self, filters: JobFilter) -> list[int]:
        """Ids of the jobs matching ``filters``, newest first."""
        candidates = self._candidates(filters)
        if filters.cursor is not None:
            candidates = {i for i in candidates if i < filters.cursor}
        candidates = self._filter_fields(candidates, filters)
        ids = sorted(candidates)
        scored: list[tuple[float, int]] = []
        for chunk in _chunks(ids):
            for job_id, score in zip(chunk, self.client.zmscore(self.keys.all, chunk), strict=True):
                if score is not None:
                    scored.append((float(score), job_id))
        scored.sort(reverse=True)
        return [job_id for _, job_id in scored]

    def _candidates(self, filters: JobFilter) -> set[int]:
        """Ids the set indexes allow for ``filters`` (before field filters)."""
        sets: list[str] = []
        if filters.status is not None:
            sets.append(self.keys.status(filters.status.value))
        if filters.job_type is not None:
            sets.append(self.keys.job_type(filters.job_type))
        tag_filter = bool(filters.tag_values) or filters.match_tags_when_empty
        values = sorted(set(filters.tag_values))
        mode = filters.tag_mode
        if tag_filter and mode is TagMatch.ANY and not values:
            return set()
        if tag_filter and mode in (TagMatch.ALL, TagMatch.EXACT):
            sets += [self.keys.tag(v) for v in values]
        if sets:
            found = {int(v) for v in self.client.sinter(sets)}
        else:
            found = {int(v) for v in self.client.zrange(self.keys.all, 0, -1)}
        if tag_filter and values and mode in (TagMatch.ANY, TagMatch.NONE):
            tagged = {int(v) for v in self.client.sunion([self.keys.tag(v) for v in values])}
            found = found & tagged if mode is TagMatch.ANY else found - tagged
        if tag_filter and values and mode is TagMatch.EXACT:
            found = self._with_tag_count(found, len(values))
        return found

    def _with_tag_count(self, ids: set[int], count: int) -> set[int]:
        ordered = sorted(ids)
        kept: set[int] = set()
        for chunk in _chunks(ordered):
            pipe = self.client.pipeline(transaction=False)
            for job_id in chunk:
                pipe.scard(self.keys.job_tags(job_id))
            kept |= {i for i, n in zip(chunk, pipe.execute(), strict=True) if n == count}
        return kept

    def _filter_fields(self, ids: set[int], filters: JobFilter) -> set[int]:
        """Apply the filters that need hash fields: priority, run_at, empty tag lists."""
        empty_tags = (
            filters.match_tags_when_empty
            and not filters.tag_values
            and filters.tag_mode in (TagMatch.ALL, TagMatch.EXACT)
        )
        if filters.priority is None and not filters.run_at and not empty_tags:
            return ids
        ordered = sorted(ids)
        kept: set[int] = set()
        for chunk in _chunks(ordered):
            pipe = self.client.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hmget(self.keys.job(job_id), ["priority", "runAt", "tags"])
            for job_id, (priority, run_at, tags) in zip(chunk, pipe.execute(), strict=True):
                if priority is None:
                    continue  # deleted meanwhile
                if filters.priority is not None and int(priority) != filters.priority:
                    continue
                if filters.run_at and not _run_at_matches(int(run_at), filters.run_at):
                    continue
                if empty_tags:
                    tags_text = "null" if tags is None else _text(tags)  # missing: NULL
                    if tags_text in ("", "null"):
                        continue
                    if filters.tag_mode is TagMatch.EXACT and tags_text != "[]":
                        continue
                kept.add(job_id)
        return kept

    def get_job_events(self, job_id: int) -> list[JobEvent]:
        entries = self.client.lrange(self.keys.events(job_id), 0, -1)
        events = [codec.job_event_from_json(entry) for entry in entries]
        events.sort(key=lambda e: (e.created_at, e.id))
        return events

    # -- management -----------------------------------------------------------------

    def retry_job(self, job_id: int) -> bool:
        return bool(self._run("retry_job", job_id))

    def cancel_job(self, job_id: int) -> bool:
        return bool(self._run("cancel_jobs", "pending,waiting", job_id))

    def cancel_upcoming_jobs(self, filters: JobFilter) -> list[int]:
        cancelled: list[int] = []
        for chunk in _chunks(sorted(self._select(_pending(filters)))):
            cancelled += [int(v) for v in self._run("cancel_jobs", "pending", *chunk)]
        return cancelled

    def edit_job(self, job_id: int, updates: dict[str, Any]) -> bool:
        if not updates:
            return False
        return bool(self._run_once("edit_jobs", *codec.edit_arguments(updates), job_id))

    def edit_pending_jobs(self, filters: JobFilter, updates: dict[str, Any]) -> int:
        if not updates:
            return 0
        arguments = codec.edit_arguments(updates)
        return sum(
            int(self._run_once("edit_jobs", *arguments, *chunk))
            for chunk in _chunks(sorted(self._select(_pending(filters))))
        )

    def cleanup_old_jobs(self, days_to_keep: int, batch_size: int) -> int:
        # Finished for good: completed, cancelled, failed with no retry left (W-UB-7).
        return sum(
            self._scan_script("cleanup_jobs", days_to_keep, batch_size, status)
            for status in ("completed", "cancelled", "failed")
        )

    def cleanup_old_job_events(self, days_to_keep: int, batch_size: int) -> int:
        return self._scan_script("cleanup_events", days_to_keep, batch_size)

    def _scan_script(self, name: str, days_to_keep: int, batch_size: int, *extra: str) -> int:
        """Run a cleanup script over one SSCAN/ZSCAN step at a time until the scan ends."""
        total = 0
        cursor = "0"
        while True:
            next_cursor, deleted = self._run(name, cursor, batch_size, days_to_keep, *extra)
            total += int(deleted)
            cursor = _text(next_cursor)
            if cursor == "0":
                return total

    # -- reclaim and heartbeats ------------------------------------------------------
    #
    # Every script below that changes state runs through _run_once: when the reply of
    # a first run is lost (CLIENT KILL, a failover) the retry returns that reply, so a
    # claim never leaves jobs locked that no processor knows of, and completions,
    # failures and waits are reported (and their hooks emitted) once. The heartbeat
    # only refreshes locks: running it again is harmless.

    def reclaim_stuck_jobs(self, max_processing_seconds: float) -> int:
        max_ms = max(0, round(max_processing_seconds * 1000))
        return int(self._run_once("reclaim", "all", max_ms, RECLAIM_MESSAGE))

    def reclaim_abandoned_jobs(self) -> int:
        return int(self._run_once("reclaim", "abandoned", 0, RECLAIM_MESSAGE))

    def heartbeat(
        self, worker_id: str, job_ids: Sequence[int], timeout_seconds: float
    ) -> list[int]:
        timeout_ms = max(1, round(timeout_seconds * 1000))
        held = self._run(
            "heartbeat", worker_id, timeout_ms, socket.gethostname(), os.getpid(), *job_ids
        )
        return [int(v) for v in held]

    def unregister_worker(self, worker_id: str) -> None:
        self.client.hdel(self.keys.workers, worker_id)

    def release_jobs(self, worker_id: str, jobs: Sequence[ClaimedJob]) -> list[int]:
        if not jobs:
            return []
        args: list[Any] = [worker_id]
        for job in jobs:
            args += [job.id, "1" if job.resumed else "0"]
        return [int(v) for v in self._run_once("release_jobs", *args)]

    # -- processing -----------------------------------------------------------------

    def advance(
        self, worker_id: str, completions: Sequence[Completion], claim: ClaimRequest
    ) -> tuple[list[int], list[ClaimedJob]]:
        limit = max(claim.limit, 0)
        if claim.job_types is not None and not claim.job_types:
            limit = 0  # an empty type filter matches nothing
        if not completions and limit == 0:
            return [], []
        args: list[Any] = [worker_id, limit, claim.group_limit or 0]
        if claim.job_types is None:
            args += ["*", 0]
        else:
            args += ["types", len(claim.job_types), *claim.job_types]
        limited = claim.limited_types() if limit > 0 else ()
        args.append(len(limited))
        for job_type, rate_limit in limited:
            args += [job_type, rate_limit.limit, rate_limit.per_milliseconds]
        args.append(len(completions))
        for done in completions:
            if done.output_json is None:
                args += [done.job_id, "0", ""]
            else:
                args += [done.job_id, "1", done.output_json]
        reply = self._run_once("advance", *args)
        n_done = int(reply[0])
        completed = [int(v) for v in reply[1 : 1 + n_done]]
        wait_ms = int(reply[1 + n_done])
        if wait_ms >= 0 and claim.on_rate_limited is not None:
            claim.on_rate_limited(wait_ms / 1000)
        rest = reply[2 + n_done :]
        claimed = [
            codec.claimed_job(rest[start : start + codec.CLAIMED_FIELDS])
            for start in range(0, len(rest), codec.CLAIMED_FIELDS)
        ]
        return completed, claimed

    def fail_jobs(self, worker_id: str, failures: Sequence[Failure]) -> list[FailResult]:
        if not failures:
            return []
        args: list[Any] = [worker_id]
        for failure in failures:
            args += [
                failure.job_id,
                json.dumps(failure.message, ensure_ascii=False),
                "" if failure.reason is None else failure.reason.value,
                "" if failure.retry_in_seconds is None else repr(float(failure.retry_in_seconds)),
                failure.failed_at,
            ]
        reply = self._run_once("fail_jobs", *args)
        return [
            FailResult(
                job_id=int(reply[k]),
                will_retry=_text(reply[k + 1]) == "1",
                dead_letter_job_id=int(reply[k + 2]) or None,
            )
            for k in range(0, len(reply), 3)
        ]

    def _update_owned(self, worker_id: str, job_id: int, mode: str, *pairs: Any) -> bool:
        return bool(self._run_once("update_owned", worker_id, job_id, mode, *pairs))

    def prolong_job(self, worker_id: str, job_id: int) -> bool:
        return self._update_owned(worker_id, job_id, "prolong")

    def update_progress(self, worker_id: str, job_id: int, progress: int) -> bool:
        return self._update_owned(worker_id, job_id, "", "progress", int(progress))

    def update_output(self, worker_id: str, job_id: int, output_json: str) -> bool:
        return self._update_owned(worker_id, job_id, "", "output", output_json)

    def update_step_data(self, worker_id: str, job_id: int, step_data_json: str) -> bool:
        return self._update_owned(worker_id, job_id, "", "stepData", step_data_json)

    def wait_job(
        self,
        worker_id: str,
        job_id: int,
        wait_until: dt.datetime | None,
        token_id: str | None,
        step_data_json: str,
    ) -> bool:
        until_text = None if wait_until is None else iso_text(wait_until)
        meta = json.dumps({"waitUntil": until_text, "waitTokenId": token_id}, ensure_ascii=False)
        changed = self._run_once(
            "wait_job",
            worker_id,
            job_id,
            "" if wait_until is None else codec.to_ms(wait_until),
            token_id or "",
            step_data_json,
            meta,
        )
        return bool(changed)

    # -- lifecycle ------------------------------------------------------------------

    def is_data_error(self, error: BaseException) -> bool:
        # Redis stores any bytes; only text that cannot be encoded fails, client-side.
        return isinstance(error, UnicodeError) or isinstance(error.__cause__, UnicodeError)

    def reset_after_fork(self) -> None:
        self._process_token = uuid.uuid4().hex
        # Forget (never close) the parent's sockets; redis-py also does this by itself
        # when it notices the pid changed (a cluster client keeps one pool per node).
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            pool.reset()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()


def _is_cluster(client: Any) -> bool:
    """True for a redis-py ``RedisCluster`` client."""
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - every supported redis-py has it
        return False
    return isinstance(client, RedisCluster)


def _has_hash_tag(prefix: str) -> bool:
    """True when ``prefix`` holds a non-empty ``{...}`` hash tag (Redis Cluster's rule:
    the first ``{`` with a later ``}`` and something between them)."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1)
    return start != -1 and end > start + 1


def _pending(filters: JobFilter) -> JobFilter:
    """``filters`` restricted to pending jobs (the bulk operations' scope)."""
    return attrs.evolve(filters, status=JobStatus.PENDING)
