"""The dashboard's WSGI app against a real PostgreSQL: routes, JSON, errors, CSRF, XSS, hosts."""

from __future__ import annotations

import html
import http.client
import io
import json
import logging
import re
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.cli import build_parser
from dataqueue.cli import main as cli_main
from dataqueue.dashboard import create_dashboard
from dataqueue.dashboard.hosts import serving_hosts
from dataqueue.dashboard.page import static_asset
from tests.conftest import run_sql, start_cli

ROOT = Path(__file__).resolve().parents[2]

BASE = "/admin/dataqueue"
POST_HEADERS = {"X-Requested-With": "dataqueue"}
XSS_TYPE = "<img src=x onerror=alert(1)>"
XSS_PAYLOAD = {"x": "<script>alert(1)</script>"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Result:
    """What a WSGI app answered."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = int(status.split(maxsplit=1)[0])
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Client:
    """A tiny WSGI client: builds an environ, calls the app, collects the response."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        script_name: str = "",
    ) -> Result:
        path, _, query = url.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "wsgi.input": io.BytesIO(b""),
        }
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        setup_testing_defaults(environ)
        captured: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
            captured["status"], captured["headers"] = status, response_headers

        body = b"".join(self.app(environ, start_response))
        return Result(captured["status"], captured["headers"], body)

    def get(self, url: str, **kwargs: Any) -> Result:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, headers: Mapping[str, str] | None = None, **kwargs: Any) -> Result:
        return self.request("POST", url, {**POST_HEADERS, **(headers or {})}, **kwargs)


def _boom(payload: Any) -> None:
    raise RuntimeError("handler failed")


HANDLERS: dict[str, Callable[..., Any]] = {
    "email": lambda payload: {"sent": payload},
    "boom": _boom,
}


@pytest.fixture
def client(pg_queue: dq.JobQueue) -> Client:
    return Client(create_dashboard(pg_queue, HANDLERS, base_path=BASE))


def _set_status(engine: sa.Engine, job_id: int, status: str) -> None:
    run_sql(engine, "UPDATE job_queue SET status = :s WHERE id = :id", s=status, id=job_id)


def _failed_job(queue: dq.JobQueue, client: Client) -> int:
    job_id = queue.add_job("boom", {}, max_attempts=1)
    assert client.post(f"{BASE}/api/process").json() == {"processed": 1}
    job = queue.get_job(job_id)
    assert job is not None and job.status == "failed"
    return job_id


# -- the page -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BASE, BASE + "/", BASE + "//"])
def test_page_is_served_at_the_base_path(client: Client, path: str) -> None:
    result = client.get(path)
    assert result.status == 200
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>dataqueue Dashboard</title>" in result.text
    assert f'src="{BASE}/static/dashboard.js?v=' in result.text


@pytest.mark.parametrize("path", [BASE + "/jobs/1", BASE + "//x//y/", BASE + "/favicon.ico"])
def test_unknown_paths_are_404_not_the_page(client: Client, path: str) -> None:
    # Upstream served the page for any path; the page routes with #/..., so any other
    # path is a mistake (issue 13 item 8).
    result = client.get(path)
    assert result.status == 404
    assert "dataqueue Dashboard" not in result.text


def test_page_forbids_foreign_scripts_and_framing(client: Client) -> None:
    headers = client.get(BASE).headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_page_injects_base_path_as_escaped_json(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue, base_path='/a"><script>x</script>'))
    page = app.get('/a"><script>x</script>/').text
    assert "<script>x" not in page
    match = re.search(r'data-config="([^"]*)"', page)
    assert match is not None
    config = json.loads(html.unescape(match.group(1)))
    assert config == {"basePath": '/a"><script>x</script>', "canProcess": False}


def test_static_files_are_served_with_their_types(client: Client) -> None:
    js = client.get(f"{BASE}/static/dashboard.js")
    css = client.get(f"{BASE}/static/dashboard.css")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert b"X-Requested-With" in js.body
    assert client.get(f"{BASE}/static/../app.py").status == 404
    assert client.get(f"{BASE}/static/nope.js").status == 404


