"""Run a callback once the caller's transaction has committed (``job:added`` hooks).

A job added with ``db=`` exists only if the caller commits. So its ``job:added`` hooks
wait for the commit and are dropped on a rollback:

- SQLAlchemy ``Connection`` / ``Session``: after the connection's transaction commits;
  a rollback (or the rollback of the savepoint the job was added in) drops them.
- Django's ``django.db.connection``: ``transaction.on_commit`` (run at once outside
  an atomic block, dropped when the block rolls back).
- A connection in autocommit mode (nothing to wait for): at once.
- A raw DB-API connection (psycopg) inside a transaction: at once, when ``add_job``
  returns. DB-API drivers have no commit hook; use SQLAlchemy or Django for hooks that
  know about your commit.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session

logger = logging.getLogger("dataqueue.hooks")

Callback = Callable[[], None]


def run_after_commit(db: Any, callback: Callback) -> None:
    """Call ``callback()`` once ``db``'s current transaction commits (see module doc)."""
    if isinstance(db, Session | scoped_session):
        db = db.connection()
    if isinstance(db, sa.Connection):
        if _autocommits(db.connection.dbapi_connection) or not db.in_transaction():
            callback()
            return
        _pending_for(db).add(callback)
        return
    if type(db).__module__.startswith("django."):
        from django.db import transaction  # type: ignore[import-untyped]

        transaction.on_commit(callback, using=getattr(db, "alias", None))
        return
    callback()


def _autocommits(dbapi_connection: Any) -> bool:
    return bool(getattr(dbapi_connection, "autocommit", False))


class _Pending:
    """Callbacks waiting for one SQLAlchemy connection's commit, by savepoint level."""

    def __init__(self, connection: sa.Connection) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callback] = []
        self._savepoints: list[int] = []  # per open savepoint: callbacks before it
        sa.event.listen(connection, "commit", self._commit)
        sa.event.listen(connection, "rollback", self._rollback)
        sa.event.listen(connection, "savepoint", self._savepoint)
        sa.event.listen(connection, "rollback_savepoint", self._rollback_savepoint)
        sa.event.listen(connection, "release_savepoint", self._release_savepoint)

    def add(self, callback: Callback) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def _commit(self, connection: sa.Connection) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
            self._savepoints.clear()
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a hook never breaks the caller's commit
                logger.exception(
                    "a job:added hook failed after commit",
                    extra={"action": "listener_raised", "event": "job:added"},
                )

    def _rollback(self, connection: sa.Connection) -> None:
        with self._lock:
            self._callbacks.clear()
            self._savepoints.clear()

    # Savepoints nest, so a stack of marks matches them (SQLAlchemy reports no name
    # when a savepoint begins).
    def _savepoint(self, connection: sa.Connection, name: str | None) -> None:
        with self._lock:
            self._savepoints.append(len(self._callbacks))

    def _rollback_savepoint(self, connection: sa.Connection, name: str, context: Any) -> None:
        with self._lock:
            if self._savepoints:
                del self._callbacks[self._savepoints.pop() :]

    def _release_savepoint(self, connection: sa.Connection, name: str, context: Any) -> None:
        with self._lock:
            if self._savepoints:
                self._savepoints.pop()


_registry: weakref.WeakKeyDictionary[sa.Connection, _Pending] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _pending_for(connection: sa.Connection) -> _Pending:
    with _registry_lock:
        pending = _registry.get(connection)
        if pending is None:
            pending = _registry[connection] = _Pending(connection)
        return pending
