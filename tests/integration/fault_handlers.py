"""Handlers for the multi-process fault tests, loaded by ``dataqueue worker``.

``tests.integration.fault_handlers:make_handlers``. Every run is written to the
``ledger`` table (job id and process id) on a connection of its own whose
application name is ``ledger``, so the tests can kill the library's connections
(application name ``dataqueue``) without touching the ledger, and can count how often
each job's handler ran. The ledger is in PostgreSQL whichever store holds the jobs:
``DATAQUEUE_TEST_LEDGER_URL``, else the worker's ``DATAQUEUE_DATABASE_URL``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa

import dataqueue as dq

LEDGER_DDL = "CREATE TABLE IF NOT EXISTS ledger (job_id integer NOT NULL, pid integer NOT NULL)"


def ledger_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1),
        connect_args={"application_name": "ledger"},
        pool_pre_ping=True,
    )


def make_handlers() -> dict[str, Any]:
    engine = ledger_engine(
        os.environ.get("DATAQUEUE_TEST_LEDGER_URL") or os.environ["DATAQUEUE_DATABASE_URL"]
    )

    def record(job_id: int) -> None:
        for attempt in range(50):  # the ledger must not lose a run
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.text("INSERT INTO ledger (job_id, pid) VALUES (:j, :p)"),
                        {"j": job_id, "p": os.getpid()},
                    )
                return
            except sa.exc.OperationalError:
                time.sleep(0.05 * (attempt + 1))
        raise RuntimeError(f"could not record job {job_id} in the ledger")

    def ledger(payload: dict[str, Any], signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        time.sleep(float(payload.get("sleep", 0)))
        record(ctx.job_id)

    def started_then_sleep(payload: dict[str, Any], signal: Any, ctx: dq.JobContext) -> None:
        record(ctx.job_id)  # recorded when it starts
        time.sleep(float(payload.get("sleep", 0)))

    return {"ledger": ledger, "started": started_then_sleep}
