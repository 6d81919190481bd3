"""Prometheus metrics: a processor's counters and histograms, and the queue's gauges.

Needs ``prometheus-client`` (``pip install 'dataqueue[prometheus]'``).

.. code-block:: python

    from prometheus_client import start_http_server
    from dataqueue.contrib.prometheus import PrometheusMetrics, QueueCollector

    metrics = PrometheusMetrics()                  # registers on the default registry
    QueueCollector(queue).register()               # queue depth, oldest due job, ...
    processor = queue.create_processor(HANDLERS, instrumentation=metrics)
    start_http_server(9400)                        # or your web app's /metrics

``dataqueue worker --metrics-port 9400`` does all of this (:func:`serve_metrics`).
Every metric name, type and label is listed in the observability guide. Labels are
the job type, a failure reason and an outcome: never a job id, so the number of
series stays bounded by the number of job types.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from dataqueue.processing.instrument import JobOutcome, NoInstrumentation

if TYPE_CHECKING:
    from dataqueue.queue import JobQueue
    from dataqueue.records import QueueStats

__all__ = ["MetricsServer", "PrometheusMetrics", "QueueCollector", "serve_metrics"]

logger = logging.getLogger("dataqueue.metrics")

#: Handler run times: milliseconds to an hour.
RUN_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
#: Claim statements and wake-up latencies: a fraction of a millisecond to a minute.
LATENCY_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
)  # fmt: skip
#: Jobs per claim; the 0 bucket counts empty polls.
BATCH_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class PrometheusMetrics(NoInstrumentation):
    """A processor's metrics: pass it as ``create_processor(..., instrumentation=metrics)``.

    One instance serves any number of processors in the process (their counts add
    up); create one per registry. ``registry`` is where the metrics are registered:
    the default registry unless given; None registers nothing (call
    :meth:`register` later, or register the object on a registry yourself: it is a
    collector). Registering twice on one registry raises ``ValueError`` (duplicate
    time series). ``run_seconds_buckets`` overrides the buckets of
    ``dataqueue_job_run_duration_seconds``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        run_seconds_buckets: Sequence[float] = RUN_SECONDS_BUCKETS,
    ) -> None:
        job = ("job_type",)
        self.jobs_started = Counter(
            "dataqueue_jobs_started_total",
            "Handler runs started, by job type.",
            job,
            registry=None,
        )
        self.jobs_completed = Counter(
            "dataqueue_jobs_completed_total",
            "Jobs stored as completed, by job type.",
            job,
            registry=None,
        )
        self.jobs_failed = Counter(
            "dataqueue_jobs_failed_total",
            "Failed runs stored, by job type, failure reason and whether the job will retry.",
            ("job_type", "reason", "will_retry"),
            registry=None,
        )
        self.jobs_waited = Counter(
            "dataqueue_jobs_waited_total",
            "Runs that parked the job in a wait (it resumes later), by job type.",
            job,
            registry=None,
        )
        self.jobs_dropped = Counter(
            "dataqueue_jobs_dropped_total",
            "Run outcomes not stored because the worker no longer owned the job "
            "(it runs again elsewhere), by job type.",
            job,
            registry=None,
        )
        self.run_duration = Histogram(
            "dataqueue_job_run_duration_seconds",
            "Time from a handler's start to its outcome, by job type and outcome.",
            ("job_type", "outcome"),
            buckets=tuple(run_seconds_buckets),
            registry=None,
        )
        self.wakeup_to_start = Histogram(
            "dataqueue_wakeup_to_start_seconds",
            "Time from the wake-up a processor received (a new or due job was announced) "
            "to the start of a handler for a job that wake-up made it claim, by job type.",
            job,
            buckets=LATENCY_SECONDS_BUCKETS,
            registry=None,
        )
        self.claim_duration = Histogram(
            "dataqueue_claim_duration_seconds",
            "Duration of claim statements (which also store the completions of the cycle).",
            buckets=LATENCY_SECONDS_BUCKETS,
            registry=None,
        )
        self.jobs_per_claim = Histogram(
            "dataqueue_jobs_per_claim",
            "Jobs returned by each claim statement (0: an empty poll).",
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.store_failures = Counter(
            "dataqueue_store_failures_total",
            "Calls to the store by processor threads (claim and store, heartbeat, wake-up "
            "listener) that raised; each try during an outage counts.",
            registry=None,
        )
        self.store_retries = Counter(
            "dataqueue_store_retries_total",
            "Run outcomes whose write failed and was tried again later (per outcome and try).",
            registry=None,
        )
        self._metrics = (
            self.jobs_started,
            self.jobs_completed,
            self.jobs_failed,
            self.jobs_waited,
            self.jobs_dropped,
            self.run_duration,
            self.wakeup_to_start,
            self.claim_duration,
            self.jobs_per_claim,
            self.store_failures,
            self.store_retries,
        )
        self._started = _Children(self.jobs_started)
        self._wakeup = _Children(self.wakeup_to_start)
        self._failed = _Children(self.jobs_failed)
        self._run = _Children(self.run_duration)
        self._finished = {
            "completed": _Children(self.jobs_completed),
            "waiting": _Children(self.jobs_waited),
            "dropped": _Children(self.jobs_dropped),
        }
        if registry is not None:
            self.register(registry)

    # -- collector ----------------------------------------------------------------

    def register(self, registry: CollectorRegistry = REGISTRY) -> None:
        """Register these metrics on ``registry`` (ValueError if they already are)."""
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        """The current samples of every metric (the collector protocol)."""
        for metric in self._metrics:
            yield from metric.collect()

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples (lets a registry check names)."""
        for metric in self._metrics:
            yield from metric.describe()

    # -- instrumentation ------------------------------------------------------------

    def claimed(self, count: int, seconds: float) -> None:
        self.claim_duration.observe(seconds)
        self.jobs_per_claim.observe(count)

    def job_started(self, job_type: str, wakeup_seconds: float | None) -> None:
        self._started.labels(job_type).inc()
        if wakeup_seconds is not None:
            self._wakeup.labels(job_type).observe(wakeup_seconds)

    def job_finished(
        self,
        job_type: str,
        outcome: JobOutcome,
        reason: str | None,
        will_retry: bool,
        run_seconds: float | None,
    ) -> None:
        if outcome == "failed":
            retry = "true" if will_retry else "false"
            self._failed.labels(job_type, reason or "handler_error", retry).inc()
        else:
            self._finished[outcome].labels(job_type).inc()
        if run_seconds is not None:
            self._run.labels(job_type, outcome).observe(run_seconds)

    def store_failed(self) -> None:
        self.store_failures.inc()

    def store_retried(self, count: int) -> None:
        self.store_retries.inc(count)


class QueueCollector:
    """Gauges of ``queue.get_stats()``, read on every scrape: register it where you serve metrics.

    Reports jobs by type and status, failed jobs by whether they will retry, the age of
    the oldest due pending job, and the recent window's completions, failed attempts
    and run-time percentiles (``window`` seconds, default 5 minutes; see
    :meth:`dataqueue.JobQueue.get_stats`). Every metric name is in the observability
    guide. When ``get_stats`` raises, the scrape still succeeds: the queue gauges are
    left out, ``dataqueue_queue_stats_up`` is 0 and the error is logged (the first of
    a row at WARNING). Thread-safe: scrapes may overlap.
    """

    def __init__(self, queue: JobQueue, *, window: float = 300.0) -> None:
        self._queue = queue
        self._window = window
        self._lock = threading.Lock()  # guards _failing
        self._failing = False

    def register(self, registry: CollectorRegistry = REGISTRY) -> None:
        """Register on ``registry`` (ValueError if the names are registered already)."""
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        """The families without samples: registering never calls ``get_stats``."""
        return [*_stats_families(), *_scrape_families()]

    def collect(self) -> Iterable[Metric]:
        """Call ``get_stats`` once and return its figures as gauges."""
        started = time.perf_counter()
        try:
            stats = self._queue.get_stats(self._window)
        except Exception as exc:
            self._failed(exc)
            return _scrape_families(up=0, seconds=time.perf_counter() - started)
        self._succeeded()
        families = _stats_families(stats)
        return [*families, *_scrape_families(up=1, seconds=time.perf_counter() - started)]

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "queue statistics for metrics failed: %s",
            error,
            exc_info=first,
            extra={"action": "stats_failed", "error": str(error)},
        )

    def _succeeded(self) -> None:
        with self._lock:
            self._failing = False


#: JobTypeStats counts by the ``status`` label of ``dataqueue_queue_jobs``.
_STATUS_COUNTS = (
    ("pending", "pending"),
    ("processing", "processing"),
    ("waiting", "waiting"),
    ("completed", "completed"),
    ("cancelled", "cancelled"),
    ("failed", "failed"),
)


def _stats_families(stats: QueueStats | None = None) -> list[Metric]:
    """The queue gauges of ``stats`` (None: without samples, for ``describe``)."""
    jobs = GaugeMetricFamily(
        "dataqueue_queue_jobs",
        "Jobs stored, by job type and status (failed: awaiting a retry or failed for good).",
        labels=("job_type", "status"),
    )
    failed = GaugeMetricFamily(
        "dataqueue_queue_failed_jobs",
        "Failed jobs, by job type and whether a retry is scheduled.",
        labels=("job_type", "will_retry"),
    )
    oldest = GaugeMetricFamily(
        "dataqueue_queue_oldest_due_job_age_seconds",
        "How long the longest-waiting due pending job has been due, by job type "
        "(0: no pending job is due).",
        labels=("job_type",),
    )
    completed = GaugeMetricFamily(
        "dataqueue_queue_recent_completed_jobs",
        "Jobs completed within the statistics window, by job type.",
        labels=("job_type",),
    )
    failed_recent = GaugeMetricFamily(
        "dataqueue_queue_recent_failed_attempts",
        "Failed attempts within the statistics window, by job type.",
        labels=("job_type",),
    )
    run_time = GaugeMetricFamily(
        "dataqueue_queue_recent_run_time_seconds",
        "Median and 95th percentile of completed_at - started_at (from the first attempt's "
        "start) of the jobs completed within the statistics window, by job type.",
        labels=("job_type", "quantile"),
    )
    window = GaugeMetricFamily(
        "dataqueue_queue_stats_window_seconds",
        "Length of the window of the dataqueue_queue_recent_* gauges.",
    )
    if stats is not None:
        window.add_metric((), stats.window)
        for name, by_type in stats.job_types.items():
            for status, field in _STATUS_COUNTS:
                jobs.add_metric((name, status), getattr(by_type, field))
            failed.add_metric((name, "true"), by_type.failed_retrying)
            failed.add_metric((name, "false"), by_type.failed_final)
            oldest.add_metric((name,), by_type.oldest_pending_age or 0.0)
            completed.add_metric((name,), by_type.completed_recent)
            failed_recent.add_metric((name,), by_type.failed_recent)
            for quantile, value in (("0.5", by_type.run_time_p50), ("0.95", by_type.run_time_p95)):
                if value is not None:
                    run_time.add_metric((name, quantile), value)
    return [jobs, failed, oldest, completed, failed_recent, run_time, window]


def _scrape_families(up: int | None = None, seconds: float = 0.0) -> list[Metric]:
    """Whether ``get_stats`` answered this scrape, and how long it took."""
    healthy = GaugeMetricFamily(
        "dataqueue_queue_stats_up", "1 if queue.get_stats() answered this scrape, else 0."
    )
    duration = GaugeMetricFamily(
        "dataqueue_queue_stats_duration_seconds", "How long queue.get_stats() took this scrape."
    )
    if up is not None:
        healthy.add_metric((), up)
        duration.add_metric((), seconds)
    return [healthy, duration]


class _Children:
    """The label children of one metric, kept: ``labels()`` costs about 1 µs, this 0.1 µs.

    A plain dict: two threads meeting a new label set both get the same child, which
    ``labels()`` itself keeps.
    """

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class MetricsServer:
    """What :func:`serve_metrics` started: the HTTP server and the registered collectors.

    ``metrics`` is the :class:`PrometheusMetrics` to pass to processors; ``host`` and
    ``port`` are where ``/metrics`` is served (the bound port when 0 was asked).
    :meth:`close` stops serving and unregisters the collectors, so another server can
    be started in the same process later.
    """

    def __init__(
        self,
        metrics: PrometheusMetrics,
        collectors: list[Any],
        registry: CollectorRegistry,
        server: Any,
        thread: threading.Thread,
    ) -> None:
        self.metrics = metrics
        self._collectors = collectors
        self._registry = registry
        self._server = server
        self._thread = thread
        self.host: str = server.server_address[0]
        self.port: int = server.server_port

    def close(self) -> None:
        """Stop serving, wait for the server thread, unregister the collectors."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        for collector in self._collectors:
            with contextlib.suppress(KeyError):  # the application unregistered it already
                self._registry.unregister(collector)


def serve_metrics(
    queue: JobQueue,
    port: int,
    host: str = "0.0.0.0",
    *,
    registry: CollectorRegistry = REGISTRY,
    queue_stats: bool = True,
) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; return the server.

    Registers a :class:`PrometheusMetrics` (pass ``server.metrics`` to the processors)
    and, with ``queue_stats``, a :class:`QueueCollector` for ``queue`` on ``registry``
    (default: prometheus-client's default registry, so metrics the application
    defines there are served too, with the process and platform collectors). Port 0
    binds a free port (``server.port``). Raises ``OSError`` when the port cannot be
    bound and ``ValueError`` when the registry already holds these metrics.
    """
    metrics = PrometheusMetrics(registry)
    collectors: list[Any] = [metrics]
    try:
        if queue_stats:
            collector = QueueCollector(queue)
            registry.register(collector)
            collectors.append(collector)
        server, thread = start_http_server(port, addr=host, registry=registry)
    except BaseException:
        for registered in collectors:
            registry.unregister(registered)
        raise
    return MetricsServer(metrics, collectors, registry, server, thread)
