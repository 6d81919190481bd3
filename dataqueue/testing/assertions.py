"""Say what is in the queue: :func:`enqueued_jobs`, :func:`assert_enqueued`,
:func:`assert_not_enqueued`.

They read the queue through its public API (``get_jobs``), so they see what your code
committed, on either backend. A failing assertion lists every job in the queue with the
fields it compared, so the report shows what was enqueued instead::

    AssertionError: expected 1 'send_welcome' job with payload {'email': 'ada@example.com'},
    found 0. The queue holds 2 job(s):
      #1 send_welcome payload={'email': 'bob@example.com'} status=pending
      #2 resize payload={'image': 7} status=pending
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from dataqueue.records import JobRecord

if TYPE_CHECKING:
    from dataqueue.queue import JobQueue

#: Jobs read per page.
_PAGE = 1000

#: Jobs listed in a failure message before "… and N more".
_LISTED = 20

_FIELDS = frozenset(field.name for field in attrs.fields(JobRecord))


class _Missing:
    def __repr__(self) -> str:
        return "<any payload>"


_ANY_PAYLOAD: Any = _Missing()


def enqueued_jobs(
    queue: JobQueue, job_type: str | None = None, *, status: str | None = None
) -> list[JobRecord]:
    """Every job in the queue (of ``job_type``, with ``status``), oldest first.

    Whatever their status: a job counts as enqueued even after it ran, unless
    ``status`` (``"pending"``, ``"completed"``…) narrows it. Unknown statuses raise
    :class:`~dataqueue.InvalidJobError`.
    """
    filters: dict[str, Any] = {} if job_type is None else {"job_type": job_type}
    jobs: list[JobRecord] = []
    while True:
        page = queue.get_jobs(filters, limit=_PAGE)
        jobs += page
        if len(page) < _PAGE:
            break
        filters["cursor"] = page[-1].id
    jobs.reverse()
    if status is not None:
        from dataqueue.validation import job_status

        wanted = job_status(status)
        jobs = [job for job in jobs if job.status == wanted]
    return jobs


def assert_enqueued(
    queue: JobQueue,
    job_type: str,
    payload: Any = _ANY_PAYLOAD,
    *,
    count: int | None = None,
    **fields: Any,
) -> list[JobRecord]:
    """Assert that jobs of ``job_type`` are in the queue; return them, oldest first.

    A job matches when its payload equals ``payload`` (when given; values such as
    ``unittest.mock.ANY`` work inside it) and each of ``fields`` equals that
    :class:`~dataqueue.JobRecord` attribute (``priority=10``, ``status="pending"``,
    ``tags=["welcome"]``…). ``count=None`` asks for at least one match, a number for
    exactly that many. Jobs count whatever their status unless ``status=`` is given.

    Raises ``AssertionError`` listing the jobs in the queue, and ``TypeError`` for a
    field that ``JobRecord`` does not have.
    """
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise TypeError(f"JobRecord has no field(s) {unknown}; fields are {sorted(_FIELDS)}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise TypeError(f"count must be None or an integer >= 0, got {count!r}")
    everything = enqueued_jobs(queue)
    matches = [job for job in everything if _matches(job, job_type, payload, fields)]
    if (count is None and not matches) or (count is not None and len(matches) != count):
        expected = "at least 1" if count is None else str(count)
        raise AssertionError(
            f"expected {expected} {job_type!r} job(s){_criteria(payload, fields)}, "
            f"found {len(matches)}. {_listing(everything, fields)}"
        )
    return matches


def assert_not_enqueued(
    queue: JobQueue, job_type: str, payload: Any = _ANY_PAYLOAD, **fields: Any
) -> None:
    """Assert that no job of ``job_type`` (with that payload and fields) is in the queue.

    The same matching as :func:`assert_enqueued` with ``count=0``.
    """
    assert_enqueued(queue, job_type, payload, count=0, **fields)


def _matches(job: JobRecord, job_type: str, payload: Any, fields: Mapping[str, Any]) -> bool:
    if job.job_type != job_type:
        return False
    if payload is not _ANY_PAYLOAD and payload != job.payload:
        return False
    return all(value == getattr(job, name) for name, value in fields.items())


def _criteria(payload: Any, fields: Mapping[str, Any]) -> str:
    parts = [] if payload is _ANY_PAYLOAD else [f"payload {payload!r}"]
    parts += [f"{name}={value!r}" for name, value in fields.items()]
    return " with " + " and ".join(parts) if parts else ""


def _listing(jobs: list[JobRecord], fields: Mapping[str, Any]) -> str:
    if not jobs:
        return "The queue is empty."
    shown = [f"\n  {_line(job, fields)}" for job in jobs[:_LISTED]]
    more = f"\n  … and {len(jobs) - _LISTED} more" if len(jobs) > _LISTED else ""
    return f"The queue holds {len(jobs)} job(s):" + "".join(shown) + more


def _line(job: JobRecord, fields: Mapping[str, Any]) -> str:
    extra = "".join(
        f" {name}={_plain(getattr(job, name))!r}" for name in fields if name != "status"
    )
    return f"#{job.id} {job.job_type} payload={job.payload!r} status={job.status.value}{extra}"


def _plain(value: Any) -> Any:
    """Enums as their values, so that ``failure_reason='timeout'`` reads as written."""
    return value.value if isinstance(value, enum.Enum) else value
