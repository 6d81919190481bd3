"""Storing what handlers did: completions, failures and waits, without losing any.

Two rules make a processor safe under database faults:

- **An outcome is dropped only once the store has answered.** When a write fails for
  any reason but the values themselves (a killed connection, a restart, a failover,
  missing tables) the outcomes come back to the caller, which keeps them and tries
  again with backoff. Writing one twice is
  harmless: every write is guarded by ``status = 'processing' AND locked_by = worker``,
  so a second try after a lost reply changes nothing.
- **One job's bad value affects that job alone.** A statement the store refuses for its
  values (text PostgreSQL cannot store, a value out of range) is split and
  each outcome stored alone. A completion or wait that still fails becomes a failure of
  that job naming the store's complaint; a failure whose message cannot be stored is
  stored with an ASCII-escaped message.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from dataqueue.backends.base import Backend, ClaimedJob, ClaimRequest, Completion, Failure
from dataqueue.enums import FailureReason
from dataqueue.errors import DataQueueError
from dataqueue.logs import job_fields, milliseconds
from dataqueue.processing.instrument import NO_INSTRUMENTATION, Instrumentation, JobOutcome
from dataqueue.processing.invoke import Outcome, error_message
from dataqueue.retry import retry_delay_seconds

logger = logging.getLogger("dataqueue.processor")


class OutcomeNotStorableError(DataQueueError):
    """The store refused a job's result (e.g. text it cannot hold); the job fails."""


@attrs.define
class StoreResult:
    """What one :meth:`OutcomeStore.store` call achieved."""

    #: Outcomes not stored because the store was unreachable: keep them, try again.
    retry: list[Outcome] = attrs.Factory(list)
    claimed: list[ClaimedJob] = attrs.Factory(list)
    #: The first error met, if any (the caller reports it once per outage).
    error: BaseException | None = None
    #: Whether ``error`` left outcomes to retry (the store is away, or refused the
    #: request for a reason other than its values): back off and try again.
    transient: bool = False

    def failed(self, error: BaseException, transient: bool) -> None:
        if self.error is None:
            self.error, self.transient = error, transient