def test_head_returns_headers_without_body(client: Client) -> None:
    result = client.request("HEAD", f"{BASE}/api/jobs")
    assert result.status == 200 and result.body == b""
    assert int(result.headers["content-length"]) > 0


# -- GET api/jobs ---------------------------------------------------------------------


def test_list_returns_camel_case_jobs_with_iso_dates(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {"to": "a@example.com"}, tags=["t"], priority=3)
    result = client.get(f"{BASE}/api/jobs")
    assert result.status == 200
    assert result.headers["cache-control"] == "no-store"
    body = result.json()
    assert body["hasMore"] is False
    [job] = body["jobs"]
    assert job["id"] == job_id
    assert job["jobType"] == "email"
    assert job["payload"] == {"to": "a@example.com"}
    assert job["status"] == "pending"
    assert job["maxAttempts"] == 3 and job["priority"] == 3 and job["tags"] == ["t"]
    assert ISO.match(job["createdAt"]) and ISO.match(job["runAt"])
    assert job["completedAt"] is None and job["output"] is None
    assert job["canCancel"] is True and job["canRetry"] is False
    assert not any("_" in key for key in job)


def test_list_pages_newest_first_with_has_more(client: Client, pg_queue: dq.JobQueue) -> None:
    ids = pg_queue.add_jobs([{"job_type": "email", "payload": i} for i in range(30)])
    first = client.get(f"{BASE}/api/jobs").json()
    second = client.get(f"{BASE}/api/jobs?limit=25&offset=25").json()
    assert [j["id"] for j in first["jobs"]] == list(reversed(ids))[:25]
    assert first["hasMore"] is True
    assert [j["id"] for j in second["jobs"]] == list(reversed(ids))[25:]
    assert second["hasMore"] is False
    exact = client.get(f"{BASE}/api/jobs?limit=30").json()
    assert len(exact["jobs"]) == 30 and exact["hasMore"] is False


def test_list_filters_by_status(client: Client, pg_queue: dq.JobQueue, engine: sa.Engine) -> None:
    pending = pg_queue.add_job("email", {})
    waiting = pg_queue.add_job("email", {})
    _set_status(engine, waiting, "waiting")
    body = client.get(f"{BASE}/api/jobs?status=waiting").json()
    assert [j["id"] for j in body["jobs"]] == [waiting]
    assert [j["id"] for j in client.get(f"{BASE}/api/jobs?status=pending").json()["jobs"]] == [
        pending
    ]
    assert client.get(f"{BASE}/api/jobs?status=").json()["jobs"][0]["id"] == waiting


def test_list_filters_by_job_type_unless_status_is_given(
    client: Client, pg_queue: dq.JobQueue
) -> None:
    email = pg_queue.add_job("email", {})
    other = pg_queue.add_job("other", {})
    by_type = client.get(f"{BASE}/api/jobs?jobType=email").json()["jobs"]
    assert [j["id"] for j in by_type] == [email]
    both = client.get(f"{BASE}/api/jobs?jobType=email&status=pending").json()["jobs"]
    assert [j["id"] for j in both] == [other, email]


@pytest.mark.parametrize(
    "query",
    [
        "limit=abc",
        "limit=-1",
        "limit=0",
        "limit=501",
        "limit=1.5",
        "limit=%EF%BC%95",  # a full-width digit: not ASCII
        "offset=-1",
        "offset=x",
        "offset=99999999999999999999",
        "jobType=a%00b",
    ],
)
def test_list_rejects_malformed_parameters_with_400(client: Client, query: str) -> None:
    # W-API-5: upstream parsed these without checking and answered 500.
    result = client.get(f"{BASE}/api/jobs?{query}")
    assert result.status == 400
    name = query.split("=", maxsplit=1)[0]
    assert name in result.json()["error"]


def test_list_rejects_unknown_status_with_400(client: Client) -> None:
    result = client.get(f"{BASE}/api/jobs?status=done")
    assert result.status == 400
    assert "Unknown status" in result.json()["error"]


