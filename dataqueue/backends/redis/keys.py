"""Key names of the Redis backend (the Python side; the Lua scripts build the same).

``P x`` is the prefix followed by ``x`` with no separator (``dq:job:42``). The layout is
upstream's (SEMANTICS §10.1) so that upstream tools can read the data, with these
deviations:

- ``P queue``: score ``-priority`` (exact for any int4) and member the job id
  zero-padded to 20 digits, so ``ZRANGE``/``ZPOPMIN`` give priority DESC, then id ASC
  (W-R-1). Upstream: score ``priority·1e15 + (1e15 - createdAt)`` with plain ids,
  which loses FIFO order for |priority| ≳ 9, popped with ZPOPMAX. Ids are drawn in the
  script that stamps ``createdAt``, so id order is creation order.
- ``P dep:<id>`` (ids of jobs that list ``<id>`` in ``dependsOnJobIds``) is read by the
  dependency cascade; upstream only maintained it.
- ``P tagdep:<tag>`` (new): ids of jobs whose ``dependsOnTags`` contain ``<tag>``, so
  the cascade finds tag-barrier dependents without scanning pending jobs (W-UB-3).
- ``P job_tokens:<id>`` (new): the tokens job ``<id>`` created, deleted with the job by
  ``cleanup_old_jobs`` as PostgreSQL's foreign key cascades. Tokens created before this
  set existed stay after their job is deleted.

Redis Cluster: scripts receive only the prefix as ``KEYS[1]`` and build every key from
it, so all keys of a queue must live in one slot: use a hash-tagged prefix such as
``"{dq}:"``.
"""

from __future__ import annotations

#: Width of the zero-padded ids that are the members of ``P queue``.
QUEUE_MEMBER_DIGITS = 20


def queue_member(job_id: int) -> str:
    """The member of ``P queue`` for ``job_id`` (zero-padded, so it sorts by number)."""
    return f"{job_id:0{QUEUE_MEMBER_DIGITS}d}"


class Keys:
    """The keys of one queue (one prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.all = prefix + "all"
        self.queue = prefix + "queue"
        self.delayed = prefix + "delayed"
        self.id_seq = prefix + "id_seq"
        self.event_id_seq = prefix + "event_id_seq"
        self.workers = prefix + "workers"
        self.wakeup = prefix + "wakeup"

    def job(self, job_id: int | str) -> str:
        """The job's hash."""
        return f"{self.prefix}job:{job_id}"

    def job_tags(self, job_id: int | str) -> str:
        """The set of the job's tags."""
        return f"{self.prefix}job:{job_id}:tags"

    def events(self, job_id: int | str) -> str:
        """The list of the job's events (JSON, oldest first)."""
        return f"{self.prefix}events:{job_id}"

    def status(self, status: str) -> str:
        """The set of job ids with ``status``."""
        return f"{self.prefix}status:{status}"

    def job_type(self, job_type: str) -> str:
        """The set of job ids of ``job_type``."""
        return f"{self.prefix}type:{job_type}"

    def tag(self, tag: str) -> str:
        """The set of ids of jobs tagged ``tag``."""
        return f"{self.prefix}tag:{tag}"

    def idempotency(self, key: str) -> str:
        """The id of the job that owns idempotency ``key``."""
        return f"{self.prefix}idempotency:{key}"
