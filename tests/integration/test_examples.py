"""The examples run as written (smoke tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