# -- GET api/jobs/<id> and events -----------------------------------------------------


def test_get_job_returns_what_use_job_reads(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {"n": 1})
    client.post(f"{BASE}/api/process")
    result = client.get(f"{BASE}/api/jobs/{job_id}")
    assert result.status == 200
    job = result.json()["job"]
    assert job["id"] == job_id and job["status"] == "completed"
    assert job["output"] == {"sent": {"n": 1}}
    assert "progress" in job and job["progress"] is None
    assert ISO.match(job["completedAt"])
    assert client.get(f"{BASE}/api/jobs/{job_id}/").status == 200


def test_get_unknown_job_is_404(client: Client) -> None:
    result = client.get(f"{BASE}/api/jobs/424242")
    assert result.status == 404
    assert result.json() == {"error": "Job not found"}


def test_largest_job_id_is_looked_up_not_refused(client: Client) -> None:
    largest = 2**31 - 1  # job ids are PostgreSQL integers
    assert client.get(f"{BASE}/api/jobs/{largest}").status == 404
    assert client.get(f"{BASE}/api/jobs/{largest}/events").json() == {"events": []}
    assert client.post(f"{BASE}/api/jobs/{largest}/cancel").status == 404


@pytest.mark.parametrize(
    "segment", ["abc", "0", "-1", "1.5", "1e3", "%EF%BC%95", str(2**31), "99999999999999999999"]
)
@pytest.mark.parametrize("suffix", ["", "/events"])
def test_malformed_job_id_is_400(client: Client, segment: str, suffix: str) -> None:
    result = client.get(f"{BASE}/api/jobs/{segment}{suffix}")
    assert result.status == 400
    assert result.json() == {"error": "Invalid job ID"}


def test_events_are_camel_case_oldest_first(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {"n": 1})
    pg_queue.cancel_job(job_id)
    result = client.get(f"{BASE}/api/jobs/{job_id}/events")
    assert result.status == 200
    events = result.json()["events"]
    assert [e["eventType"] for e in events] == ["added", "cancelled"]
    first = events[0]
    assert set(first) == {"id", "jobId", "eventType", "createdAt", "metadata"}
    assert first["jobId"] == job_id and ISO.match(first["createdAt"])
    assert first["metadata"]["jobType"] == "email"


def test_events_of_unknown_job_are_empty(client: Client) -> None:
    assert client.get(f"{BASE}/api/jobs/424242/events").json() == {"events": []}


# -- actions --------------------------------------------------------------------------


def test_cancel_pending_job(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {})
    result = client.post(f"{BASE}/api/jobs/{job_id}/cancel")
    assert result.status == 200
    body = result.json()
    assert body["ok"] is True and body["changed"] is True
    assert body["job"]["status"] == "cancelled" and body["job"]["canCancel"] is False


def test_cancel_that_changes_nothing_says_so(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {})
    client.post(f"{BASE}/api/process")
    body = client.post(f"{BASE}/api/jobs/{job_id}/cancel").json()
    assert body["ok"] is True and body["changed"] is False
    assert body["job"]["status"] == "completed"


