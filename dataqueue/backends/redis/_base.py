"""What the parts of :class:`~dataqueue.backends.redis.backend.RedisBackend` share."""

from __future__ import annotations

from typing import Any, NoReturn

from dataqueue.backends.redis.keys import Keys
from dataqueue.errors import UnsupportedOperationError


class RedisPart:
    """Attributes every part of the Redis backend uses (set by ``RedisBackend``)."""

    client: Any
    prefix: str
    keys: Keys

    def _run(self, name: str, *args: Any) -> Any:
        """Run script ``name`` (``scripts/<name>.lua``) with the prefix as KEYS[1]."""
        raise NotImplementedError

    def _run_once(self, name: str, *args: Any) -> Any:
        """Run a script that must act once although a lost reply is retried."""
        raise NotImplementedError


def not_yet(method: str) -> NoReturn:
    raise UnsupportedOperationError(f"{method} is not implemented on the Redis backend yet")
