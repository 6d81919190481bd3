"""Calls enqueue_due_cron_jobs in a tight loop for the W-CRON-1 test (a second process)."""

from __future__ import annotations

import sys
import time

import dataqueue as dq


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    with dq.init_job_queue(url) as queue:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            queue.enqueue_due_cron_jobs()


if __name__ == "__main__":
    main()