def test_retry_failed_job(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = _failed_job(pg_queue, client)
    listed = client.get(f"{BASE}/api/jobs/{job_id}").json()["job"]
    assert listed["canRetry"] is True and listed["canCancel"] is False
    body = client.post(f"{BASE}/api/jobs/{job_id}/retry").json()
    assert body["changed"] is True and body["job"]["status"] == "pending"
    events = client.get(f"{BASE}/api/jobs/{job_id}/events").json()["events"]
    assert events[-1]["eventType"] == "retried"


def test_retry_of_cancelled_job_is_not_offered_and_changes_nothing(
    client: Client, pg_queue: dq.JobQueue
) -> None:
    # W-API-5: upstream offered Retry on cancelled jobs and reported a success that wasn't.
    job_id = pg_queue.add_job("email", {})
    pg_queue.cancel_job(job_id)
    job = client.get(f"{BASE}/api/jobs/{job_id}").json()["job"]
    assert job["canRetry"] is False
    body = client.post(f"{BASE}/api/jobs/{job_id}/retry").json()
    assert body["ok"] is True and body["changed"] is False
    assert body["job"]["status"] == "cancelled"


@pytest.mark.parametrize(
    "case",
    [
        ("pending", True, False),
        ("waiting", True, False),
        ("processing", False, False),
        ("completed", False, False),
        ("failed", False, True),
        ("cancelled", False, False),
    ],
)
def test_actions_offered_per_status(
    client: Client, pg_queue: dq.JobQueue, engine: sa.Engine, case: tuple[str, bool, bool]
) -> None:
    status, can_cancel, can_retry = case
    job_id = pg_queue.add_job("email", {})
    _set_status(engine, job_id, status)
    [job] = client.get(f"{BASE}/api/jobs?status={status}").json()["jobs"]
    assert (job["canCancel"], job["canRetry"]) == (can_cancel, can_retry)


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_action_on_unknown_job_is_404(client: Client, action: str) -> None:
    result = client.post(f"{BASE}/api/jobs/424242/{action}")
    assert result.status == 404
    assert result.json() == {"ok": False, "error": "Job not found"}


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_action_on_malformed_id_is_400(client: Client, action: str) -> None:
    assert client.post(f"{BASE}/api/jobs/abc/{action}").status == 400


# -- POST api/process -----------------------------------------------------------------


def test_process_runs_due_jobs_with_the_handlers(client: Client, pg_queue: dq.JobQueue) -> None:
    ok = pg_queue.add_job("email", {"to": "x"})
    bad = pg_queue.add_job("boom", {}, max_attempts=1)
    result = client.post(f"{BASE}/api/process")
    assert result.status == 200 and result.json() == {"processed": 2}
    done, failed = pg_queue.get_job(ok), pg_queue.get_job(bad)
    assert done is not None and done.status == "completed" and done.output == {"sent": {"to": "x"}}
    assert done.locked_by is not None and re.fullmatch(r"dashboard-\d{13}", done.locked_by)
    assert failed is not None and failed.status == "failed"
    assert client.post(f"{BASE}/api/process").json() == {"processed": 0}


def test_process_applies_processor_options(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue, HANDLERS, processor_options={"batch_size": 1}))
    pg_queue.add_jobs([{"job_type": "email", "payload": i} for i in range(3)])
    assert app.post(f"{BASE}/api/process").json() == {"processed": 1}


def test_process_without_handlers_is_400(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue))
    pg_queue.add_job("email", {})
    result = app.post(f"{BASE}/api/process")
    assert result.status == 400
    assert "No handlers configured" in result.json()["error"]


# -- routing errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [f"{BASE}/api", f"{BASE}/api/nope", f"{BASE}/api/jobs/1/nope", f"{BASE}/api/jobs/1/events/x"],
)
def test_unknown_api_route_is_404(client: Client, path: str) -> None:
    result = client.get(path)
    assert result.status == 404
    assert result.json() == {"error": "Not found"}


