"""The issue's own case, at full length and with default settings: a healthy 90 s job
without ``timeout_ms``, beside a second worker whose supervisor uses a 1-minute stuck
timeout, runs exactly once.

``test_durability_processes`` checks the same rule on both backends in 8 s with
shortened heartbeat settings; this module takes 90 s, so it runs on PostgreSQL only.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from tests.integration.test_durability_processes import (  # noqa: F401 (fixtures)
    Store,
    _scalar,
    _stop,
    _wait_until,
    ledger,
    observer,
    store,
)


def test_healthy_90_second_job_runs_once_beside_a_supervisor_with_defaults(
    ledger: None,  # noqa: F811
    store: Store,  # noqa: F811
    observer: sa.Engine,  # noqa: F811
) -> None:
    job_id = store.queue.add_job("started", {"sleep": 90})  # no timeout_ms
    runner = store.worker("--no-supervisor")  # every other setting at its default
    _wait_until(lambda: _scalar(observer, "SELECT count(*) FROM ledger") == 1, 30, "start", runner)
    started = time.monotonic()
    # A second worker whose supervisor runs every second with a 1-minute stuck timeout:
    # the setting under which the job used to start a second time at 60.7 s.
    supervisor = store.worker("--supervisor-interval", "1000", "--stuck-timeout", "60")
    try:
        _wait_until(
            lambda: (job := store.queue.get_job(job_id)) is not None and job.status == "completed",
            150,
            "completion",
            runner,
            supervisor,
        )
        took = time.monotonic() - started
    finally:
        results = [_stop(runner), _stop(supervisor)]
    assert [code for code, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    print(f"fault figures: a healthy job ran {took:.1f} s beside the supervisor, once")
    assert took >= 89
    assert _scalar(observer, "SELECT count(*) FROM ledger") == 1, "the live job was started twice"
    job = store.queue.get_job(job_id)
    assert job is not None and job.attempts == 1
