"""The processor: claims jobs, runs handlers on worker threads, stores outcomes.

Threads (one processor):

- ``dataqueue-processor-<worker_id>`` (background mode): the loop. Each cycle stores
  the outcomes workers delivered and claims jobs for the freed slots in **one**
  statement (``Backend.advance``); failures are stored in one statement per cycle.
- ``dataqueue-worker-<worker_id>-<n>``: run handlers. ``concurrency`` of them; when a
  handler outlives its timeout a replacement starts, so the slots stay usable while
  the stuck thread finishes on its own.
- ``dataqueue-timeouts-<worker_id>``: fires job deadlines (started on first use).

All are daemon threads: losing them at interpreter exit loses nothing that
``reclaim_stuck_jobs`` cannot recover, and an ``atexit`` hook drains running
processors first. ``self._cond`` (one lock) guards the outcome list, the in-flight
count and the running flag.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue as queue_module
import random
import string
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dataqueue.backends.base import Backend, ClaimedJob, ClaimRequest, Completion, Failure
from dataqueue.dependencies import validate_tags
from dataqueue.durations import token_timeout
from dataqueue.enums import FailureReason
from dataqueue.errors import ConfigurationError, DataQueueError, WaitSignal
from dataqueue.hooks import ErrorCallback, EventHooks, report_error
from dataqueue.payload import encode_json
from dataqueue.processing.context import JobContext, new_token_id, token_result
from dataqueue.processing.execution import Execution, Watchdog
from dataqueue.processing.invoke import Outcome, error_message, handler_arity
from dataqueue.records import WaitpointRecord, WaitToken
from dataqueue.retry import retry_delay_seconds

logger = logging.getLogger("dataqueue.processor")

Handler = Callable[..., Any]

_running_processors: weakref.WeakSet[Processor] = weakref.WeakSet()

# Handlers faster than this on average let a processor claim ahead of its free slots
# (up to batch_size more), so that claims and completions are stored in batches.
# Slower handlers get upstream's behaviour: claim only for free slots, so a long job
# never sits locked in a local queue while other workers are idle.
_QUICK_HANDLER_SECONDS = 0.05


def _drain_at_exit() -> None:
    for processor in list(_running_processors):
        processor.stop_and_drain(5000)


atexit.register(_drain_at_exit)


def default_worker_id() -> str:
    """``worker-`` plus 7 random base-36 characters, as upstream."""
    alphabet = string.digits + string.ascii_lowercase
    return "worker-" + "".join(random.choices(alphabet, k=7))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return value


def _job_types(job_type: Any) -> tuple[str, ...] | None:
    if job_type is None:
        return None
    if isinstance(job_type, str):
        return (job_type,)
    if isinstance(job_type, list | tuple) and all(isinstance(t, str) for t in job_type):
        return tuple(job_type)
    raise TypeError(f"job_type must be a string or a list of strings, got {job_type!r}")


class _WorkerPool:
    """Threads that run executions from a queue; grows when a handler is abandoned."""

    def __init__(self, name: str, size: int, run: Callable[[Execution], None]) -> None:
        self._name = name
        self._run = run
        self._queue: queue_module.SimpleQueue[Execution | None] = queue_module.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._serial = 0
        for _ in range(size):
            self.add_thread()

    def add_thread(self) -> None:
        with self._lock:
            self._serial += 1
            self._threads += 1
            name = f"{self._name}-{self._serial}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def submit(self, execution: Execution) -> None:
        self._queue.put(execution)

    def shutdown(self) -> None:
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._queue.put(None)

    def _work(self) -> None:
        while (execution := self._queue.get()) is not None:
            execution.thread = threading.current_thread()
            self._run(execution)
            if execution.abandoned:
                break  # a replacement took this thread's place when the job timed out
        with self._lock:
            self._threads -= 1


class Processor:
    """Runs handlers for claimed jobs. Create it with ``queue.create_processor``."""

    def __init__(
        self,
        backend: Backend,
        hooks: EventHooks,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        batch_size: int = 10,
        concurrency: int = 3,
        group_concurrency: int | None = None,
        poll_interval: float = 5000,
        on_error: ErrorCallback | None = None,
        verbose: bool = False,
        job_type: str | Sequence[str] | None = None,
        before_claim: Sequence[Callable[[], object]] = (),
    ) -> None:
        if not isinstance(handlers, Mapping):
            raise TypeError(f"handlers must be a mapping of job type to callable, got {handlers!r}")
        self._arity: dict[str, int] = {}
        for name, handler in handlers.items():
            if not isinstance(name, str):
                raise TypeError(f"handler keys must be job type strings, got {name!r}")
            self._arity[name] = handler_arity(handler)
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise TypeError(f"worker_id must be a non-empty string, got {worker_id!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise TypeError(
                f"poll_interval must be a number of milliseconds, got {poll_interval!r}"
            )
        if poll_interval < 0:
            raise ConfigurationError(f"poll_interval must be >= 0, got {poll_interval!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable, got {on_error!r}")
        self._backend = backend
        self._hooks = hooks
        self._handlers = dict(handlers)
        self.worker_id = worker_id or default_worker_id()
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.concurrency = _positive_int(concurrency, "concurrency")
        self.group_concurrency = (
            None
            if group_concurrency is None
            else _positive_int(group_concurrency, "group_concurrency")
        )
        self.poll_interval_seconds = poll_interval / 1000
        self._on_error = on_error
        self._log_level = logging.INFO if verbose else logging.DEBUG
        self._job_types = _job_types(job_type)
        self._before_claim = list(before_claim)
        self._cond = threading.Condition()
        self._outcomes: list[Outcome] = []
        self._in_flight = 0  # claimed and not yet stored (queued, running or finished)
        self._queued = 0  # claimed, waiting for a worker thread
        self._handler_seconds = _QUICK_HANDLER_SECONDS  # moving average of handler time
        self._running = False
        self._oneshots = 0
        self._loop_thread: threading.Thread | None = None
        self._pool: _WorkerPool | None = None
        self._watchdog = Watchdog(
            f"dataqueue-timeouts-{self.worker_id}", self._expire, self._store_extension
        )

    # -- public API -----------------------------------------------------------------

    def start(self) -> int:
        """Process one batch in the calling thread (serverless/cron style).

        Runs the before-claim hooks, claims up to ``batch_size`` jobs, runs them with up
        to ``concurrency`` threads, stores every outcome and returns the number claimed.
        Independent of background mode: it never starts or stops the loop (W-API-9).
        """
        with self._cond:
            self._oneshots += 1
        try:
            return self._run_once()
        finally:
            with self._cond:
                self._oneshots -= 1

    def start_in_background(self) -> None:
        """Start the loop thread; no-op if it is already running."""
        with self._cond:
            if self._running:
                return
            if self._loop_thread is not None and self._loop_thread.is_alive():
                # A stop() is still draining: resume it instead of starting a second loop.
                self._running = True
                self._cond.notify_all()
                return
            self._running = True
            self._pool = _WorkerPool(
                f"dataqueue-worker-{self.worker_id}", self.concurrency, self._execute
            )
            self._loop_thread = threading.Thread(
                target=self._loop, name=f"dataqueue-processor-{self.worker_id}", daemon=True
            )
        _running_processors.add(self)
        self._loop_thread.start()
        logger.log(self._log_level, "processor %s started", self.worker_id)

    def stop(self) -> None:
        """Stop claiming. Jobs in flight finish and are stored; returns at once."""
        with self._cond:
            self._running = False
            self._cond.notify_all()

    def stop_and_drain(self, timeout_ms: float = 30000) -> None:
        """Stop, then wait up to ``timeout_ms`` for in-flight jobs to finish and be stored."""
        self.stop()
        thread = self._loop_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(timeout_ms, 0) / 1000)
            if thread.is_alive():
                logger.warning(
                    "processor %s: %d job(s) still running after %s ms",
                    self.worker_id,
                    self._in_flight,
                    timeout_ms,
                )

    def is_running(self) -> bool:
        """True while the background loop runs or a one-shot ``start()`` is in progress."""
        return self._running or self._oneshots > 0

    # -- used by JobContext ---------------------------------------------------------

    def emit(self, event: str, payload: Any) -> None:
        self._hooks.emit(event, payload)

    def write_best_effort(self, what: str, write: Callable[[Backend, str], bool]) -> None:
        try:
            write(self._backend, self.worker_id)
        except Exception:
            logger.exception("could not store %s (ignored)", what)

    def create_token(self, job_id: int | None, timeout: Any, tags: list[str] | None) -> WaitToken:
        duration = token_timeout(timeout)
        token = WaitToken(new_token_id())
        self._backend.create_token(
            token.id, job_id, duration, None if tags is None else validate_tags(tags)
        )
        return token

    def get_token(self, token_id: str) -> WaitpointRecord | None:
        return self._backend.get_token(token_id)

    def extend_deadline(self, execution: Execution, ms: int) -> None:
        self._watchdog.arm(execution, ms)
        self._store_extension(execution, ms)

    # -- background loop ------------------------------------------------------------

    def _loop(self) -> None:
        next_tick = 0.0
        claim_more = False
        while True:
            with self._cond:
                self._wait_for_work(next_tick, claim_more)
                outcomes, self._outcomes = self._outcomes, []
                running = self._running
                if not running and self._in_flight == 0:
                    break
            tick_due = running and time.monotonic() >= next_tick
            if tick_due:
                self._run_before_claim()
                next_tick = time.monotonic() + self.poll_interval_seconds
            limit = 0
            if running and (tick_due or claim_more or outcomes):
                capacity = self.concurrency + self._prefetch()
                limit = min(capacity - self._in_flight + len(outcomes), self.batch_size)
            claimed = self._cycle(outcomes, limit, report_event=True)
            claim_more = limit > 0 and claimed == limit
        self._finish_background()

    def _prefetch(self) -> int:
        """How many jobs to claim beyond the free slots (0 for slow handlers).

        Two batches: one the workers run while the loop stores and claims the other.
        """
        return 2 * self.batch_size if self._handler_seconds < _QUICK_HANDLER_SECONDS else 0

    def _batch_ready(self) -> bool:
        """Enough outcomes to be worth a round trip (holding ``_cond``)."""
        finished = len(self._outcomes)
        if not finished:
            return False
        unfinished = self._in_flight - finished
        # Store when a batch is full, when nothing else is coming, or when the local
        # queue runs low (so workers never idle while this loop waits).
        low_water = self.batch_size if self._prefetch() else self.concurrency
        return finished >= self.batch_size or unfinished == 0 or self._queued < low_water

    def _wait_for_work(self, next_tick: float, claim_more: bool) -> None:
        """Block (holding ``_cond``) until outcomes arrive, a claim is due, or stop."""
        while not self._batch_ready():
            if self._running:
                if claim_more and self._in_flight < self.concurrency + self._prefetch():
                    return
                remaining = next_tick - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)
            elif self._in_flight == 0:
                return
            else:
                self._cond.wait()
                if self._outcomes:
                    return

    def _finish_background(self) -> None:
        with self._cond:
            pool, self._pool = self._pool, None
            if self._running:  # restarted while draining: keep going in a fresh loop
                self._loop_thread = None
                self._running = False
                restart = True
            else:
                restart = False
        if pool is not None:
            pool.shutdown()
        _running_processors.discard(self)
        logger.log(self._log_level, "processor %s stopped", self.worker_id)
        if restart:
            self.start_in_background()

    # -- one-shot -------------------------------------------------------------------

    def _run_once(self) -> int:
        self._run_before_claim()
        try:
            _, claimed = self._backend.advance(
                self.worker_id, [], self._claim_request(self.batch_size)
            )
        except Exception as exc:
            self._report(exc, event=True)
            return 0
        if not claimed:
            return 0
        outcomes: list[Outcome] = []
        done = threading.Condition()

        def collect(outcome: Outcome) -> None:
            with done:
                outcomes.append(outcome)
                done.notify()

        pool = _WorkerPool(
            f"dataqueue-worker-{self.worker_id}-once",
            min(self.concurrency, len(claimed)),
            self._run_job,
        )
        all_parallel = self.concurrency >= len(claimed)
        try:
            for job in claimed:
                self.emit("job:processing", {"job_id": job.id, "job_type": job.job_type})
                pool.submit(Execution(job, collect))
            stored = 0
            while stored < len(claimed):
                with done:
                    while not outcomes:
                        done.wait()
                    batch, outcomes[:] = list(outcomes), []
                self._store(batch, report_event=all_parallel)
                stored += len(batch)
        finally:
            pool.shutdown()
        return len(claimed)

    # -- claiming and storing -------------------------------------------------------

    def _claim_request(self, limit: int) -> ClaimRequest:
        return ClaimRequest(
            limit=limit,
            job_types=self._job_types,
            group_limit=self.group_concurrency,
            scan_size=self.batch_size,
        )

    def _run_before_claim(self) -> None:
        for hook in self._before_claim:
            try:
                hook()
            except Exception as exc:
                self._report(exc, event=True)

    def _cycle(self, outcomes: list[Outcome], limit: int, *, report_event: bool) -> int:
        """Store ``outcomes`` and claim up to ``limit`` jobs; return how many were claimed."""
        failures = [o for o in outcomes if o.kind == "failed"]
        completions = [o for o in outcomes if o.kind == "completed"]
        self._store_failures(failures)
        self._store_waits([o for o in outcomes if o.kind == "waiting"], report_event=False)
        claimed: list[ClaimedJob] = []
        try:
            done_ids, claimed = self._backend.advance(
                self.worker_id,
                [Completion(o.job.id, o.output_json) for o in completions],
                self._claim_request(max(limit, 0)),
            )
        except Exception as exc:
            # W-CMP-1: a storage error is not a handler failure; the jobs stay in
            # processing until reclaim_stuck_jobs releases them.
            self._report(exc, event=report_event and limit > 0)
            done_ids = []
        self._announce_completed(completions, done_ids)
        with self._cond:
            self._in_flight += len(claimed) - len(outcomes)
            self._queued += len(claimed)
        pool = self._pool
        for job in claimed:
            self.emit("job:processing", {"job_id": job.id, "job_type": job.job_type})
            if pool is not None:
                pool.submit(Execution(job, self._deliver))
        return len(claimed)

    def _store(self, outcomes: list[Outcome], *, report_event: bool) -> None:
        """Store outcomes without claiming (one-shot mode)."""
        failures = [o for o in outcomes if o.kind == "failed"]
        completions = [o for o in outcomes if o.kind == "completed"]
        self._store_failures(failures, report_event=report_event)
        self._store_waits([o for o in outcomes if o.kind == "waiting"], report_event=report_event)
        if not completions:
            return
        try:
            done_ids, _ = self._backend.advance(
                self.worker_id,
                [Completion(o.job.id, o.output_json) for o in completions],
                self._claim_request(0),
            )
        except Exception as exc:
            self._report(exc, event=report_event)
            return
        self._announce_completed(completions, done_ids)

    def _announce_completed(self, completions: list[Outcome], done_ids: list[int]) -> None:
        stored = set(done_ids)
        for outcome in completions:
            job = outcome.job
            if job.id in stored:
                self.emit("job:completed", {"job_id": job.id, "job_type": job.job_type})
            else:
                logger.warning(
                    "job %s finished but worker %s no longer owned it; result dropped",
                    job.id,
                    self.worker_id,
                )

    def _store_failures(self, failures: list[Outcome], *, report_event: bool = False) -> None:
        if not failures:
            return
        try:
            results = self._backend.fail_jobs(self.worker_id, [self._failure(o) for o in failures])
        except Exception as exc:
            self._report(exc, event=report_event)
            return
        by_id = {result.job_id: result for result in results}
        for outcome in failures:
            result = by_id.get(outcome.job.id)
            if result is None:
                logger.warning(
                    "job %s failed but worker %s no longer owned it; failure dropped",
                    outcome.job.id,
                    self.worker_id,
                )
                continue
            self.emit(
                "job:failed",
                {
                    "job_id": outcome.job.id,
                    "job_type": outcome.job.job_type,
                    "error": outcome.error,
                    "will_retry": result.will_retry,
                },
            )

    def _store_waits(self, waits: list[Outcome], *, report_event: bool) -> None:
        for outcome in waits:
            job = outcome.job
            try:
                parked = self._backend.wait_job(
                    self.worker_id,
                    job.id,
                    outcome.wait_until,
                    outcome.token_id,
                    outcome.step_data_json,
                )
            except Exception as exc:
                self._report(exc, event=report_event)
                continue
            if parked:
                self.emit("job:waiting", {"job_id": job.id, "job_type": job.job_type})
            else:
                logger.warning(
                    "job %s started waiting but worker %s no longer owned it",
                    job.id,
                    self.worker_id,
                )

    @staticmethod
    def _failure(outcome: Outcome) -> Failure:
        job = outcome.job
        assert outcome.error is not None
        delay = retry_delay_seconds(
            job.attempts,
            job.max_attempts,
            retry_delay=job.retry_delay,
            retry_backoff=job.retry_backoff,
            retry_delay_max=job.retry_delay_max,
            jitter=random.random(),
        )
        return Failure(
            job_id=job.id,
            message=error_message(outcome.error),
            reason=outcome.reason,
            retry_in_seconds=delay,
            failed_at=outcome.failed_at,
        )

    def _deliver(self, outcome: Outcome) -> None:
        with self._cond:
            self._outcomes.append(outcome)
            if not self._running or self._batch_ready():
                self._cond.notify_all()

    def _report(self, error: BaseException, *, event: bool) -> None:
        report_error(error, self._on_error, logger, "Job processor error:")
        if event:
            self.emit("error", error)

    # -- running one job (worker threads) -------------------------------------------

    def _execute(self, execution: Execution) -> None:
        with self._cond:
            self._queued -= 1
        started = time.perf_counter()
        self._run_job(execution)
        elapsed = time.perf_counter() - started
        self._handler_seconds += (elapsed - self._handler_seconds) * 0.1

    def _run_job(self, execution: Execution) -> None:
        job = execution.job
        handler = self._handlers.get(job.job_type)
        if not handler:
            error = DataQueueError(f"No handler registered for job type: {job.job_type}")
            execution.settle(Outcome.failed(job, error, FailureReason.NO_HANDLER))
            return
        if execution.has_timeout:
            self._watchdog.arm(execution, int(job.timeout_ms or 0))
        try:
            self._resolve_waits(execution)
            outcome = self._invoke(handler, execution)
        except WaitSignal as signal:
            outcome = Outcome.waiting(
                job,
                signal.details.get("wait_until"),
                signal.details.get("token_id"),
                json.dumps(execution.step_data, separators=(",", ":")),
            )
        except BaseException as exc:  # every raise is a job outcome
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            logger.error("Error processing job %s: %s", job.id, exc, exc_info=exc)
            outcome = Outcome.failed(job, exc, FailureReason.HANDLER_ERROR)
        self._watchdog.disarm(execution)
        if not execution.settle(outcome):
            logger.log(self._log_level, "job %s returned after its timeout; ignored", job.id)

    def _resolve_waits(self, execution: Execution) -> None:
        """Mark the waits that ended as completed before the handler runs again (§6.3)."""
        changed = False
        for key, entry in execution.step_data.items():
            if not key.startswith("__wait_") or not isinstance(entry, dict):
                continue
            if entry.get("completed"):
                continue
            if entry.get("type") in ("duration", "date"):
                entry["completed"] = True
                changed = True
            elif entry.get("type") == "token" and entry.get("tokenId"):
                token = self._backend.get_token(entry["tokenId"])
                result = None if token is None else token_result(token.status, token.output)
                if result is not None:
                    entry.update(completed=True, result=result)
                    changed = True
        if changed:
            encoded = json.dumps(execution.step_data, separators=(",", ":"))
            self.write_best_effort(
                "step data",
                lambda backend, worker: backend.update_step_data(worker, execution.job.id, encoded),
            )

    def _invoke(self, handler: Handler, execution: Execution) -> Outcome:
        job = execution.job
        if job.force_kill_on_timeout and execution.has_timeout:
            self._watchdog.disarm(execution)  # the child process has its own deadline
            return self._invoke_isolated(handler, job)
        arity = self._arity[job.job_type]
        ctx = JobContext(self, execution)
        arguments = (job.payload, execution.signal, ctx)[:arity]
        result = handler(*arguments)
        if ctx.output_was_set:
            return Outcome.completed(job, ctx.output_json)
        output = None if result is None else encode_json(result, what="handler result")
        return Outcome.completed(job, output)

    @staticmethod
    def _invoke_isolated(handler: Handler, job: ClaimedJob) -> Outcome:
        from dataqueue.processing import isolated

        result = isolated.run_isolated(
            handler, job.payload, int(job.timeout_ms or 0), job_id=job.id, job_type=job.job_type
        )
        if result.kind == "completed":
            output = None if result.output is None else encode_json(result.output)
            return Outcome.completed(job, output)
        reason = FailureReason.TIMEOUT if result.kind == "timeout" else FailureReason.HANDLER_ERROR
        error: BaseException = (
            TimeoutError(result.error_message)
            if result.kind == "timeout"
            else RuntimeError(result.error_message)
        )
        return Outcome.failed(job, error, reason)

    # -- deadlines ------------------------------------------------------------------

    def _expire(self, execution: Execution) -> None:
        """The watchdog gave up on a job: abort it and fail it with reason timeout."""
        message = f"Job timed out after {execution.armed_ms} ms"
        execution.signal.abort("timeout")
        outcome = Outcome.failed(execution.job, TimeoutError(message), FailureReason.TIMEOUT)
        if not execution.settle(outcome):
            return
        pool = self._pool
        if pool is not None and execution.thread is not None and execution.thread.is_alive():
            # The handler keeps its thread until it returns; a new thread keeps the slot
            # usable and the old one exits when the handler finally returns.
            execution.abandoned = True
            pool.add_thread()

    def _store_extension(self, execution: Execution, ms: int) -> None:
        self.write_best_effort(
            "lock extension",
            lambda backend, worker: backend.prolong_job(worker, execution.job.id),
        )
