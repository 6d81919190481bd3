"""Processor throughput benchmark: prints figures, never fails a build.

    python bench/throughput.py                      # embedded PostgreSQL (pgserver)
    python bench/throughput.py --database-url postgresql://postgres@127.0.0.1/postgres

Scenarios (every event upstream writes is written: added, processing, completed):

- drain: 10,000 no-op jobs with one processor (batch_size=50, concurrency=10), 3 runs;
  jobs/s, worker CPU and PostgreSQL CPU per 1,000 jobs.
- backlog: the rate of draining 10,000 jobs out of a 200,000-job backlog, compared with
  the rate of draining a 10,000-job backlog (the claim must not slow down with it).
- pickup: enqueue -> handler start latency with an idle background processor.
- dependencies: 10,000 jobs where every odd job depends on the even job before it
  (``batch_dep_ref``), drained like the plain scenario; its rate as a share of the
  plain drain rate.

PostgreSQL CPU is read from /proc for the server's postmaster and its children (the
server must run on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _embedded

import dataqueue as dq

BATCH_SIZE = 50
CONCURRENCY = 10


def server_cpu_seconds(engine: sa.Engine) -> float | None:
    """CPU seconds used so far by the server's postmaster and all its children."""
    with engine.connect() as conn:
        data_dir = conn.execute(sa.text("SHOW data_directory")).scalar_one()
    try:
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if postmaster in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def worker_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def noop(payload: Any) -> None:
    return None


def enqueue(queue: dq.JobQueue, count: int) -> None:
    for start in range(0, count, 10_000):
        size = min(10_000, count - start)
        queue.add_jobs([{"job_type": "noop", "payload": {"n": start + i}} for i in range(size)])


def enqueue_with_dependencies(queue: dq.JobQueue, count: int) -> None:
    """Pairs: job 2k is a prerequisite of job 2k+1 (in chunks of 10,000)."""
    for start in range(0, count, 10_000):
        size = min(10_000, count - start)
        queue.add_jobs(
            [
                {"job_type": "noop", "payload": {"n": start + i}}
                if i % 2 == 0
                else {
                    "job_type": "noop",
                    "payload": {"n": start + i},
                    "depends_on": {"job_ids": [dq.batch_dep_ref(i - 1)]},
                }
                for i in range(size)
            ]
        )


def drain(queue: dq.JobQueue, engine: sa.Engine, jobs: int) -> dict[str, float]:
    """Run one background processor until ``jobs`` jobs completed; return the figures."""
    done = threading.Event()
    completed = [0]

    def count(_: Any) -> None:
        completed[0] += 1
        if completed[0] >= jobs:
            done.set()

    queue.on("job:completed", count)
    processor = queue.create_processor(
        {"noop": noop}, batch_size=BATCH_SIZE, concurrency=CONCURRENCY, poll_interval=100
    )
    pg_before, cpu_before = server_cpu_seconds(engine), worker_cpu_seconds()
    started = time.perf_counter()
    processor.start_in_background()
    done.wait(600)
    elapsed = time.perf_counter() - started
    pg_after, cpu_after = server_cpu_seconds(engine), worker_cpu_seconds()
    processor.stop_and_drain(60_000)
    queue.off("job:completed", count)
    figures = {
        "jobs_per_second": completed[0] / elapsed,
        "worker_cpu_s_per_1000": (cpu_after - cpu_before) / completed[0] * 1000,
    }
    if pg_before is not None and pg_after is not None:
        figures["postgres_cpu_s_per_1000"] = (pg_after - pg_before) / completed[0] * 1000
    return figures


def run_drain(queue: dq.JobQueue, engine: sa.Engine, runs: int, jobs: int) -> dict[str, Any]:
    results = []
    for _ in range(runs):
        _embedded.truncate_tables(engine)
        enqueue(queue, jobs)
        results.append(drain(queue, engine, jobs))
    return {key: round(statistics.median(r[key] for r in results), 4) for key in results[0]} | {
        "runs": [{k: round(v, 4) for k, v in r.items()} for r in results]
    }


def run_dependencies(
    queue: dq.JobQueue, engine: sa.Engine, jobs: int, plain_rate: float
) -> dict[str, Any]:
    _embedded.truncate_tables(engine)
    enqueue_with_dependencies(queue, jobs)
    rate = drain(queue, engine, jobs)["jobs_per_second"]
    return {"jobs": jobs, "rate": round(rate), "share_of_plain": round(rate / plain_rate, 3)}


def run_backlog(
    queue: dq.JobQueue, engine: sa.Engine, backlog: int, measured: int
) -> dict[str, Any]:
    _embedded.truncate_tables(engine)
    enqueue(queue, measured)
    small = drain(queue, engine, measured)["jobs_per_second"]
    _embedded.truncate_tables(engine)
    enqueue(queue, backlog)
    large = drain(queue, engine, measured)["jobs_per_second"]
    return {
        "backlog_small": measured,
        "rate_small": round(small),
        "backlog_large": backlog,
        "rate_large": round(large),
        "ratio": round(large / small, 3),
    }


def run_pickup(queue: dq.JobQueue, engine: sa.Engine, samples: int, poll_ms: int) -> dict[str, Any]:
    _embedded.truncate_tables(engine)
    started: dict[int, float] = {}
    arrived = threading.Event()

    def handler(payload: dict[str, Any], signal: Any, ctx: dq.JobContext) -> None:
        started[ctx.job_id] = time.perf_counter()
        arrived.set()

    processor = queue.create_processor({"probe": handler}, poll_interval=poll_ms)
    processor.start_in_background()
    time.sleep(poll_ms / 1000 + 0.2)  # let it go idle
    latencies = []
    for _ in range(samples):
        arrived.clear()
        enqueued = time.perf_counter()
        job_id = queue.add_job("probe", {})
        arrived.wait(poll_ms / 1000 + 5)
        latencies.append((started[job_id] - enqueued) * 1000)
        time.sleep((poll_ms / 1000) * 0.37)  # land at different points of the poll cycle
    processor.stop_and_drain(10_000)
    latencies.sort()
    return {
        "poll_interval_ms": poll_ms,
        "p50_ms": round(statistics.median(latencies), 1),
        "max_ms": round(latencies[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _embedded.add_database_argument(parser)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--skip-backlog", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    url = _embedded.resolve_database_url(args.database_url)
    with _embedded.bench_database(url) as database_url:
        queue = dq.init_job_queue(database_url, database_config={"pool_size": CONCURRENCY + 4})
        engine = queue.get_engine()
        report["server"] = _embedded.server_info(engine)
        report["embedded"] = url is None
        report["cpus"] = _embedded.cpu_count()
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("drain", lambda: run_drain(queue, engine, args.runs, args.jobs)),
            ("pickup_poll_100ms", lambda: run_pickup(queue, engine, 10, 100)),
            ("pickup_poll_1000ms", lambda: run_pickup(queue, engine, 6, 1000)),
        ]
        steps.append(
            (
                "dependencies",
                lambda: run_dependencies(
                    queue, engine, args.jobs, report["drain"]["jobs_per_second"]
                ),
            )
        )
        if not args.skip_backlog:
            steps.append(("backlog", lambda: run_backlog(queue, engine, args.backlog, args.jobs)))
        for name, step in steps:
            report[name] = step()
            if not args.json:
                print(f"{name}: {json.dumps(report[name])}", flush=True)
        queue.close()
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
