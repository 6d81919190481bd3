"""The Flask example (examples/flask_app): the signup and its job commit or roll back together."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import flask
import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

import dataqueue as dq
from dataqueue.contrib.flask import init_app
from dataqueue.migrate import upgrade
from examples.flask_app import database
from examples.flask_app.app import create_app
from examples.flask_app.jobs import HANDLERS
from tests.conftest import create_database, drop_database, run_sql


@pytest.fixture(scope="module")
def example_url(pg_admin_url: str) -> Iterator[str]:
    """A database of its own: the example adds its tables beside dataqueue's."""
    url = create_database(pg_admin_url, prefix="dq_flask")
    upgrade(url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture
def queue(example_url: str) -> Iterator[dq.JobQueue]:
    with dq.init_job_queue(example_url) as job_queue:
        yield job_queue
    database.set_queue(None)


@pytest.fixture
def app(queue: dq.JobQueue) -> flask.Flask:
    flask_app = create_app(queue)  # creates the example's tables if missing
    flask_app.config["TESTING"] = True
    with queue.get_engine().begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE signups, welcome_emails, job_events, job_queue RESTART IDENTITY CASCADE"
        )
    return flask_app


@pytest.fixture
def client(app: flask.Flask) -> FlaskClient:
    return app.test_client()


def _count(queue: dq.JobQueue, table: str) -> int:
    return int(run_sql(queue.get_engine(), f"SELECT count(*) FROM {table}")[0][0])


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_commit_writes_the_signup_and_its_job(
    client: FlaskClient, queue: dq.JobQueue, as_json: bool
) -> None:
    body: dict[str, Any] = {"json": {"email": "ada@example.com"}}
    if not as_json:
        body = {"data": {"email": "ada@example.com"}}
    response = client.post("/signup", **body)
    assert response.status_code == 201, response.get_data(as_text=True)
    result = response.get_json()
    rows = run_sql(queue.get_engine(), "SELECT id, email FROM signups")
    assert rows == [(result["signup_id"], "ada@example.com")]
    job = queue.get_job(result["job_id"])
    assert job is not None
    assert job.job_type == "send_welcome" and job.status == dq.JobStatus.PENDING
    assert job.payload == {"signup_id": result["signup_id"], "email": "ada@example.com"}
    assert [event.event_type for event in queue.get_job_events(job.id)] == ["added"]


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/signup?fail=1", {"data": {"email": "bob@example.com"}}),
        ("/signup", {"json": {"email": "bob@example.com", "fail": True}}),
    ],
    ids=["query-flag", "payload-flag"],
)
def test_failure_after_enqueueing_rolls_back_both(
    client: FlaskClient, queue: dq.JobQueue, url: str, body: dict[str, Any]
) -> None:
    response = client.post(url, **body)
    assert response.status_code == 500
    result = response.get_json()
    assert result["rolled_back"] is True
    assert "after enqueueing job" in result["error"]  # the job was written, then rolled back
    rolled_back_job_id = int(result["error"].rsplit(" ", 1)[1])
    assert queue.get_job(rolled_back_job_id) is None
    assert _count(queue, "signups") == 0
    assert _count(queue, "job_queue") == 0
    assert _count(queue, "job_events") == 0


def test_missing_email_is_rejected_without_writing(client: FlaskClient, queue: dq.JobQueue) -> None:
    response = client.post("/signup", data={"email": ""})
    assert response.status_code == 400
    assert _count(queue, "signups") == 0 and _count(queue, "job_queue") == 0


def test_delay_is_stored_in_the_payload(client: FlaskClient, queue: dq.JobQueue) -> None:
    result = client.post("/signup", data={"email": "di@example.com", "delay": "0.05"}).get_json()
    job = queue.get_job(result["job_id"])
    assert job is not None
    expected = {"signup_id": result["signup_id"], "email": "di@example.com", "delay": 0.05}
    assert job.payload == expected


@pytest.mark.parametrize("delay", ["soon", "-1", "11", "nan"])
def test_bad_delay_is_rejected_without_writing(
    delay: str, client: FlaskClient, queue: dq.JobQueue
) -> None:
    response = client.post("/signup", data={"email": "ed@example.com", "delay": delay})
    assert response.status_code == 400
    assert "delay" in response.get_json()["error"]
    assert _count(queue, "signups") == 0 and _count(queue, "job_queue") == 0


def test_handlers_process_the_committed_job(client: FlaskClient, queue: dq.JobQueue) -> None:
    result = client.post("/signup", data={"email": "cy@example.com"}).get_json()
    client.post("/signup?fail=1", data={"email": "nobody@example.com"})
    processor = queue.create_processor(HANDLERS, job_type=sorted(HANDLERS))
    assert processor.start() == 1
    job = queue.get_job(result["job_id"])
    assert job is not None and job.status == dq.JobStatus.COMPLETED
    assert job.output == {"sent_to": "cy@example.com"}
    sent = run_sql(
        queue.get_engine(), "SELECT job_id, signup_id, email, worker_pid FROM welcome_emails"
    )
    assert sent == [(result["job_id"], result["signup_id"], "cy@example.com", os.getpid())]


def test_health(client: FlaskClient) -> None:
    assert client.get("/health").get_json() == {"ok": True}


def test_init_app_stores_the_queue_once(app: flask.Flask, queue: dq.JobQueue) -> None:
    assert app.extensions["dataqueue"] is queue
    assert init_app(app, queue) is queue  # same queue again: harmless
    other = dq.init_job_queue(engine=queue.get_engine())
    with pytest.raises(ValueError, match="already has a dataqueue queue"):
        init_app(app, other)
    assert app.extensions["dataqueue"] is queue


def test_create_tables_is_idempotent(queue: dq.JobQueue) -> None:
    database.create_tables(queue.get_engine())
    database.create_tables(queue.get_engine())
    names = set(sa.inspect(queue.get_engine()).get_table_names())
    assert {"signups", "welcome_emails", "job_queue"} <= names
