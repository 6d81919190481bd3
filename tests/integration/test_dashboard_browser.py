"""The dashboard in a real headless Chromium (playwright-python driving Debian's chromium).

Needs the ``chromium`` binary (``apt-get install -y chromium``; or set
``DATAQUEUE_TEST_CHROMIUM`` to a Chrome/Chromium executable) and ``playwright`` from
PyPI. Playwright's own browser download is never used. Without either, every test here
is skipped with a reason saying what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import sqlalchemy as sa

# playwright-python is a dev dependency (its browser download is never used).
from playwright import sync_api

import dataqueue as dq
from dataqueue.dashboard import create_dashboard
from tests.conftest import run_sql

BASE = "/admin/dataqueue"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
XSS_TYPE = "<img src=x onerror=alert(1)>"
XSS_PAYLOAD = {"x": "<script>alert(1)</script>"}
JOB_ROWS = "table.dq-jobs tbody tr"


def _chromium() -> str | None:
    explicit = os.environ.get("DATAQUEUE_TEST_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="BROWSER TESTS SKIPPED: no Chromium binary found "
    "(apt-get install -y chromium, or set DATAQUEUE_TEST_CHROMIUM)",
)


def _fail(payload: Any) -> None:
    raise RuntimeError("smtp server unreachable")


def _report(payload: Any, signal: Any, ctx: Any) -> dict[str, Any]:
    ctx.set_progress(60)
    return {"rows": 42}


HANDLERS: dict[str, Callable[..., Any]] = {
    "email": lambda payload: {"sent": True},
    "report": _report,
    "webhook": _fail,
}


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu"]
        )
        yield instance
        instance.close()


@pytest.fixture
def base_url(pg_queue: dq.JobQueue) -> Iterator[str]:
    """The dashboard served by wsgiref on a free local port, in a named thread."""
    app = create_dashboard(pg_queue, HANDLERS, base_path=BASE)
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, name="dataqueue-dashboard-test-server", daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}{BASE}/"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    """A fresh page that records console errors and fails the test on any dialog.

    It needs ``base_url`` so that it closes before the server stops: an auto-refresh
    request still in flight would otherwise fail and count as a console error.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(5000)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    yield tab
    context.close()
    assert problems == []


def _row(page: Any, job_id: int) -> Any:
    return page.locator(f'tr[data-job-id="{job_id}"]')


def _status(queue: dq.JobQueue, job_id: int) -> str:
    job = queue.get_job(job_id)
    assert job is not None
    return str(job.status)


def _seed(queue: dq.JobQueue, engine: sa.Engine) -> dict[str, int]:
    """A few jobs in every state the page shows differently."""
    ids = {
        "report": queue.add_job("report", {"month": "2024-05"}, tags=["monthly"]),
        "webhook": queue.add_job("webhook", {"url": "https://example.com/hook"}, max_attempts=1),
    }
    queue.create_processor(HANDLERS).start()
    ids["waiting"] = queue.add_job("approval", {"order": 17})
    run_sql(engine, "UPDATE job_queue SET status = 'waiting' WHERE id = :id", id=ids["waiting"])
    ids["cancelled"] = queue.add_job("email", {"to": "old@example.com"})
    queue.cancel_job(ids["cancelled"])
    ids["pending"] = queue.add_job("email", {"to": "ada@example.com"}, priority=5)
    return ids


def test_list_tabs_and_pagination(page: Any, base_url: str, pg_queue: dq.JobQueue) -> None:
    pg_queue.add_jobs([{"job_type": "email", "payload": {"n": i}} for i in range(27)])
    failed = pg_queue.add_job("webhook", {}, max_attempts=1)
    pg_queue.create_processor({"webhook": _fail}, job_type="webhook").start()
    page.goto(base_url)
    expect = sync_api.expect
    expect(page.locator("h1")).to_have_text("Jobs")
    expect(page.locator(JOB_ROWS)).to_have_count(25)
    expect(page.locator(".dq-page")).to_have_text("Page 1")
    expect(page.locator("#dq-prev")).to_be_disabled()
    page.click("#dq-next")
    expect(page.locator(".dq-page")).to_have_text("Page 2")
    expect(page.locator(JOB_ROWS)).to_have_count(3)
    expect(page.locator("#dq-next")).to_be_disabled()
    page.click('button[data-status="failed"]')
    expect(page.locator(".dq-page")).to_have_text("Page 1")
    expect(page.locator(JOB_ROWS)).to_have_count(1)
    expect(_row(page, failed)).to_contain_text("webhook")
    expect(_row(page, failed)).to_contain_text("1/1")
    page.click('button[data-status="waiting"]')
    expect(page.locator(".dq-empty")).to_have_text("No jobs found")


