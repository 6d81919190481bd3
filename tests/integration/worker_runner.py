"""``dataqueue worker`` subprocesses for the tests, with their output read as it comes.

An undrained pipe fills up after a few logged errors, and a worker that blocks writing
its log stops storing and heartbeating: a test would then measure the pipe.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.conftest import start_cli


class WorkerProcess:
    """``dataqueue worker HANDLERS ARGS`` on PostgreSQL ``database_url`` (via the
    environment), or with ``redis_url`` on Redis (``--redis-url``, ``--key-prefix``):
    ``database_url`` then only names the handlers' ledger database
    (``DATAQUEUE_TEST_LEDGER_URL``, see ``fault_handlers.py``)."""

    def __init__(
        self,
        database_url: str,
        handlers: str,
        *args: str,
        redis_url: str | None = None,
        key_prefix: str = "dq:",
    ) -> None:
        if redis_url is None:
            store: tuple[str, ...] = ()
            env = {"DATAQUEUE_DATABASE_URL": database_url}
        else:
            store = ("--redis-url", redis_url, "--key-prefix", key_prefix)
            # Blank PostgreSQL variables count as unset: the worker must pick Redis.
            env = {
                "DATAQUEUE_TEST_LEDGER_URL": database_url,
                "DATAQUEUE_DATABASE_URL": "",
                "PG_DATAQUEUE_DATABASE": "",
            }
        self.process = start_cli("worker", handlers, *store, *args, env=env)
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.process.stderr, self._stderr), (self.process.stdout, []))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float) -> tuple[int, str]:
        """Wait for the exit; return the status and everything written to stderr."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(10)
        return code, "".join(self._stderr)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        """Send ``sig`` (if still running) and wait for the exit."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch_metrics(port: int, running: Callable[[], bool]) -> str:
    """The text of ``http://127.0.0.1:PORT/metrics``, retried for up to 30 s while the
    worker starts its server (``running()``: the worker has not exited)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                text: str = reply.read().decode()
                return text
        except OSError:
            assert time.monotonic() < deadline and running(), "no metrics served"
            time.sleep(0.1)
