"""The ``dataqueue`` command line.

Each subcommand lives in two functions: ``_add_<name>_command(subparsers)`` registers its
parser and stores its handler with ``set_defaults(handler=...)``; the handler takes the
parsed arguments and returns the exit status. :func:`main` only parses and dispatches.

Exit status: 0 on success, 1 when the command failed (database unreachable, migration
error), 2 for bad usage or missing configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from dataqueue.errors import ConfigurationError
from dataqueue.worker import (
    add_rate_limit_argument,
    log_format_arg,
    milliseconds,
    one_line,
    port_arg,
    positive_int,
    seconds_arg,
)

if TYPE_CHECKING:
    from dataqueue.queue import JobQueue

PROGRAM = "dataqueue"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    ``--help`` returns 0; an unknown command or flag prints the usage to stderr and
    returns 2.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return _exit_status(exc.code)
    handler: Handler = args.handler
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``dataqueue`` program with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Background jobs in the PostgreSQL (or Redis) you already run.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    _add_migrate_command(subparsers)
    _add_worker_command(subparsers)
    _add_demo_command(subparsers)
    _add_dashboard_command(subparsers)
    return parser


def _add_migrate_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the dataqueue tables",
        description=(
            "Create or upgrade the dataqueue tables with the bundled Alembic revisions. "
            "Existing tables (for example from the Node.js dataqueue) are kept and adopted. "
            "The version is recorded in dataqueue_alembic_version, never in alembic_version."
        ),
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help=(
            "PostgreSQL URL (postgresql://user:password@host:port/dbname); default: "
            "$DATAQUEUE_DATABASE_URL, then $PG_DATAQUEUE_DATABASE"
        ),
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        help="PostgreSQL schema for the tables and the version table (created if missing)",
    )
    parser.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL to stdout instead of running it (no database needed)",
    )
    parser.add_argument(
        "--revision",
        metavar="REV",
        default="head",
        help="revision to upgrade to (default: head)",
    )
    parser.set_defaults(handler=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    from dataqueue.config import database_url_from_env
    from dataqueue.migrate import upgrade

    url: str | None = args.database_url or database_url_from_env()
    if url is None and not args.sql:
        print(
            f"{PROGRAM} migrate: no database URL; pass --database-url URL or set "
            "DATAQUEUE_DATABASE_URL (or PG_DATAQUEUE_DATABASE)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _log_progress_to_stderr()
    try:
        upgrade(url, schema=args.schema, revision=args.revision, sql=args.sql)
    except ConfigurationError as exc:
        print(f"{PROGRAM} migrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # report any failure as one line, without a traceback
        logging.getLogger("dataqueue.cli").debug(
            "migrate failed", exc_info=True, extra={"action": "migrate_failed"}
        )
        print(f"{PROGRAM} migrate: failed: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _env_default(name: str, kind: Callable[[str], object] = str) -> object:
    """``DATAQUEUE_<NAME>`` converted with ``kind``, or None when unset."""
    value = os.environ.get(f"DATAQUEUE_{name}")
    return None if value in (None, "") else kind(value)


def _add_worker_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a processor (and a supervisor) in the foreground",
        description=(
            "Process jobs with the handlers named by MODULE:NAME (a mapping of job type to "
            "callable, or a function returning one) until SIGTERM/SIGINT; the first signal "
            "drains running jobs, a second exits at once. Settings come from the flags, then "
            "DATAQUEUE_* environment variables (DATAQUEUE_DATABASE_URL, DATAQUEUE_REDIS_URL, "
            "DATAQUEUE_BATCH_SIZE, "
            "DATAQUEUE_CONCURRENCY, DATAQUEUE_GROUP_CONCURRENCY, DATAQUEUE_POLL_INTERVAL, "
            "DATAQUEUE_SUPERVISOR_INTERVAL, DATAQUEUE_HEARTBEAT_INTERVAL, "
            "DATAQUEUE_HEARTBEAT_TIMEOUT, DATAQUEUE_STUCK_TIMEOUT, DATAQUEUE_DRAIN_TIMEOUT, "
            "DATAQUEUE_METRICS_PORT, DATAQUEUE_METRICS_HOST, DATAQUEUE_LOG_FORMAT), "
            "then the defaults. Exit status: 0 after a clean drain, 1 if jobs were still "
            "running when the drain timed out (their ids are logged), 2 for bad usage."
        ),
    )
    parser.add_argument(
        "handlers",
        metavar="MODULE:HANDLERS",
        help="the handler mapping to run, e.g. myapp.jobs:HANDLERS",
    )
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL URL (default: DATAQUEUE_DATABASE_URL)"
    )
    _add_redis_arguments(parser)
    parser.add_argument(
        "--job-type",
        action="append",
        metavar="T",
        help="claim only this job type (repeatable; default: the handlers' types; "
        "'*' claims every type, failing those without a handler)",
    )
    parser.add_argument("--batch-size", type=positive_int, metavar="N", help="jobs per claim (10)")
    parser.add_argument(
        "--concurrency", type=positive_int, metavar="N", help="jobs running at once (3)"
    )
    parser.add_argument(
        "--group-concurrency",
        type=positive_int,
        metavar="N",
        help="most running jobs per group across all workers (no limit)",
    )
    add_rate_limit_argument(parser)
    parser.add_argument(
        "--poll-interval", type=milliseconds, metavar="MS", help="ms between polls (5000)"
    )
    parser.add_argument(
        "--no-listen",
        action="store_true",
        help="do not LISTEN for new jobs; poll only (for a pooler in transaction mode, "
        "e.g. pgbouncer)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=seconds_arg,
        metavar="S",
        help="seconds between heartbeats refreshing the locks of running jobs (5)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=seconds_arg,
        metavar="S",
        help="seconds without a heartbeat after which a worker's jobs are reclaimed; "
        "at least 3 heartbeat intervals (20)",
    )
    parser.add_argument(
        "--stuck-timeout",
        type=seconds_arg,
        metavar="S",
        help="seconds after which jobs locked by workers that do not heartbeat "
        "(e.g. a Node.js worker) are reclaimed (600)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=seconds_arg,
        metavar="S",
        help="seconds to wait for running jobs on SIGTERM/SIGINT; exit status 1 if some "
        "were still running (30)",
    )
    parser.add_argument(
        "--no-supervisor", action="store_true", help="run no maintenance loop in this worker"
    )
    parser.add_argument(
        "--supervisor-interval",
        type=milliseconds,
        metavar="MS",
        help="ms between maintenance runs (60000)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log what the worker does (same as --log-level INFO)"
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING (default), ERROR or CRITICAL: the least severe records "
        "logged to stderr (default: DATAQUEUE_LOG_LEVEL, else WARNING; the worker's own "
        "start/stop lines always show)",
    )
    parser.add_argument(
        "--log-format",
        type=log_format_arg,
        metavar="FORMAT",
        help="text (default) or json: one JSON object per line with the record's fields "
        "(job_id, job_type, attempt, worker_id, duration_ms, action …) "
        "(default: DATAQUEUE_LOG_FORMAT, else text)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_arg,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (needs the prometheus "
        "extra; 0 picks a free port, logged; default: DATAQUEUE_METRICS_PORT, else none)",
    )
    parser.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="address the metrics server binds (default: DATAQUEUE_METRICS_HOST, else 0.0.0.0)",
    )
    parser.set_defaults(handler=_run_worker)


def _worker_settings(args: argparse.Namespace) -> dict[str, object]:
    """Flags, then DATAQUEUE_* variables, then defaults."""
    settings: dict[str, object] = {}
    for name, env, kind, default in (
        ("batch_size", "BATCH_SIZE", positive_int, 10),
        ("concurrency", "CONCURRENCY", positive_int, 3),
        ("group_concurrency", "GROUP_CONCURRENCY", positive_int, None),
        ("poll_interval", "POLL_INTERVAL", milliseconds, 5000),
        ("supervisor_interval", "SUPERVISOR_INTERVAL", milliseconds, 60000),
        ("heartbeat_interval", "HEARTBEAT_INTERVAL", seconds_arg, 5.0),
        ("heartbeat_timeout", "HEARTBEAT_TIMEOUT", seconds_arg, 20.0),
        ("stuck_timeout", "STUCK_TIMEOUT", seconds_arg, 600.0),
        ("drain_timeout", "DRAIN_TIMEOUT", seconds_arg, 30.0),
        ("metrics_port", "METRICS_PORT", port_arg, None),
        ("metrics_host", "METRICS_HOST", str, "0.0.0.0"),
        ("log_format", "LOG_FORMAT", log_format_arg, "text"),
    ):
        value = getattr(args, name)
        if value is None:
            value = _env_default(env, kind)
        settings[name] = default if value is None else value
    return settings


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> int:
    name = value.strip().upper()
    if name not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid log level {value!r}; expected one of {', '.join(_LOG_LEVELS)}"
        )
    level: int = getattr(logging, name)
    return level


def _env_log_level() -> int | None:
    value = os.environ.get("DATAQUEUE_LOG_LEVEL", "").strip()
    return _log_level(value) if value else None


def _log_to_stderr(level: int, log_format: str) -> None:
    """Log records of ``level`` and above to stderr, as text lines or JSON lines."""
    from dataqueue.logs import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("dataqueue.worker").setLevel(logging.INFO)


def _run_worker(args: argparse.Namespace) -> int:
    from dataqueue.worker import run_worker

    try:
        settings = _worker_settings(args)
        level = (
            args.log_level
            or _env_log_level()
            or (logging.INFO if args.verbose else logging.WARNING)
        )
    except argparse.ArgumentTypeError as exc:
        print(f"{PROGRAM} worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _log_to_stderr(level, str(settings["log_format"]))
    try:
        queue, handlers = _queue_and_handlers(args)
    except (ConfigurationError, argparse.ArgumentTypeError) as exc:
        print(f"{PROGRAM} worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with queue:
        try:
            queue.get_all_jobs(limit=1)  # fail fast: unreachable database or missing tables
        except Exception as exc:
            print(f"{PROGRAM} worker: {one_line(exc)}", file=sys.stderr)
            return EXIT_FAILURE
        processor_options = {
            "batch_size": settings["batch_size"],
            "concurrency": settings["concurrency"],
            "group_concurrency": settings["group_concurrency"],
            "poll_interval": settings["poll_interval"],
            "listen": not args.no_listen,
            "job_type": "*" if args.job_type == ["*"] else args.job_type,
            "rate_limits": dict(args.rate_limit) if args.rate_limit else None,
            "heartbeat_interval": settings["heartbeat_interval"],
            "heartbeat_timeout": settings["heartbeat_timeout"],
            "verbose": args.verbose,
        }
        supervisor_options = (
            None
            if args.no_supervisor
            else {
                "interval_ms": settings["supervisor_interval"],
                "stuck_jobs_timeout": settings["stuck_timeout"],
                "verbose": args.verbose,
            }
        )
        try:
            return run_worker(
                queue,
                handlers,
                processor_options=processor_options,
                supervisor_options=supervisor_options,
                drain_timeout_ms=float(settings["drain_timeout"]) * 1000,  # type: ignore[arg-type]
                metrics_port=settings["metrics_port"],  # type: ignore[arg-type]
                metrics_host=str(settings["metrics_host"]),
            )
        except (ConfigurationError, TypeError) as exc:
            print(f"{PROGRAM} worker: {exc}", file=sys.stderr)
            return EXIT_USAGE


def _add_demo_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the quick start end to end, then serve the dashboard",
        description=(
            "Add a few jobs, process them with a background processor, print what happened, "
            "then serve the dashboard until Ctrl-C. Uses --database-url or "
            "DATAQUEUE_DATABASE_URL when given, else an embedded PostgreSQL (pip install "
            "'dataqueue[embedded]') that is deleted afterwards."
        ),
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL to run the demo on (default: DATAQUEUE_DATABASE_URL, else an "
        "embedded PostgreSQL)",
    )
    parser.add_argument("--no-dashboard", action="store_true", help="exit after the demo")
    _add_serving_arguments(parser)
    parser.set_defaults(handler=_run_demo)


def _sigterm_like_ctrl_c() -> None:
    """Make SIGTERM raise KeyboardInterrupt, as SIGINT does, so that ``with`` blocks
    (an embedded server, open connections) are cleaned up instead of the process dying."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _run_demo(args: argparse.Namespace) -> int:
    import dataqueue as dq
    from dataqueue.config import database_url_from_env
    from dataqueue.demo import HANDLERS, demo_database, run_demo

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _sigterm_like_ctrl_c()  # the embedded server is stopped and deleted either way
    # The demo's flaky job fails once on purpose; its retry shows in the summary.
    logging.getLogger("dataqueue.processor").setLevel(logging.CRITICAL)
    url = args.database_url or database_url_from_env()
    print("dataqueue demo on " + ("your database" if url else "an embedded PostgreSQL"))
    try:
        with demo_database(url) as database_url, dq.init_job_queue(database_url) as queue:
            run_demo(queue, sys.stdout)
            if not args.no_dashboard:
                _serve_dashboard(queue, HANDLERS, args, "/")
    except ConfigurationError as exc:
        print(f"{PROGRAM} demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _add_dashboard_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the admin dashboard locally",
        description=(
            "Serve the dashboard with the standard library's WSGI server (for local use; in "
            "production mount dataqueue.dashboard.create_dashboard in your app behind its "
            "login). MODULE:HANDLERS names the handlers the Process jobs button runs."
        ),
    )
    parser.add_argument(
        "handlers",
        metavar="MODULE:HANDLERS",
        help="the handler mapping the Process jobs button runs, e.g. myapp.jobs:HANDLERS",
    )
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL URL (default: DATAQUEUE_DATABASE_URL)"
    )
    _add_redis_arguments(parser)
    _add_serving_arguments(parser)
    parser.add_argument(
        "--base-path",
        default="/",
        help="URL path the dashboard is served under (default: /)",
    )
    parser.set_defaults(handler=_run_dashboard)


