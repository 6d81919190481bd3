"""dataqueue ("ours") against pgqueuer, side by side in one run: prints figures, never fails.

pgqueuer and asyncpg are benchmark-only dependencies (not dataqueue's); install them first::

    pip install pgqueuer asyncpg
    python bench/peers.py                      # embedded PostgreSQL (pgserver)
    python bench/peers.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/peers.py --json               # machine-readable results

Two scratch databases are created on the server ``--database-url`` names (default
``$DATAQUEUE_BENCH_DATABASE_URL``, else an embedded pgserver PostgreSQL) and dropped at the
end: ``dq_bench_<random>`` migrated with dataqueue's revisions, ``pgq_bench_<random>`` with
pgqueuer's own installer (``Queries.install()``, what ``pgq install`` runs; default
``durable`` tables, i.e. every table WAL-logged like ours). Both libraries are driven only
through their public APIs. Every workload runs ``--runs`` times (3) for each library,
interleaved (ours, pgqueuer, ours, pgqueuer, ...), each run on freshly emptied tables; the
table shows the median of the runs, the JSON has every run. pgqueuer is async: each of its
runs is an ``asyncio.run`` on its own asyncpg connection(s), timed inside the loop.

Workloads (each library writes the per-job rows it writes by default: ours a
``job_events`` row per ``added``/``processing``/``completed``, pgqueuer a ``pgqueuer_log``
row per ``queued``/``picked``/``successful``; the counts are checked after every run):

1. drain: 10,000 no-op jobs already queued, one worker, until every completion is
   stored; jobs/s. Ours: ``queue.create_processor({"noop": fn}, batch_size=50,
   concurrency=10)`` (default poll interval, LISTEN on), timed from
   ``start_in_background()`` to the 10,000th ``job:completed`` hook (emitted after the
   completion is committed). pgqueuer: ``PgQueuer`` with ``@entrypoint("noop")`` (an
   ``async def``) and ``run(batch_size=50, mode=drain)``, timed from ``run()`` to its
   return (its completion-log buffer is flushed before it returns). pgqueuer has no
   "10 workers" knob: ``max_concurrent_tasks`` must be at least 2 x batch_size and an
   entrypoint's ``concurrency_limit`` is enforced in SQL across workers (it would cap
   each batch at that number), so its default, unbounded asyncio tasks, is used
   (``--pgqueuer-max-concurrent-tasks`` to change it). That favours pgqueuer, if
   anything: a no-op coroutine costs less than a thread hand-off.
2. add_jobs: 10 calls of 1,000 jobs, and 100 calls of 100 jobs, after one warm-up call;
   jobs/s over the timed calls. Ours: ``queue.add_jobs([{"job_type", "payload"}, ...])``
   (payload a dict, JSON-encoded by the library). pgqueuer: ``Queries.enqueue`` with lists
   (entrypoints, payloads, priorities); its payloads are bytes, so the ``json.dumps`` of
   the same dicts is inside its timed region too.
3. add_job: 1,000 sequential single-job calls after 100 warm-up calls; jobs/s and
   p50/p99 latency per call. Ours: ``queue.add_job("noop", {...})`` on the queue's own
   pool. pgqueuer: ``Queries.enqueue("noop", payload)`` on one asyncpg connection
   (asyncpg caches prepared statements itself).
4. pickup: an idle worker at each library's default settings (ours:
   ``create_processor({"probe": fn})``, poll 5 s, LISTEN/NOTIFY wake-ups; pgqueuer:
   ``PgQueuer.run()``, dequeue_timeout 30 s, batch 10, LISTEN/NOTIFY) started 1 s before;
   30 jobs added one at a time at random gaps (20-300 ms); latency = handler start minus
   the moment just before the enqueue call (the enqueue itself included); p50/p99 per
   run (with 30 samples nearest-rank p99 is the slowest sample).

Ratios are ours / pgqueuer: above 1 is better for rates, below 1 for latencies.
Targets reported as met or missed (never asserted): drain >= 2x pgqueuer; add_jobs of
1,000/call >= 1.2x pgqueuer; single add_job rate >= pgqueuer's with p50 <= pgqueuer's p50;
pickup p50 <= 5 ms and p99 <= 25 ms.

Figures are only as quiet as the machine: on a shared host, other work changes them from
run to run, which is why the runs are interleaved and medians reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

import dataqueue as dq

try:  # python -m bench.peers, or the repository root on sys.path
    from bench import _embedded
except ImportError:  # python bench/peers.py: bench/ itself is sys.path[0]
    import _embedded  # type: ignore[no-redef]

bench_database = _embedded.bench_database
resolve_database_url = _embedded.resolve_database_url
add_database_argument = _embedded.add_database_argument
server_info = _embedded.server_info

BATCH_SIZE = 50
CONCURRENCY = 10
DRAIN_JOBS = 10_000
ADD_JOBS_SHAPES = ((1_000, 10), (100, 100))  # (jobs per call, timed calls)
ADD_JOB_CALLS = 1_000
ADD_JOB_WARMUP = 100
PICKUP_SAMPLES = 30

#: pgqueuer's tables (default names), emptied before each of its runs.
PGQ_TABLES = "pgqueuer, pgqueuer_log, pgqueuer_statistics"

TARGET_DRAIN_RATIO = 2.0
TARGET_ADD_JOBS_RATIO = 1.2
TARGET_PICKUP_P50_MS = 5.0
TARGET_PICKUP_P99_MS = 25.0


#: The workloads, in the order they run (``--only`` picks some).
WORKLOADS = ("drain", "add_jobs", "add_job", "pickup")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``fraction`` in 0..1)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_figures(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "samples": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1],
    }


def payload(n: int) -> dict[str, Any]:
    return {"n": n}


# -- ours (synchronous) -------------------------------------------------------------------


def noop(payload: Any) -> None:
    return None


def ours_event_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT event_type, count(*) FROM job_events GROUP BY event_type"
        ).all()
    return {str(kind): int(count) for kind, count in rows}


def ours_drain(queue: dq.JobQueue, engine: sa.Engine, jobs: int) -> dict[str, Any]:
    _embedded.truncate_tables(engine)
    for start in range(0, jobs, 10_000):
        size = min(10_000, jobs - start)
        queue.add_jobs([{"job_type": "noop", "payload": payload(start + i)} for i in range(size)])
    done = threading.Event()
    completed = [0]

    def count(_: Any) -> None:
        completed[0] += 1
        if completed[0] >= jobs:
            done.set()

    queue.on("job:completed", count)
    processor = queue.create_processor(
        {"noop": noop}, batch_size=BATCH_SIZE, concurrency=CONCURRENCY
    )
    try:
        started = time.perf_counter()
        processor.start_in_background()
        if not done.wait(600):
            raise RuntimeError(f"ours: only {completed[0]} of {jobs} jobs completed in 600 s")
        elapsed = time.perf_counter() - started
    finally:
        processor.stop_and_drain(60_000)
        queue.off("job:completed", count)
    events = ours_event_counts(engine)
    return {
        "jobs": jobs,
        "seconds": elapsed,
        "jobs_per_s": jobs / elapsed,
        "rows_written": events,
        "rows_match": all(events.get(k) == jobs for k in ("added", "processing", "completed")),
    }


def ours_add_jobs(
    queue: dq.JobQueue, engine: sa.Engine, per_call: int, calls: int
) -> dict[str, Any]:
    _embedded.truncate_tables(engine)
    queue.add_jobs([{"job_type": "noop", "payload": payload(i)} for i in range(per_call)])
    _embedded.truncate_tables(engine)
    batches = [
        [{"job_type": "noop", "payload": payload(c * per_call + i)} for i in range(per_call)]
        for c in range(calls)
    ]
    started = time.perf_counter()
    for batch in batches:
        queue.add_jobs(batch)
    elapsed = time.perf_counter() - started
    events = ours_event_counts(engine)
    jobs = per_call * calls
    return {
        "jobs": jobs,
        "seconds": elapsed,
        "jobs_per_s": jobs / elapsed,
        "rows_match": events.get("added") == jobs,
    }


def ours_add_job(queue: dq.JobQueue, engine: sa.Engine, calls: int, warmup: int) -> dict[str, Any]:
    _embedded.truncate_tables(engine)
    for i in range(warmup):
        queue.add_job("noop", payload(-1 - i))
    clock = time.perf_counter
    latencies = []
    started = clock()
    for i in range(calls):
        before = clock()
        queue.add_job("noop", payload(i))
        latencies.append(clock() - before)
    elapsed = clock() - started
    events = ours_event_counts(engine)
    return {
        "jobs": calls,
        "seconds": elapsed,
        "jobs_per_s": calls / elapsed,
        **latency_figures(latencies),
        "rows_match": events.get("added") == calls + warmup,
    }


def ours_pickup(queue: dq.JobQueue, engine: sa.Engine, samples: int) -> dict[str, Any]:
    _embedded.truncate_tables(engine)
    starts: dict[int, float] = {}
    cond = threading.Condition()

    def probe(data: dict[str, Any]) -> None:
        now = time.perf_counter()
        with cond:
            starts[data["n"]] = now
            cond.notify_all()

    processor = queue.create_processor({"probe": probe})  # default settings
    processor.start_in_background()
    latencies = []
    try:
        time.sleep(1.0)  # registered, listening, idle
        for n in range(samples):
            time.sleep(random.uniform(0.02, 0.3))
            before = time.perf_counter()
            queue.add_job("probe", {"n": n})
            with cond:
                if not cond.wait_for(lambda n=n: n in starts, 30):
                    raise RuntimeError(f"ours: job {n} was not picked up within 30 s")
            latencies.append(starts[n] - before)
    finally:
        processor.stop_and_drain(10_000)
    return latency_figures(latencies)


# -- pgqueuer (asyncio; imported lazily so a missing install gives a clear message) -------


def asyncpg_dsn(url: str) -> str:
    """The libpq-style URL asyncpg takes, for a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pgq_connect(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn)