class OutcomeStore:
    """Writes outcomes for one worker; emits the hooks of what was written.

    ``settled(job_id)`` is called once the store has answered for a job (written, or
    refused because the worker no longer owns it). ``instrument`` is told of each claim
    and of each job the store answered for; what was stored is logged at ``log_level``.
    """

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        emit: Callable[[str, Any], None],
        settled: Callable[[int], None],
        *,
        instrument: Instrumentation = NO_INSTRUMENTATION,
        log_level: int = logging.DEBUG,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._emit = emit
        self._settled = settled
        self._instrument = instrument
        self._log_level = log_level

    def store(self, outcomes: Sequence[Outcome], claim: ClaimRequest | None) -> StoreResult:
        """Store ``outcomes`` and, if ``claim`` asks for jobs, claim in the same statement."""
        result = StoreResult()
        self._attempt([o for o in outcomes if o.kind == "failed"], result)
        for wait in (o for o in outcomes if o.kind == "waiting"):
            self._attempt([wait], result)
        completions = [o for o in outcomes if o.kind == "completed"]
        if claim is None or claim.limit <= 0:
            self._attempt(completions, result)
        else:
            self._advance(completions, claim, result)
        return result

    # -- one statement, then isolation ------------------------------------------------

    def _advance(
        self, completions: list[Outcome], claim: ClaimRequest, result: StoreResult
    ) -> None:
        try:
            asked = time.perf_counter()
            done, claimed = self._backend.advance(
                self._worker_id, [Completion(o.job.id, o.output_json) for o in completions], claim
            )
            self._instrument.claimed(len(claimed), time.perf_counter() - asked)
        except Exception as exc:
            if not self._backend.is_data_error(exc) or not completions:
                result.failed(exc, True)
                result.retry.extend(completions)
                return
            # The claim or one completion is at fault: never let it take the others.
            self._attempt(completions, result)
            try:
                asked = time.perf_counter()
                _, claimed = self._backend.advance(self._worker_id, [], claim)
                self._instrument.claimed(len(claimed), time.perf_counter() - asked)
            except Exception as claim_error:
                result.failed(claim_error, True)
                return
            result.claimed = claimed
            return
        self._completed(completions, done)
        result.claimed = claimed

    def _attempt(self, batch: list[Outcome], result: StoreResult) -> None:
        if not batch:
            return
        try:
            self._write(batch)
        except Exception as exc:
            if not self._backend.is_data_error(exc):
                result.failed(exc, True)
                result.retry.extend(batch)
                return
            if len(batch) > 1:
                for outcome in batch:
                    self._attempt([outcome], result)
                return
            replacement = self._replacement(batch[0], exc)
            if replacement is None:
                result.failed(exc, False)
                self._settled(batch[0].job.id)
                return
            self._attempt([replacement], result)

    def _write(self, batch: list[Outcome]) -> None:
        kind = batch[0].kind
        if kind == "failed":
            self._write_failures(batch)
        elif kind == "waiting":
            for outcome in batch:
                self._write_wait(outcome)
        else:
            done, _ = self._backend.advance(
                self._worker_id,
                [Completion(o.job.id, o.output_json) for o in batch],
                ClaimRequest(limit=0),
            )
            self._completed(batch, done)

    def _replacement(self, outcome: Outcome, error: BaseException) -> Outcome | None:
        """What to store instead of an outcome the store refuses (None: give up)."""
        job = outcome.job
        reason = error_message(getattr(error, "orig", None) or error).splitlines()[0]
        if outcome.kind != "failed":
            what = "output" if outcome.kind == "completed" else "step data"
            logger.error(
                "job %s: its %s could not be stored (%s); failing it",
                job.id,
                what,
                reason,
                extra=job_fields(job, self._worker_id, "outcome_refused", error=reason),
            )
            refused = OutcomeNotStorableError(f"the job's {what} could not be stored: {reason}")
            return _with_run_time(
                Outcome.failed(job, refused, FailureReason.HANDLER_ERROR), outcome
            )
        if not outcome.escaped:
            message = error_message(outcome.error or Exception()).encode(
                "ascii", "backslashreplace"
            )
            escaped = Outcome.failed(
                job, DataQueueError(message.decode()), outcome.reason or FailureReason.HANDLER_ERROR
            )
            escaped.escaped = True
            return _with_run_time(escaped, outcome)
        logger.error(
            "job %s: its failure could not be stored (%s); it stays locked until reclaimed",
            job.id,
            reason,
            extra=job_fields(job, self._worker_id, "failure_refused", error=reason),
        )
        self._finished(outcome, "dropped")
        return None

    # -- writes and their hooks ------------------------------------------------------

    def _completed(self, completions: list[Outcome], done_ids: list[int]) -> None:
        stored = set(done_ids)
        for outcome in completions:
            job = outcome.job
            self._settled(job.id)
            if job.id in stored:
                self._finished(outcome, "completed")
                self._emit("job:completed", {"job_id": job.id, "job_type": job.job_type})
            else:
                self._finished(outcome, "dropped")
                logger.warning(
                    "job %s finished but worker %s no longer owned it; result dropped",
                    job.id,
                    self._worker_id,
                    extra=job_fields(job, self._worker_id, "result_dropped"),
                )

    def _write_failures(self, failures: list[Outcome]) -> None:
        results = self._backend.fail_jobs(self._worker_id, [_failure(o) for o in failures])
        by_id = {result.job_id: result for result in results}
        for outcome in failures:
            self._settled(outcome.job.id)
            result = by_id.get(outcome.job.id)
            if result is None:
                self._finished(outcome, "dropped")
                logger.warning(
                    "job %s failed but worker %s no longer owned it; failure dropped",
                    outcome.job.id,
                    self._worker_id,
                    extra=job_fields(outcome.job, self._worker_id, "result_dropped"),
                )
                continue
            self._finished(outcome, "failed", will_retry=result.will_retry)
            self._emit(
                "job:failed",
                {
                    "job_id": outcome.job.id,
                    "job_type": outcome.job.job_type,
                    "error": outcome.error,
                    "will_retry": result.will_retry,
                },
            )

    def _write_wait(self, outcome: Outcome) -> None:
        job = outcome.job
        parked = self._backend.wait_job(
            self._worker_id, job.id, outcome.wait_until, outcome.token_id, outcome.step_data_json
        )
        self._settled(job.id)
        if parked:
            self._finished(outcome, "waiting")
            self._emit("job:waiting", {"job_id": job.id, "job_type": job.job_type})
        else:
            self._finished(outcome, "dropped")
            logger.warning(
                "job %s started waiting but worker %s no longer owned it",
                job.id,
                self._worker_id,
                extra=job_fields(job, self._worker_id, "result_dropped"),
            )

    def _finished(self, outcome: Outcome, stored: JobOutcome, *, will_retry: bool = False) -> None:
        """Report a job the store answered for; log it at ``log_level`` (not ``dropped``)."""
        job = outcome.job
        reason = None if outcome.reason is None else outcome.reason.value
        self._instrument.job_finished(job.job_type, stored, reason, will_retry, outcome.run_seconds)
        if stored == "dropped" or not logger.isEnabledFor(self._log_level):
            return  # a dropped result has its own warning
        extra = job_fields(job, self._worker_id, f"job_{stored}")
        if outcome.run_seconds is not None:
            extra["duration_ms"] = milliseconds(outcome.run_seconds)
        if stored == "failed":
            extra.update(reason=reason, will_retry=will_retry)
        logger.log(
            self._log_level,
            "job %s (%s) %s%s after %s ms",
            job.id,
            job.job_type,
            stored,
            "" if reason is None else f" ({reason}{', will retry' if will_retry else ''})",
            extra.get("duration_ms", "?"),
            extra=extra,
        )


def _with_run_time(replacement: Outcome, original: Outcome) -> Outcome:
    replacement.run_seconds = original.run_seconds
    return replacement


def _failure(outcome: Outcome) -> Failure:
    job = outcome.job
    assert outcome.error is not None
    if outcome.retry_in_seconds is None and not outcome.retry_computed:
        # Computed once, so a retried store schedules the same retry.
        outcome.retry_in_seconds = retry_delay_seconds(
            job.attempts,
            job.max_attempts,
            retry_delay=job.retry_delay,
            retry_backoff=job.retry_backoff,
            retry_delay_max=job.retry_delay_max,
            jitter=random.random(),
        )
        outcome.retry_computed = True
    return Failure(
        job_id=job.id,
        message=error_message(outcome.error),
        reason=outcome.reason,
        retry_in_seconds=outcome.retry_in_seconds,
        failed_at=outcome.failed_at,
    )
