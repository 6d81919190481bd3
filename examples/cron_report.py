"""Cron schedules: a report every minute, enqueued by the processor itself.

    python examples/cron_report.py           # embedded PostgreSQL unless DATAQUEUE_DATABASE_URL
    python examples/cron_report.py --wait    # wait for the real next minute instead

Processors enqueue due schedules before each claim, exactly once even when several
processes tick at the same moment. By default the demo fast-forwards the schedule
(an UPDATE of ``next_run_at``) so it finishes in a second.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from typing import Any

import dataqueue as dq
from dataqueue.embedded import embedded_postgres
from dataqueue.migrate import upgrade
from dataqueue.schema import cron_schedules


def build_report(payload: dict[str, Any]) -> dict[str, Any]:
    return {"report": payload["kind"], "rows": 42}


def fast_forward(queue: dq.JobQueue, schedule_id: int) -> None:
    """Demo only: make the schedule due now instead of waiting for the next minute."""
    import sqlalchemy as sa

    with queue.get_engine().begin() as conn:
        conn.execute(
            sa.update(cron_schedules)
            .where(cron_schedules.c.id == schedule_id)
            .values(next_run_at=sa.func.now())
        )


def main() -> None:
    wait = "--wait" in sys.argv
    url = os.environ.get("DATAQUEUE_DATABASE_URL")
    with nullcontext(url) if url else embedded_postgres() as database_url:
        upgrade(database_url)
        with dq.init_job_queue(database_url) as queue:
            schedule_id = queue.add_cron_job(
                "minute-report",
                "* * * * *",
                "build_report",
                {"kind": "sales"},
                timezone="Europe/Berlin",
                retry_delay=30,
            )
            schedule = queue.get_cron_job(schedule_id)
            assert schedule is not None
            name, next_run_at = schedule.schedule_name, schedule.next_run_at
            print(f"schedule #{schedule_id} '{name}' next run {next_run_at}")
            done: list[int] = []
            queue.on("job:completed", lambda e: done.append(e["job_id"]))
            processor = queue.create_processor({"build_report": build_report}, poll_interval=200)
            if not wait:
                fast_forward(queue, schedule_id)
            processor.start_in_background()
            deadline = time.monotonic() + (70 if wait else 10)
            while not done and time.monotonic() < deadline:
                time.sleep(0.05)
            processor.stop_and_drain()
            job = queue.get_job(done[0]) if done else None
            assert job is not None, "the cron job was not processed"
            print(f"enqueued and processed job: {job.id} -> {job.output}")
            queue.pause_cron_job(schedule_id)
            paused = [s.schedule_name for s in queue.list_cron_jobs("paused")]
            print(f"paused schedules: {paused}")
            queue.remove_cron_job(schedule_id)
            print(f"schedules left: {len(queue.list_cron_jobs())}")


if __name__ == "__main__":
    main()