async def _pgq_reset(conn: Any) -> None:
    await conn.execute(f"TRUNCATE {PGQ_TABLES} RESTART IDENTITY")


async def _pgq_log_counts(conn: Any) -> dict[str, int]:
    rows = await conn.fetch("SELECT status::text AS s, count(*) AS c FROM pgqueuer_log GROUP BY 1")
    return {row["s"]: int(row["c"]) for row in rows}


def _pgq_payload(n: int) -> bytes:
    return json.dumps(payload(n)).encode()


async def pgq_install(dsn: str) -> None:
    from pgqueuer import Queries

    conn = await _pgq_connect(dsn)
    try:
        await Queries.from_asyncpg_connection(conn).install()
    finally:
        await conn.close()


async def pgq_drain(dsn: str, jobs: int, max_concurrent_tasks: int) -> dict[str, Any]:
    from pgqueuer import PgQueuer, Queries
    from pgqueuer.types import QueueExecutionMode

    setup = await _pgq_connect(dsn)
    worker = await _pgq_connect(dsn)
    try:
        await _pgq_reset(setup)
        queries = Queries.from_asyncpg_connection(setup)
        for start in range(0, jobs, 10_000):
            size = min(10_000, jobs - start)
            await queries.enqueue(
                ["noop"] * size, [_pgq_payload(start + i) for i in range(size)], [0] * size
            )
        pgq = PgQueuer.from_asyncpg_connection(worker)
        handled = [0]

        @pgq.entrypoint("noop")
        async def noop_entry(job: Any) -> None:
            handled[0] += 1

        started = time.perf_counter()
        await asyncio.wait_for(
            pgq.run(
                batch_size=BATCH_SIZE,
                mode=QueueExecutionMode.drain,
                max_concurrent_tasks=max_concurrent_tasks or None,
            ),
            600,
        )
        elapsed = time.perf_counter() - started
        logs = await _pgq_log_counts(setup)
        left = await setup.fetchval("SELECT count(*) FROM pgqueuer")
    finally:
        await worker.close()
        await setup.close()
    return {
        "jobs": jobs,
        "seconds": elapsed,
        "jobs_per_s": jobs / elapsed,
        "handled": handled[0],
        "rows_written": logs,
        "left_in_queue": int(left),
        "rows_match": left == 0
        and all(logs.get(k) == jobs for k in ("queued", "picked", "successful")),
    }