def test_cancel_pending_job_from_the_list(
    page: Any, base_url: str, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ids = _seed(pg_queue, engine)
    page.goto(base_url)
    row = _row(page, ids["pending"])
    sync_api.expect(row.locator('button[data-action="retry"]')).to_have_count(0)
    row.locator('button[data-action="cancel"]').click()
    sync_api.expect(page.locator(".dq-toast")).to_have_text(f"Job #{ids['pending']} cancelled")
    sync_api.expect(row).to_contain_text("cancelled")
    assert _status(pg_queue, ids["pending"]) == "cancelled"


def test_retry_offered_for_failed_but_not_cancelled_jobs(
    page: Any, base_url: str, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ids = _seed(pg_queue, engine)
    page.goto(base_url)
    cancelled = _row(page, ids["cancelled"])
    sync_api.expect(cancelled).to_be_visible()
    assert cancelled.locator("button").count() == 0
    sync_api.expect(_row(page, ids["waiting"]).locator('[data-action="cancel"]')).to_be_visible()
    _row(page, ids["webhook"]).locator('button[data-action="retry"]').click()
    sync_api.expect(page.locator(".dq-toast")).to_have_text(f"Job #{ids['webhook']} retried")
    assert _status(pg_queue, ids["webhook"]) == "pending"


def test_job_detail_shows_properties_output_and_events(
    page: Any, base_url: str, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ids = _seed(pg_queue, engine)
    page.goto(base_url)
    page.click(f'a[href="#/jobs/{ids["report"]}"]')
    expect = sync_api.expect
    expect(page.locator("h1")).to_contain_text(f"Job #{ids['report']}")
    expect(page.locator(".dq-props")).to_contain_text("report")
    expect(page.locator(".dq-props")).to_contain_text("monthly")
    expect(page.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "60")
    expect(page.locator('section[data-card="output"]')).to_contain_text('"rows": 42')
    expect(page.locator('section[data-card="payload"]')).to_contain_text('"month": "2024-05"')
    events = page.locator(".dq-event-type")
    expect(events).to_have_text(["completed", "processing", "added"])  # newest first
    page.click("text=← Back to Jobs")
    expect(page.locator("h1")).to_have_text("Jobs")


def test_failed_job_detail_shows_error_history_and_retries(
    page: Any, base_url: str, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ids = _seed(pg_queue, engine)
    page.goto(f"{base_url}#/jobs/{ids['webhook']}")
    expect = sync_api.expect
    expect(page.locator('section[data-card="errors"]')).to_contain_text("smtp server unreachable")
    expect(page.locator(".dq-props")).to_contain_text("handler_error")
    page.click('button[data-action="retry"]')
    expect(page.locator(".dq-event-type").first).to_have_text("retried")
    expect(page.locator("h1 .dq-badge")).to_have_text("pending")


def test_process_jobs_button_runs_a_batch(page: Any, base_url: str, pg_queue: dq.JobQueue) -> None:
    job_id = pg_queue.add_job("email", {"to": "x@example.com"})
    page.goto(base_url)
    sync_api.expect(_row(page, job_id)).to_contain_text("pending")
    page.click("#dq-process")
    sync_api.expect(page.locator(".dq-toast")).to_have_text("Processed 1 job(s)")
    sync_api.expect(_row(page, job_id)).to_contain_text("completed")
    assert _status(pg_queue, job_id) == "completed"


def test_auto_refresh_picks_up_new_jobs(page: Any, base_url: str, pg_queue: dq.JobQueue) -> None:
    page.goto(base_url)
    sync_api.expect(page.locator(".dq-empty")).to_have_text("No jobs found")
    page.check("#dq-auto-refresh")
    job_id = pg_queue.add_job("email", {})
    sync_api.expect(_row(page, job_id)).to_be_visible(timeout=8000)


def test_untrusted_job_data_renders_as_text(
    page: Any, base_url: str, pg_queue: dq.JobQueue
) -> None:
    job_id = pg_queue.add_job(XSS_TYPE, XSS_PAYLOAD)
    page.goto(base_url)
    sync_api.expect(_row(page, job_id).locator(".dq-type")).to_have_text(XSS_TYPE)
    assert page.locator("main img").count() == 0
    page.goto(f"{base_url}#/jobs/{job_id}")
    sync_api.expect(page.locator('section[data-card="payload"]')).to_contain_text(
        "<script>alert(1)</script>"
    )
    assert page.locator("main img, main script").count() == 0
    # The page fixture fails the test if any alert() dialog opened.


def test_overview_counts_link_to_filtered_lists(
    page: Any, base_url: str, pg_queue: dq.JobQueue, engine: sa.Engine
) -> None:
    ids = _seed(pg_queue, engine)
    page.goto(base_url)
    expect = sync_api.expect
    overview = page.locator("#dq-overview")
    failed = overview.locator('a[data-stat="failed"]')
    expect(failed.locator(".dq-stat-count")).to_have_text("1")
    expect(failed).to_have_class(re.compile("dq-stat-alert"))  # it failed within the window
    expect(overview.locator('a[data-stat="pending"] .dq-stat-count')).to_have_text("1")
    expect(overview.locator('a[data-stat="completed"] .dq-stat-count')).to_have_text("1")
    # The failing type comes first, marked.
    first = overview.locator("tr[data-job-type]").first
    expect(first).to_have_attribute("data-job-type", "webhook")
    expect(first).to_have_class(re.compile("dq-failing"))
    expect(first.locator(".dq-failing-badge")).to_have_text("failing")
    expect(overview.locator('tr[data-job-type="email"]')).not_to_have_class(
        re.compile("dq-failing")
    )
    failed.click()
    expect(page.locator(JOB_ROWS)).to_have_count(1)
    expect(_row(page, ids["webhook"])).to_be_visible()
    expect(page.locator('button[data-status="failed"]')).to_have_class(re.compile("dq-tab-active"))
    overview.locator('tr[data-job-type="email"] a.dq-type-link').click()
    expect(page.locator("#dq-type-filter")).to_contain_text("email")
    expect(page.locator(JOB_ROWS)).to_have_count(2)  # the cancelled and the pending one
    assert page.url.endswith("#/?type=email")
    page.click(".dq-filter-clear")
    expect(page.locator(JOB_ROWS)).to_have_count(5)


def test_overview_refreshes_with_the_list(page: Any, base_url: str, pg_queue: dq.JobQueue) -> None:
    page.goto(base_url)
    pending = page.locator('#dq-overview a[data-stat="pending"] .dq-stat-count')
    sync_api.expect(pending).to_have_text("0")
    job_id = pg_queue.add_job("email", {})
    page.click("#dq-refresh")
    sync_api.expect(pending).to_have_text("1")
    sync_api.expect(page.locator('#dq-overview tr[data-job-type="email"]')).to_be_visible()
    page.click("#dq-process")
    sync_api.expect(_row(page, job_id)).to_contain_text("completed")
    sync_api.expect(
        page.locator('#dq-overview a[data-stat="completed"] .dq-stat-count')
    ).to_have_text("1")


def test_untrusted_job_type_in_the_overview_renders_as_text(
    page: Any, base_url: str, pg_queue: dq.JobQueue
) -> None:
    pg_queue.add_job(XSS_TYPE, XSS_PAYLOAD)
    page.goto(base_url)
    link = page.locator("#dq-overview a.dq-type-link")
    sync_api.expect(link).to_have_text(XSS_TYPE)
    link.click()
    sync_api.expect(page.locator("#dq-type-filter")).to_contain_text(XSS_TYPE)
    sync_api.expect(page.locator(JOB_ROWS)).to_have_count(1)
    assert page.locator("main img, main script").count() == 0


def test_screenshot_for_the_docs(
    page: Any, base_url: str, pg_queue: dq.JobQueue, engine: sa.Engine, tmp_path: Path
) -> None:
    """Renders the list; ``DATAQUEUE_UPDATE_SCREENSHOT=1`` writes it to docs/dashboard.png."""
    _seed(pg_queue, engine)
    pg_queue.add_jobs(
        [
            {"job_type": "resize_image", "payload": {"id": 7}, "tags": ["media"]},
            {"job_type": "sync_crm", "payload": {"account": 12}, "priority": 10},
        ]
    )
    # Spread creation times out so that the Created column reads like a real queue.
    run_sql(
        engine,
        "UPDATE job_queue SET created_at = now() - "
        "((SELECT max(id) FROM job_queue) - id + 1) * interval '13 minutes'",
    )
    page.goto(base_url)
    sync_api.expect(page.locator(JOB_ROWS)).to_have_count(7)
    target = SCREENSHOT if os.environ.get("DATAQUEUE_UPDATE_SCREENSHOT") else tmp_path / "d.png"
    target.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
