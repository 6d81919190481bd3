"""gunicorn settings for the Flask example: every worker process also runs a processor.

    DATAQUEUE_DATABASE_URL=postgresql://app:secret@localhost/app \\
        gunicorn -c examples/gunicorn.conf.py -w 4 'examples.flask_app.app:create_app()'

Each worker serves requests and, on background threads, processes ``send_welcome`` jobs.
``post_fork`` starts the worker's processor, ``worker_exit`` drains it (running jobs
finish and are stored) when gunicorn stops the worker (SIGTERM, SIGHUP reload,
``max_requests``). Sockets are never shared between processes: the queue notices the
fork by itself, and ``reset_after_fork()`` below makes that explicit; it matters with
``--preload``, where the master process builds the app (and opens connections) before
forking.

Environment: ``DATAQUEUE_CONCURRENCY`` (handler threads per worker, default 2),
``DATAQUEUE_POLL_INTERVAL`` (ms, default 1000).
"""

from __future__ import annotations

import os
from typing import Any

wsgi_app = "examples.flask_app.app:create_app()"
# gunicorn SIGKILLs workers still running after this many seconds; the drain gets
# slightly less, so that running jobs are stored before that.
graceful_timeout = 30


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker process: start its processor."""
    from examples.flask_app.database import get_queue
    from examples.flask_app.jobs import HANDLERS

    queue = get_queue()
    queue.reset_after_fork()  # drop connections inherited from the master, if any
    processor = queue.create_processor(
        HANDLERS,
        job_type=sorted(HANDLERS),  # leave other services' job types alone
        concurrency=int(os.environ.get("DATAQUEUE_CONCURRENCY", "2")),
        poll_interval=float(os.environ.get("DATAQUEUE_POLL_INTERVAL", "1000")),
    )
    processor.start_in_background()
    worker.dataqueue_processor = processor
    server.log.info("worker %s: dataqueue processor %s started", worker.pid, processor.worker_id)


def worker_exit(server: Any, worker: Any) -> None:
    """In the exiting worker process: stop claiming and wait for running jobs."""
    processor = getattr(worker, "dataqueue_processor", None)
    if processor is None:
        return
    drain_ms = max(1.0, float(server.cfg.graceful_timeout) - 2.0) * 1000
    left = processor.stop_and_drain(drain_ms)
    if left:  # reclaimed by other workers once this process stops heartbeating
        server.log.warning("worker %s: jobs still running after the drain: %s", worker.pid, left)
    server.log.info("worker %s: dataqueue processor drained", worker.pid)
