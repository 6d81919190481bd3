"""Django integration: the project's queue from settings, and a worker management command.

Settings (all optional but the handlers, which only the worker command needs):

- ``DATAQUEUE_DATABASE_URL``: the PostgreSQL URL of the queue. Default: the Django
  database named by ``DATAQUEUE_DATABASE_ALIAS`` (``"default"``), with the same
  connection parameters, so jobs live beside your models and
  ``queue.add_job(..., db=django.db.connection)`` joins your ``transaction.atomic()``
  block.
- ``DATAQUEUE_SCHEMA``: the PostgreSQL schema of the dataqueue tables (default: the
  connection's search_path).
- ``DATAQUEUE_HANDLERS``: ``"myapp.jobs:HANDLERS"``, a mapping of job type to handler,
  or a function returning one.

The dataqueue tables are not Django models: create them with ``dataqueue migrate`` (or
``dataqueue.migrate.upgrade(url)``) next to ``manage.py migrate``.

.. code-block:: python

    # myapp/views.py
    from django.db import connection, transaction
    from dataqueue.contrib.django import queue_from_settings

    with transaction.atomic():
        signup = Signup.objects.create(email=email)
        queue_from_settings().add_job("send_welcome", {"signup_id": signup.pk}, db=connection)

    # myapp/management/commands/dataqueue_worker.py
    from dataqueue.contrib.django import WorkerCommand

    class Command(WorkerCommand):
        pass

``python manage.py dataqueue_worker --concurrency 4`` then processes jobs until
SIGTERM/SIGINT; the first signal drains running jobs, a second exits at once.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.core.management.base import (  # type: ignore[import-untyped]
    BaseCommand,
    CommandError,
)
from django.db import close_old_connections  # type: ignore[import-untyped]

from dataqueue.errors import ConfigurationError
from dataqueue.queue import JobQueue, init_job_queue
from dataqueue.worker import (
    add_rate_limit_argument,
    log_format_arg,
    milliseconds,
    one_line,
    port_arg,
    positive_int,
    seconds_arg,
)

__all__ = [
    "WorkerCommand",
    "close_shared_queue",
    "closing_db_connections",
    "django_conninfo",
    "queue_from_settings",
]

Handler = Callable[..., Any]

#: ``settings.DATABASES`` keys and the libpq parameters they become.
_DJANGO_FIELDS = (
    ("NAME", "dbname"),
    ("USER", "user"),
    ("PASSWORD", "password"),
    ("HOST", "host"),
    ("PORT", "port"),
)


class _SharedQueue:
    """The process's queue for :func:`queue_from_settings`, created on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: JobQueue | None = None


_shared = _SharedQueue()


def queue_from_settings(*, shared: bool = True) -> JobQueue:
    """The queue configured by the project's settings (see the module docstring).

    With ``shared=True`` (the default) every call in the process returns the same queue,
    created on first use, so views can call this per request without opening a pool each
    time. It is fork-safe (gunicorn, uWSGI). ``shared=False`` returns a new queue that the
    caller closes. Raises :class:`~dataqueue.ConfigurationError` when the database is not
    PostgreSQL or the settings are unusable.
    """
    if not shared:
        return _build_queue()
    with _shared.lock:
        if _shared.queue is None:
            _shared.queue = _build_queue()
        return _shared.queue


def close_shared_queue() -> None:
    """Close the queue :func:`queue_from_settings` shares, if any (the next call makes one)."""
    with _shared.lock:
        queue, _shared.queue = _shared.queue, None
    if queue is not None:
        queue.close()


def _build_queue() -> JobQueue:
    url = getattr(settings, "DATAQUEUE_DATABASE_URL", None)
    schema = getattr(settings, "DATAQUEUE_SCHEMA", None) or None
    if url:
        return init_job_queue(str(url), schema=schema)
    alias = getattr(settings, "DATAQUEUE_DATABASE_ALIAS", None) or "default"
    databases: Mapping[str, Mapping[str, Any]] = settings.DATABASES
    if alias not in databases:
        raise ConfigurationError(
            f"settings.DATABASES has no {alias!r} database; set DATAQUEUE_DATABASE_URL "
            "or DATAQUEUE_DATABASE_ALIAS"
        )
    return init_job_queue(django_conninfo(databases[alias], alias=alias), schema=schema)