def test_path_outside_base_is_404(client: Client) -> None:
    assert client.get("/elsewhere/api/jobs").status == 404
    assert client.get(BASE + "x/api/jobs").status == 404


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/process", "POST"),
        ("POST", "/api/jobs", "GET, HEAD"),
        ("DELETE", "/api/jobs/1", "GET, HEAD"),
        ("POST", "/api/jobs/1/events", "GET, HEAD"),
        ("GET", "/api/jobs/1/cancel", "POST"),
        ("PUT", "/api/jobs/1/retry", "POST"),
        ("OPTIONS", "/api/jobs/1/retry", "POST"),
        ("POST", "/", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(client: Client, method: str, path: str, allow: str) -> None:
    result = client.request(method, BASE + path, POST_HEADERS)
    assert result.status == 405
    assert result.headers["allow"] == allow
    assert result.json() == {"error": "Method not allowed"}
    assert "access-control-allow-origin" not in result.headers


def test_unexpected_error_is_logged_and_hidden(
    client: Client,
    pg_queue: dq.JobQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret connection details")

    monkeypatch.setattr(pg_queue, "get_all_jobs", broken)
    with caplog.at_level(logging.ERROR, logger="dataqueue.dashboard"):
        result = client.get(f"{BASE}/api/jobs")
    assert result.status == 500
    assert result.json() == {"error": "Internal server error"}
    assert "[dataqueue-dashboard] Error:" in caplog.text
    assert "secret connection details" in caplog.text


def test_every_api_answer_is_uncached_json(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {})
    answers = [
        client.get(f"{BASE}/api/jobs"),
        client.get(f"{BASE}/api/jobs?limit=x"),
        client.get(f"{BASE}/api/jobs/{job_id}"),
        client.get(f"{BASE}/api/jobs/9999"),
        client.get(f"{BASE}/api/jobs/{job_id}/events"),
        client.post(f"{BASE}/api/jobs/{job_id}/cancel"),
        client.post(f"{BASE}/api/jobs/{job_id}/retry", headers={"X-Requested-With": "x"}),
        client.post(f"{BASE}/api/process"),
        client.get(f"{BASE}/api/nope"),
        client.get(f"{BASE}/api/process"),
    ]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        assert isinstance(answer.json(), dict)


# -- mounting -------------------------------------------------------------------------


def test_root_base_path(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue, base_path="/"))
    job_id = pg_queue.add_job("email", {})
    assert app.get("/api/jobs").json()["jobs"][0]["id"] == job_id
    assert app.get("/").headers["content-type"].startswith("text/html")
    assert 'src="/static/dashboard.js' in app.get("/").text


def test_matches_script_name_plus_path_info(client: Client, pg_queue: dq.JobQueue) -> None:
    # Mounted by a dispatcher: SCRIPT_NAME holds the prefix, PATH_INFO the rest.
    job_id = pg_queue.add_job("email", {})
    result = client.get("/api/jobs", script_name=BASE)
    assert result.json()["jobs"][0]["id"] == job_id


@pytest.mark.parametrize("base_path", ["admin", "/a?b", "/a b", "/a#b", 5])
def test_bad_base_path_is_rejected(pg_queue: dq.JobQueue, base_path: Any) -> None:
    with pytest.raises(dq.ConfigurationError):
        create_dashboard(pg_queue, base_path=base_path)


def test_bad_handlers_or_options_fail_at_creation(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(TypeError):
        create_dashboard(pg_queue, ["email"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        create_dashboard(pg_queue, HANDLERS, processor_options={"nope": 1})
    with pytest.raises((TypeError, ValueError)):
        create_dashboard(pg_queue, HANDLERS, processor_options={"batch_size": 0})


# -- CSRF -----------------------------------------------------------------------------


@pytest.fixture
def pending_id(pg_queue: dq.JobQueue) -> int:
    return pg_queue.add_job("email", {})


def _cancel(client: Client, job_id: int, headers: dict[str, str]) -> Result:
    return client.request("POST", f"{BASE}/api/jobs/{job_id}/cancel", headers)


def test_post_without_marker_header_is_403(
    client: Client, pg_queue: dq.JobQueue, pending_id: int
) -> None:
    result = _cancel(client, pending_id, {})
    assert result.status == 403
    assert "X-Requested-With" in result.json()["error"]
    job = pg_queue.get_job(pending_id)
    assert job is not None and job.status == "pending"


def test_post_with_wrong_marker_value_is_403(client: Client, pending_id: int) -> None:
    assert _cancel(client, pending_id, {"X-Requested-With": "XMLHttpRequest"}).status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:8080"},  # same host, other port
        {"Referer": "https://evil.example/page"},
        {"Origin": "https://evil.example", "Referer": "http://127.0.0.1/admin"},
    ],
)
def test_cross_origin_post_is_403(
    client: Client, pg_queue: dq.JobQueue, pending_id: int, headers: dict[str, str]
) -> None:
    result = _cancel(client, pending_id, {**POST_HEADERS, **headers})
    assert result.status == 403
    assert "Cross-origin" in result.json()["error"]
    job = pg_queue.get_job(pending_id)
    assert job is not None and job.status == "pending"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1"},
        {"Origin": "http://127.0.0.1:80"},  # default port spelled out
        {"Origin": "http://127.0.0.1", "Host": "127.0.0.1:80"},
        {"Referer": f"http://127.0.0.1{BASE}/"},
        {},  # neither header: the marker header alone decides
    ],
)
def test_same_origin_post_is_allowed(
    client: Client, pending_id: int, headers: dict[str, str]
) -> None:
    result = _cancel(client, pending_id, {**POST_HEADERS, **headers})
    assert result.status == 200
    assert result.json()["changed"] is True


