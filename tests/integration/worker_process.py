"""A worker process for the multi-process tests: ``python -m tests.integration.worker_process``.

Runs one processor until the queue has had no claimable work for a moment, then drains.
The queue is on PostgreSQL (``--url``) or Redis (``--redis-url`` and ``--key-prefix``).
Handlers record what they do in plain PostgreSQL tables (``handled``, ``probe_running``,
on ``--ledger-url``, default ``--url``) so the test can check exactly-once handling and
group concurrency across processes, whichever store holds the jobs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import sqlalchemy as sa

import dataqueue as dq
from tests.integration.store_state import status_counts


def record_handled(engine: sa.Engine, worker: str, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO handled (job_id, worker) VALUES (:j, :w)"),
            {"j": job_id, "w": worker},
        )


def enter_group(engine: sa.Engine, group: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE probe_running SET running = running + 1, "
                "max_running = GREATEST(max_running, running + 1) WHERE group_id = :g"
            ),
            {"g": group},
        )


def leave_group(engine: sa.Engine, group: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE probe_running SET running = running - 1 WHERE group_id = :g"),
            {"g": group},
        )


def make_handler(engine: sa.Engine, worker: str, pause: float) -> Any:
    def handler(payload: dict[str, Any], signal: Any, ctx: dq.JobContext) -> None:
        group = payload.get("group")
        if group:
            enter_group(engine, group)
        try:
            if pause:
                time.sleep(pause)
            record_handled(engine, worker, ctx.job_id)
        finally:
            if group:
                leave_group(engine, group)

    return handler


def pending_work(queue: dq.JobQueue) -> int:
    """Jobs still to do: pending or processing."""
    counts = status_counts(queue)
    return counts["pending"] + counts["processing"]


def run(
    queue: dq.JobQueue, engine: sa.Engine, worker: str, group_concurrency: int | None, pause: float
) -> None:
    processor = queue.create_processor(
        {"work": make_handler(engine, worker, pause)},
        worker_id=worker,
        batch_size=20,
        concurrency=4,
        group_concurrency=group_concurrency,
        poll_interval=20,
    )
    processor.start_in_background()
    idle_since: float | None = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if pending_work(queue) == 0:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 0.5:
                break
        else:
            idle_since = None
        time.sleep(0.05)
    processor.stop_and_drain(30_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="PostgreSQL URL of the queue")
    parser.add_argument("--redis-url", help="Redis URL of the queue (instead of --url)")
    parser.add_argument("--key-prefix", default="dq:", help="the Redis queue's key prefix")
    parser.add_argument("--ledger-url", help="PostgreSQL URL of the ledger (default: --url)")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--group-concurrency", type=int, default=None)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    if args.redis_url:
        queue = dq.init_job_queue(redis_url=args.redis_url, key_prefix=args.key_prefix)
    else:
        queue = dq.init_job_queue(args.url)
    engine = dq.create_engine(args.ledger_url or args.url)
    try:
        run(queue, engine, args.worker, args.group_concurrency, args.pause)
    finally:
        queue.close()
        engine.dispose()


if __name__ == "__main__":
    main()
