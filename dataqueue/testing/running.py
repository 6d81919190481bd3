"""Run a queue's due jobs inside a test: :func:`run_until_idle`.

It drives the queue's own processor in one-shot mode (``Processor.start()``), one job
per call, until a call finds nothing due: the same claim, handler invocation, retries,
hooks and events as in production, and no processor left running afterwards.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import attrs

from dataqueue.errors import DataQueueError

if TYPE_CHECKING:
    from dataqueue.queue import JobQueue
    from dataqueue.records import JobRecord

#: What became of one run of a job, as its hooks reported it.
Outcome = Literal["completed", "failed", "waiting"]

#: Jobs read per page when looking for jobs to fast-forward or still due.
_PAGE = 500


@attrs.frozen
class JobRun:
    """One run of one job: its handler was called once.

    ``outcome`` is ``"completed"``, ``"failed"`` or ``"waiting"`` (the handler started a
    wait), or ``None`` when the outcome could not be stored (the job then stays locked
    until reclaimed). ``error`` is the exception the handler raised (or the timeout) and
    ``will_retry`` says whether a retry was scheduled, for failed runs.
    """

    job_id: int
    job_type: str
    outcome: Outcome | None = None
    error: BaseException | None = None
    will_retry: bool = False


@attrs.frozen
class RunResult:
    """What :func:`run_until_idle` ran, in order. A job retried within the call appears
    once per run."""

    runs: tuple[JobRun, ...]

    @property
    def job_ids(self) -> list[int]:
        """Ids of the runs, in order (repeated for a job that ran more than once)."""
        return [run.job_id for run in self.runs]

    @property
    def completed(self) -> list[JobRun]:
        """The runs whose handler returned."""
        return [run for run in self.runs if run.outcome == "completed"]

    @property
    def failed(self) -> list[JobRun]:
        """The runs whose handler raised or timed out (retried later or not)."""
        return [run for run in self.runs if run.outcome == "failed"]

    @property
    def waiting(self) -> list[JobRun]:
        """The runs that ended in a wait (``ctx.wait_for``, ``wait_until``, tokens)."""
        return [run for run in self.runs if run.outcome == "waiting"]

    def __len__(self) -> int:
        return len(self.runs)

    def raise_for_failures(self) -> None:
        """Raise :class:`JobsFailedError` if any run failed."""
        if self.failed:
            raise JobsFailedError(self)


class JobsFailedError(DataQueueError, AssertionError):
    """Jobs failed in :func:`run_until_idle` (``raise_on_failure=True``).

    ``result`` is the :class:`RunResult` so far; the first handler's exception is the
    ``__cause__``, so its traceback shows in the test report.
    """

    def __init__(self, result: RunResult) -> None:
        self.result = result
        lines = [f"  job {run.job_id} ({run.job_type}): {_describe(run)}" for run in result.failed]
        super().__init__(f"{len(lines)} job run(s) failed:\n" + "\n".join(lines))
        self.__cause__ = result.failed[0].error


class RunLimitError(DataQueueError, AssertionError):
    """:func:`run_until_idle` ran ``max_jobs`` jobs and jobs were still due: most likely
    jobs that keep enqueueing each other. ``result`` holds what ran; ``due`` the jobs
    still waiting to run."""

    def __init__(self, result: RunResult, due: list[JobRecord], max_jobs: int) -> None:
        self.result = result
        self.due = due
        shown = ", ".join(f"{job.id} ({job.job_type})" for job in due[:10])
        more = f" and {len(due) - 10} more" if len(due) > 10 else ""
        super().__init__(
            f"run_until_idle stopped after max_jobs={max_jobs} runs with jobs still due: "
            f"{shown}{more}. Pass a larger max_jobs if that many are expected."
        )


def run_until_idle(
    queue: JobQueue,
    handlers: Mapping[str, Callable[..., Any]],
    *,
    max_jobs: int = 100,
    include_future: bool = False,
    raise_on_failure: bool = False,
) -> RunResult:
    """Process due jobs of ``handlers``' types until none is due; return what ran.

    Jobs run one at a time, highest priority and oldest first, each through the queue's
    processor in one-shot mode (``queue.create_processor(handlers).start(inline=True)``):
    the call returns only when every run has been stored, and leaves no processor
    running. Handlers run in the calling thread, so they see the test's thread-local
    state (a Flask application context, a scoped session). Jobs that
    handlers enqueue run too, if they are due. Cron schedules that are due are enqueued
    first, as a processor does. Jobs of other types are left alone.

    A failing handler fails its job as in production: the run is reported with
    ``outcome="failed"``, its ``error`` and ``will_retry``, and the retry is scheduled
    (``retry_delay``; by default minutes away), so it is not due and the call ends
    rather than spinning. With ``raise_on_failure=True`` the first failed run raises
    :class:`JobsFailedError` (chained to the handler's exception) at once.

    ``include_future=True`` also runs what is only due later: pending jobs whose
    ``run_at`` is in the future get ``run_at`` = now (``edit_job``, which records an
    ``edited`` event) and failed jobs awaiting a retry are retried now (``retry_job``, a
    ``retried`` event), repeatedly, so a failing job runs until its attempts are used up.
    Waits (``ctx.wait_for``/``wait_until``) are not brought forward.

    ``max_jobs`` (default 100) caps the runs. Reaching it with jobs still due raises
    :class:`RunLimitError`; reaching it exactly as the queue becomes idle returns
    normally. An error of the processor itself (a lost database, a failing cron
    enqueue) is raised as it happened. Bad arguments raise ``TypeError``/``ValueError``.
    Run no other processor on the queue meanwhile: this call learns what ran from the
    queue's hooks, which report every processor's jobs.
    """
    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int):
        raise TypeError(f"max_jobs must be an integer, got {max_jobs!r}")
    if max_jobs < 1:
        raise ValueError(f"max_jobs must be at least 1, got {max_jobs!r}")
    job_types = frozenset(handlers)
    processor = queue.create_processor(
        handlers,
        worker_id=f"dataqueue-testing-{uuid.uuid4().hex[:8]}",
        batch_size=1,
        concurrency=1,
        listen=False,
    )
    recorder = _Recorder()
    ran = 0
    with recorder.listening(queue):
        while ran < max_jobs:
            claimed = processor.start(inline=True)  # handlers run in this thread
            ran += claimed
            recorder.raise_processor_error()
            if raise_on_failure:
                recorder.result().raise_for_failures()
            if claimed:
                continue
            if not include_future or not _bring_forward(queue, job_types):
                return recorder.result()
    result = recorder.result()
    due = _due_jobs(queue, job_types, include_future=include_future)
    if due:
        raise RunLimitError(result, due, max_jobs)
    return result


class _Recorder:
    """Collects runs from the queue's hooks, emitted on the processor's threads.

    ``_lock`` guards ``_runs``, ``_open`` and ``_errors``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: list[JobRun] = []
        self._open: dict[int, int] = {}  # job id -> index in _runs of its unfinished run
        self._errors: list[BaseException] = []

    @contextmanager
    def listening(self, queue: JobQueue) -> Iterator[None]:
        listeners: dict[str, Callable[[Any], object]] = {
            "job:processing": self._processing,
            "job:completed": self._completed,
            "job:failed": self._failed,
            "job:waiting": self._waiting,
            "error": self._error,
        }
        for event, listener in listeners.items():
            queue.on(event, listener)
        try:
            yield
        finally:
            for event, listener in listeners.items():
                queue.off(event, listener)

    def result(self) -> RunResult:
        with self._lock:
            return RunResult(tuple(self._runs))

    def raise_processor_error(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def _processing(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self._open[event["job_id"]] = len(self._runs)
            self._runs.append(JobRun(job_id=event["job_id"], job_type=event["job_type"]))

    def _finished(self, job_id: int, **outcome: Any) -> None:
        with self._lock:
            index = self._open.pop(job_id, None)
            if index is not None:
                self._runs[index] = attrs.evolve(self._runs[index], **outcome)

    def _completed(self, event: Mapping[str, Any]) -> None:
        self._finished(event["job_id"], outcome="completed")

    def _failed(self, event: Mapping[str, Any]) -> None:
        self._finished(
            event["job_id"],
            outcome="failed",
            error=event.get("error"),
            will_retry=bool(event.get("will_retry")),
        )

    def _waiting(self, event: Mapping[str, Any]) -> None:
        self._finished(event["job_id"], outcome="waiting")

    def _error(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)


def _bring_forward(queue: JobQueue, job_types: frozenset[str]) -> int:
    """Make later jobs of ``job_types`` due now; return how many changed."""
    now = dt.datetime.now(dt.timezone.utc)
    later = [
        job
        for job in _jobs_with_status(queue, "pending")
        if job.job_type in job_types and job.run_at > now
    ]
    retries = [
        job
        for job in _jobs_with_status(queue, "failed")
        if job.job_type in job_types and not job.is_final
    ]
    changed = sum(queue.edit_job(job.id, run_at=None) for job in later)
    return changed + sum(queue.retry_job(job.id) for job in retries)


def _due_jobs(
    queue: JobQueue, job_types: frozenset[str], *, include_future: bool
) -> list[JobRecord]:
    """Jobs of ``job_types`` that a further run would most likely claim.

    Jobs with dependencies are left out (they may be blocked), so this errs towards
    "idle".
    """
    now = dt.datetime.now(dt.timezone.utc)
    due = [
        job
        for job in _jobs_with_status(queue, "pending")
        if job.job_type in job_types
        and (include_future or job.run_at <= now)
        and not job.depends_on_job_ids
        and not job.depends_on_tags
    ]
    due += [
        job
        for job in _jobs_with_status(queue, "failed")
        if job.job_type in job_types
        and not job.is_final
        and (include_future or (job.next_attempt_at is not None and job.next_attempt_at <= now))
    ]
    return sorted(due, key=lambda job: job.id)


def _jobs_with_status(queue: JobQueue, status: str) -> list[JobRecord]:
    jobs: list[JobRecord] = []
    while True:
        page = queue.get_jobs_by_status(status, limit=_PAGE, offset=len(jobs))
        jobs += page
        if len(page) < _PAGE:
            return jobs


def _describe(run: JobRun) -> str:
    error = run.error
    text = "failed" if error is None else f"{type(error).__name__}: {error}"
    return text + (" (a retry is scheduled)" if run.will_retry else " (no retry left)")