# -- XSS ------------------------------------------------------------------------------


def test_untrusted_job_data_never_reaches_the_html(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job(XSS_TYPE, XSS_PAYLOAD)
    # The API carries the data as JSON strings (never served as HTML) ...
    job = client.get(f"{BASE}/api/jobs/{job_id}").json()["job"]
    assert job["jobType"] == XSS_TYPE and job["payload"] == XSS_PAYLOAD
    # ... and no page the server renders contains any job data at all.
    for path in (BASE, f"{BASE}/", f"{BASE}/jobs/{job_id}", f"{BASE}/{XSS_TYPE}"):
        page = client.get(path).text
        assert "alert(1)" not in page
        assert "<img" not in page
        assert "onerror" not in page


def test_script_builds_the_dom_without_markup() -> None:
    asset = static_asset("dashboard.js")
    assert asset is not None
    script = asset[1].decode("utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new Function" not in script
    assert "textContent" in script or "createTextNode" in script
    # The page offers actions from the server's canCancel/canRetry flags only.
    assert "job.canCancel" in script and "job.canRetry" in script


# -- Host names (DNS rebinding) -------------------------------------------------------

FOREIGN = {"Host": "evil.example:18081"}
FOREIGN_POST = {**POST_HEADERS, **FOREIGN, "Origin": "http://evil.example:18081"}


def test_foreign_host_gets_400_text_for_the_page(client: Client) -> None:
    for path in (BASE, f"{BASE}/jobs/1", f"{BASE}/static/dashboard.js"):
        result = client.get(path, headers=FOREIGN)
        assert result.status == 400
        assert result.headers["content-type"] == "text/plain; charset=utf-8"
        assert "evil.example" in result.text and "<" not in result.text


def test_foreign_host_cannot_read_a_job(client: Client, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {"secret": "s3cret-payload"})
    result = client.get(f"{BASE}/api/jobs/{job_id}", headers=FOREIGN)
    assert result.status == 400
    assert "not allowed" in result.json()["error"]
    assert b"s3cret-payload" not in result.body
    assert client.get(f"{BASE}/api/jobs", headers=FOREIGN).status == 400


def test_foreign_host_cannot_cancel_even_with_matching_origin(
    client: Client, pg_queue: dq.JobQueue, pending_id: int
) -> None:
    result = client.request("POST", f"{BASE}/api/jobs/{pending_id}/cancel", FOREIGN_POST)
    assert result.status == 400
    assert "not allowed" in result.json()["error"]
    job = pg_queue.get_job(pending_id)
    assert job is not None and job.status == "pending"
    assert [e.event_type for e in pg_queue.get_job_events(pending_id)] == ["added"]


def test_foreign_host_cannot_retry_or_process(client: Client, pg_queue: dq.JobQueue) -> None:
    failed = _failed_job(pg_queue, client)
    pending = pg_queue.add_job("email", {})
    assert client.request("POST", f"{BASE}/api/jobs/{failed}/retry", FOREIGN_POST).status == 400
    assert client.request("POST", f"{BASE}/api/process", FOREIGN_POST).status == 400
    job, untouched = pg_queue.get_job(failed), pg_queue.get_job(pending)
    assert job is not None and job.status == "failed"
    assert untouched is not None and untouched.status == "pending" and untouched.attempts == 0


def test_request_without_host_header_is_refused(client: Client) -> None:
    # HTTP/1.0 clients may omit Host; setup_testing_defaults would add one, so remove it.
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": f"{BASE}/api/jobs"}
    setup_testing_defaults(environ)
    del environ["HTTP_HOST"]
    captured: dict[str, Any] = {}
    body = b"".join(client.app(environ, lambda status, headers: captured.update(status=status)))
    assert captured["status"].startswith("400")
    assert json.loads(body) == {"error": "Missing Host header"}


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:8080",
        "localhost:18081",
        "LOCALHOST",
        "localhost.",
        "[::1]",
        "[::1]:8080",
        "[0:0:0:0:0:0:0:1]:8080",
    ],
)
def test_default_answers_loopback_names_on_any_port(client: Client, host: str) -> None:
    assert client.get(f"{BASE}/api/jobs", headers={"Host": host}).status == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "localhost.evil.example",
        "127.0.0.2",
        "[::2]:8080",
        "::1",  # an IPv6 literal must be bracketed in a Host header
        "127.0.0.1@evil.example",
        "127.0.0.1:8080:80",
        "127.0.0.1:port",
        "[::1",
        "",
    ],
)
def test_default_refuses_other_and_malformed_hosts(client: Client, host: str) -> None:
    assert client.get(f"{BASE}/api/jobs", headers={"Host": host}).status == 400


