"""The instrumentation seam and its Prometheus implementation, without a store."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dataqueue.contrib.prometheus import PrometheusMetrics
from dataqueue.processing.instrument import (
    NO_INSTRUMENTATION,
    GuardedInstrumentation,
    NoInstrumentation,
    guarded,
)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_no_instrumentation_is_the_default() -> None:
    assert guarded(None) is NO_INSTRUMENTATION


def test_a_partial_implementation_is_rejected_with_the_missing_names() -> None:
    class OnlyClaims:
        def claimed(self, count: int, seconds: float) -> None:
            pass

    with pytest.raises(TypeError, match="job_started, job_finished"):
        guarded(OnlyClaims())  # type: ignore[arg-type]


def test_a_subclass_of_the_no_op_base_implements_only_what_it_needs() -> None:
    seen: list[int] = []

    class Claims(NoInstrumentation):
        def claimed(self, count: int, seconds: float) -> None:
            seen.append(count)

    instrument = guarded(Claims())
    instrument.claimed(4, 0.01)
    instrument.job_started("t", None)
    assert seen == [4]


def test_raising_methods_are_logged_once_at_error_then_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(NoInstrumentation):
        def store_failed(self) -> None:
            raise RuntimeError("metrics bug")

    instrument = GuardedInstrumentation(Broken())
    with caplog.at_level(logging.DEBUG, logger="dataqueue.processor"):
        for _ in range(3):
            instrument.store_failed()  # never raises
    levels = [r.levelno for r in caplog.records if getattr(r, "method", None) == "store_failed"]
    assert levels == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    assert caplog.records[0].exc_info is not None


def test_prometheus_metrics_count_what_the_processor_reports() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.claimed(3, 0.002)
    metrics.claimed(0, 0.001)
    metrics.job_started("mail", 0.004)
    metrics.job_started("mail", None)
    metrics.job_finished("mail", "completed", None, False, 0.2)
    metrics.job_finished("mail", "failed", "timeout", True, 1.0)
    metrics.job_finished("mail", "waiting", None, False, 0.01)
    metrics.job_finished("mail", "dropped", None, False, None)
    metrics.store_failed()
    metrics.store_retried(5)

    assert _value(registry, "dataqueue_jobs_per_claim_count") == 2
    assert _value(registry, "dataqueue_jobs_per_claim_bucket", le="0.0") == 1
    assert _value(registry, "dataqueue_jobs_per_claim_sum") == 3
    assert _value(registry, "dataqueue_claim_duration_seconds_sum") == pytest.approx(0.003)
    assert _value(registry, "dataqueue_jobs_started_total", job_type="mail") == 2
    assert _value(registry, "dataqueue_wakeup_to_start_seconds_count", job_type="mail") == 1
    assert _value(registry, "dataqueue_jobs_completed_total", job_type="mail") == 1
    assert (
        _value(
            registry,
            "dataqueue_jobs_failed_total",
            job_type="mail",
            reason="timeout",
            will_retry="true",
        )
        == 1
    )
    assert _value(registry, "dataqueue_jobs_waited_total", job_type="mail") == 1
    assert _value(registry, "dataqueue_jobs_dropped_total", job_type="mail") == 1
    run = "dataqueue_job_run_duration_seconds_count"
    assert _value(registry, run, job_type="mail", outcome="failed") == 1
    assert _value(registry, run, job_type="mail", outcome="dropped") is None  # no run time
    assert _value(registry, "dataqueue_store_failures_total") == 1
    assert _value(registry, "dataqueue_store_retries_total") == 5


def test_exposition_has_help_and_type_for_every_metric() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    text = generate_latest(registry).decode()
    for name, kind in (
        ("dataqueue_jobs_started_total", "counter"),
        ("dataqueue_jobs_failed_total", "counter"),
        ("dataqueue_job_run_duration_seconds", "histogram"),
        ("dataqueue_jobs_per_claim", "histogram"),
        ("dataqueue_claim_duration_seconds", "histogram"),
        ("dataqueue_wakeup_to_start_seconds", "histogram"),
        ("dataqueue_store_failures_total", "counter"),
        ("dataqueue_store_retries_total", "counter"),
    ):
        assert f"# TYPE {name} {kind}" in text
        assert f"# HELP {name} " in text


def test_registering_twice_on_one_registry_raises() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusMetrics(registry)


def test_unregistered_metrics_can_be_registered_later() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=None)
    metrics.job_started("t", None)
    assert _value(registry, "dataqueue_jobs_started_total", job_type="t") is None
    metrics.register(registry)
    assert _value(registry, "dataqueue_jobs_started_total", job_type="t") == 1
