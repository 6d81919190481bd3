"""The dashboard as a Flask Blueprint behind the app's own login decorator and host rules."""

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


# -- host names: Flask's configuration decides when the blueprint got none ------------


def _app(**config: Any) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(config)
    return app


def _job_status(app: flask.Flask, job_id: int, host: str) -> int:
    client = app.test_client()
    status: int = client.get(
        f"/admin/dataqueue/api/jobs/{job_id}", base_url=f"http://{host}"
    ).status_code
    return status


def test_blueprint_without_flask_host_settings_answers_loopback_only(
    pg_queue: dq.JobQueue,
) -> None:
    job_id = pg_queue.add_job("t", {"secret": 1})
    app = _app()
    app.register_blueprint(dashboard_blueprint(pg_queue))
    assert _job_status(app, job_id, "localhost") == 200
    assert _job_status(app, job_id, "127.0.0.1:5000") == 200
    refused = app.test_client().get(
        f"/admin/dataqueue/api/jobs/{job_id}", base_url="http://evil.example:18081"
    )
    assert refused.status_code == 400 and "not allowed" in refused.get_json()["error"]


def test_blueprint_passes_allowed_hosts_through(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    app = _app(SERVER_NAME="ignored.example")
    app.register_blueprint(dashboard_blueprint(pg_queue, allowed_hosts=[".example.com"]))
    assert _job_status(app, job_id, "jobs.example.com") == 200
    assert _job_status(app, job_id, "localhost") == 400
    assert _job_status(app, job_id, "evil.example") == 400


def test_blueprint_defers_to_trusted_hosts(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    app = _app(TRUSTED_HOSTS=["jobs.example.com"])
    app.register_blueprint(dashboard_blueprint(pg_queue, {"t": lambda p: "done"}))
    # Not a loopback name, so only Flask's setting lets it in.
    assert _job_status(app, job_id, "jobs.example.com:8443") == 200
    assert _job_status(app, job_id, "evil.example") == 400
    forged = app.test_client().post(
        f"/admin/dataqueue/api/jobs/{job_id}/cancel",
        base_url="http://evil.example",
        headers={"X-Requested-With": "dataqueue", "Origin": "http://evil.example"},
    )
    assert forged.status_code == 400
    job = pg_queue.get_job(job_id)
    assert job is not None and job.status == "pending"


def test_blueprint_answers_the_server_name(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    app = _app(SERVER_NAME="jobs.example.com:8000")
    app.register_blueprint(dashboard_blueprint(pg_queue))
    # Flask 3.1 routes requests for other hosts anyway; the dashboard refuses them.
    assert _job_status(app, job_id, "jobs.example.com:8000") == 200
    assert _job_status(app, job_id, "localhost") == 400
    refused = app.test_client().get(
        f"/admin/dataqueue/api/jobs/{job_id}", base_url="http://evil.example:8000"
    )
    assert refused.status_code == 400 and "not allowed" in refused.get_json()["error"]


# -- refusals: JSON for the API, the app's own answer for the page ---------------------


def redirect_to_login(view: Any) -> Any:
    """Stands in for flask_login's login_required (redirects anonymous users)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "Authorization" not in flask.request.headers:
            return flask.redirect("/login?next=" + flask.request.path)
        if flask.request.headers["Authorization"] != "Bearer admin":
            flask.abort(403)
        return view(*args, **kwargs)

    return wrapper


def test_api_refusals_are_json_while_the_page_keeps_the_redirect(pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("t", {})
    app = flask.Flask(__name__)
    app.register_blueprint(dashboard_blueprint(pg_queue, decorators=[redirect_to_login]))
    client = app.test_client()
    anonymous = client.get(f"/admin/dataqueue/api/jobs/{job_id}")
    assert anonymous.status_code == 401
    assert anonymous.get_json() == {"error": "Authentication required"}
    page = client.get("/admin/dataqueue/")
    assert page.status_code == 302 and page.location.startswith("/login")
    other = client.get("/admin/dataqueue/api/jobs", headers={"Authorization": "Bearer x"})
    assert other.status_code == 403 and other.get_json() == {"error": "Forbidden"}
    token = _client(pg_queue).get(f"/admin/dataqueue/api/jobs/{job_id}")
    assert token.status_code == 401 and token.get_json() == {"error": "Authentication required"}


def test_unknown_paths_are_404(pg_queue: dq.JobQueue) -> None:
    client = _client(pg_queue)
    auth = {"Authorization": "Bearer admin"}
    assert client.get("/admin/dataqueue/nope", headers=auth).status_code == 404
    assert client.get("/admin/dataqueue/jobs/1", headers=auth).status_code == 404
    missing_api = client.get("/admin/dataqueue/api/nope", headers=auth)
    assert missing_api.status_code == 404 and missing_api.get_json() == {"error": "Not found"}
    assert client.get("/admin/dataqueue/static/nope.js", headers=auth).status_code == 404
    assert client.get("/admin/dataqueue/", headers=auth).status_code == 200
