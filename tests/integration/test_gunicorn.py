"""Real gunicorn with examples/gunicorn.conf.py: each forked worker serves requests and
processes jobs on its own connections; every job runs exactly once; SIGTERM drains."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gunicorn  # noqa: F401  (a dev dependency: fail loudly if missing)
import pytest

import dataqueue as dq
from dataqueue.migrate import upgrade
from tests.conftest import run_sql

ROOT = Path(__file__).resolve().parents[2]
SIGNUPS = 200
#: Output that means two processes talked over one PostgreSQL connection.
SHARED_SOCKET_SYMPTOMS = (
    "SSL",
    "bad record mac",
    "decryption failed",
    "server closed the connection unexpectedly",
    "lost synchronization with server",
    "unexpected response from server",
    "OperationalError",
    "InterfaceError",
    "Traceback",
    "[ERROR]",
    "[CRITICAL]",
)


@pytest.fixture
def app_database_url(fresh_database_url: str) -> str:
    upgrade(fresh_database_url)
    return fresh_database_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _post_signup(base: str, n: int) -> dict[str, Any]:
    # 20 ms per job: one worker (2 slots) would need 2 s for all of them, while the
    # other polls every 100 ms; instant jobs could all go to whichever polled first.
    data = urllib.parse.urlencode({"email": f"user{n}@example.com", "delay": "0.02"}).encode()
    with urllib.request.urlopen(f"{base}/signup", data=data, timeout=10) as response:
        assert response.status == 201
        result: dict[str, Any] = json.load(response)
        return result


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Gunicorn:
    """A gunicorn master in its own session, its log in a file."""

    def __init__(self, url: str, log_path: Path, *, preload: bool) -> None:
        import gunicorn.config

        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        settings = {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "examples/gunicorn.conf.py",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "info",
            *(["--preload"] if preload else []),
            # gunicorn >= 24's control socket lives in ~/.gunicorn; tests don't need it.
            *(["--no-control-socket"] if "control_socket_disable" in settings else []),
            "examples.flask_app.app:create_app()",
        ]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATAQUEUE_DATABASE_URL": url,
            "DATAQUEUE_POLL_INTERVAL": "100",
            "DATAQUEUE_CONCURRENCY": "2",
        }
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def worker_pids(self) -> set[int]:
        return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.log())}

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def start_gunicorn(app_database_url: str, tmp_path: Path) -> Iterator[Callable[[bool], Gunicorn]]:
    started: list[Gunicorn] = []

    def start(preload: bool) -> Gunicorn:
        server = Gunicorn(app_database_url, tmp_path / "gunicorn.log", preload=preload)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_workers_process_every_job_exactly_once(
    start_gunicorn: Callable[[bool], Gunicorn], app_database_url: str, preload: bool
) -> None:
    server = start_gunicorn(preload)
    engine = dq.create_engine(app_database_url, pool_size=2)
    try:
        _wait_until(
            lambda: (
                server.process.poll() is None
                and _healthy(server.base)
                and server.log().count("dataqueue processor") >= 2
            ),
            20,
            f"gunicorn to boot two workers:\n{server.log()}",
        )

        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda n: _post_signup(server.base, n), range(SIGNUPS)))
        except (urllib.error.URLError, OSError) as exc:
            raise AssertionError(f"POST /signup failed ({exc}):\n{server.log()}") from exc
        job_ids = {result["job_id"] for result in results}
        assert len(job_ids) == SIGNUPS

        def all_completed() -> bool:
            rows = run_sql(engine, "SELECT count(*) FROM job_queue WHERE status = 'completed'")
            return bool(rows[0][0] == SIGNUPS)

        _wait_until(all_completed, 20, "200 completed jobs")
        count, distinct = run_sql(
            engine, "SELECT count(*), count(DISTINCT job_id) FROM welcome_emails"
        )[0]
        assert count == distinct == SIGNUPS
        sent_ids = {row[0] for row in run_sql(engine, "SELECT job_id FROM welcome_emails")}
        assert sent_ids == job_ids
        worker_pids = server.worker_pids()
        assert len(worker_pids) == 2
        processing_pids = {
            row[0] for row in run_sql(engine, "SELECT DISTINCT worker_pid FROM welcome_emails")
        }
        assert processing_pids == worker_pids, "both gunicorn workers should have run jobs"
        assert server.process.pid not in processing_pids

        # Slow jobs are running when gunicorn is told to stop: the workers drain them.
        with dq.init_job_queue(engine=engine) as queue:
            slow = queue.add_jobs(
                [
                    {
                        "job_type": "send_welcome",
                        "payload": {"email": f"slow{n}@example.com", "delay": 1.5},
                    }
                    for n in range(4)
                ]
            )

        def running() -> set[int]:
            rows = run_sql(
                engine,
                "SELECT id FROM job_queue WHERE id = ANY(:ids) AND status = 'processing'",
                ids=slow,
            )
            return {row[0] for row in rows}

        _wait_until(lambda: len(running()) >= 2, 10, "slow jobs to start")
        running_at_sigterm = running()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=25) == 0, server.log()

        rows = run_sql(
            engine,
            "SELECT j.id, j.status, j.attempts, e.job_id IS NOT NULL FROM job_queue AS j "
            "LEFT JOIN welcome_emails AS e ON e.job_id = j.id WHERE j.id = ANY(:ids)",
            ids=slow,
        )
        # Jobs whose handler ran were drained; jobs claimed ahead that never started
        # were given back with their attempt restored. Nothing is left processing.
        for _, status, attempts, sent in rows:
            assert (status, attempts, sent) in (("completed", 1, True), ("pending", 0, False)), rows
        assert any(status == "completed" for _, status, _, _ in rows), rows
        assert running_at_sigterm
        log = server.log()
        assert log.count("dataqueue processor drained") == 2, log
        for symptom in SHARED_SOCKET_SYMPTOMS:
            assert symptom not in log, f"{symptom!r} in gunicorn's output:\n{log}"
    finally:
        engine.dispose()
