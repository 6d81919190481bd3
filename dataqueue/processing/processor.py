"""The processor: claims jobs, runs handlers on worker threads, stores outcomes.

Threads (one processor):

- ``dataqueue-processor-<worker_id>`` (background mode): the loop. Each cycle stores
  the outcomes workers delivered and claims jobs for the freed slots in **one**
  statement (``Backend.advance``); failures are stored in one statement per cycle
  (:mod:`dataqueue.processing.storing`). Outcomes the store could not take stay here
  and are stored on a later cycle, after a backoff (:mod:`dataqueue.processing.outage`).
- ``dataqueue-heartbeat-<worker_id>``: refreshes the locks of every held job and
  reclaims dead workers' jobs (:mod:`dataqueue.processing.heartbeat`).
- ``dataqueue-worker-<worker_id>-<n>``: run handlers. ``concurrency`` of them; when a
  handler outlives its timeout a replacement starts, so the slots stay usable while
  the stuck thread finishes on its own.
- ``dataqueue-timeouts-<worker_id>``: fires job deadlines (started on first use).
- ``dataqueue-listener-<worker_id>``: holds the listening connection that wakes the
  loop when jobs become due (:mod:`dataqueue.processing.wakeup`); with ``listen=False``
  or a store that cannot push, there is none and the loop polls.

All are daemon threads: losing them at interpreter exit loses nothing that the
heartbeat-based reclaim cannot recover, and an ``atexit`` hook drains running
processors first. ``self._cond`` (one lock) guards the outcome list, the held jobs,
the running flag, the backoff deadline, the claim request and the timed wake-up.
"""

from __future__ import annotations

import atexit
import datetime as dt
import inspect
import json
import logging
import math
import random
import string
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dataqueue import intervals, tracing
from dataqueue.backends.base import Backend, ClaimedJob, ClaimRequest
from dataqueue.durations import token_timeout
from dataqueue.enums import ALL_JOB_TYPES, FailureReason
from dataqueue.errors import ConfigurationError, DataQueueError, WaitSignal
from dataqueue.hooks import ErrorCallback, EventHooks, report_error
from dataqueue.logs import job_fields
from dataqueue.payload import encode_json
from dataqueue.processing import heartbeat
from dataqueue.processing.aio import EventLoopThread
from dataqueue.processing.context import JobContext, new_token_id, token_result
from dataqueue.processing.execution import Execution, Watchdog
from dataqueue.processing.heartbeat import Heartbeat
from dataqueue.processing.instrument import Instrumentation, guarded
from dataqueue.processing.invoke import Outcome, handler_arity
from dataqueue.processing.outage import Outage
from dataqueue.processing.pool import WorkerPool
from dataqueue.processing.storing import OutcomeStore
from dataqueue.processing.wakeup import Listener
from dataqueue.rate_limits import RateLimit, rate_limits_option
from dataqueue.records import WaitpointRecord, WaitToken
from dataqueue.validation import require_tags

logger = logging.getLogger("dataqueue.processor")

Handler = Callable[..., Any]

_running_processors: weakref.WeakSet[Processor] = weakref.WeakSet()

# Handlers faster than this on average let a processor claim ahead of its free slots
# (up to batch_size more), so that claims and completions are stored in batches.
# Slower handlers get upstream's behaviour: claim only for free slots, so a long job
# never sits locked in a local queue while other workers are idle.
_QUICK_HANDLER_SECONDS = 0.05

# After a short claim, how long the loop lets idle workers take the claimed jobs before
# it asks the store when the next scheduled job is due (see _let_workers_start).
_HANDOFF_WAIT_SECONDS = 0.002


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


