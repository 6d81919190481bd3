"""The Django example (examples/django_project), run in subprocesses: Django's settings are
process-wide and other tests configure Django their own way.

migrate → a view enqueues in ``transaction.atomic()`` (commit and rollback) → the
``dataqueue_worker`` management command processes the job and drains on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.migrate import upgrade
from tests.conftest import create_database, drop_database, run_sql
from tests.integration.worker_runner import fetch_metrics, free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "django_project"
MARKER = "RESULT:"

# Runs inside ``manage.py shell -c``: posts to the view with Django's test client.
POST_SCRIPT = f"""
import json
from django.test import Client
client = Client()
results = {{}}
for name, url, data in [
    ("commit", "/signup/", {{"email": "ada@example.com"}}),
    ("rollback_query", "/signup/?fail=1", {{"email": "bob@example.com"}}),
    ("rollback_form", "/signup/", {{"email": "cy@example.com", "fail": "1"}}),
    ("invalid", "/signup/", {{"email": "nope"}}),
]:
    response = client.post(url, data)
    results[name] = {{"status": response.status_code, "body": response.json()}}
print("{MARKER}" + json.dumps(results))
"""


def _env(url: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATAQUEUE_DATABASE_URL": url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _manage(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _count(engine: sa.Engine, sql: str, value: object) -> int:
    return int(run_sql(engine, sql, v=value)[0][0])


def _start_worker(url: str, *args: str) -> subprocess.Popen[str]:
    """``manage.py dataqueue_worker ARGS`` in a session of its own."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "dataqueue_worker", *args],
        cwd=PROJECT,
        env=_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_status(
    worker: subprocess.Popen[str], engine: sa.Engine, job_id: int, status: str
) -> None:
    deadline = time.monotonic() + 30
    while run_sql(engine, "SELECT status FROM job_queue WHERE id = :id", id=job_id) != [(status,)]:
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited early: {worker.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"the worker did not make job {job_id} {status}"
        time.sleep(0.05)


def _stop_worker(worker: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM (drain and stop); SIGKILL if it is still there after 20 s."""
    if worker.stdout is not None and worker.stdout.closed:  # read already (it exited early)
        return "", ""
    try:
        worker.send_signal(signal.SIGTERM)
        return worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.communicate()


@pytest.fixture(scope="module")
def project_url(pg_admin_url: str) -> Iterator[str]:
    """A database with the dataqueue tables (dataqueue migrate) and the project's (Django)."""
    url = create_database(pg_admin_url, prefix="dq_django")
    upgrade(url)
    result = _manage(url, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
def engine(project_url: str) -> Iterator[sa.Engine]:
    eng = dq.create_engine(project_url, pool_size=2)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def posted(project_url: str, engine: sa.Engine) -> dict[str, Any]:
    """What the view answered to each request (run once, in a Django subprocess)."""
    result = _manage(project_url, "shell", "-c", POST_SCRIPT)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(MARKER))
    answers: dict[str, Any] = json.loads(line[len(MARKER) :])
    return answers


def test_commit_writes_the_model_row_and_the_job(posted: dict[str, Any], engine: sa.Engine) -> None:
    commit = posted["commit"]
    assert commit["status"] == 201, commit
    signup_id, job_id = commit["body"]["signup_id"], commit["body"]["job_id"]
    assert run_sql(engine, "SELECT id, email FROM signups_signup") == [
        (signup_id, "ada@example.com")
    ]
    with dq.init_job_queue(engine=engine) as queue:
        job = queue.get_job(job_id)
        assert job is not None and job.job_type == "send_welcome"
        assert job.payload == {"signup_id": signup_id, "email": "ada@example.com"}
        assert [event.event_type for event in queue.get_job_events(job_id)] == ["added"]


@pytest.mark.parametrize("case", ["rollback_query", "rollback_form"])
def test_rollback_leaves_neither_row_nor_job(
    posted: dict[str, Any], engine: sa.Engine, case: str
) -> None:
    answer = posted[case]
    assert answer["status"] == 500 and answer["body"]["rolled_back"] is True
    job_id = int(answer["body"]["error"].rsplit(" ", 1)[1])  # "... enqueueing job 2"
    email = "bob@example.com" if case == "rollback_query" else "cy@example.com"
    assert _count(engine, "SELECT count(*) FROM signups_signup WHERE email = :v", email) == 0
    assert _count(engine, "SELECT count(*) FROM job_queue WHERE id = :v", job_id) == 0
    assert _count(engine, "SELECT count(*) FROM job_events WHERE job_id = :v", job_id) == 0


def test_invalid_input_writes_nothing(posted: dict[str, Any], engine: sa.Engine) -> None:
    assert posted["invalid"]["status"] == 400
    assert _count(engine, "SELECT count(*) FROM signups_signup WHERE email = :v", "nope") == 0
    assert _count(engine, "SELECT count(*) FROM job_queue WHERE id > :v", 0) == 1  # the commit


def test_worker_command_processes_the_job_and_drains_on_sigterm(
    posted: dict[str, Any], project_url: str, engine: sa.Engine
) -> None:
    job_id = posted["commit"]["body"]["job_id"]
    worker = _start_worker(
        project_url, "--concurrency", "2", "--poll-interval", "100", "--verbosity", "2"
    )
    try:
        _wait_for_status(worker, engine, job_id, "completed")
    finally:
        stdout, stderr = _stop_worker(worker)
    assert worker.returncode == 0, stderr
    assert "job types send_welcome" in stdout and "drained and stopped" in stdout
    assert "SIGTERM received" in stderr  # --verbosity 2 shows dataqueue's log
    sent = run_sql(engine, "SELECT job_id, signup_id, worker_pid FROM signups_welcomeemail")
    assert sent == [(job_id, posted["commit"]["body"]["signup_id"], worker.pid)]
    with dq.init_job_queue(engine=engine) as queue:
        job = queue.get_job(job_id)
        assert job is not None and job.output == {"sent_to": "ada@example.com"}


def test_worker_command_without_dataqueue_tables_names_the_migrate_command(
    fresh_database_url: str,
) -> None:
    result = _manage(fresh_database_url, "dataqueue_worker")
    assert result.returncode == 1
    assert "dataqueue migrate" in result.stderr


def test_worker_command_rejects_a_bad_handlers_reference(project_url: str) -> None:
    result = _manage(project_url, "dataqueue_worker", "--handlers", "signups.jobs:MISSING")
    assert result.returncode == 1
    assert "has no attribute 'MISSING'" in result.stderr


def test_worker_command_rate_limits_serves_metrics_and_logs_json(
    project_url: str, engine: sa.Engine
) -> None:
    with dq.init_job_queue(engine=engine) as queue:
        job_id = queue.add_job("send_welcome", {"signup_id": 999_999}, max_attempts=1)
    port = free_port()
    worker = _start_worker(
        project_url,
        "--poll-interval",
        "100",
        "--rate-limit",
        "send_welcome=5/1",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        "--log-format",
        "json",
    )
    try:
        _wait_for_status(worker, engine, job_id, "failed")
        metrics = fetch_metrics(port, lambda: worker.poll() is None)
    finally:
        _, stderr = _stop_worker(worker)
    assert worker.returncode == 0, stderr
    assert 'dataqueue_jobs_started_total{job_type="send_welcome"} 1.0' in metrics
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    raised = [r for r in records if r.get("action") == "handler_raised"]
    assert raised and raised[0]["job_id"] == job_id, stderr
    # The rate limit was applied: its start was logged for the window.
    starts = run_sql(engine, "SELECT job_type FROM dataqueue_rate_limit_starts")
    assert ("send_welcome",) in starts


def test_worker_command_refuses_a_bad_rate_limit(project_url: str) -> None:
    result = _manage(project_url, "dataqueue_worker", "--rate-limit", "send_welcome=fast")
    assert result.returncode != 0
    assert "--rate-limit" in result.stderr and "send_welcome=fast" in result.stderr


def test_django_conninfo_uses_the_connection_parameters() -> None:
    from dataqueue.contrib.django import django_conninfo
    from dataqueue.errors import ConfigurationError

    conninfo = django_conninfo(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "app",
            "USER": "app",
            "PASSWORD": "s3cret",
            "HOST": "db.internal",
            "PORT": 6543,
            "OPTIONS": {"sslmode": "require", "isolation_level": 1, "pool": True},
        }
    )
    assert set(conninfo.split()) == {
        "dbname=app",
        "user=app",
        "password=s3cret",
        "host=db.internal",
        "port=6543",
        "sslmode=require",
    }
    with pytest.raises(ConfigurationError, match="needs PostgreSQL"):
        django_conninfo({"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"})


# Runs inside ``manage.py shell -c``: the dashboard behind staff_member_required.
DASHBOARD_SCRIPT = f"""
import json
from django.contrib.auth.models import User
from django.test import Client
import dataqueue as dq
from dataqueue.contrib.django import queue_from_settings
job_id = queue_from_settings().add_job("send_welcome", {{"signup_id": 0}})
anonymous = Client().get(f"/admin/dataqueue/api/jobs/{{job_id}}")
anonymous_page = Client().get("/admin/dataqueue/")
User.objects.filter(username__in=["staff", "plain"]).delete()
User.objects.create_user("plain", "plain@example.com", "pw")
plain = Client()
plain.login(username="plain", password="pw")
not_staff = plain.get(f"/admin/dataqueue/api/jobs/{{job_id}}")
User.objects.create_superuser("staff", "staff@example.com", "pw")
client = Client()
client.login(username="staff", password="pw")
job = client.get(f"/admin/dataqueue/api/jobs/{{job_id}}")
page = client.get("/admin/dataqueue/")
# A host outside ALLOWED_HOSTS, without CommonMiddleware (which checks the host too):
# the dashboard view itself asks Django, which answers 400.
from django.conf import settings
from django.test import override_settings
common = "django.middleware.common.CommonMiddleware"
with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != common]):
    bare = Client()
    bare.force_login(User.objects.get(username="staff"))
    foreign_job = bare.get(f"/admin/dataqueue/api/jobs/{{job_id}}", HTTP_HOST="evil.example")
    foreign_cancel = bare.post(
        f"/admin/dataqueue/api/jobs/{{job_id}}/cancel",
        HTTP_HOST="evil.example:18081",
        HTTP_ORIGIN="http://evil.example:18081",
        HTTP_X_REQUESTED_WITH="dataqueue",
    )
    allowed_job = bare.get(f"/admin/dataqueue/api/jobs/{{job_id}}", HTTP_HOST="[::1]:8000")
after_foreign = queue_from_settings().get_job(job_id).status
forged = client.post(f"/admin/dataqueue/api/jobs/{{job_id}}/cancel")
cancel = client.post(
    f"/admin/dataqueue/api/jobs/{{job_id}}/cancel", HTTP_X_REQUESTED_WITH="dataqueue"
)
print("{MARKER}" + json.dumps({{
    "anonymous": [anonymous.status_code, anonymous.json()],
    "anonymous_page": [anonymous_page.status_code, anonymous_page.get("Location", "")],
    "not_staff": [not_staff.status_code, not_staff.json()],
    "job": [job.status_code, job.json()["job"]["id"] == job_id],
    "page": [page.status_code, page["Content-Type"]],
    "forged": forged.status_code,
    "foreign": [foreign_job.status_code, foreign_cancel.status_code, after_foreign],
    "foreign_body": foreign_job.content.decode("utf-8", "replace"),
    "allowed": allowed_job.status_code,
    "cancel": [cancel.status_code, cancel.json()["changed"]],
}}))
"""


def test_dashboard_is_mounted_for_staff_only(project_url: str) -> None:
    result = _manage(project_url, "shell", "-c", DASHBOARD_SCRIPT)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(MARKER))
    answers = json.loads(line[len(MARKER) :])
    # The API answers JSON; the page keeps staff_member_required's login redirect.
    assert answers["anonymous"] == [401, {"error": "Authentication required"}]
    assert answers["not_staff"] == [403, {"error": "Forbidden"}]
    status, location = answers["anonymous_page"]
    assert status == 302 and "/admin/login/" in location
    assert answers["job"] == [200, True]  # "testserver": in ALLOWED_HOSTS, not loopback
    assert answers["foreign"] == [400, 400, "pending"]
    assert "signup_id" not in answers["foreign_body"]  # Django's 400 page, not the job
    assert answers["allowed"] == 200
    assert answers["page"][0] == 200 and answers["page"][1].startswith("text/html")
    assert answers["forged"] == 403  # no X-Requested-With header: the CSRF guard refuses
    assert answers["cancel"] == [200, True]
