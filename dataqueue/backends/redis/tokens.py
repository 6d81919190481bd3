"""Tokens (waitpoints) on Redis."""

from __future__ import annotations

import datetime as dt

from dataqueue.backends.redis._base import RedisPart, not_yet
from dataqueue.records import WaitpointRecord


class RedisTokens(RedisPart):
    def create_token(
        self,
        token_id: str,
        job_id: int | None,
        timeout: dt.timedelta | None,
        tags: list[str] | None,
    ) -> None:
        not_yet("create_token")

    def get_token(self, token_id: str) -> WaitpointRecord | None:
        not_yet("get_token")

    def complete_token(self, token_id: str, output_json: str | None) -> bool | None:
        not_yet("complete_token")

    def expire_timed_out_tokens(self) -> int:
        not_yet("expire_timed_out_tokens")
