"""Enqueue benchmark: ``add_job`` latency and ``add_jobs`` throughput on PostgreSQL.

Run from the repository root::

    python bench/enqueue.py                      # embedded PostgreSQL (pgserver)
    python bench/enqueue.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/enqueue.py --json               # machine-readable results

With ``--database-url`` (or ``$DATAQUEUE_BENCH_DATABASE_URL``) a scratch database
``dq_bench_<random>`` is created on that server and dropped at the end.

Scenarios (tables truncated before each one and before each timed batch):

1. ``queue.add_job`` called sequentially ``--jobs`` times after ``--warmup`` calls
   (psycopg prepares a statement server-side from its 5th execution): jobs/s and
   p50/p90/p99 latency.
2. ``queue.add_jobs`` of ``--batch`` plain jobs in one call, ``--runs`` times after one
   warm-up batch: jobs/s (median and best). Each run's ``added`` events are counted and
   must equal its job count. Just before each run, on freshly truncated tables, the
   server alone writes the same rows and events (``FLOOR_SQL``: INSERT … SELECT from
   generate_series, no client data): the floor no client can go below on this
   machine, reported beside add_jobs so figures from different machines compare.
   On the queue's own connection a batch this large is sent in pipelined chunks
   (``PIPELINE_CHUNK`` jobs each, a quarter of that first) in one transaction.
3. Like 2, but every job has three tags and a unique idempotency key.
4. Like 2, but inside the caller's transaction (``db=`` a SQLAlchemy ``Connection``,
   commit included): pipelined the same way, under a savepoint.

The figures are printed, never asserted: this script does not fail on slow machines.
The targets are reported as met or missed.

Run it against a packaged server too: the embedded pgserver build has no LLVM JIT, so
it cannot show plans whose cost estimate crosses ``jit_above_cost`` (most packaged
PostgreSQL builds JIT-compile those, which can cost more than the statement itself).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

import dataqueue as dq

try:  # python -m bench.enqueue, or the repository root on sys.path
    from bench._embedded import (
        add_database_argument,
        bench_database,
        cpu_count,
        resolve_database_url,
        server_info,
        truncate_tables,
    )
except ImportError:  # python bench/enqueue.py: bench/ itself is sys.path[0]
    from _embedded import (  # type: ignore[no-redef]
        add_database_argument,
        bench_database,
        cpu_count,
        resolve_database_url,
        server_info,
        truncate_tables,
    )

#: Targets we report on (never asserted).
TARGET_BATCH_JOBS_PER_S = 30_000
TARGET_ADD_JOB_P50_MS = 1.0

JobFactory = Callable[[int, int], dict[str, Any]]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``fraction`` in 0..1)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def count_added_events(engine: sa.Engine) -> tuple[int, int]:
    """(rows in job_queue, ``added`` events in job_events)."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM job_queue),"
            " (SELECT count(*) FROM job_events WHERE event_type = 'added')"
        ).one()
    return int(row[0]), int(row[1])


def plain_job(run: int, i: int) -> dict[str, Any]:
    return {
        "job_type": "send_email",
        "payload": {"to": f"user{i}@example.com", "template": "welcome", "n": i},
    }


def heavy_job(run: int, i: int) -> dict[str, Any]:
    return {
        "job_type": "send_email",
        "payload": {
            "to": f"user{i}@example.com",
            "template": "welcome",
            "locale": "en-GB",
            "vars": {"first_name": f"User {i}", "plan": "pro", "trial_days": 14},
        },
        "priority": i % 5,
        "tags": ["email", f"tenant-{i % 50}", "welcome"],
        "idempotency_key": f"welcome-{run}-{i}",
    }


def bench_add_job(queue: dq.JobQueue, engine: sa.Engine, jobs: int, warmup: int) -> dict[str, Any]:
    truncate_tables(engine)
    for i in range(warmup):
        queue.add_job("send_email", {"to": f"warmup{i}@example.com", "n": i})
    latencies_ns: list[int] = []
    clock = time.perf_counter_ns
    started = clock()
    for i in range(jobs):
        before = clock()
        queue.add_job("send_email", {"to": f"user{i}@example.com", "template": "welcome", "n": i})
        latencies_ns.append(clock() - before)
    elapsed = (clock() - started) / 1e9
    ms = sorted(ns / 1e6 for ns in latencies_ns)
    rows, events = count_added_events(engine)
    return {
        "jobs": jobs,
        "warmup": warmup,
        "seconds": elapsed,
        "jobs_per_s": jobs / elapsed,
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1],
        "rows": rows,
        "added_events": events,
        "events_match": rows == events == jobs + warmup,
    }


