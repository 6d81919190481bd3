"""Pickup latency and scheduled-start lateness benchmark: prints figures, never fails a build.

    python bench/pickup.py                      # embedded PostgreSQL (pgserver)
    python bench/pickup.py --database-url postgresql://postgres@127.0.0.1/postgres
    python bench/pickup.py --redis-url redis://127.0.0.1:6379/14

With ``--redis-url`` the same scenarios run on the Redis backend, under a key prefix
of their own (``{dq_bench_pickup_<random>}:``) whose keys are deleted afterwards.

Scenarios, each with one idle background processor at the default settings
(``poll_interval`` 5 s, ``batch_size`` 10, ``concurrency`` 3):

- pickup: ``add_job`` -> handler start, over ``--samples`` jobs added at random gaps
  (so they land anywhere in the poll cycle); measured from just before ``add_job``
  is called, so the enqueue itself (~1 ms) is included, and (``after_commit``) from
  the moment ``add_job`` returned. With wake-ups (LISTEN/NOTIFY, Redis pub/sub; the
  default) and, for comparison, with ``listen=False`` (polling only; fewer
  samples, it takes ``poll_interval`` / 2 per job on average).
- scheduled: jobs added with ``run_at`` 200-700 ms ahead; lateness = handler start -
  ``run_at``. A negative figure would mean a job started early.
- retry: a handler fails once with ``retry_delay=1``; lateness of the second attempt
  after ``last_failed_at + 1 s``.

Figures: p50, p90, p99 and max in milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _embedded

import dataqueue as dq


class _Starts:
    """When each job started (``time.time()``), by its payload's ``n``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.times: dict[int, float] = {}
        self.attempts: dict[int, list[float]] = {}

    def record(self, payload: dict[str, Any]) -> None:
        now = time.time()
        with self._cond:
            self.times[payload["n"]] = now
            self._cond.notify_all()

    def record_flaky(self, payload: dict[str, Any]) -> None:
        now = time.time()
        with self._cond:
            runs = self.attempts.setdefault(payload["n"], [])
            runs.append(now)
            self._cond.notify_all()
        if len(runs) == 1:
            raise RuntimeError("first attempt fails")

    def wait(self, predicate: Any, timeout: float) -> bool:
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout))


def _figures(values_ms: list[float]) -> dict[str, float]:
    values = sorted(values_ms)

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 2)

    return {
        "samples": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(values[-1], 2),
    }


def _redis_prefix(queue: dq.JobQueue) -> str:
    return str(queue._backend.prefix)  # type: ignore[attr-defined]


