"""A throwaway PostgreSQL for demos and laptops, from the ``embedded`` extra (pgserver).

pgserver ships real PostgreSQL binaries in a wheel and runs them without root or
Docker. Nothing here is used by the queue itself.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dataqueue.errors import ConfigurationError

logger = logging.getLogger("dataqueue.embedded")


@contextmanager
def embedded_postgres(data_dir: str | None = None) -> Iterator[str]:
    """Start an embedded PostgreSQL and yield a database URL for it.

    With ``data_dir`` None the data lives in a temporary directory that is deleted
    afterwards; otherwise the server is stopped and its data kept in ``data_dir``.
    Raises :class:`ConfigurationError` when pgserver is not installed.
    """
    try:
        pgserver: Any = importlib.import_module("pgserver")
    except ImportError:
        raise ConfigurationError(
            "the embedded PostgreSQL needs pgserver: pip install 'dataqueue[embedded]' "
            "(or set DATAQUEUE_DATABASE_URL to use your own server)"
        ) from None
    directory = data_dir or tempfile.mkdtemp(prefix="dataqueue-pg-")
    server: Any = pgserver.get_server(directory, cleanup_mode="stop")
    logger.info(
        "embedded PostgreSQL running in %s",
        directory,
        extra={"action": "embedded_started", "directory": str(directory)},
    )
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        if data_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
