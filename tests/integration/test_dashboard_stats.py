"""The dashboard's ``GET api/stats`` (the overview's data), on every backend."""

from __future__ import annotations

from typing import Any

import pytest

import dataqueue as dq
from dataqueue.dashboard import create_dashboard
from dataqueue.dashboard.page import static_asset
from tests.integration.test_dashboard import BASE, HANDLERS, POST_HEADERS, Client

pytestmark = pytest.mark.all_backends


@pytest.fixture
def client(queue: dq.JobQueue) -> Client:
    return Client(create_dashboard(queue, HANDLERS, base_path=BASE))


def _by_type(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["jobType"]: entry for entry in stats["jobTypes"]}


def test_stats_counts_by_status_and_type_as_camel_case(client: Client, queue: dq.JobQueue) -> None:
    queue.add_jobs([{"job_type": "email", "payload": {"n": n}} for n in range(3)])
    queue.add_job("boom", {}, max_attempts=1)
    queue.add_job("boom", {}, max_attempts=2)
    assert client.post(f"{BASE}/api/process").json() == {"processed": 5}
    queue.add_job("email", {})
    response = client.get(f"{BASE}/api/stats")
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"
    stats = response.json()["stats"]
    assert (stats["pending"], stats["completed"], stats["failed"]) == (1, 3, 2)
    assert (stats["failedRetrying"], stats["failedFinal"]) == (1, 1)
    assert (stats["completedRecent"], stats["failedRecent"], stats["window"]) == (3, 2, 300.0)
    assert [t["jobType"] for t in stats["jobTypes"]] == ["boom", "email"]
    boom, email = _by_type(stats)["boom"], _by_type(stats)["email"]
    assert (boom["failedRetrying"], boom["failedFinal"], boom["failedRecent"]) == (1, 1, 2)
    assert (email["pending"], email["completed"], email["completedRecent"]) == (1, 3, 3)
    assert email["oldestPendingAge"] is not None and email["runTimeP50"] is not None
    assert boom["oldestPendingAge"] is None and boom["runTimeP95"] is None


def test_stats_window_parameter(client: Client, queue: dq.JobQueue) -> None:
    queue.add_job("email", {})
    client.post(f"{BASE}/api/process")
    stats = client.get(f"{BASE}/api/stats?window=60").json()["stats"]
    assert stats["window"] == 60.0 and stats["completedRecent"] == 1


@pytest.mark.parametrize("window", ["0", "3601", "-5", "1.5", "abc"])
def test_stats_rejects_a_bad_window_with_400(client: Client, window: str) -> None:
    response = client.get(f"{BASE}/api/stats?window={window}")
    assert response.status == 400
    assert "window" in response.json()["error"]


def test_stats_of_an_empty_queue(client: Client) -> None:
    stats = client.get(f"{BASE}/api/stats").json()["stats"]
    assert stats["jobTypes"] == [] and stats["oldestPendingAge"] is None
    assert stats["pending"] == stats["completed"] == 0


def test_stats_is_get_only(client: Client) -> None:
    response = client.post(f"{BASE}/api/stats", headers=POST_HEADERS)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_stats_answers_only_allowed_hosts(client: Client) -> None:
    response = client.get(f"{BASE}/api/stats", headers={"Host": "evil.example"})
    assert response.status == 400


def test_page_script_loads_the_overview_from_the_stats_route() -> None:
    asset = static_asset("dashboard.js")
    assert asset is not None
    script = asset[1].decode("utf-8")
    assert '"/api/stats?window="' in script
    # Job types are untrusted text: links are built with encodeURIComponent.
    assert "encodeURIComponent(jobType)" in script
