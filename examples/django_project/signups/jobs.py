"""Job handlers; ``settings.DATAQUEUE_HANDLERS`` points here.

They use the ORM freely: the worker command closes stale Django connections around each
job, as Django does around each request.
"""

from __future__ import annotations

import os
from typing import Any

import dataqueue as dq
from signups.models import Signup, WelcomeEmail


def send_welcome(payload: dict[str, Any], signal: dq.AbortSignal, ctx: dq.JobContext) -> Any:
    signup = Signup.objects.get(pk=payload["signup_id"])
    # A real handler would call the mail API here.
    WelcomeEmail.objects.create(job_id=ctx.job_id, signup=signup, worker_pid=os.getpid())
    return {"sent_to": signup.email}


HANDLERS = {"send_welcome": send_welcome}
