"""A queue used in a forked child gets its own connections (gunicorn/multiprocessing)."""

from __future__ import annotations

import os

import sqlalchemy as sa

import dataqueue as dq


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_child_process_enqueues_on_its_own_connection(database_url: str) -> None:
    with dq.init_job_queue(database_url) as queue:
        parent_job = queue.add_job("parent", {})
        parent_pid = _backend_pid(queue.get_engine())
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                job_id = queue.add_job("child", {"from": "child"})
                os.write(write_fd, f"{job_id} {_backend_pid(queue.get_engine())}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        _, status = os.waitpid(child, 0)
        child_job, child_pid = map(int, os.read(read_fd, 100).decode().split())
        os.close(read_fd)
        assert os.waitstatus_to_exitcode(status) == 0
        assert child_pid != parent_pid
        # The parent's pooled connection survived the child.
        assert _backend_pid(queue.get_engine()) == parent_pid
        job = queue.get_job(child_job)
        assert job is not None and job.payload == {"from": "child"}
        assert queue.get_job(parent_job) is not None