def _job_types(job_type: Any, handlers: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The claim's type filter: by default exactly the handlers' types (None: all types)."""
    if job_type is None:
        return tuple(sorted(handlers))
    if job_type == ALL_JOB_TYPES:
        return None
    if isinstance(job_type, str):
        return (job_type,)
    if isinstance(job_type, list | tuple) and all(isinstance(t, str) for t in job_type):
        return tuple(job_type)
    raise TypeError(f"job_type must be a string or a list of strings, got {job_type!r}")


def _unregister(backend: Backend, worker_id: str) -> bool:
    backend.unregister_worker(worker_id)
    return True


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
        rate_limits: Mapping[str, RateLimit] | None = None,
        heartbeat_interval: float | dt.timedelta = heartbeat.DEFAULT_INTERVAL,
        heartbeat_timeout: float | dt.timedelta = heartbeat.DEFAULT_TIMEOUT,
        before_claim: Sequence[Callable[[], object]] = (),
        listen: bool = True,
        instrumentation: Instrumentation | None = None,
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
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable, got {on_error!r}")
        if not isinstance(listen, bool):
            raise TypeError(f"listen must be True or False, got {listen!r}")
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
        self.poll_interval_seconds = intervals.milliseconds(poll_interval, "poll_interval") / 1000
        self.heartbeat_interval = intervals.seconds(
            heartbeat_interval, "heartbeat_interval", minimum=0.0, maximum=600.0
        )
        self.heartbeat_timeout = intervals.seconds(
            heartbeat_timeout, "heartbeat_timeout", minimum=0.0, maximum=86_400.0
        )
        if (
            self.heartbeat_timeout
            < heartbeat.MIN_BEATS_PER_TIMEOUT * self.heartbeat_interval - 1e-9
        ):
            raise ConfigurationError(
                f"heartbeat_timeout ({self.heartbeat_timeout:g} s) must be at least "
                f"{heartbeat.MIN_BEATS_PER_TIMEOUT} heartbeat intervals "
                f"({heartbeat.MIN_BEATS_PER_TIMEOUT * self.heartbeat_interval:g} s): a shorter "
                "one would reclaim jobs that are still running"
            )
        self._on_error = on_error
        self._log_level = logging.INFO if verbose else logging.DEBUG
        self._job_types = _job_types(job_type, self._handlers)
        self._rate_limits = rate_limits_option(rate_limits, self._job_types)
        self._before_claim = list(before_claim)
        self._instrument = guarded(instrumentation)
        # _cond guards _outcomes, _held, _to_release, _queued, _running, _retry_at,
        # _claim_requested, _woken_at, _due_at, _room_at and _due_unknown.
        self._cond = threading.Condition()
        self._outcomes: list[Outcome] = []
        self._held: dict[int, Execution] = {}  # claimed, not yet stored or released
        self._to_release: list[Execution] = []
        self._queued = 0  # claimed, waiting for a worker thread
        self._handoff_waiting = False  # the loop waits for workers to take new jobs
        self._retry_at = 0.0  # monotonic time before which the loop leaves the store alone
        self._claim_requested = False  # jobs became due: claim without waiting for a poll
        self._woken_at: float | None = None  # perf_counter() of the oldest unclaimed wake-up
        self._due_at = math.inf  # monotonic time the next scheduled job becomes due
        self._room_at = math.inf  # monotonic time a full rate-limited type has room again
        # Something may have scheduled a job since the store was last asked when the next
        # one is due: ask again after the next claim that comes back short.
        self._due_unknown = True
        self._handler_seconds = _QUICK_HANDLER_SECONDS  # moving average of handler time
        self._running = False
        self._oneshots = 0
        self._loop_thread: threading.Thread | None = None
        self._pool: WorkerPool | None = None
        self._outage = Outage(
            self._report_outage, on_failure=self._instrument.store_failed, worker_id=self.worker_id
        )
        self._store = OutcomeStore(
            backend,
            self.worker_id,
            self.emit,
            self._settled,
            instrument=self._instrument,
            log_level=self._log_level,
        )
        self._heartbeat = Heartbeat(
            backend,
            self.worker_id,
            interval=self.heartbeat_interval,
            timeout=self.heartbeat_timeout,
            held=self._held_ids,
            on_lost=self._lost,
            on_reclaimed=self._reclaimed,
            outage=self._outage,
        )
        self._event_loop = EventLoopThread(f"dataqueue-async-{self.worker_id}")
        self._watchdog = Watchdog(
            f"dataqueue-timeouts-{self.worker_id}", self._expire, self._store_extension
        )
        self._listener = (
            Listener(
                backend,
                self.worker_id,
                job_types=self._job_types,
                wake=self._wake,
                outage=self._outage,
            )
            if listen
            else None
        )

    # -- public API -----------------------------------------------------------------

    def start(self, *, inline: bool = False) -> int:
        """Process one batch now and return how many jobs were claimed (serverless/cron style).

        Runs the before-claim hooks, claims up to ``batch_size`` jobs, runs them with up
        to ``concurrency`` threads, stores every outcome and returns the number claimed.
        Heartbeats keep the claimed jobs' locks fresh meanwhile. Independent of
        background mode: it never starts or stops the loop (W-API-9).

        ``inline=True`` runs the handlers one after another in the calling thread (tests:
        a handler then sees the caller's thread-local state, such as a Flask app context).
        """
        with self._cond:
            self._oneshots += 1
        try:
            return self._run_once(inline=inline)
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
            self._pool = WorkerPool(
                f"dataqueue-worker-{self.worker_id}", self.concurrency, self._execute
            )
            self._loop_thread = threading.Thread(
                target=self._loop, name=f"dataqueue-processor-{self.worker_id}", daemon=True
            )
        _running_processors.add(self)
        self._loop_thread.start()
        logger.log(
            self._log_level,
            "processor %s started",
            self.worker_id,
            extra={"action": "processor_started", "worker_id": self.worker_id},
        )

    def stop(self) -> None:
        """Stop claiming; returns at once.

        Claimed jobs that no worker thread has started go back to ``pending`` (or
        ``waiting``, for a resumed wait) with their attempt restored and no failure
        recorded. Running jobs finish and are stored.
        """
        with self._cond:
            self._running = False
            self._cond.notify_all()

    def stop_and_drain(self, timeout_ms: float = 30000) -> list[int]:
        """Stop, then wait up to ``timeout_ms`` for in-flight jobs to finish and be stored.

        Returns the ids of the jobs still held when the wait ended: empty when the
        drain completed. Those jobs stay locked by this worker while its process lives
        (their handlers may still finish and be stored); if the process exits, other
        workers reclaim them once the heartbeat timeout has passed. Never raises for
        job errors.
        """
        self.stop()
        thread = self._loop_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(timeout_ms, 0) / 1000)
        left = self.unfinished_job_ids()
        if left:
            logger.warning(
                "processor %s: %d job(s) still running after %s ms: %s",
                self.worker_id,
                len(left),
                timeout_ms,
                ", ".join(map(str, left)),
                extra={
                    "action": "drain_timed_out",
                    "worker_id": self.worker_id,
                    "job_ids": left,
                    "count": len(left),
                    "timeout_ms": timeout_ms,
                },
            )
        return left

    def unfinished_job_ids(self) -> list[int]:
        """Ids of the jobs this processor holds: claimed and not yet stored or released."""
        with self._cond:
            return sorted(self._held)

    def is_running(self) -> bool:
        """True while the background loop runs or a one-shot ``start()`` is in progress.

        False once the loop has died (the error went to ``on_error``).
        """
        return self._running or self._oneshots > 0

    # -- used by JobContext ---------------------------------------------------------

    def emit(self, event: str, payload: Any) -> None:
        self._hooks.emit(event, payload)

    def write_best_effort(self, what: str, write: Callable[[Backend, str], bool]) -> None:
        try:
            write(self._backend, self.worker_id)
        except Exception:
            logger.exception(
                "could not store %s (ignored)",
                what,
                extra={"action": "best_effort_write_failed", "worker_id": self.worker_id},
            )

    def create_token(self, job_id: int | None, timeout: Any, tags: list[str] | None) -> WaitToken:
        duration = token_timeout(timeout)
        token = WaitToken(new_token_id())
        self._backend.create_token(
            token.id, job_id, duration, None if tags is None else require_tags(tags)
        )
        return token

    def get_token(self, token_id: str) -> WaitpointRecord | None:
        return self._backend.get_token(token_id)

    def extend_deadline(self, execution: Execution, ms: int) -> None:
        self._watchdog.arm(execution, ms)
        self._store_extension(execution, ms)

    # -- background loop ------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._run_loop()
        except BaseException as exc:  # a bug or interpreter shutdown: say so, stop cleanly
            with self._cond:
                self._running = False
            self._report(exc, event=True)
            logger.critical(
                "processor %s loop died; its jobs will be reclaimed",
                self.worker_id,
                extra={"action": "loop_died", "worker_id": self.worker_id},
            )
        finally:
            self._finish_background()

    def _run_loop(self) -> None:
        next_tick = 0.0
        claim_more = False
        registered = False
        listening = False
        while True:
            with self._cond:
                self._wait_for_work(next_tick, claim_more)
                outcomes, self._outcomes = self._outcomes, []
                running = self._running
                woken, self._claim_requested = self._claim_requested, False
                woken_at, self._woken_at = self._woken_at, None
                if not running and self._pool is not None:
                    unstarted = self._pool.take_queued()
                    self._queued -= len(unstarted)
                    self._to_release.extend(unstarted)
                to_release, self._to_release = self._to_release, []
                if not running and not self._held:
                    break
            if not registered:
                registered = self._register()
                if not registered:
                    self._put_back(outcomes, to_release)
                    continue
                self._heartbeat.start()
            tick_due = running and time.monotonic() >= next_tick
            if tick_due:
                self._run_before_claim()
                next_tick = time.monotonic() + self.poll_interval_seconds
            if tick_due or any(o.kind != "completed" for o in outcomes):
                self._forget_due_time()  # retries and waits schedule jobs
            self._release(to_release)
            limit = 0
            if running and (tick_due or claim_more or outcomes or woken):
                capacity = self.concurrency + self._prefetch()
                with self._cond:
                    held = len(self._held)
                limit = min(capacity - held + len(outcomes), self.batch_size)
            claimed = self._cycle(outcomes, limit, woken_at)
            claim_more = limit > 0 and claimed == limit
            if running and not listening and self._listener is not None:
                # After the first claim, so that opening its connection does not delay
                # the jobs that were due at start.
                self._listener.start()
                listening = True
            if limit > 0 and claimed < limit:
                self._schedule_due_wakeup()

    def _register(self) -> bool:
        try:
            self._heartbeat.register()
        except Exception as exc:
            self._back_off(exc)
            return False
        self._outage.succeeded()
        return True

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
        unfinished = len(self._held) - finished
        # Store when a batch is full, when nothing else is coming, or when the local
        # queue runs low (so workers never idle while this loop waits).
        low_water = self.batch_size if self._prefetch() else self.concurrency
        return finished >= self.batch_size or unfinished == 0 or self._queued < low_water

    def _wait_for_work(self, next_tick: float, claim_more: bool) -> None:
        """Block (holding ``_cond``) until outcomes arrive, a claim is due, or stop."""
        while True:
            now = time.monotonic()
            if self._retry_at > now:  # backing off while the store is away
                self._cond.wait(self._retry_at - now)
                continue
            if self._to_release or (not self._running and self._queued):
                return
            if self._batch_ready():
                return
            if self._running:
                if self._due_at <= now:  # a scheduled job is due: claim it now
                    self._due_at = math.inf
                    self._due_unknown = self._claim_requested = True
                if self._room_at <= now:  # a rate-limited type has room again
                    self._room_at = math.inf
                    self._claim_requested = True
                capacity = self.concurrency + self._prefetch()
                if (claim_more or self._claim_requested) and len(self._held) < capacity:
                    return
                remaining = min(next_tick, self._due_at, self._room_at) - now
                if remaining <= 0:
                    return
                self._cond.wait(remaining)
            elif not self._held:
                return
            else:
                self._cond.wait()
                if self._outcomes:
                    return

    def _wake(self) -> None:
        """Jobs may have become due (the listener says so): claim without waiting."""
        with self._cond:
            self._claim_requested = self._due_unknown = True
            if self._woken_at is None:
                self._woken_at = time.perf_counter()
            self._cond.notify_all()

    def _forget_due_time(self) -> None:
        with self._cond:
            self._due_unknown = True

    def _schedule_due_wakeup(self) -> None:
        """After a short claim: sleep no later than the next scheduled job's due time.

        Asks the store only when something may have changed it since the last answer
        (a wake-up, a poll, a retry or wait this processor stored, the last due time).
        A job made due for a moment that falls inside one claim statement, and not
        known before it, waits for the next wake-up or poll.
        """
        with self._cond:
            if not self._due_unknown or not self._running:
                return
            self._due_unknown = False
            self._let_workers_start()
        try:
            seconds = self._backend.next_due_in(self._job_types)
        except Exception as exc:
            self._forget_due_time()
            self._back_off(exc)
            return
        if seconds is None:
            return
        # Counted from the answer, not the question: the store measured from the start
        # of its statement, so the claim reaches it after the due time, never before
        # (it would find nothing, and the job would no longer count as "future").
        due_at = time.monotonic() + max(seconds, 0.0)
        with self._cond:
            # Only ever earlier until it fires: a claim that ran just before a known due
            # time, followed by this question just after it, must not lose that time.
            self._due_at = min(self._due_at, due_at)

    def _let_workers_start(self) -> None:
        """Wait (holding ``_cond``, at most :data:`_HANDOFF_WAIT_SECONDS`) until idle
        worker threads have taken the jobs just handed to them.

        The loop's next statement runs Python code for a while before it waits on the
        network, and a worker needs the GIL to start its handler: without this wait, a
        job claimed by an idle processor started about half a millisecond later.
        """
        deadline = time.monotonic() + _HANDOFF_WAIT_SECONDS
        self._handoff_waiting = True
        try:
            while self._queued and self._running:
                running = len(self._held) - self._queued - len(self._outcomes)
                remaining = deadline - time.monotonic()
                if running >= self.concurrency or remaining <= 0:
                    return
                self._cond.wait(remaining)
        finally:
            self._handoff_waiting = False

    def _finish_background(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._heartbeat.stop()
        with self._cond:
            pool, self._pool = self._pool, None
            drained = not self._held
            if self._running:  # restarted while draining: keep going in a fresh loop
                self._loop_thread = None
                self._running = False
                restart = True
            else:
                restart = False
        if pool is not None:
            pool.shutdown()
        self._event_loop.close()
        if drained and not restart:
            self.write_best_effort("worker registry", _unregister)
        _running_processors.discard(self)
        logger.log(
            self._log_level,
            "processor %s stopped",
            self.worker_id,
            extra={"action": "processor_stopped", "worker_id": self.worker_id},
        )
        if restart:
            self.start_in_background()

    # -- one-shot -------------------------------------------------------------------

    def _run_once(self, *, inline: bool = False) -> int:
        self._run_before_claim()
        outage = Outage(
            lambda exc: self._report(exc, event=True),
            on_failure=self._instrument.store_failed,
            worker_id=self.worker_id,
        )
        try:
            asked = time.perf_counter()
            _, claimed = self._backend.advance(
                self.worker_id, [], self._claim_request(self.batch_size)
            )
        except Exception as exc:
            self._instrument.store_failed()
            self._report(exc, event=True)
            return 0
        self._instrument.claimed(len(claimed), time.perf_counter() - asked)
        if not claimed:
            return 0
        # Registered after the claim, so that an empty poll stays one statement. If this
        # fails, the heartbeat thread registers on its first beat.
        try:
            self._heartbeat.register()
        except Exception:
            logger.exception(
                "could not register worker %s (its heartbeat will)",
                self.worker_id,
                extra={"action": "register_failed", "worker_id": self.worker_id},
            )
        done = threading.Condition()
        outcomes: list[Outcome] = []

        def collect(outcome: Outcome) -> None:
            with done:
                outcomes.append(outcome)
                done.notify()

        executions = [Execution(job, collect) for job in claimed]
        with self._cond:
            self._held.update((e.job.id, e) for e in executions)
        pool = (
            None
            if inline
            else WorkerPool(
                f"dataqueue-worker-{self.worker_id}-once",
                min(self.concurrency, len(claimed)),
                self._run_job,
            )
        )
        beat = self._oneshot_heartbeat(outage)
        try:
            for execution in executions:
                self.emit(
                    "job:processing",
                    {"job_id": execution.job.id, "job_type": execution.job.job_type},
                )
                if pool is None:
                    self._run_job(execution)
                else:
                    pool.submit(execution)
            self._store_until_settled(executions, outcomes, done, outage)
        finally:
            beat.stop()
            if pool is not None:
                pool.shutdown()
            self._event_loop.close()
        with self._cond:
            drained = not self._held and not self._running
        if drained:  # a serverless invocation leaves no registry row behind
            self.write_best_effort("worker registry", _unregister)
        return len(claimed)

    def _oneshot_heartbeat(self, outage: Outage) -> Heartbeat:
        beat = Heartbeat(
            self._backend,
            self.worker_id,
            interval=self.heartbeat_interval,
            timeout=self.heartbeat_timeout,
            held=self._held_ids,
            on_lost=self._lost,
            on_reclaimed=lambda count: None,
            outage=outage,
        )
        beat.start()
        return beat

    def _store_until_settled(
        self,
        executions: list[Execution],
        outcomes: list[Outcome],
        done: threading.Condition,
        outage: Outage,
    ) -> None:
        """Store outcomes as they arrive; retry with backoff while the store is away.

        Gives up (the jobs stay locked and are reclaimed) only after the heartbeat
        timeout of failing tries, so a serverless invocation ends.
        """
        ids = {e.job.id for e in executions}
        pending: list[Outcome] = []
        deadline: float | None = None
        while True:
            with self._cond:
                if not ids & self._held.keys():
                    return
            with done:
                if not outcomes and not pending:
                    done.wait()
                batch, outcomes[:] = [*pending, *outcomes], []
            result = self._store.store(batch, None)
            pending = result.retry
            if pending:
                self._instrument.store_retried(len(pending))
            if result.error is None:
                outage.succeeded()
                deadline = None
                continue
            delay = outage.failed(result.error)
            if not result.transient:
                continue
            deadline = deadline or time.monotonic() + self.heartbeat_timeout
            if time.monotonic() + delay > deadline:
                logger.error(
                    "processor %s: could not store %d outcome(s); their jobs will be reclaimed",
                    self.worker_id,
                    len(pending),
                    extra={
                        "action": "outcomes_abandoned",
                        "worker_id": self.worker_id,
                        "job_ids": [outcome.job.id for outcome in pending],
                        "count": len(pending),
                    },
                )
                with self._cond:
                    for outcome in pending:
                        self._held.pop(outcome.job.id, None)
                pending = []
                continue
            time.sleep(delay)

    # -- claiming, storing, releasing -----------------------------------------------

    def _claim_request(self, limit: int) -> ClaimRequest:
        return ClaimRequest(
            limit=limit,
            job_types=self._job_types,
            group_limit=self.group_concurrency,
            scan_size=self.batch_size,
            rate_limits=self._rate_limits,
            on_rate_limited=self._rate_limited if self._rate_limits else None,
        )

    def _rate_limited(self, seconds: float) -> None:
        """The claim left a rate-limited type full: claim again once it has room."""
        room_at = time.monotonic() + seconds
        with self._cond:
            self._room_at = min(self._room_at, room_at)

    def _run_before_claim(self) -> None:
        for hook in self._before_claim:
            try:
                hook()
            except Exception as exc:
                self._report(exc, event=True)

    def _cycle(self, outcomes: list[Outcome], limit: int, woken_at: float | None = None) -> int:
        """Store ``outcomes`` and claim up to ``limit`` jobs; return how many were claimed.

        Outcomes the store could not take are kept for the next cycle, after a backoff.
        ``woken_at``: when the wake-up that asked for this claim arrived (kept for the
        next claim if this cycle claims nothing).
        """
        claim = self._claim_request(max(limit, 0)) if limit > 0 else None
        if claim is None and woken_at is not None:
            self._keep_wakeup(woken_at)
        result = self._store.store(outcomes, claim)
        if result.error is not None:
            self._back_off(result.error)
        elif outcomes or claim is not None:
            self._outage.succeeded()
        if result.retry:
            self._instrument.store_retried(len(result.retry))
            self._put_back(result.retry, [])
        self._accept(result.claimed, woken_at)
        return len(result.claimed)

    def _keep_wakeup(self, woken_at: float) -> None:
        with self._cond:
            if self._woken_at is None or woken_at < self._woken_at:
                self._woken_at = woken_at

    def _accept(self, claimed: list[ClaimedJob], woken_at: float | None = None) -> None:
        executions = [Execution(job, self._deliver, woken_at) for job in claimed]
        with self._cond:
            self._held.update((e.job.id, e) for e in executions)
            self._queued += len(executions)
        pool = self._pool
        for execution in executions:
            job = execution.job
            self.emit("job:processing", {"job_id": job.id, "job_type": job.job_type})
            if pool is not None:
                pool.submit(execution)

    def _release(self, executions: list[Execution]) -> None:
        """Give back claimed jobs that never started (shutdown)."""
        if not executions:
            return
        try:
            released = self._backend.release_jobs(self.worker_id, [e.job for e in executions])
        except Exception as exc:
            self._put_back([], executions)  # tried again after a backoff
            self._back_off(exc)
            return
        with self._cond:
            for execution in executions:
                self._held.pop(execution.job.id, None)
        logger.log(
            self._log_level,
            "processor %s gave back %d unstarted job(s): %s",
            self.worker_id,
            len(released),
            ", ".join(map(str, released)),
            extra={
                "action": "jobs_released",
                "worker_id": self.worker_id,
                "job_ids": list(released),
                "count": len(released),
            },
        )

    def _put_back(self, outcomes: list[Outcome], to_release: list[Execution]) -> None:
        with self._cond:
            self._outcomes[:0] = outcomes
            self._to_release[:0] = to_release

    def _back_off(self, error: BaseException) -> None:
        delay = self._outage.failed(error)
        with self._cond:
            self._retry_at = time.monotonic() + delay

    def _report_outage(self, error: BaseException) -> None:
        self._report(error, event=True)

    def _settled(self, job_id: int) -> None:
        with self._cond:
            self._held.pop(job_id, None)
            self._cond.notify_all()

    def _held_ids(self) -> list[int]:
        with self._cond:
            return list(self._held)

    def _lost(self, job_ids: list[int]) -> None:
        """The store says these jobs are no longer ours: tell their handlers to stop."""
        with self._cond:
            executions = [self._held[i] for i in job_ids if i in self._held]
        for execution in executions:
            logger.warning(
                "job %s: worker %s lost its lock (reclaimed after a missed heartbeat); "
                "its result will not be stored",
                execution.job.id,
                self.worker_id,
                extra=job_fields(execution.job, self.worker_id, "lock_lost"),
            )
            execution.signal.abort("lock lost")

    def _reclaimed(self, count: int) -> None:
        logger.info(
            "reclaimed %d job(s) of workers that stopped heartbeating",
            count,
            extra={"action": "jobs_reclaimed", "worker_id": self.worker_id, "count": count},
        )
        with self._cond:
            self._claim_requested = True  # they are due now: claim without waiting for a poll
            self._cond.notify_all()

    def _deliver(self, outcome: Outcome) -> None:
        with self._cond:
            self._outcomes.append(outcome)
            if not self._running or self._batch_ready():
                self._cond.notify_all()

    def _report(self, error: BaseException, *, event: bool) -> None:
        report_error(
            error,
            self._on_error,
            logger,
            "Job processor error:",
            extra={"action": "processor_error", "worker_id": self.worker_id},
        )
        if event:
            self.emit("error", error)

    # -- running one job (worker threads) -------------------------------------------

    def _execute(self, execution: Execution) -> None:
        with self._cond:
            self._queued -= 1
            if self._handoff_waiting:
                self._cond.notify_all()
        started = time.perf_counter()
        self._run_job(execution)
        elapsed = time.perf_counter() - started
        self._handler_seconds += (elapsed - self._handler_seconds) * 0.1

    def _run_job(self, execution: Execution) -> None:
        self._job_started(execution)
        job = execution.job
        handler = self._handlers.get(job.job_type)
        if not handler:
            error = DataQueueError(f"No handler registered for job type: {job.job_type}")
            execution.settle(Outcome.failed(job, error, FailureReason.NO_HANDLER))
            return
        if execution.has_timeout:
            self._watchdog.arm(execution, int(job.timeout_ms or 0))
        run_trace = tracing.start_run(job, self.worker_id)  # None unless OpenTelemetry is set up
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
            logger.error(
                "Error processing job %s: %s",
                job.id,
                exc,
                exc_info=exc,
                extra=job_fields(job, self.worker_id, "handler_raised"),
            )
            outcome = Outcome.failed(job, exc, FailureReason.HANDLER_ERROR)
        self._watchdog.disarm(execution)
        if run_trace is not None:
            run_trace.end(outcome, timed_out=execution.settled)  # settled first by the deadline
        if not execution.settle(outcome):
            logger.log(
                self._log_level,
                "job %s returned after its timeout; ignored",
                job.id,
                extra=job_fields(job, self.worker_id, "late_return_ignored"),
            )

    def _job_started(self, execution: Execution) -> None:
        """Mark the start of the job's run (its run time counts from here); report it."""
        execution.started_at = started = time.perf_counter()
        job = execution.job
        woken_at = execution.woken_at
        self._instrument.job_started(job.job_type, None if woken_at is None else started - woken_at)
        if logger.isEnabledFor(self._log_level):
            logger.log(
                self._log_level,
                "job %s (%s) started, attempt %d",
                job.id,
                job.job_type,
                job.attempts,
                extra=job_fields(job, self.worker_id, "job_started"),
            )

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
        if inspect.isawaitable(result):  # an async def handler
            result = self._event_loop.run(result, execution.signal)
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
        outcome = Outcome.failed(execution.job, TimeoutError(message), FailureReason.TIMEOUT)
        # Settled before the abort: an aborted async handler returns at once, and its
        # outcome must not win over the timeout.
        settled = execution.settle(outcome)
        execution.signal.abort("timeout")
        if not settled:
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
