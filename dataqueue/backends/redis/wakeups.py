"""Wake-ups on Redis: ``PUBLISH`` on ``P wakeup`` inside the scripts, a listener here."""

from __future__ import annotations

from collections.abc import Sequence

from dataqueue.backends.base import Wakeups
from dataqueue.backends.redis._base import RedisPart


class RedisWakeups(RedisPart):
    def listen(self) -> Wakeups | None:
        """None: not implemented yet (processors poll)."""
        return None

    def next_due_in(self, job_types: Sequence[str] | None) -> float | None:
        """None: not computed on Redis yet (the store "cannot tell")."""
        return None