async def pgq_add_jobs(dsn: str, per_call: int, calls: int) -> dict[str, Any]:
    from pgqueuer import Queries

    conn = await _pgq_connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await _pgq_reset(conn)
        await queries.enqueue(
            ["noop"] * per_call, [_pgq_payload(i) for i in range(per_call)], [0] * per_call
        )
        await _pgq_reset(conn)
        batches = [[payload(c * per_call + i) for i in range(per_call)] for c in range(calls)]
        entrypoints = ["noop"] * per_call
        priorities = [0] * per_call
        started = time.perf_counter()
        for batch in batches:
            await queries.enqueue(entrypoints, [json.dumps(p).encode() for p in batch], priorities)
        elapsed = time.perf_counter() - started
        logs = await _pgq_log_counts(conn)
    finally:
        await conn.close()
    jobs = per_call * calls
    return {
        "jobs": jobs,
        "seconds": elapsed,
        "jobs_per_s": jobs / elapsed,
        "rows_match": logs.get("queued") == jobs,
    }


async def pgq_add_job(dsn: str, calls: int, warmup: int) -> dict[str, Any]:
    from pgqueuer import Queries

    conn = await _pgq_connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await _pgq_reset(conn)
        for i in range(warmup):
            await queries.enqueue("noop", _pgq_payload(-1 - i))
        clock = time.perf_counter
        latencies = []
        started = clock()
        for i in range(calls):
            before = clock()
            await queries.enqueue("noop", json.dumps(payload(i)).encode())
            latencies.append(clock() - before)
        elapsed = clock() - started
        logs = await _pgq_log_counts(conn)
    finally:
        await conn.close()
    return {
        "jobs": calls,
        "seconds": elapsed,
        "jobs_per_s": calls / elapsed,
        **latency_figures(latencies),
        "rows_match": logs.get("queued") == calls + warmup,
    }


