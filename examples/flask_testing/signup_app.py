"""A Flask app whose signup view enqueues a welcome email in the signup's own transaction.

The tests beside it (``test_signup_app.py``, run with ``pytest examples/flask_testing``)
show how to test such a view with :mod:`dataqueue.testing`: each test gets its own
database, the view enqueues there, and ``run_until_idle`` runs the job.

    flask --app 'signup_app:create_app({"DATABASE_URL": "postgresql://app@localhost/app"})' run
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, request

import dataqueue as dq
from dataqueue.contrib.flask import init_app

metadata = sa.MetaData()

#: The application's own table, written in the same transaction as the job.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("welcomed_at", sa.DateTime(timezone=True)),
)

#: Sends one email: ``send_mail(to, subject)``. Production passes a mail client's method.
SendMail = Callable[[str, str], object]

bp = Blueprint("signups", __name__)


def create_app(config: Mapping[str, Any]) -> Flask:
    """The app on ``config["DATABASE_URL"]``; its queue is ``app.extensions["dataqueue"]``.

    The app's own queries share the queue's engine, so a process keeps one pool.
    """
    app = Flask(__name__)
    app.config.update(config)
    init_app(app, dq.init_job_queue(app.config["DATABASE_URL"]))
    app.register_blueprint(bp)
    return app


@bp.post("/signups")
def signup() -> tuple[dict[str, Any], int]:
    """Insert the user and enqueue their welcome email: both commit, or neither does."""
    email = request.form["email"]
    queue: dq.JobQueue = current_app.extensions["dataqueue"]
    try:
        with queue.get_engine().begin() as conn:  # the request's transaction
            user_id = conn.execute(
                users.insert().values(email=email).returning(users.c.id)
            ).scalar_one()
            queue.add_job("send_welcome", {"user_id": user_id}, db=conn)
    except sa.exc.IntegrityError:  # rolled back: no second user, no second email
        return {"error": f"{email} has already signed up"}, 409
    return {"user_id": user_id}, 201


def job_handlers(engine: sa.Engine, send_mail: SendMail) -> dict[str, Callable[..., Any]]:
    """The app's job handlers, on ``engine`` (the worker's) and sending with ``send_mail``."""

    def send_welcome(payload: dict[str, Any]) -> dict[str, str]:
        with engine.begin() as conn:
            email = conn.execute(
                sa.select(users.c.email).where(users.c.id == payload["user_id"])
            ).scalar_one()
            send_mail(email, "Welcome!")
            conn.execute(
                users.update()
                .where(users.c.id == payload["user_id"])
                .values(welcomed_at=sa.func.now())
            )
        return {"sent_to": email}

    return {"send_welcome": send_welcome}
