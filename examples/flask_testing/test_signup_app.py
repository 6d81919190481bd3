"""Testing a Flask view that enqueues in its transaction, then running the job.

Run with ``pytest examples/flask_testing``: on an embedded PostgreSQL, or on your
server with ``--dataqueue-database-url postgresql://postgres@localhost/postgres``.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from flask.testing import FlaskClient
from signup_app import job_handlers, users

import dataqueue as dq
from dataqueue.testing import assert_enqueued, run_until_idle


def test_signup_sends_a_welcome_email(
    client: FlaskClient,
    dataqueue_queue: dq.JobQueue,
    dataqueue_engine: sa.Engine,
    outbox: list[tuple[str, str]],
) -> None:
    response = client.post("/signups", data={"email": "ada@example.com"})

    assert response.status_code == 201
    user_id = response.json["user_id"]
    (job,) = assert_enqueued(dataqueue_queue, "send_welcome", {"user_id": user_id})

    result = run_until_idle(dataqueue_queue, job_handlers(dataqueue_engine, _send_to(outbox)))

    assert result.job_ids == [job.id]
    assert outbox == [("ada@example.com", "Welcome!")]
    assert dataqueue_queue.get_job(job.id).output == {"sent_to": "ada@example.com"}
    with dataqueue_engine.connect() as conn:
        welcomed = conn.execute(sa.select(users.c.welcomed_at)).scalar_one()
    assert welcomed is not None


def test_a_duplicate_signup_enqueues_no_second_email(
    client: FlaskClient, dataqueue_queue: dq.JobQueue
) -> None:
    assert client.post("/signups", data={"email": "ada@example.com"}).status_code == 201

    again = client.post("/signups", data={"email": "ada@example.com"})

    assert again.status_code == 409
    assert_enqueued(dataqueue_queue, "send_welcome", count=1)


def test_a_failed_email_is_retried(
    client: FlaskClient,
    dataqueue_queue: dq.JobQueue,
    dataqueue_engine: sa.Engine,
    outbox: list[tuple[str, str]],
) -> None:
    client.post("/signups", data={"email": "ada@example.com"})

    def mail_server_down(to: str, subject: str) -> None:
        raise ConnectionError("mail server down")

    failed = run_until_idle(dataqueue_queue, job_handlers(dataqueue_engine, mail_server_down))

    (run,) = failed.failed
    assert isinstance(run.error, ConnectionError) and run.will_retry
    # The retry is minutes away; include_future runs it now.
    retried = run_until_idle(
        dataqueue_queue, job_handlers(dataqueue_engine, _send_to(outbox)), include_future=True
    )
    assert [r.outcome for r in retried.runs] == ["completed"]
    assert outbox == [("ada@example.com", "Welcome!")]


def _send_to(outbox: list[tuple[str, str]]) -> Callable[[str, str], None]:
    def send_mail(to: str, subject: str) -> None:
        outbox.append((to, subject))

    return send_mail
