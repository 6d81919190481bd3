"""A long-running worker: process jobs until SIGTERM/SIGINT, then drain and exit.

    DATAQUEUE_DATABASE_URL=postgresql://... python examples/worker.py

The first signal stops claiming and waits (up to 30 s) for running jobs to finish and
be stored, so no job is left in ``processing``; a second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import dataqueue as dq

logger = logging.getLogger("worker")


def send_email(
    payload: dict[str, Any], signal: dq.AbortSignal, ctx: dq.JobContext
) -> dict[str, str]:
    ctx.set_progress(10)
    # A real handler would call the mail API here; signal.wait() is an abortable sleep.
    signal.wait(float(payload.get("seconds", 0.5)))
    ctx.set_progress(100)
    return {"sent_to": payload["to"]}


HANDLERS = {"send_email": send_email}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    queue = dq.init_job_queue()  # DATAQUEUE_DATABASE_URL
    processor = queue.create_processor(HANDLERS, concurrency=4, poll_interval=1000)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            logger.warning("second signal: exiting without waiting")
            os._exit(1)
        logger.info("signal %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    queue.on("job:completed", lambda e: logger.info("completed job %s", e["job_id"]))
    processor.start_in_background()
    logger.info("worker %s ready", processor.worker_id)
    while not stop.is_set():
        time.sleep(0.1)
    processor.stop_and_drain(30_000)
    queue.close()
    logger.info("drained; bye")


if __name__ == "__main__":
    main()
