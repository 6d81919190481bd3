"""Durable onboarding workflow: steps, a timed wait and a manager's approval token.

    python examples/onboarding_waits.py      # embedded PostgreSQL unless DATAQUEUE_DATABASE_URL

The handler runs several times: it stops at each wait and starts again from the top
when the wait ends. ``ctx.run`` steps that already finished are replayed from storage
instead of running again, and waiting never consumes an attempt.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from typing import Any

import dataqueue as dq
from dataqueue.embedded import embedded_postgres
from dataqueue.migrate import upgrade

SIDE_EFFECTS: list[str] = []


def onboard(payload: dict[str, Any], signal: dq.AbortSignal, ctx: dq.JobContext) -> dict[str, Any]:
    user = payload["user"]
    account = ctx.run("create-account", lambda: SIDE_EFFECTS.append("account") or f"acct-{user}")
    ctx.wait_for(seconds=1)  # e.g. give the user a day to confirm their e-mail
    ctx.run("send-welcome", lambda: SIDE_EFFECTS.append("welcome") or True)
    token_id = ctx.run(
        "approval-token", lambda: ctx.create_token(timeout="7d", tags=["approval"]).id
    )
    approval = ctx.wait_for_token(token_id)  # a manager clicks "approve" somewhere else
    if not approval.ok:
        return {"account": account, "approved": False, "reason": approval.error}
    return {"account": account, "approved": True, "by": approval.output["by"]}


def run_until_idle(processor: dq.Processor) -> None:
    while processor.start():
        pass


def main() -> None:
    url = os.environ.get("DATAQUEUE_DATABASE_URL")
    with nullcontext(url) if url else embedded_postgres() as database_url:
        upgrade(database_url)
        with dq.init_job_queue(database_url) as queue:
            job_id = queue.add_job("onboard", {"user": "ada"}, max_attempts=1)
            processor = queue.create_processor({"onboard": onboard})

            run_until_idle(processor)
            job = queue.get_job(job_id)
            assert job is not None
            print(f"1. after the first run: {job.status.value}, waiting until {job.wait_until}")

            time.sleep(1.2)  # the timed wait passes
            run_until_idle(processor)
            job = queue.get_job(job_id)
            assert job is not None and job.wait_token_id is not None
            print(f"2. e-mail sent, now waiting for approval token {job.wait_token_id}")

            queue.complete_token(job.wait_token_id, {"by": "grace"})
            run_until_idle(processor)
            job = queue.get_job(job_id)
            assert job is not None
            print(f"3. approved: {job.status.value}, output {job.output}, attempts {job.attempts}")
            print(f"   side effects ran once each: {SIDE_EFFECTS}")
            events = ", ".join(e.event_type.value for e in queue.get_job_events(job_id))
            print(f"   events: {events}")


if __name__ == "__main__":
    main()
