"""A worker process for the multi-process tests: ``python -m tests.integration.worker_process``.

Runs one processor until the queue has had no claimable work for a moment, then drains.
Handlers record what they do in plain tables (``handled``, ``probe_running``) so the
test can check exactly-once handling and group concurrency across processes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import sqlalchemy as sa

import dataqueue as dq


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


def pending_work(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM job_queue WHERE status IN ('pending', 'processing')")
            ).scalar_one()
        )


def run(url: str, worker: str, group_concurrency: int | None, pause: float) -> None:
    queue = dq.init_job_queue(url)
    engine = queue.get_engine()
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
        if pending_work(engine) == 0:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 0.5:
                break
        else:
            idle_since = None
        time.sleep(0.05)
    processor.stop_and_drain(30_000)
    queue.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--group-concurrency", type=int, default=None)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    run(args.url, args.worker, args.group_concurrency, args.pause)


if __name__ == "__main__":
    main()
