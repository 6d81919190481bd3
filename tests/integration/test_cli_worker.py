"""`dataqueue worker`: processes jobs, drains on SIGTERM, fails clearly on bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql, start_cli

ROOT = Path(__file__).resolve().parents[2]


def _worker(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return start_cli("worker", *args, env=env)


def test_worker_processes_jobs_and_drains_on_sigterm(
    pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    ids = pg_queue.add_jobs([{"job_type": "greet", "payload": {"name": f"n{i}"}} for i in range(5)])
    process = _worker(
        "tests.integration.cli_handlers:make_handlers",
        "--database-url",
        database_url,
        "--poll-interval",
        "50",
        "--concurrency",
        "2",
        "--verbose",
    )
    deadline = time.monotonic() + 30
    while run_sql(engine, "SELECT count(*) FROM job_queue WHERE status='completed'")[0][0] < 5:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "SIGTERM received" in stderr and "stopped" in stderr
    job = pg_queue.get_job(ids[0])
    assert job is not None and job.output == "hello n0"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module:HANDLERS", "cannot import module 'no_such_module'"),
        ("tests.integration.cli_handlers:MISSING", "has no attribute 'MISSING'"),
        ("tests.integration.cli_handlers:NOT_A_MAPPING", "must be a mapping"),
        ("tests.integration.cli_handlers", "MODULE:NAME"),
    ],
)
def test_bad_handler_reference_exits_2(database_url: str, reference: str, message: str) -> None:
    process = _worker(reference, "--database-url", database_url)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2 and message in stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--batch-size", "ten"], {}),
        (["--concurrency", "0"], {}),
        (["--unknown-flag"], {}),
        ([], {"DATAQUEUE_CONCURRENCY": "many"}),
    ],
)
def test_bad_numbers_and_flags_exit_2(
    database_url: str, args: list[str], env: dict[str, str]
) -> None:
    process = _worker(
        "tests.integration.cli_handlers:HANDLERS", "--database-url", database_url, *args, env=env
    )
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2, stderr
    assert "usage" in stderr or "many" in stderr


def test_missing_schema_exits_1_naming_the_migrate_command(fresh_database_url: str) -> None:
    process = _worker(
        "tests.integration.cli_handlers:HANDLERS", "--database-url", fresh_database_url
    )
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1 and "dataqueue migrate" in stderr


def test_worker_help_lists_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dataqueue", "worker", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    for option in (
        "--job-type",
        "--batch-size",
        "--concurrency",
        "--group-concurrency",
        "--poll-interval",
        "--no-supervisor",
        "--supervisor-interval",
    ):
        assert option in result.stdout


def test_demo_runs_on_an_embedded_postgres_without_configuration() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATAQUEUE_DATABASE_URL", "PG_DATAQUEUE_DATABASE")
    }
    result = subprocess.run(
        [sys.executable, "-m", "dataqueue", "demo", "--no-dashboard"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "on an embedded PostgreSQL" in result.stdout
    assert result.stdout.count("completed  attempts") == 12
    assert "flaky_import  completed  attempts 2/3" in result.stdout


def test_demo_uses_a_configured_database(fresh_database_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataqueue",
            "demo",
            "--no-dashboard",
            "--database-url",
            fresh_database_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "on your database" in result.stdout and "events of #" in result.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dashboard_command_serves_the_api(pg_queue: dq.JobQueue, database_url: str) -> None:
    import json
    import urllib.request

    job_id = pg_queue.add_job("greet", {"name": "ada"})
    port = _free_port()
    process = start_cli(
        "dashboard",
        "tests.integration.cli_handlers:HANDLERS",
        "--database-url",
        database_url,
        "--port",
        str(port),
        "--base-path",
        "/admin/dataqueue",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/admin/dataqueue/api/jobs/{job_id}"
                ) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert body["job"]["id"] == job_id and body["job"]["jobType"] == "greet"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_dashboard_command_rejects_a_bad_handler_reference(database_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataqueue",
            "dashboard",
            "nope:HANDLERS",
            "--database-url",
            database_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "cannot import module 'nope'" in result.stderr


def test_worker_imports_handlers_from_the_current_directory(
    pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """Like gunicorn and celery: `dataqueue worker jobs:HANDLERS` finds ./jobs.py."""
    (tmp_path / "localjobs.py").write_text(
        "def shout(payload):\n    return payload['text'].upper()\n\nHANDLERS = {'shout': shout}\n"
    )
    job_id = pg_queue.add_job("shout", {"text": "hi"})
    # The console script, not `python -m` (which puts the current directory on the path).
    script = str(Path(sys.executable).parent / "dataqueue")
    process = subprocess.Popen(
        [script, "worker", "localjobs:HANDLERS", "--poll-interval", "50"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DATAQUEUE_DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while (job := pg_queue.get_job(job_id)) is not None and job.status != "completed":
        assert time.monotonic() < deadline and process.poll() is None, process.stderr
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert job is not None and job.output == "HI"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_demo_leaves_nothing_behind_when_stopped_by_a_signal(sig: int) -> None:
    # Its embedded PostgreSQL stops and its data folder is deleted (issue 13 item 1).
    import socket
    import tempfile

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="dq-demo-tmp-") as tmp:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATAQUEUE_DATABASE_URL", "PG_DATAQUEUE_DATABASE")
        }
        env["TMPDIR"] = tmp
        process = subprocess.Popen(
            [sys.executable, "-m", "dataqueue", "demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("dashboard on http://"):
                break
        assert any(line.startswith("dashboard on") for line in lines), "".join(lines)
        assert [p.name for p in Path(tmp).iterdir() if p.name.startswith("dataqueue-pg-")]
        process.send_signal(sig)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, "".join(lines) + rest
        # The server's folder is gone. What may stay is pgserver's own lock file in the
        # user's runtime folder (shared by every pgserver; without XDG_RUNTIME_DIR it is
        # made under TMPDIR): empty, not data.
        left = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*"))
        assert [name for name in left if not name.startswith("runtime-")] == [], left
        assert sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) == 0, left
        ps = subprocess.run(["ps", "-eo", "args"], check=True, capture_output=True, text=True)
        running = ps.stdout
        assert tmp not in running  # and no postgres process uses it any more