async def pgq_pickup(dsn: str, samples: int) -> dict[str, Any]:
    from pgqueuer import PgQueuer, Queries

    producer = await _pgq_connect(dsn)
    worker = await _pgq_connect(dsn)
    try:
        await _pgq_reset(producer)
        queries = Queries.from_asyncpg_connection(producer)
        pgq = PgQueuer.from_asyncpg_connection(worker)
        starts: dict[int, float] = {}
        arrived = asyncio.Event()

        @pgq.entrypoint("probe")
        async def probe(job: Any) -> None:
            starts[json.loads(job.payload)["n"]] = time.perf_counter()
            arrived.set()

        runner = asyncio.create_task(pgq.run())  # default settings
        latencies = []
        try:
            await asyncio.sleep(1.0)  # listening, idle
            for n in range(samples):
                await asyncio.sleep(random.uniform(0.02, 0.3))
                arrived.clear()
                before = time.perf_counter()
                await queries.enqueue("probe", json.dumps({"n": n}).encode())
                while n not in starts:
                    await asyncio.wait_for(arrived.wait(), 30)
                    arrived.clear()
                latencies.append(starts[n] - before)
        finally:
            pgq.shutdown.set()
            await asyncio.wait_for(runner, 30)
    finally:
        await worker.close()
        await producer.close()
    return latency_figures(latencies)


# -- the run ------------------------------------------------------------------------------


@contextmanager
def pgq_database(admin_url: str) -> Iterator[str]:
    """A scratch database ``pgq_bench_<random>`` with pgqueuer's schema; dropped afterwards."""
    url = _embedded._create_scratch_database(admin_url, "pgq_bench")
    try:
        asyncio.run(pgq_install(asyncpg_dsn(url)))
        yield url
    finally:
        _embedded._drop_scratch_database(admin_url, url)