def empty_store(queue: dq.JobQueue) -> None:
    """Delete every job: truncate the tables, or the keys under the Redis prefix."""
    try:
        client = queue.get_redis_client()
    except dq.UnsupportedOperationError:
        _embedded.truncate_tables(queue.get_engine())
        return
    keys = list(client.scan_iter(match=_redis_prefix(queue) + "*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def redis_server_info(queue: dq.JobQueue) -> dict[str, str]:
    """The Redis version and the settings that decide write cost."""
    client = queue.get_redis_client()
    info = client.info("server")
    persistence = client.info("persistence")
    return {
        "redis_version": str(info["redis_version"]),
        "appendonly": str(persistence.get("aof_enabled")),
        "appendfsync": str(client.config_get("appendfsync").get("appendfsync", "?")),
        "prefix": _redis_prefix(queue),
    }


@contextmanager
def redis_queue(url: str) -> Iterator[dq.JobQueue]:
    """A Redis queue under a fresh key prefix, whose keys are deleted afterwards."""
    prefix = "{dq_bench_pickup_" + uuid.uuid4().hex[:10] + "}:"
    queue = dq.init_job_queue(backend="redis", redis_url=url, key_prefix=prefix)
    try:
        yield queue
    finally:
        empty_store(queue)
        queue.close()


@contextmanager
def postgres_queue(url: str | None) -> Iterator[dq.JobQueue]:
    """A PostgreSQL queue on a scratch database (see ``_embedded.bench_database``)."""
    with _embedded.bench_database(url, prefix="dq_bench_pickup") as database_url:
        queue = dq.init_job_queue(database_url)
        try:
            yield queue
        finally:
            queue.close()


def run_pickup(queue: dq.JobQueue, samples: int, *, listen: bool) -> dict[str, Any]:
    empty_store(queue)
    starts = _Starts()
    processor = queue.create_processor({"probe": starts.record}, listen=listen)
    processor.start_in_background()
    time.sleep(1.0)  # registered, listening, idle
    latencies = []
    after_commit = []
    try:
        for n in range(samples):
            time.sleep(random.uniform(0.02, 0.3))
            added = time.time()
            queue.add_job("probe", {"n": n})
            returned = time.time()
            if not starts.wait(lambda n=n: n in starts.times, 30):
                raise RuntimeError(f"job {n} was not picked up within 30 s")
            latencies.append((starts.times[n] - added) * 1000)
            after_commit.append((starts.times[n] - returned) * 1000)
    finally:
        processor.stop_and_drain(10_000)
    return {"listen": listen, **_figures(latencies), "after_commit": _figures(after_commit)}


def run_scheduled(queue: dq.JobQueue, samples: int) -> dict[str, Any]:
    empty_store(queue)
    starts = _Starts()
    processor = queue.create_processor({"probe": starts.record})
    processor.start_in_background()
    time.sleep(1.0)
    lateness = []
    try:
        for n in range(samples):
            run_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(
                seconds=random.uniform(0.2, 0.7)
            )
            queue.add_job("probe", {"n": n}, run_at=run_at)
            if not starts.wait(lambda n=n: n in starts.times, 30):
                raise RuntimeError(f"scheduled job {n} did not start within 30 s")
            lateness.append((starts.times[n] - run_at.timestamp()) * 1000)
    finally:
        processor.stop_and_drain(10_000)
    return _figures(lateness)


def run_retry(queue: dq.JobQueue, samples: int) -> dict[str, Any]:
    empty_store(queue)
    starts = _Starts()
    processor = queue.create_processor({"probe": starts.record_flaky})
    processor.start_in_background()
    time.sleep(1.0)
    lateness = []
    try:
        for n in range(samples):
            job_id = queue.add_job("probe", {"n": n}, retry_delay=1, retry_backoff=False)
            if not starts.wait(lambda n=n: len(starts.attempts.get(n, ())) >= 2, 30):
                raise RuntimeError(f"job {n} was not retried within 30 s")
            job = queue.get_job(job_id)
            assert job is not None and job.last_failed_at is not None
            due = job.last_failed_at.timestamp() + 1
            lateness.append((starts.attempts[n][1] - due) * 1000)
    finally:
        processor.stop_and_drain(10_000)
    return _figures(lateness)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _embedded.add_database_argument(parser)
    parser.add_argument(
        "--redis-url",
        default=None,
        help="run on the Redis backend of this server instead of PostgreSQL, e.g. "
        "redis://127.0.0.1:6379/14 (keys under a fresh prefix, deleted afterwards)",
    )
    parser.add_argument("--samples", type=int, default=100, help="jobs per scenario (100)")
    parser.add_argument(
        "--poll-samples",
        type=int,
        default=10,
        help="jobs for the polling-only figure (10; 0: skip)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # The retry scenario's first attempts fail on purpose; their tracebacks are noise.
    logging.getLogger("dataqueue.processor").setLevel(logging.CRITICAL)
    report: dict[str, Any] = {}
    if args.redis_url:
        store = redis_queue(args.redis_url)
    else:
        store = postgres_queue(_embedded.resolve_database_url(args.database_url))
    with store as queue:
        if args.redis_url:
            report["backend"] = "redis"
            report["server"] = redis_server_info(queue)
        else:
            report["backend"] = "postgres"
            report["server"] = _embedded.server_info(queue.get_engine())
        report["cpus"] = _embedded.cpu_count()
        if not args.json:
            print(f"{report['backend']}: {json.dumps(report['server'])}", flush=True)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("pickup", lambda: run_pickup(queue, args.samples, listen=True)),
            ("scheduled_lateness", lambda: run_scheduled(queue, args.samples)),
            ("retry_lateness", lambda: run_retry(queue, max(10, args.samples // 5))),
        ]
        if args.poll_samples > 0:
            steps.append(
                ("pickup_polling_only", lambda: run_pickup(queue, args.poll_samples, listen=False))
            )
        for name, step in steps:
            report[name] = step()
            if not args.json:
                print(f"{name}: {json.dumps(report[name])}", flush=True)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
