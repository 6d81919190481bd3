"""Running a worker in the foreground: a processor, a supervisor, graceful shutdown.

Used by ``dataqueue worker`` and usable from other entry points (a Django management
command, a container's main). The first SIGTERM/SIGINT stops claiming, gives back the
claimed jobs that have not started, and drains running ones; a second one exits at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from dataqueue.errors import ConfigurationError
from dataqueue.rate_limits import RateLimit, parse_rate_limit

if TYPE_CHECKING:
    from dataqueue.contrib.prometheus import MetricsServer

logger = logging.getLogger("dataqueue.worker")


def load_handlers(reference: str) -> Mapping[str, Callable[..., Any]]:
    """Import ``"package.module:NAME"`` and return the handler mapping it names.

    ``NAME`` may be a mapping of job type to callable, or a callable returning one.
    The current directory is importable, as with gunicorn and celery (``dataqueue
    worker jobs:HANDLERS`` finds ``./jobs.py``). Raises :class:`ConfigurationError`
    saying what is wrong.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"handlers must be given as MODULE:NAME (e.g. myapp.jobs:HANDLERS), got {reference!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module {module_name!r}: {exc}") from None
    try:
        value: Any = module
        for part in attribute.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if callable(value) and not isinstance(value, Mapping):
        value = value()
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{reference} must be a mapping of job type to handler, got {type(value).__name__}"
        )
    return value


def run_worker(
    queue: Any,
    handlers: Mapping[str, Callable[..., Any]],
    *,
    processor_options: Mapping[str, Any],
    supervisor_options: Mapping[str, Any] | None,
    drain_timeout_ms: float = 30_000,
    install_signal_handlers: bool = True,
    stop: threading.Event | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",
) -> int:
    """Run until ``stop`` is set (or a signal arrives), then drain; return an exit status.

    ``supervisor_options`` None runs no supervisor. Raises nothing for job failures.
    Returns 0 after a clean drain, 1 when jobs were still running at the end of
    ``drain_timeout_ms`` (their ids are logged; other workers reclaim them once this
    process has stopped heartbeating).

    ``metrics_port``: serve Prometheus metrics on ``http://metrics_host:metrics_port/metrics``
    while the worker runs: the processor's counters and histograms, the queue's
    statistics, and whatever else is on prometheus-client's default registry (see
    :func:`dataqueue.contrib.prometheus.serve_metrics`; 0 binds a free port, logged).
    Raises :class:`ConfigurationError` when prometheus-client is not installed or the
    port cannot be bound.
    """
    stop = stop or threading.Event()
    options = dict(processor_options)
    metrics = None if metrics_port is None else _serve_metrics(queue, metrics_port, metrics_host)
    if metrics is not None:
        options["instrumentation"] = metrics.metrics
    try:
        return _run_until_stopped(
            queue,
            handlers,
            options,
            supervisor_options,
            drain_timeout_ms=drain_timeout_ms,
            install_signal_handlers=install_signal_handlers,
            stop=stop,
        )
    finally:
        if metrics is not None:
            metrics.close()


def _serve_metrics(queue: Any, port: int, host: str) -> MetricsServer:
    try:
        from dataqueue.contrib.prometheus import serve_metrics
    except ImportError as exc:
        raise ConfigurationError(
            f"metrics need prometheus-client ({exc}): pip install 'dataqueue[prometheus]'"
        ) from None
    try:
        server = serve_metrics(queue, port, host)
    except (OSError, ValueError) as exc:  # port taken; metrics already served in-process
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    logger.info(
        "serving Prometheus metrics on http://%s:%d/metrics",
        server.host,
        server.port,
        extra={"action": "metrics_serving", "host": server.host, "port": server.port},
    )
    return server


def _run_until_stopped(
    queue: Any,
    handlers: Mapping[str, Callable[..., Any]],
    processor_options: Mapping[str, Any],
    supervisor_options: Mapping[str, Any] | None,
    *,
    drain_timeout_ms: float,
    install_signal_handlers: bool,
    stop: threading.Event,
) -> int:
    processor = queue.create_processor(handlers, **processor_options)
    supervisor = (
        None if supervisor_options is None else queue.create_supervisor(**supervisor_options)
    )
    if install_signal_handlers:
        _install_signal_handlers(stop)
    processor.start_in_background()
    if supervisor is not None:
        supervisor.start_in_background()
    logger.info(
        "worker %s running job types %s",
        processor.worker_id,
        ", ".join(sorted(handlers)) or "(none)",
        extra={
            "action": "worker_started",
            "worker_id": processor.worker_id,
            "job_types": sorted(handlers),
        },
    )
    stop.wait()
    logger.info(
        "draining (up to %d ms)",
        drain_timeout_ms,
        extra={
            "action": "worker_draining",
            "worker_id": processor.worker_id,
            "timeout_ms": drain_timeout_ms,
        },
    )
    if supervisor is not None:
        supervisor.stop()
    left = processor.stop_and_drain(drain_timeout_ms)
    if supervisor is not None:
        supervisor.stop_and_drain(drain_timeout_ms)
    if left:
        logger.error(
            "worker %s: drain timed out after %d ms with %d job(s) still running: %s; "
            "they will be reclaimed %g s after this process exits",
            processor.worker_id,
            drain_timeout_ms,
            len(left),
            ", ".join(map(str, left)),
            processor.heartbeat_timeout,
            extra={
                "action": "drain_timed_out",
                "worker_id": processor.worker_id,
                "job_ids": left,
                "count": len(left),
                "timeout_ms": drain_timeout_ms,
            },
        )
        return 1
    logger.info(
        "worker %s stopped",
        processor.worker_id,
        extra={"action": "worker_stopped", "worker_id": processor.worker_id},
    )
    return 0


def _install_signal_handlers(stop: threading.Event) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            logger.warning(
                "second %s: exiting without draining",
                signal.Signals(signum).name,
                extra={"action": "exiting_now", "signal": signal.Signals(signum).name},
            )
            os._exit(130)
        logger.info(
            "%s received: finishing running jobs",
            signal.Signals(signum).name,
            extra={"action": "signal_received", "signal": signal.Signals(signum).name},
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def positive_int(text: str) -> int:
    """argparse type: a positive integer (bad input becomes a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def seconds_arg(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds > 0, got {text!r}")
    return value


def milliseconds(text: str) -> float:
    """argparse type: a number of milliseconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of ms >= 0, got {text!r}")
    return value


#: Values of ``--log-format``.
LOG_FORMATS = ("text", "json")


def log_format_arg(value: str) -> str:
    """argparse type: ``text`` or ``json``."""
    name = value.strip().lower()
    if name not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(
            f"invalid log format {value!r}; expected one of {', '.join(LOG_FORMATS)}"
        )
    return name


def rate_limit_arg(text: str) -> tuple[str, RateLimit]:
    """argparse type: ``TYPE=N[/S]``, at most N starts of TYPE in any S seconds."""
    try:
        return parse_rate_limit(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_rate_limit_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--rate-limit TYPE=N[/S]`` option (repeatable) of the worker commands."""
    parser.add_argument(
        "--rate-limit",
        action="append",
        type=rate_limit_arg,
        metavar="TYPE=N[/S]",
        help="at most N starts of job type TYPE in any S seconds (default 1) across all "
        "workers with this limit (repeatable; e.g. email=20/1)",
    )


def port_arg(text: str) -> int:
    """argparse type: a TCP port number, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def one_line(exc: BaseException) -> str:
    """``ExceptionName: first line of the message`` for command-line error output."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
