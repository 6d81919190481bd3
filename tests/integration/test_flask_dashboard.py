"""The dashboard as a Flask Blueprint behind the app's own login decorator."""

from __future__ import annotations

import functools
from typing import Any

import flask

import dataqueue as dq
from dataqueue.contrib.flask import dashboard_blueprint


def require_token(view: Any) -> Any:
    """Stands in for the app's login_required."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if flask.request.headers.get("Authorization") != "Bearer admin":
            return flask.Response("login required", status=401)
        return view(*args, **kwargs)

    return wrapper


def _client(queue: dq.JobQueue) -> Any:
    app = flask.Flask(__name__)
    app.register_blueprint(
        dashboard_blueprint(queue, {"t": lambda p: "done"}, decorators=[require_token])
    )
    return app.test_client()


def test_blueprint_serves_the_dashboard_behind_the_apps_login(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {"a": 1})
    client = _client(pg_queue)
    auth = {"Authorization": "Bearer admin"}
    assert client.get(f"/admin/dataqueue/api/jobs/{job_id}").status_code == 401
    answer = client.get(f"/admin/dataqueue/api/jobs/{job_id}", headers=auth)
    assert answer.status_code == 200 and answer.get_json()["job"]["payload"] == {"a": 1}
    page = client.get("/admin/dataqueue/", headers=auth)
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    processed = client.post(
        "/admin/dataqueue/api/process", headers={**auth, "X-Requested-With": "dataqueue"}
    )
    assert processed.get_json() == {"processed": 1}
    job = pg_queue.get_job(job_id)
    assert job is not None and job.output == "done"


def test_blueprint_keeps_the_dashboards_method_and_csrf_rules(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    client = _client(pg_queue)
    auth = {"Authorization": "Bearer admin"}
    assert client.delete(f"/admin/dataqueue/api/jobs/{job_id}", headers=auth).status_code == 405
    forged = client.post(f"/admin/dataqueue/api/jobs/{job_id}/cancel", headers=auth)
    assert forged.status_code == 403
    job = pg_queue.get_job(job_id)
    assert job is not None and job.status == "pending"