#: The plain jobs and their ``added`` events written by the server alone: one
#: INSERT … SELECT from generate_series, no client data, no parameters, the
#: bare minimum any client library pays for these rows in upstream's schema (its
#: indexes, the events' foreign-key check, WAL, commit).
FLOOR_SQL = """
WITH inserted AS (
    INSERT INTO job_queue (job_type, payload)
    SELECT 'send_email',
        jsonb_build_object('to', 'user' || i || '@example.com', 'template', 'welcome', 'n', i)
    FROM generate_series(0, %(batch)s - 1) AS i
    RETURNING id, job_type, payload
)
INSERT INTO job_events (job_id, event_type, metadata)
SELECT id, 'added', jsonb_build_object('jobType', job_type, 'payload', payload)
FROM inserted
"""


def time_floor(engine: sa.Engine, batch: int) -> float:
    """Seconds the server takes for :data:`FLOOR_SQL` (autocommit, commit included)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        started = time.perf_counter()
        conn.exec_driver_sql(FLOOR_SQL, {"batch": batch})
        return time.perf_counter() - started


def bench_add_jobs(
    queue: dq.JobQueue,
    engine: sa.Engine,
    batch: int,
    runs: int,
    make_job: JobFactory,
    *,
    floor: bool = False,
    in_transaction: bool = False,
) -> dict[str, Any]:
    """One warm-up batch, then ``runs`` timed batches on freshly truncated tables.

    With ``floor``, every run also times :data:`FLOOR_SQL` just before, on freshly
    truncated tables too, so both see the same machine at the same moment.
    """
    results: list[dict[str, Any]] = []
    for run in range(-1, runs):  # run -1 is the warm-up
        jobs = [make_job(run + 1, i) for i in range(batch)]
        floor_seconds = None
        if floor:
            truncate_tables(engine)
            floor_seconds = time_floor(engine, batch)
        truncate_tables(engine)
        started = time.perf_counter()
        if in_transaction:
            with engine.begin() as conn:
                ids = queue.add_jobs(jobs, db=conn)
        else:
            ids = queue.add_jobs(jobs)
        elapsed = time.perf_counter() - started
        rows, events = count_added_events(engine)
        if run >= 0:
            results.append(
                {
                    "seconds": elapsed,
                    "jobs_per_s": batch / elapsed,
                    "ids": len(ids),
                    "rows": rows,
                    "added_events": events,
                    "events_match": len(set(ids)) == rows == events == batch,
                    "floor_seconds": floor_seconds,
                }
            )
    rates = [r["jobs_per_s"] for r in results]
    summary: dict[str, Any] = {
        "batch": batch,
        "runs": results,
        "jobs_per_s_median": statistics.median(rates),
        "jobs_per_s_best": max(rates),
        "events_match": all(r["events_match"] for r in results),
    }
    if floor:
        floor_rate = statistics.median(batch / r["floor_seconds"] for r in results)
        summary["floor_jobs_per_s_median"] = floor_rate
        summary["share_of_floor"] = summary["jobs_per_s_median"] / floor_rate
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    external_url = resolve_database_url(args.database_url)
    with bench_database(external_url) as url:
        queue = dq.init_job_queue(database_url=url)
        engine: sa.Engine = queue.get_engine()
        try:
            info = server_info(engine)
            add_job = bench_add_job(queue, engine, args.jobs, args.warmup)
            add_jobs = bench_add_jobs(queue, engine, args.batch, args.runs, plain_job, floor=True)
            add_jobs_heavy = bench_add_jobs(queue, engine, args.batch, args.runs, heavy_job)
            add_jobs_db = bench_add_jobs(
                queue, engine, args.batch, args.runs, plain_job, in_transaction=True
            )
            truncate_tables(engine)
        finally:
            queue.close()
    return {
        "server": {**info, "embedded": external_url is None},
        "cpu_count": cpu_count(),
        "python": sys.version.split()[0],
        "add_job": add_job,
        "add_jobs": add_jobs,
        "add_jobs_tags_idempotency": add_jobs_heavy,
        "add_jobs_in_caller_transaction": add_jobs_db,
        "targets": {
            "add_jobs_jobs_per_s": TARGET_BATCH_JOBS_PER_S,
            "add_jobs_met": add_jobs["jobs_per_s_median"] >= TARGET_BATCH_JOBS_PER_S,
            "add_jobs_target_above_floor": add_jobs["floor_jobs_per_s_median"]
            < TARGET_BATCH_JOBS_PER_S,
            "add_job_p50_ms": TARGET_ADD_JOB_P50_MS,
            "add_job_met": add_job["p50_ms"] <= TARGET_ADD_JOB_P50_MS,
        },
    }


def _met(flag: bool) -> str:
    return "met" if flag else "MISSED"


def print_report(result: dict[str, Any]) -> None:
    server = result["server"]
    where = "embedded (pgserver)" if server["embedded"] else "external"
    print(f"PostgreSQL {server['server_version']} — {where}")
    print(
        f"  fsync={server['fsync']} synchronous_commit={server['synchronous_commit']} "
        f"shared_buffers={server['shared_buffers']} jit={server['jit']} "
        f"(LLVM JIT available: {server['jit_available']})"
    )
    print(f"CPUs: {result['cpu_count']}   Python {result['python']}")
    print()
    one = result["add_job"]
    print(f"1. add_job x {one['jobs']} (after {one['warmup']} warm-up calls), sequential")
    print(f"   {one['jobs_per_s']:,.0f} jobs/s")
    print(
        f"   latency ms: p50 {one['p50_ms']:.3f}  p90 {one['p90_ms']:.3f}  "
        f"p99 {one['p99_ms']:.3f}  max {one['max_ms']:.3f}"
    )
    print(f"   rows {one['rows']}, added events {one['added_events']} ({_ok(one['events_match'])})")
    for number, key, title in (
        (2, "add_jobs", "plain jobs"),
        (3, "add_jobs_tags_idempotency", "3 tags + idempotency key each"),
        (4, "add_jobs_in_caller_transaction", "plain jobs, db= the caller's transaction"),
    ):
        many = result[key]
        print()
        print(f"{number}. add_jobs of {many['batch']} jobs in one call ({title}), after a warm-up")
        for n, r in enumerate(many["runs"], 1):
            floor = r["floor_seconds"]
            print(
                f"   run {n}: {r['seconds'] * 1000:8.1f} ms  {r['jobs_per_s']:>9,.0f} jobs/s  "
                f"added events {r['added_events']} ({_ok(r['events_match'])})"
                + ("" if floor is None else f"   bare SQL {floor * 1000:6.1f} ms")
            )
        print(
            f"   median {many['jobs_per_s_median']:,.0f} jobs/s, "
            f"best {many['jobs_per_s_best']:,.0f} jobs/s (including added events)"
        )
        if "floor_jobs_per_s_median" in many:
            print(
                f"   bare SQL (the same rows and events generated by the server, no client "
                f"data): median {many['floor_jobs_per_s_median']:,.0f} jobs/s; add_jobs "
                f"reaches {many['share_of_floor']:.0%} of it"
            )
    targets = result["targets"]
    print()
    print("Targets:")
    print(
        f"   add_jobs >= {targets['add_jobs_jobs_per_s']:,} jobs/s (median, plain): "
        f"{_met(targets['add_jobs_met'])}"
        + (
            " (the bare SQL floor itself is below the target on this machine)"
            if targets["add_jobs_target_above_floor"]
            else ""
        )
    )
    print(f"   add_job p50 <= {targets['add_job_p50_ms']} ms: {_met(targets['add_job_met'])}")


def _ok(flag: bool) -> str:
    return "= job count" if flag else "MISMATCH"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_database_argument(parser)
    parser.add_argument("--jobs", type=int, default=5_000, help="add_job calls (default 5000)")
    parser.add_argument("--warmup", type=int, default=200, help="add_job warm-up calls")
    parser.add_argument("--batch", type=int, default=10_000, help="jobs per add_jobs call")
    parser.add_argument("--runs", type=int, default=5, help="timed add_jobs calls per scenario")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    for name in ("jobs", "batch", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