def django_conninfo(database: Mapping[str, Any], *, alias: str = "default") -> str:
    """A libpq connection string for one entry of ``settings.DATABASES``.

    ``NAME``, ``USER``, ``PASSWORD``, ``HOST``, ``PORT`` and those ``OPTIONS`` that are libpq
    parameters (``sslmode``, ``options``, ``service``, ...) are used; Django-only options
    (``isolation_level``, ``pool``, ...) are not. Raises
    :class:`~dataqueue.ConfigurationError` for a database that is not PostgreSQL.
    """
    from psycopg import pq
    from psycopg.conninfo import make_conninfo

    engine = str(database.get("ENGINE", ""))
    if "postgresql" not in engine and "postgis" not in engine:
        raise ConfigurationError(
            f"DATABASES[{alias!r}] uses {engine or 'no ENGINE'}, but dataqueue needs "
            "PostgreSQL; set DATAQUEUE_DATABASE_URL to a postgresql:// URL"
        )
    libpq_keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    params: dict[str, str] = {
        key: str(value)
        for key, value in dict(database.get("OPTIONS") or {}).items()
        if key in libpq_keywords and value is not None
    }
    for django_key, libpq_key in _DJANGO_FIELDS:
        value = database.get(django_key)
        if value not in (None, ""):
            params[libpq_key] = str(value)
    return make_conninfo("", **params)


def closing_db_connections(handler: Handler) -> Handler:
    """Wrap ``handler`` so each job starts and ends like a Django request for the database.

    Django keeps one connection per thread and only recycles it (``CONN_MAX_AGE``, broken
    connections) around requests; worker threads never see a request, so this calls
    ``django.db.close_old_connections()`` before and after every job. The wrapper keeps the
    handler's signature, so the processor passes it the same arguments.
    """

    @functools.wraps(handler)
    def run(*args: Any) -> Any:
        close_old_connections()
        try:
            return handler(*args)
        finally:
            close_old_connections()

    return run


