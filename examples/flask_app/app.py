"""The Flask app: ``POST /signup`` inserts a signup and enqueues its welcome email together.

flask --app 'examples.flask_app.app:create_app()' run
gunicorn -c examples/gunicorn.conf.py 'examples.flask_app.app:create_app()'
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, request

import dataqueue as dq
from dataqueue.contrib.flask import init_app
from examples.flask_app.database import create_tables, get_queue, set_queue, signups

bp = Blueprint("signups", __name__)


class SimulatedError(Exception):
    """Raised by ``POST /signup?fail=1`` after enqueueing, to show the rollback."""


def create_app(queue: dq.JobQueue | None = None) -> Flask:
    """Build the app on ``queue`` (default: the process's queue from DATAQUEUE_DATABASE_URL)."""
    if queue is not None:
        set_queue(queue)
    queue = get_queue()
    create_tables(queue.get_engine())
    app = Flask(__name__)
    init_app(app, queue)
    app.register_blueprint(bp)
    return app


def _seconds(value: Any) -> float | None:
    """``value`` as 0 to 10 seconds, or None when it is not such a number."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds <= 10 else None


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


@bp.post("/signup")
def signup() -> tuple[dict[str, Any], int]:
    data = request.get_json(silent=True) or request.form
    email = str(data.get("email", "")).strip()
    if "@" not in email:
        return {"error": "an email address is required"}, 400
    fail = _truthy(request.args.get("fail", data.get("fail", "")))
    delay = _seconds(data.get("delay", "0"))
    if delay is None:
        return {"error": "delay must be a number of seconds from 0 to 10"}, 400
    queue: dq.JobQueue = current_app.extensions["dataqueue"]
    try:
        with queue.get_engine().begin() as conn:  # one transaction for the row and the job
            signup_id = conn.execute(
                signups.insert().values(email=email).returning(signups.c.id)
            ).scalar_one()
            payload: dict[str, Any] = {"signup_id": signup_id, "email": email}
            if delay:
                payload["delay"] = delay  # stands in for the mail API's latency
            job_id = queue.add_job("send_welcome", payload, db=conn)
            if fail:
                raise SimulatedError(f"failing signup {signup_id} after enqueueing job {job_id}")
    except SimulatedError as exc:  # the with-block rolled back: no signup, no job
        return {"error": str(exc), "rolled_back": True}, 500
    return {"signup_id": signup_id, "job_id": job_id}, 201


@bp.get("/health")
def health() -> dict[str, Any]:
    return {"ok": True}