def interleave(
    runs: int, ours: Callable[[], dict[str, Any]], pgq: Callable[[], dict[str, Any]], name: str
) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {"ours": [], "pgqueuer": []}
    for run in range(runs):
        for side, step in (("ours", ours), ("pgqueuer", pgq)):
            figures = step()
            result[side].append(figures)
            print(
                f"  {name} run {run + 1} {side}: "
                + ", ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in figures.items()
                    if k in ("jobs_per_s", "p50_ms", "p99_ms", "rows_match")
                ),
                file=sys.stderr,
                flush=True,
            )
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    external_url = resolve_database_url(args.database_url)
    with bench_database(external_url) as ours_url:
        # The embedded server: its own postgres database (ours_url) is the admin database.
        admin_url = _embedded.psycopg_url(external_url) if external_url else ours_url
        with pgq_database(admin_url) as pgq_url:
            dsn = asyncpg_dsn(pgq_url)
            queue = dq.init_job_queue(ours_url, database_config={"pool_size": CONCURRENCY + 4})
            engine: sa.Engine = queue.get_engine()
            try:
                info = server_info(engine)
                workloads: dict[str, dict[str, list[dict[str, Any]]]] = {}
                only = set(args.only)
                if "drain" in only:
                    workloads["drain"] = interleave(
                        args.runs,
                        lambda: ours_drain(queue, engine, args.jobs),
                        lambda: asyncio.run(
                            pgq_drain(dsn, args.jobs, args.pgqueuer_max_concurrent_tasks)
                        ),
                        "drain",
                    )
                for per_call, calls in ADD_JOBS_SHAPES if "add_jobs" in only else ():
                    workloads[f"add_jobs_{per_call}"] = interleave(
                        args.runs,
                        lambda p=per_call, c=calls: ours_add_jobs(queue, engine, p, c),
                        lambda p=per_call, c=calls: asyncio.run(pgq_add_jobs(dsn, p, c)),
                        f"add_jobs {per_call}/call",
                    )
                if "add_job" in only:
                    workloads["add_job"] = interleave(
                        args.runs,
                        lambda: ours_add_job(queue, engine, ADD_JOB_CALLS, ADD_JOB_WARMUP),
                        lambda: asyncio.run(pgq_add_job(dsn, ADD_JOB_CALLS, ADD_JOB_WARMUP)),
                        "add_job",
                    )
                if "pickup" in only:
                    workloads["pickup"] = interleave(
                        args.runs,
                        lambda: ours_pickup(queue, engine, args.samples),
                        lambda: asyncio.run(pgq_pickup(dsn, args.samples)),
                        "pickup",
                    )
            finally:
                queue.close()
    return summarize(args, info, external_url is None, workloads)


def summarize(
    args: argparse.Namespace,
    info: dict[str, str],
    embedded: bool,
    workloads: dict[str, dict[str, list[dict[str, Any]]]],
) -> dict[str, Any]:
    import pgqueuer

    rows: list[dict[str, Any]] = []

    def row(label: str, workload: str, key: str, unit: str, higher_is_better: bool) -> None:
        if workload not in workloads:  # left out with --only
            return
        ours = median_of(workloads[workload]["ours"], key)
        pgq = median_of(workloads[workload]["pgqueuer"], key)
        rows.append(
            {
                "workload": label,
                "key": f"{workload}.{key}",
                "unit": unit,
                "ours": ours,
                "pgqueuer": pgq,
                "ratio": ours / pgq if pgq else float("nan"),
                "higher_is_better": higher_is_better,
            }
        )

    row(f"drain {args.jobs:,} no-op jobs, 1 worker", "drain", "jobs_per_s", "jobs/s", True)
    for per_call, calls in ADD_JOBS_SHAPES:
        row(
            f"add_jobs {per_call:,}/call x {calls}",
            f"add_jobs_{per_call}",
            "jobs_per_s",
            "jobs/s",
            True,
        )
    row(f"add_job x {ADD_JOB_CALLS:,} (sequential)", "add_job", "jobs_per_s", "jobs/s", True)
    row("add_job p50", "add_job", "p50_ms", "ms", False)
    row("add_job p99", "add_job", "p99_ms", "ms", False)
    row(f"pickup p50 (idle worker, {args.samples} samples)", "pickup", "p50_ms", "ms", False)
    row(f"pickup p99 (idle worker, {args.samples} samples)", "pickup", "p99_ms", "ms", False)
    by_key = {r["key"]: r for r in rows}
    checks = {
        "drain_ratio_ge_2": ("drain.jobs_per_s", "ratio", lambda v: v >= TARGET_DRAIN_RATIO),
        "add_jobs_1000_ratio_ge_1_2": (
            "add_jobs_1000.jobs_per_s",
            "ratio",
            lambda v: v >= TARGET_ADD_JOBS_RATIO,
        ),
        "add_job_rate_ge_pgqueuer": ("add_job.jobs_per_s", "ratio", lambda v: v >= 1.0),
        "add_job_p50_le_pgqueuer": ("add_job.p50_ms", "ratio", lambda v: v <= 1.0),
        "pickup_p50_le_5ms": ("pickup.p50_ms", "ours", lambda v: v <= TARGET_PICKUP_P50_MS),
        "pickup_p99_le_25ms": ("pickup.p99_ms", "ours", lambda v: v <= TARGET_PICKUP_P99_MS),
    }
    targets = {
        name: check(by_key[key][field])
        for name, (key, field, check) in checks.items()
        if key in by_key
    }
    rows_match = {
        name: all(r.get("rows_match", True) for side in sides.values() for r in side)
        for name, sides in workloads.items()
    }
    return {
        "server": {**info, "embedded": embedded},
        "cpu_count": _embedded.cpu_count(),
        "python": sys.version.split()[0],
        "pgqueuer_version": pgqueuer.__version__,
        "runs": args.runs,
        "settings": {
            "ours_drain": {"batch_size": BATCH_SIZE, "concurrency": CONCURRENCY},
            "pgqueuer_drain": {
                "batch_size": BATCH_SIZE,
                "max_concurrent_tasks": args.pgqueuer_max_concurrent_tasks or None,
            },
        },
        "table": rows,
        "targets": targets,
        "rows_match": rows_match,
        "workloads": workloads,
    }


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if unit == "jobs/s" else f"{value:.2f} {unit}"