def test_configured_hosts_replace_the_loopback_default(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue, HANDLERS, allowed_hosts=["Jobs.Example.com"]))
    job_id = pg_queue.add_job("email", {})
    assert app.get(f"{BASE}/api/jobs/{job_id}", headers={"Host": "jobs.example.com"}).status == 200
    assert app.get(BASE, headers={"Host": "JOBS.example.COM:8443"}).status == 200
    assert app.get(BASE, headers={"Host": "localhost"}).status == 400
    assert app.get(BASE, headers={"Host": "a.jobs.example.com"}).status == 400


def test_configured_host_keeps_the_csrf_origin_check(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue, allowed_hosts=["jobs.example.com"]))
    job_id = pg_queue.add_job("email", {})
    host = {"Host": "jobs.example.com"}
    forged = app.post(
        f"{BASE}/api/jobs/{job_id}/cancel", {**host, "Origin": "https://evil.example"}
    )
    assert forged.status == 403 and "Cross-origin" in forged.json()["error"]
    same = app.post(
        f"{BASE}/api/jobs/{job_id}/cancel", {**host, "Origin": "https://jobs.example.com"}
    )
    assert same.status == 200 and same.json()["changed"] is True


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("example.com", 200),
        ("a.example.com:8080", 200),
        ("a.b.EXAMPLE.com", 200),
        ("badexample.com", 400),
        ("example.com.evil.example", 400),
        ("example.org", 400),
    ],
)
def test_leading_dot_allows_a_domain_and_its_subdomains(
    pg_queue: dq.JobQueue, host: str, status: int
) -> None:
    app = Client(create_dashboard(pg_queue, allowed_hosts=[".example.com"]))
    assert app.get(f"{BASE}/api/jobs", headers={"Host": host}).status == status


def test_star_turns_the_check_off(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue, allowed_hosts=["*"]))
    assert app.get(f"{BASE}/api/jobs", headers={"Host": "anything.example"}).status == 200


def test_ipv6_entries_match_bracketed_hosts_in_any_spelling(pg_queue: dq.JobQueue) -> None:
    app = Client(create_dashboard(pg_queue, allowed_hosts=["2001:db8::1", "[fe80::2]"]))
    for host in ("[2001:db8::1]", "[2001:DB8:0:0::1]:8080", "[fe80::2]:80"):
        assert app.get(f"{BASE}/api/jobs", headers={"Host": host}).status == 200, host
    assert app.get(f"{BASE}/api/jobs", headers={"Host": "[2001:db8::2]"}).status == 400