def _add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` and ``--key-prefix`` of the commands that open a queue."""
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="use the Redis backend at this URL (redis://host:port/db) instead of PostgreSQL; "
        "default: DATAQUEUE_REDIS_URL when no PostgreSQL URL is configured",
    )
    parser.add_argument(
        "--key-prefix",
        metavar="PREFIX",
        help="Redis only: the prefix of every key of the queue (default: dq:)",
    )


def _add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--port`` and ``--allowed-host`` of the commands that serve the dashboard."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=positive_int, default=8080, help="port to listen on (default: 8080)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        type=_allowed_host,
        metavar="NAME",
        dest="allowed_hosts",
        help=(
            "also answer requests for this Host name (repeatable): an exact name or address, "
            "'.example.com' for the domain and its subdomains, or '*' for any host. By "
            "default only localhost, 127.0.0.1, ::1 and the --host address (for 0.0.0.0 or "
            "::, this machine's host name) are answered; other Host headers get a 400, which "
            "stops DNS-rebinding pages from driving the dashboard"
        ),
    )


def _allowed_host(value: str) -> str:
    from dataqueue.dashboard.hosts import normalize_host_name

    try:
        return normalize_host_name(value)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _queue_and_handlers(
    args: argparse.Namespace,
) -> tuple[JobQueue, Mapping[str, Callable[..., Any]]]:
    """The handlers named by ``args.handlers`` and a queue on the store the flags or the
    environment name (see :func:`_open_queue`); ConfigurationError says what is missing."""
    from dataqueue.worker import load_handlers

    handlers = load_handlers(args.handlers)
    return _open_queue(args), handlers


def _open_queue(args: argparse.Namespace) -> JobQueue:
    """A queue on ``--database-url`` or ``--redis-url`` (not both; ``--key-prefix`` only
    with Redis), else on ``DATAQUEUE_DATABASE_URL`` (or ``PG_DATAQUEUE_DATABASE``), else
    on ``DATAQUEUE_REDIS_URL``: flags win over the environment."""
    import dataqueue as dq
    from dataqueue.config import database_url_from_env, redis_url_from_env

    if args.database_url and args.redis_url:
        raise ConfigurationError("pass --database-url or --redis-url, not both")
    database_url = args.database_url or (None if args.redis_url else database_url_from_env())
    redis_url = args.redis_url or (None if database_url else redis_url_from_env())
    if database_url is None and redis_url is None:
        raise ConfigurationError(
            "no database URL; pass --database-url URL (or --redis-url URL) or set "
            "DATAQUEUE_DATABASE_URL (or DATAQUEUE_REDIS_URL)"
        )
    if redis_url is None:
        if args.key_prefix is not None:
            raise ConfigurationError("--key-prefix applies to the Redis backend only")
        return dq.init_job_queue(database_url)
    return dq.init_job_queue(redis_url=redis_url, key_prefix=args.key_prefix or "dq:")


def _run_dashboard(args: argparse.Namespace) -> int:

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        queue, handlers = _queue_and_handlers(args)
    except ConfigurationError as exc:
        print(f"{PROGRAM} dashboard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with queue:
        try:
            queue.get_all_jobs(limit=1)
            _serve_dashboard(queue, handlers, args, args.base_path)
        except KeyboardInterrupt:
            return EXIT_OK
        except ConfigurationError as exc:
            print(f"{PROGRAM} dashboard: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as exc:
            print(f"{PROGRAM} dashboard: {one_line(exc)}", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK


def _serve_dashboard(
    queue: JobQueue,
    handlers: Mapping[str, Callable[..., Any]],
    args: argparse.Namespace,
    base: str,
) -> None:
    """Serve the dashboard on ``args.host``/``args.port`` with the standard library's WSGI
    server until Ctrl-C, answering the loopback names, the bound address (the machine's
    host name for 0.0.0.0 and ::) and ``--allowed-host`` names.

    The server runs on its own thread while the main thread waits for SIGINT or
    SIGTERM (handlers installed explicitly, so a process started with SIGINT ignored,
    as background jobs of a shell are, still stops). The request in progress finishes
    before the function returns.
    """
    import signal
    import threading
    from wsgiref.simple_server import make_server

    from dataqueue.dashboard import create_dashboard
    from dataqueue.dashboard.hosts import serving_hosts

    allowed_hosts = serving_hosts(args.host, args.allowed_hosts)
    app = create_dashboard(queue, handlers, base_path=base, allowed_hosts=allowed_hosts)
    with make_server(args.host, args.port, app) as server:
        serving = threading.Thread(target=server.serve_forever, name="dataqueue-dashboard-server")
        stop = threading.Event()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        # Printed once a signal can no longer kill the process uncleanly.
        print(f"dashboard on http://{args.host}:{args.port}{base}  (Ctrl-C to stop)", flush=True)
        hosts = "any" if "*" in allowed_hosts else ", ".join(allowed_hosts)
        print(f"answering Host: {hosts}  (add names with --allowed-host)", flush=True)
        serving.start()
        try:
            while not stop.wait(0.2) and serving.is_alive():
                pass
        finally:
            server.shutdown()
            serving.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _log_progress_to_stderr() -> None:
    """Show Alembic's "Running upgrade ..." lines; stdout stays clean for ``--sql``."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.INFO)


def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    return EXIT_FAILURE


def _version() -> str:
    try:
        return metadata.version("dataqueue")
    except metadata.PackageNotFoundError:
        return "unknown"
