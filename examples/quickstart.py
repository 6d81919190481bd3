"""dataqueue quick start: enqueue, read back, edit, cancel, and look at the events.

Run it with your own PostgreSQL (``DATAQUEUE_DATABASE_URL=postgresql://...``) or with
nothing configured, in which case it starts an embedded PostgreSQL (``pip install
'dataqueue[embedded]'``) that is thrown away at the end.
"""

from __future__ import annotations

import datetime as dt
import os
from contextlib import nullcontext

import dataqueue as dq
from dataqueue.embedded import embedded_postgres
from dataqueue.migrate import upgrade


def show(title: str, job: dq.JobRecord | None) -> None:
    assert job is not None
    print(
        f"  {title:<10} #{job.id} {job.job_type:<12} {job.status.value:<10} "
        f"priority={job.priority} tags={job.tags} payload={job.payload}"
    )


def main() -> None:
    url = os.environ.get("DATAQUEUE_DATABASE_URL")
    where = "your database" if url else "an embedded PostgreSQL"
    print(f"dataqueue quick start on {where}")
    with nullcontext(url) if url else embedded_postgres() as database_url:
        upgrade(database_url)  # the same as `dataqueue migrate` / `alembic upgrade head`
        with dq.init_job_queue(database_url) as queue:
            queue.on("job:added", lambda e: print(f"  hook       job:added {e}"))

            welcome = queue.add_job(
                "send_email",
                {"to": "ada@example.com"},
                tags=["welcome"],
                idempotency_key="welcome-ada",
            )
            again = queue.add_job(
                "send_email", {"to": "ada@example.com"}, idempotency_key="welcome-ada"
            )
            print(f"  idempotent: the second add returned the same id ({welcome} == {again})")

            later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
            report, thumb = queue.add_jobs(
                [
                    dq.JobOptions("build_report", {"month": "2026-11"}, run_at=later),
                    {"job_type": "thumbnail", "payload": {"image": 7}, "priority": 5},
                ]
            )
            show("added", queue.get_job(welcome))
            show("scheduled", queue.get_job(report))

            queue.edit_job(thumb, priority=10, tags=["images"])
            show("edited", queue.get_job(thumb))
            queue.cancel_job(report)
            show("cancelled", queue.get_job(report))

            print("  pending jobs:", [j.id for j in queue.get_jobs_by_status("pending")])
            print("  tagged 'welcome':", [j.id for j in queue.get_jobs_by_tags(["welcome"])])
            for job_id in (welcome, thumb, report):
                events = ", ".join(e.event_type.value for e in queue.get_job_events(job_id))
                print(f"  events of #{job_id}: {events}")

            # Enqueue inside your own transaction: the job exists only if you commit.
            engine = queue.get_engine()
            with engine.connect() as conn:
                conn.begin()
                rolled_back = queue.add_job("send_email", {"to": "nobody"}, db=conn)
                conn.rollback()
            print(
                f"  job #{rolled_back} added in a rolled-back transaction exists: "
                f"{queue.get_job(rolled_back) is not None}"
            )
    print("done")


if __name__ == "__main__":
    main()