@pytest.mark.parametrize(
    "hosts", [["localhost:8080"], ["*.example.com"], [""], ["."], ["a b"], ["[::g]"], [], [5]]
)
def test_malformed_allowed_hosts_are_rejected(pg_queue: dq.JobQueue, hosts: Any) -> None:
    with pytest.raises(dq.ConfigurationError):
        create_dashboard(pg_queue, allowed_hosts=hosts)


def test_a_single_string_is_not_taken_for_a_list_of_hosts(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(TypeError, match="list of host names"):
        create_dashboard(pg_queue, allowed_hosts="jobs.example.com")


def test_serving_hosts_add_the_bound_address_or_the_machine_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loopback = ["localhost", "127.0.0.1", "::1"]
    assert serving_hosts("127.0.0.1") == loopback
    assert serving_hosts("192.168.1.5") == [*loopback, "192.168.1.5"]
    assert serving_hosts("Jobs.Local", ["a.example", "A.EXAMPLE"]) == [
        *loopback,
        "jobs.local",
        "a.example",
    ]
    monkeypatch.setattr(socket, "gethostname", lambda: "Build-Box")
    assert serving_hosts("0.0.0.0") == [*loopback, "build-box"]
    assert serving_hosts("::") == [*loopback, "build-box"]
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert serving_hosts("0.0.0.0", ["*"]) == [*loopback, "*"]


# -- CLI: dataqueue dashboard / demo ---------------------------------------------------


@pytest.mark.parametrize("command", [["dashboard", "m:HANDLERS"], ["demo"]])
def test_cli_allowed_host_flag_is_repeatable_and_normalized(command: list[str]) -> None:
    args = build_parser().parse_args(
        [*command, "--allowed-host", "Jobs.Example.com", "--allowed-host", "[::1]"]
    )
    assert args.allowed_hosts == ["jobs.example.com", "::1"]
    assert build_parser().parse_args(command).allowed_hosts == []


def test_cli_rejects_an_allowed_host_with_a_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["dashboard", "m:HANDLERS", "--allowed-host", "jobs.example.com:80"]) == 2
    assert "has a port" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _http_get(port: int, path: str, host: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_cli_dashboard_answers_loopback_and_allowed_hosts_only(
    pg_queue: dq.JobQueue, database_url: str
) -> None:
    job_id = pg_queue.add_job("greet", {"name": "s3cret-payload"})
    port = _free_port()
    process = start_cli(
        "dashboard",
        "tests.integration.cli_handlers:HANDLERS",
        "--database-url",
        database_url,
        "--port",
        str(port),
        "--allowed-host",
        "jobs.example.com",
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline(), process.stdout.readline()]
        assert banner[0].startswith(f"dashboard on http://127.0.0.1:{port}/"), banner
        assert "localhost, 127.0.0.1, ::1, jobs.example.com" in banner[1]
        path = f"/api/jobs/{job_id}"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"jobs.example.com:{port}"):
            status, body = _http_get(port, path, host)
            assert status == 200 and b"s3cret-payload" in body, host
        status, body = _http_get(port, path, f"evil.example:{port}")
        assert status == 400 and b"s3cret-payload" not in body
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0


# -- Process jobs claims only the types it has handlers for ---------------------------


def test_process_leaves_jobs_without_a_handler_alone(pg_queue: dq.JobQueue) -> None:
    # Needs the processor to claim only its handlers' types when job_type is not given.
    app = Client(create_dashboard(pg_queue, {"a": lambda payload: "done"}))
    other = pg_queue.add_job("b", {})
    mine = pg_queue.add_job("a", {})
    assert app.post(f"{BASE}/api/process").json() == {"processed": 1}
    done, untouched = pg_queue.get_job(mine), pg_queue.get_job(other)
    assert done is not None and done.status == "completed"
    assert untouched is not None and untouched.status == "pending"
    assert untouched.attempts == 0 and untouched.error_history in (None, [])
