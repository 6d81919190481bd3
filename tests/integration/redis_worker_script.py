"""A worker process for the Redis multi-process tests (run as a script).

    python redis_worker_script.py REDIS_URL PREFIX SECONDS [GROUP_LIMIT]

Runs one processor for ``SECONDS`` (or until ``P test:stop`` exists) whose handler
``t`` appends the job id to ``P test:runs`` and, for grouped jobs, counts the jobs of
the group running at once in ``P test:active:<group>`` and records every count in
``P test:seen:<group>``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import redis

import dataqueue as dq


def main() -> None:
    url, prefix, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    group_limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
    client = redis.Redis.from_url(url)
    queue = dq.init_job_queue(backend="redis", redis_client=client, key_prefix=prefix)

    def handler(payload: Any, signal: Any, ctx: dq.JobContext) -> None:
        group = payload.get("group") if isinstance(payload, dict) else None
        if group:
            running = client.incr(f"{prefix}test:active:{group}")
            client.rpush(f"{prefix}test:seen:{group}", running)
            time.sleep(0.01)
            client.decr(f"{prefix}test:active:{group}")
        client.rpush(f"{prefix}test:runs", ctx.job_id)

    processor = queue.create_processor(
        {"t": handler},
        batch_size=10,
        concurrency=4,
        poll_interval=50,
        group_concurrency=group_limit,
    )
    processor.start_in_background()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not client.exists(f"{prefix}test:stop"):
        time.sleep(0.05)
    processor.stop_and_drain(30_000)
    queue.close()
    client.close()


if __name__ == "__main__":
    main()
