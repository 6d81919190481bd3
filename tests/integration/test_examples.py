"""The examples run as written (smoke tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

import dataqueue as dq
from tests.conftest import run_sql

ROOT = Path(__file__).resolve().parents[2]


def _run_example(name: str, env_overrides: dict[str, str | None]) -> str:
    env = dict(os.environ)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart_runs_against_a_configured_database(fresh_database_url: str) -> None:
    out = _run_example("quickstart.py", {"DATAQUEUE_DATABASE_URL": fresh_database_url})
    assert "on your database" in out
    assert "events of #4: added, edited" in out
    assert "rolled-back transaction exists: False" in out


def test_quickstart_runs_on_embedded_postgres_without_configuration() -> None:
    out = _run_example(
        "quickstart.py", {"DATAQUEUE_DATABASE_URL": None, "PG_DATAQUEUE_DATABASE": None}
    )
    assert "on an embedded PostgreSQL" in out
    assert out.rstrip().endswith("done")


def test_worker_example_drains_on_sigterm(
    pg_queue: dq.JobQueue, engine: sa.Engine, database_url: str
) -> None:
    job_ids = pg_queue.add_jobs(
        [{"job_type": "send_email", "payload": {"to": f"u{i}@x", "seconds": 1.0}} for i in range(4)]
    )
    env = {**os.environ, "DATAQUEUE_DATABASE_URL": database_url}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "worker.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    # Wait until all four handlers have started (progress 10 is written by the handler):
    # claimed-but-unstarted jobs are given back on SIGTERM, which is not what this tests.
    started = "SELECT count(*) FROM job_queue WHERE status = 'processing' AND progress >= 10"
    while run_sql(engine, started)[0][0] < 4:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "draining" in output and "drained; bye" in output
    jobs = [pg_queue.get_job(job_id) for job_id in job_ids]
    assert all(job is not None and job.status == "completed" for job in jobs)
    assert jobs[0] is not None and jobs[0].output == {"sent_to": "u0@x"}


def test_onboarding_waits_example_runs(fresh_database_url: str) -> None:
    out = _run_example("onboarding_waits.py", {"DATAQUEUE_DATABASE_URL": fresh_database_url})
    assert "3. approved: completed" in out and "attempts 1" in out
    assert "side effects ran once each: ['account', 'welcome']" in out


def test_cron_report_example_runs(fresh_database_url: str) -> None:
    out = _run_example("cron_report.py", {"DATAQUEUE_DATABASE_URL": fresh_database_url})
    assert "'report': 'sales'" in out and "'rows': 42" in out
    assert "schedules left: 0" in out