class WorkerCommand(BaseCommand):  # type: ignore[misc]
    """Base class of a ``dataqueue_worker`` management command: subclass it as ``Command``.

    Runs :func:`dataqueue.worker.run_worker` (a processor and a supervisor) on the queue of
    :func:`queue_from_settings` with the handlers of ``--handlers`` or
    ``settings.DATAQUEUE_HANDLERS``, until SIGTERM/SIGINT; then drains and exits 0.

    Handlers are wrapped by :func:`closing_db_connections` unless ``close_db_connections``
    is False. Jobs enqueued with ``force_kill_on_timeout=True`` run their handler in a fresh
    interpreter, which needs the module-level function itself, not a wrapper: if you use
    them, set ``close_db_connections = False`` (such a handler must also call
    ``django.setup()`` before using the ORM, since the child process starts empty).
    """

    help = (
        "Process dataqueue jobs until SIGTERM/SIGINT; the first signal drains running jobs, "
        "a second exits at once. Handlers: --handlers or settings.DATAQUEUE_HANDLERS."
    )
    requires_migrations_checks = False
    #: Settings name holding the ``MODULE:NAME`` reference of the handlers.
    handlers_setting = "DATAQUEUE_HANDLERS"
    #: Wrap handlers with :func:`closing_db_connections`.
    close_db_connections = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--handlers",
            metavar="MODULE:NAME",
            help=f"handler mapping (default: settings.{self.handlers_setting})",
        )
        parser.add_argument(
            "--job-type", action="append", metavar="T", help="only these types (repeatable)"
        )
        parser.add_argument("--batch-size", type=positive_int, metavar="N")
        parser.add_argument("--concurrency", type=positive_int, metavar="N")
        parser.add_argument("--group-concurrency", type=positive_int, metavar="N")
        parser.add_argument("--poll-interval", type=milliseconds, metavar="MS")
        parser.add_argument(
            "--no-listen",
            action="store_true",
            help="do not LISTEN for new jobs; poll only (for a pooler in transaction mode)",
        )
        parser.add_argument("--no-supervisor", action="store_true")
        parser.add_argument("--supervisor-interval", type=milliseconds, metavar="MS")
        parser.add_argument(
            "--heartbeat-interval",
            type=seconds_arg,
            metavar="S",
            help="seconds between heartbeats refreshing running jobs' locks (default: 5)",
        )
        parser.add_argument(
            "--heartbeat-timeout",
            type=seconds_arg,
            metavar="S",
            help="seconds of silence after which a worker's jobs are reclaimed (default: 20)",
        )
        parser.add_argument(
            "--stuck-timeout",
            type=seconds_arg,
            metavar="S",
            help="seconds after which jobs of workers that do not heartbeat are reclaimed "
            "(default: 600)",
        )
        parser.add_argument(
            "--drain-timeout",
            type=milliseconds,
            default=30_000.0,
            metavar="MS",
            help="how long to wait for running jobs on shutdown (default: 30000)",
        )
        add_rate_limit_argument(parser)
        parser.add_argument(
            "--metrics-port",
            type=port_arg,
            metavar="PORT",
            help="serve Prometheus metrics on http://HOST:PORT/metrics (needs the prometheus "
            "extra; 0 picks a free port, logged)",
        )
        parser.add_argument(
            "--metrics-host",
            default="0.0.0.0",
            metavar="HOST",
            help="address the metrics server binds (default: 0.0.0.0)",
        )
        parser.add_argument(
            "--log-format",
            type=log_format_arg,
            default="text",
            metavar="FORMAT",
            help="text (default) or json: one JSON object per line with the record's fields "
            "(job_id, job_type, attempt, worker_id, duration_ms, action …), for the log "
            "this command writes to stderr when the project's LOGGING does not route "
            "dataqueue's records",
        )

    def get_handlers(self, reference: str | None) -> Mapping[str, Handler]:
        """The handlers to run, from ``reference`` or the settings; override to build them."""
        from dataqueue.worker import load_handlers

        reference = reference or getattr(settings, self.handlers_setting, None)
        if not reference:
            raise CommandError(
                f"no handlers: pass --handlers MODULE:NAME or set settings.{self.handlers_setting}"
            )
        try:
            handlers = load_handlers(str(reference))
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        if not self.close_db_connections:
            return handlers
        return {job_type: closing_db_connections(fn) for job_type, fn in handlers.items()}

    def handle(self, *args: Any, **options: Any) -> None:
        from dataqueue.worker import run_worker

        handlers = self.get_handlers(options["handlers"])
        verbosity = int(options["verbosity"])
        verbose = verbosity >= 3
        log_format = options["log_format"]
        if verbosity >= 2:
            _log_to_stderr(logging.DEBUG if verbose else logging.INFO, log_format)
        elif log_format == "json":  # warnings and errors as JSON lines too
            _log_to_stderr(logging.WARNING, log_format)
        try:
            queue = queue_from_settings(shared=False)
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        with queue:
            try:
                queue.get_all_jobs(limit=1)  # fail fast: unreachable database, no tables
            except Exception as exc:
                raise CommandError(one_line(exc)) from None
            processor_options: dict[str, Any] = {
                name: options[name]
                for name in (
                    "batch_size",
                    "concurrency",
                    "group_concurrency",
                    "poll_interval",
                    "heartbeat_interval",
                    "heartbeat_timeout",
                )
                if options[name] is not None
            }
            job_type = options["job_type"]
            processor_options["job_type"] = "*" if job_type == ["*"] else job_type
            processor_options["verbose"] = verbose
            if options["no_listen"]:
                processor_options["listen"] = False
            if options["rate_limit"]:
                processor_options["rate_limits"] = dict(options["rate_limit"])
            supervisor_options: dict[str, Any] | None = None
            if not options["no_supervisor"]:
                supervisor_options = {"verbose": verbose}
                if options["supervisor_interval"] is not None:
                    supervisor_options["interval_ms"] = options["supervisor_interval"]
                if options["stuck_timeout"] is not None:
                    supervisor_options["stuck_jobs_timeout"] = options["stuck_timeout"]
            if verbosity >= 1:
                self.stdout.write(
                    f"dataqueue worker: job types {', '.join(sorted(handlers)) or '(none)'}; "
                    "SIGTERM/SIGINT drains and stops"
                )
                self.stdout.flush()
            try:
                status = run_worker(
                    queue,
                    handlers,
                    processor_options=processor_options,
                    supervisor_options=supervisor_options,
                    drain_timeout_ms=options["drain_timeout"],
                    metrics_port=options["metrics_port"],
                    metrics_host=options["metrics_host"],
                )
            except ConfigurationError as exc:  # e.g. no prometheus-client, port in use
                raise CommandError(str(exc)) from None
        if status:
            raise CommandError(f"worker exited with status {status}", returncode=status)
        if verbosity >= 1:
            self.stdout.write("dataqueue worker: drained and stopped")
            self.stdout.flush()


def _log_to_stderr(level: int, log_format: str = "text") -> None:
    """Show dataqueue's log at ``level`` unless the project's LOGGING already routes it;
    ``log_format`` ``json`` writes one JSON object per record."""
    from dataqueue.logs import JsonFormatter

    dataqueue_logger = logging.getLogger("dataqueue")
    if dataqueue_logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    dataqueue_logger.addHandler(handler)
    dataqueue_logger.setLevel(level)


