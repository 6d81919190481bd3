"""Calls enqueue_due_cron_jobs in a tight loop for the W-CRON-1 tests (another process).

``python -m tests.integration.cron_ticker URL SECONDS [KEY_PREFIX]``: a PostgreSQL URL,
or a Redis URL (``redis://``, ``rediss://``, ``unix://``) with the key prefix of the
test's queue. Exits 0 after SECONDS; an exception exits non-zero.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dataqueue as dq

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_ROOT = Path(__file__).resolve().parents[2]


def start(store: list[str], seconds: float, count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` ticker processes on ``store`` (``[URL]`` or ``[URL, KEY_PREFIX]``)
    that tick for ``seconds``."""
    url, *prefix = store
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.cron_ticker", url, str(seconds), *prefix],
            cwd=_ROOT,
            env={**os.environ, "PYTHONPATH": str(_ROOT)},
        )
        for _ in range(count)
    ]


def open_queue(url: str, key_prefix: str | None) -> dq.JobQueue:
    """The queue of ``url``: Redis (with ``key_prefix``) or PostgreSQL."""
    if url.startswith(_REDIS_SCHEMES):
        return dq.init_job_queue(redis_url=url, key_prefix=key_prefix or "dq:")
    return dq.init_job_queue(url)


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    key_prefix = sys.argv[3] if len(sys.argv) > 3 else None
    with open_queue(url, key_prefix) as queue:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            queue.enqueue_due_cron_jobs()


if __name__ == "__main__":
    main()