def print_report(result: dict[str, Any]) -> None:
    server = result["server"]
    where = "embedded (pgserver)" if server["embedded"] else "external"
    print(f"PostgreSQL {server['server_version']} ({where}); pgqueuer {result['pgqueuer_version']}")
    print(
        f"  fsync={server['fsync']} synchronous_commit={server['synchronous_commit']} "
        f"shared_buffers={server['shared_buffers']} jit={server['jit']}"
    )
    print(f"CPUs: {result['cpu_count']}   Python {result['python']}   runs: {result['runs']}")
    print("Medians of the interleaved runs; ours ÷ pgqueuer > 1 is better for jobs/s, < 1 for ms.")
    print()
    print("| workload | ours | pgqueuer | ours ÷ pgqueuer |")
    print("|---|---:|---:|---:|")
    for r in result["table"]:
        print(
            f"| {r['workload']} | {_fmt(r['ours'], r['unit'])} | "
            f"{_fmt(r['pgqueuer'], r['unit'])} | {r['ratio']:.2f} |"
        )
    print()
    labels = {
        "drain_ratio_ge_2": "drain >= 2x pgqueuer",
        "add_jobs_1000_ratio_ge_1_2": "add_jobs 1,000/call >= 1.2x pgqueuer",
        "add_job_rate_ge_pgqueuer": "add_job rate >= pgqueuer",
        "add_job_p50_le_pgqueuer": "add_job p50 <= pgqueuer p50",
        "pickup_p50_le_5ms": f"pickup p50 <= {TARGET_PICKUP_P50_MS:g} ms",
        "pickup_p99_le_25ms": f"pickup p99 <= {TARGET_PICKUP_P99_MS:g} ms",
    }
    print("Targets:")
    for key, met in result["targets"].items():
        print(f"  {labels[key]}: {'met' if met else 'MISSED'}")
    bad = [name for name, ok in result["rows_match"].items() if not ok]
    print(
        "Per-job rows (events / log) as expected in every run: "
        + ("yes" if not bad else f"NO in {', '.join(bad)}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_database_argument(parser)
    parser.add_argument("--runs", type=int, default=3, help="runs per library (default 3)")
    parser.add_argument("--jobs", type=int, default=DRAIN_JOBS, help="jobs per drain run")
    parser.add_argument(
        "--samples", type=int, default=PICKUP_SAMPLES, help="pickup samples per run"
    )
    parser.add_argument(
        "--pgqueuer-max-concurrent-tasks",
        type=int,
        default=0,
        help="pgqueuer's max_concurrent_tasks in the drain (default 0: unbounded, its default)",
    )
    parser.add_argument(
        "--only",
        type=lambda text: [w for w in text.split(",") if w],
        default=list(WORKLOADS),
        help=f"comma-separated workloads to run (default: all of {','.join(WORKLOADS)})",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    unknown = sorted(set(args.only) - set(WORKLOADS))
    if unknown:
        parser.error(f"--only: unknown workload(s) {', '.join(unknown)}")
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
    except ImportError as error:
        print(
            f"bench/peers.py needs pgqueuer and asyncpg ({error}); "
            "install them with: pip install pgqueuer asyncpg",
            file=sys.stderr,
        )
        sys.exit(2)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