# -- the dashboard ---------------------------------------------------------------------


def dashboard_view(dashboard: Callable[..., Any]) -> Callable[..., Any]:
    """A Django view that serves the dashboard WSGI app.

    The app keeps its own CSRF protection (custom header + same-origin check), so the
    view is exempt from Django's token check; protect it with your own decorator (see
    :func:`dashboard_urls`).

    Host names are Django's business: the view calls ``request.get_host()`` first, so a
    host outside ``settings.ALLOWED_HOSTS`` gets Django's 400 before the dashboard runs,
    and hands the dashboard that validated host (``USE_X_FORWARDED_HOST`` included) as
    ``Host``. A dashboard created without ``allowed_hosts`` then checks nothing more; one
    created with ``allowed_hosts`` also applies its own list.
    """
    import io

    from django.http import HttpResponse  # type: ignore[import-untyped]
    from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

    from dataqueue.dashboard import Dashboard
    from dataqueue.dashboard.hosts import ANY_HOST, AllowedHosts

    any_host = AllowedHosts([ANY_HOST])

    def view(request: Any, path: str = "") -> Any:
        environ = dict(request.environ)
        environ["HTTP_HOST"] = request.get_host()  # DisallowedHost: Django answers 400
        environ["wsgi.input"] = io.BytesIO(request.body)
        environ["CONTENT_LENGTH"] = str(len(request.body))
        captured: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            captured["status"], captured["headers"] = status, headers

        if isinstance(dashboard, Dashboard):
            answer = dashboard.serve(environ, start_response, default_hosts=any_host)
        else:  # a wrapped app keeps its own host rules
            answer = dashboard(environ, start_response)
        body = b"".join(answer)
        response = HttpResponse(body, status=int(captured["status"].split(" ", 1)[0]))
        for name, value in captured["headers"]:
            response[name] = value
        return response

    exempt: Callable[..., Any] = csrf_exempt(view)
    return exempt


def dashboard_urls(
    *,
    prefix: str = "admin/dataqueue/",
    queue: JobQueue | None = None,
    handlers: Mapping[str, Handler] | str | None = None,
    protect: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    processor_options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """URL patterns serving the dashboard under ``prefix``, for ``urlpatterns``.

    ``queue`` defaults to :func:`queue_from_settings`; ``handlers`` (a mapping or a
    ``"module:NAME"`` reference) to ``settings.DATAQUEUE_HANDLERS`` (without handlers the
    "Process jobs" button answers 400). ``protect`` wraps the view; the default,
    ``staff_member_required``, sends anyone who is not staff to the admin login. Put these
    patterns before ``admin.site.urls`` when the prefix lies under ``admin/``. Requests
    for hosts outside ``settings.ALLOWED_HOSTS`` get Django's 400 (see
    :func:`dashboard_view`).
    """
    from django.urls import re_path  # type: ignore[import-untyped]

    from dataqueue.dashboard import create_dashboard
    from dataqueue.worker import load_handlers

    if protect is None:
        from django.contrib.admin.views.decorators import (  # type: ignore[import-untyped]
            staff_member_required,
        )

        protect = staff_member_required
    reference = handlers if handlers is not None else getattr(settings, "DATAQUEUE_HANDLERS", None)
    resolved = load_handlers(reference) if isinstance(reference, str) else reference
    base = "/" + prefix.strip("/")
    dashboard = create_dashboard(
        queue or queue_from_settings(),
        resolved,
        base_path=base,
        processor_options=processor_options,
    )
    view = _api_refusals_as_json(protect(dashboard_view(dashboard)))
    return [re_path(rf"^{re.escape(prefix.strip('/'))}(?:/(?P<path>.*))?$", view)]


def _api_refusals_as_json(view: Callable[..., Any]) -> Callable[..., Any]:
    """API calls the protecting decorator turns away get 401/403 JSON, not a redirect.

    ``staff_member_required`` (and ``login_required``) redirect to a login page, which
    is right for the page but not for ``fetch()``: an anonymous API call gets 401
    ``{"error": "Authentication required"}``, a signed-in user without access 403.
    """
    from django.http import JsonResponse

    def guarded(request: Any, path: str | None = None, **kwargs: Any) -> Any:
        response = view(request, path=path or "", **kwargs)
        api = (path or "").split("/", 1)[0] == "api"
        if api and 300 <= response.status_code < 400:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                return JsonResponse({"error": "Forbidden"}, status=403)
            return JsonResponse({"error": "Authentication required"}, status=401)
        return response

    return guarded
