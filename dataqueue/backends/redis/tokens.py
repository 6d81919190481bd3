"""Tokens (waitpoints) on Redis.

Layout (upstream's, SEMANTICS §10.1): ``P waitpoint:<id>`` is a hash with the fields
``id, jobId, status, output, timeoutAt, createdAt, completedAt, tags`` (``output`` and
``tags`` JSON text or ``null``; times epoch milliseconds of the Redis server's clock or
``null``); ``P waitpoint_timeout`` holds the ids of tokens with a timeout, scored by
``timeoutAt``. A job that waits on a token joins ``P token_waiters:<id>`` (written by
``wait_job.lua``), which completion and expiry read to resume it.

Each change is one script (``create_token.lua``, ``complete_token.lua``,
``expire_tokens.lua``); behaviour follows the PostgreSQL backend: a resumed job stays
``waiting`` with ``wait_token_id`` cleared and ``wait_until`` now, so the next claim
resumes it without consuming an attempt (W-TOK-1, W-TOK-3). Differences: timestamps
have millisecond precision (a timeout's microseconds are dropped), and
:meth:`RedisTokens.expire_timed_out_tokens` works through the due tokens in batches of
:data:`EXPIRE_BATCH`, each batch atomic (PostgreSQL: one transaction for all).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from dataqueue.backends.redis import codec
from dataqueue.backends.redis._base import RedisPart
from dataqueue.errors import InvalidJobError
from dataqueue.records import WaitpointRecord

#: Due entries of ``P waitpoint_timeout`` examined per ``expire_tokens.lua`` run (bounds
#: how long one script blocks Redis).
EXPIRE_BATCH = 1000

_ONE_MS = dt.timedelta(milliseconds=1)


def _field(raw: Mapping[Any, Any], name: str) -> str | None:
    """A hash field as text; missing, empty and ``null`` mean None."""
    value = raw.get(name, raw.get(name.encode()))
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return None if text in ("", "null") else text


def _json_field(raw: Mapping[Any, Any], name: str) -> Any:
    text = _field(raw, name)
    return None if text is None else json.loads(text)


def waitpoint_record_from_hash(raw: Mapping[Any, Any]) -> WaitpointRecord:
    """A :class:`WaitpointRecord` from a ``P waitpoint:<id>`` hash (``HGETALL``)."""
    job_id = _field(raw, "jobId")
    created_at = codec.from_ms(_field(raw, "createdAt"))
    assert created_at is not None
    return WaitpointRecord(
        id=_field(raw, "id") or "",
        job_id=None if job_id is None else int(float(job_id)),
        status=_field(raw, "status") or "waiting",
        output=_json_field(raw, "output"),
        timeout_at=codec.from_ms(_field(raw, "timeoutAt")),
        created_at=created_at,
        completed_at=codec.from_ms(_field(raw, "completedAt")),
        tags=_json_field(raw, "tags"),
    )


class RedisTokens(RedisPart):
    """The token methods of :class:`~dataqueue.backends.redis.backend.RedisBackend`.

    Every change goes through ``_run_once``: a call retried after a lost reply gets the
    first run's reply (a token created or completed by this call is never reported as
    taken or already completed).
    """

    def create_token(
        self,
        token_id: str,
        job_id: int | None,
        timeout: dt.timedelta | None,
        tags: list[str] | None,
    ) -> None:
        """Store a waiting token; it times out ``timeout`` after now (server clock).

        Raises :class:`InvalidJobError` if a token with ``token_id`` already exists
        (it is left unchanged) or if ``job_id`` names no job.
        """
        timeout_ms = "" if timeout is None else str(timeout // _ONE_MS)
        tags_json = "null" if tags is None else json.dumps(tags, ensure_ascii=False)
        created = int(
            self._run_once(
                "create_token",
                token_id,
                "" if job_id is None else str(job_id),
                timeout_ms,
                tags_json,
            )
        )
        if created == 0:
            raise InvalidJobError(f"token {token_id!r} already exists")
        if created < 0:
            raise InvalidJobError(f"cannot create token {token_id!r}: no job {job_id}")

    def get_token(self, token_id: str) -> WaitpointRecord | None:
        """The token (one ``HGETALL``), or None."""
        raw = self.client.hgetall(f"{self.prefix}waitpoint:{token_id}")
        return waitpoint_record_from_hash(raw) if raw else None

    def complete_token(self, token_id: str, output_json: str | None) -> bool | None:
        """Complete a waiting token with ``output_json`` (stored as given) and resume
        its waiters; True if completed, False if already settled, None if unknown."""
        done = int(
            self._run_once(
                "complete_token", token_id, "null" if output_json is None else output_json
            )
        )
        return None if done < 0 else done == 1

    def expire_timed_out_tokens(self) -> int:
        """Time out every waiting token past its timeout and resume its waiters, in
        atomic batches of :data:`EXPIRE_BATCH`; return how many tokens timed out."""
        total = 0
        while True:
            expired, examined = self._run_once("expire_tokens", EXPIRE_BATCH)
            total += int(expired)
            if int(examined) < EXPIRE_BATCH:
                return total
