"""Handlers for the multi-process rate-limit test, loaded by ``dataqueue worker``.

``tests.integration.rate_limit_handlers:make_handlers``. Every run writes its job id,
type and start time (the ledger database's ``clock_timestamp()``, one clock for every
process) to ``rate_ledger`` as its first act. The ledger is in PostgreSQL whichever
store holds the jobs: ``DATAQUEUE_TEST_LEDGER_URL``, else ``DATAQUEUE_DATABASE_URL``.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

import dataqueue as dq

LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS rate_ledger (job_id integer NOT NULL, job_type text NOT NULL,"
    " started_at timestamptz NOT NULL, pid integer NOT NULL)"
)


def make_handlers() -> dict[str, Any]:
    url = os.environ.get("DATAQUEUE_TEST_LEDGER_URL") or os.environ["DATAQUEUE_DATABASE_URL"]
    engine = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1),
        connect_args={"application_name": "ledger"},
        pool_size=20,
    )

    def record(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO rate_ledger (job_id, job_type, started_at, pid)"
                    " VALUES (:j, :t, clock_timestamp(), :p)"
                ),
                {"j": ctx.job_id, "t": payload["type"], "p": os.getpid()},
            )

    return {"limited": record, "free": record}
