"""``dataqueue demo``: the quick start end to end, then the dashboard.

Uses ``DATAQUEUE_DATABASE_URL`` when set, else an embedded PostgreSQL (pgserver, from
the ``embedded`` extra) that is thrown away at the end.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TextIO

from dataqueue.embedded import embedded_postgres
from dataqueue.migrate import upgrade

DEMO_JOBS = 12


def send_email(payload: dict[str, Any], signal: Any, ctx: Any) -> dict[str, str]:
    for step in (30, 60, 100):
        ctx.set_progress(step)
        signal.wait(0.05)
    return {"sent_to": payload["to"]}


def resize_image(payload: dict[str, Any]) -> dict[str, Any]:
    return {"image": payload["image"], "sizes": [64, 256, 1024]}


def flaky_import(payload: dict[str, Any], signal: Any, ctx: Any) -> str:
    if ctx.attempts == 1:
        raise RuntimeError("upstream API timed out (retried automatically)")
    return "imported"


HANDLERS: dict[str, Callable[..., Any]] = {
    "send_email": send_email,
    "resize_image": resize_image,
    "flaky_import": flaky_import,
}


@contextmanager
def demo_database(url: str | None) -> Iterator[str]:
    """``url`` if given, else an embedded PostgreSQL; migrated either way."""
    with nullcontext(url) if url else embedded_postgres() as database_url:
        upgrade(database_url)
        yield database_url


def run_demo(queue: Any, out: TextIO) -> None:
    """Enqueue a few jobs, process them in the background, print what happened."""
    finished = threading.Event()
    settled: set[int] = set()

    def note(event: dict[str, Any]) -> None:
        if event.get("will_retry") is False or "will_retry" not in event:
            settled.add(event["job_id"])
        if len(settled) >= DEMO_JOBS:
            finished.set()

    queue.on("job:completed", note)
    queue.on("job:failed", note)
    jobs: list[dict[str, Any]] = [
        {"job_type": "send_email", "payload": {"to": f"user{i}@example.com"}, "tags": ["welcome"]}
        for i in range(5)
    ]
    jobs += [{"job_type": "resize_image", "payload": {"image": f"img-{i}.png"}} for i in range(5)]
    jobs += [
        {
            "job_type": "flaky_import",
            "payload": {"feed": n},
            "retry_delay": 0,
            "retry_backoff": False,
        }
        for n in range(2)
    ]
    random.shuffle(jobs)
    ids = queue.add_jobs(jobs)
    print(f"added {len(ids)} jobs: ids {ids[0]}..{ids[-1]}", file=out)
    processor = queue.create_processor(HANDLERS, concurrency=4, poll_interval=100)
    started = time.monotonic()
    processor.start_in_background()
    finished.wait(60)
    processor.stop_and_drain(10_000)
    print(f"processed in {time.monotonic() - started:.2f} s:", file=out)
    for job in sorted(queue.get_jobs({}, limit=DEMO_JOBS), key=lambda j: j.id):
        print(
            f"  #{job.id:<3} {job.job_type:<13} {job.status.value:<10} "
            f"attempts {job.attempts}/{job.max_attempts}  output {job.output}",
            file=out,
        )
    example = ids[0]
    events = ", ".join(e.event_type.value for e in queue.get_job_events(example))
    print(f"events of #{example}: {events}", file=out)
