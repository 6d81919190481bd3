"""The example's job handlers; ``HANDLERS`` is what a processor or ``dataqueue worker`` runs."""

from __future__ import annotations

import logging
import os
from typing import Any

import dataqueue as dq
from examples.flask_app.database import get_queue, welcome_emails

logger = logging.getLogger(__name__)


def send_welcome(payload: dict[str, Any], signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
    """Pretend to send the welcome email: record it in ``welcome_emails`` with this process's pid.

    ``payload["delay"]`` (seconds) stands in for the mail API's latency; ``signal.wait``
    is a sleep that ends early if the job times out.
    """
    delay = float(payload.get("delay", 0))
    if delay > 0:
        signal.wait(delay)
    with get_queue().get_engine().begin() as conn:
        conn.execute(
            welcome_emails.insert().values(
                job_id=ctx.job_id,
                signup_id=payload.get("signup_id"),
                email=payload["email"],
                worker_pid=os.getpid(),
            )
        )
    logger.info("welcome email sent to %s (job %s)", payload["email"], ctx.job_id)
    return {"sent_to": payload["email"]}


HANDLERS = {"send_welcome": send_welcome}
