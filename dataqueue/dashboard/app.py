"""The dashboard's WSGI application: routing, JSON API, CSRF checks.

See the package docstring (:mod:`dataqueue.dashboard`) for routes, security and mounting.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from dataqueue.dashboard.hosts import LOOPBACK_HOSTS, AllowedHosts
from dataqueue.dashboard.page import render_page, static_asset
from dataqueue.enums import JobStatus
from dataqueue.errors import ConfigurationError
from dataqueue.records import MAX_STATS_WINDOW

if TYPE_CHECKING:
    from dataqueue.queue import JobQueue
    from dataqueue.records import JobRecord

logger = logging.getLogger("dataqueue.dashboard")

#: The callable WSGI hands an application to begin its response.
StartResponse = Callable[..., Any]

#: Rows per page when ``limit`` is not given, and the most one request may ask for.
DEFAULT_LIMIT = 25
MAX_LIMIT = 500
#: Offsets beyond this are refused: no real list is that long, and PostgreSQL's OFFSET
#: takes a bigint, so larger numbers would be a database error instead of a 400.
MAX_OFFSET = 2**31 - 1
#: Job ids are PostgreSQL ``integer`` values; larger numbers are refused as invalid.
MAX_JOB_ID = 2**31 - 1

#: The recent window of ``api/stats`` when ``window`` is not given, in seconds.
DEFAULT_STATS_WINDOW = 300

#: The header every POST must carry; the page's fetch calls set it.
CSRF_HEADER = "X-Requested-With"
CSRF_HEADER_VALUE = "dataqueue"

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_STATUSES = frozenset(status.value for status in JobStatus)
_CANCELLABLE = frozenset({JobStatus.PENDING, JobStatus.WAITING})
#: Only failed jobs are offered a Retry: retry_job also accepts a processing job, but
#: doing that from a dashboard would run the job twice while its worker is still alive
#: (stuck jobs are the supervisor's reclaim). Cancelled jobs cannot be retried (W-API-5).
_RETRYABLE = frozenset({JobStatus.FAILED})

_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    500: "500 Internal Server Error",
}
_DEFAULT_PORTS = frozenset({"80", "443"})


class Response:
    """A complete response: status code, headers and body bytes."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Request:
    """What the dashboard reads from a WSGI environ."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self.method: str = str(environ.get("REQUEST_METHOD", "GET")).upper()
        # The full path the browser asked for, so that base_path matches whether the
        # app is the root app, mounted by a dispatcher, or called from a framework view.
        self.path: str = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        self.query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)

    def header(self, name: str) -> str | None:
        """A request header by its HTTP name (``X-Requested-With``), or None."""
        key = "HTTP_" + name.upper().replace("-", "_")
        value = self.environ.get(key)
        return None if value is None else str(value)

    def param(self, name: str) -> str | None:
        """The first value of a query parameter; an empty value counts as absent.

        A value holding a NUL character (which PostgreSQL text cannot store) raises
        :class:`BadRequestError`.
        """
        values = self.query.get(name)
        if not values or values[0] == "":
            return None
        if "\x00" in values[0]:
            raise BadRequestError(f"{name} must not contain NUL characters")
        return values[0]

    def host(self) -> str:
        """The host (and non-default port) this request was sent to, lower case."""
        host = self.header("Host")
        if host is None:
            host = str(self.environ.get("SERVER_NAME", ""))
            port = str(self.environ.get("SERVER_PORT", ""))
            if port:
                host = f"{host}:{port}"
        return _without_default_port(host.lower())


class BadRequestError(Exception):
    """Raised while reading a request; becomes a 400 JSON response with the message."""


def json_response(status: int, data: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A JSON response that is never cached and never sniffed as something else."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *headers,
        ],
        body,
    )


def error_response(
    status: int, message: str, *, headers: Iterable[tuple[str, str]] = (), **extra: Any
) -> Response:
    """``{"error": message}`` (plus ``extra`` keys) with ``status``."""
    return json_response(status, {**extra, "error": message}, headers)


def serialize_job(job: JobRecord) -> dict[str, Any]:
    """The job as upstream's dashboard JSON (camelCase, ISO dates) plus the page's actions.

    ``canCancel`` is true for pending and waiting jobs, ``canRetry`` only for failed ones.
    """
    data = job.to_dict(camel_case=True)
    data["canCancel"] = job.status in _CANCELLABLE
    data["canRetry"] = job.status in _RETRYABLE
    return data


def parse_job_id(segment: str) -> int:
    """A job id from a path segment: ASCII digits, 1 .. 2**31-1, else :class:`BadRequestError`."""
    if not _DIGITS.fullmatch(segment):
        raise BadRequestError("Invalid job ID")
    job_id = int(segment)
    if not 1 <= job_id <= MAX_JOB_ID:
        raise BadRequestError("Invalid job ID")
    return job_id


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.param(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequestError(f"{name} must be an integer between {low} and {high}, got {raw!r}")
    return int(raw)


def _without_default_port(netloc: str) -> str:
    """``netloc`` without a ``:80`` or ``:443`` suffix.

    Both are dropped whatever the scheme: behind a TLS-terminating proxy the app may see
    ``http`` while the browser's ``Origin`` says ``https``.
    """
    host, sep, port = netloc.rpartition(":")
    if sep and "]" not in port and port in _DEFAULT_PORTS:
        return host
    return netloc


def _origin_host(value: str) -> str | None:
    """``host[:port]`` of an ``Origin``/``Referer`` value, or None if it has none."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return _without_default_port(parts.netloc.lower())


def csrf_failure(request: Request) -> str | None:
    """Why a POST must be refused as a possible cross-site request, or None if it is fine."""
    marker = request.header(CSRF_HEADER)
    if marker is None or marker.strip().lower() != CSRF_HEADER_VALUE:
        return f"Missing {CSRF_HEADER}: {CSRF_HEADER_VALUE} header"
    for name in ("Origin", "Referer"):
        value = request.header(name)
        if value is None:
            continue
        if _origin_host(value) != request.host():
            return f"Cross-origin request refused ({name} does not match Host)"
        return None  # Origin decides when present; Referer only when Origin is absent.
    return None


def text_response(status: int, text: str) -> Response:
    """A short plain-text response (for pages, where JSON would be out of place)."""
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    return Response(status, headers, text.encode("utf-8"))


#: The allow-list of a dashboard created without ``allowed_hosts`` and served directly.
LOOPBACK_ONLY = AllowedHosts(LOOPBACK_HOSTS)


class Dashboard:
    """The dashboard as a WSGI application. Create it with :func:`create_dashboard`.

    Thread-safe: it keeps no per-request state, and the queue is thread-safe.
    """

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        *,
        base_path: str = "/admin/dataqueue",
        processor_options: Mapping[str, Any] | None = None,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        if handlers is not None and not isinstance(handlers, Mapping):
            raise TypeError(f"handlers must be a mapping of job type to callable, got {handlers!r}")
        if processor_options is not None and not isinstance(processor_options, Mapping):
            raise TypeError(f"processor_options must be a mapping, got {processor_options!r}")
        self.queue = queue
        self.handlers = None if handlers is None else dict(handlers)
        self.base_path = normalize_base_path(base_path)
        self.processor_options = dict(processor_options or {})
        #: The hosts given to create_dashboard; None leaves the choice to whoever serves
        #: the app (loopback only when called as a plain WSGI app, see :meth:`serve`).
        self.allowed_hosts = None if allowed_hosts is None else AllowedHosts(allowed_hosts)
        # PEP 3333 hands paths over as latin-1 decoded bytes; compare like with like.
        self._wsgi_base = self.base_path.encode("utf-8").decode("latin-1")
        if self.handlers is not None:
            # Fail at start-up, not at the first click, on bad handlers or options.
            self.queue.create_processor(self.handlers, **self.processor_options)

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        return self.serve(environ, start_response)

    def serve(
        self,
        environ: Mapping[str, Any],
        start_response: StartResponse,
        *,
        default_hosts: AllowedHosts = LOOPBACK_ONLY,
    ) -> Iterable[bytes]:
        """Answer one WSGI request (what calling the app does).

        Requests whose ``Host`` is not allowed get a 400 before anything else runs. The
        allow-list is the dashboard's ``allowed_hosts``, or ``default_hosts`` when it was
        created without one: loopback names unless a framework adapter passes the
        hosts its framework has already checked (``AllowedHosts(["*"])``).
        """
        request = Request(environ)
        try:
            allowed = default_hosts if self.allowed_hosts is None else self.allowed_hosts
            response = self._host_refusal(request, allowed)
            if response is None:
                response = self.handle(request)
        except BadRequestError as exc:
            response = error_response(400, str(exc))
        except Exception:
            logger.exception(
                "[dataqueue-dashboard] Error: %s %s",
                request.method,
                request.path,
                extra={"action": "request_failed", "method": request.method, "path": request.path},
            )
            response = error_response(500, "Internal server error")
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        start_response(_STATUS_LINES[response.status], headers)
        return [b""] if request.method == "HEAD" else [response.body]

    def _host_refusal(self, request: Request, allowed: AllowedHosts) -> Response | None:
        """A 400 for a request to a host not in ``allowed``, else None.

        JSON under ``{base}/api``, plain text elsewhere (the page, static files).
        """
        host = request.header("Host")
        if allowed.allows(host):
            return None
        logger.warning(
            "[dataqueue-dashboard] Refused %s %s for Host %r (not in allowed_hosts)",
            request.method,
            request.path,
            host,
            extra={
                "action": "host_refused",
                "method": request.method,
                "path": request.path,
                "host": host,
            },
        )
        if host is None:
            message = "Missing Host header"
        else:
            message = f"Host {host!r} is not allowed; add it to the dashboard's allowed hosts"
        segments = self._segments(request.path)
        if segments is not None and segments[:1] == ["api"]:
            return error_response(400, message)
        return text_response(400, f"Bad Request: {message}\n")

    def handle(self, request: Request) -> Response:
        """Route ``request`` to its handler; raises :class:`BadRequestError` for bad input.

        Does not check the ``Host`` header: call the app (or :meth:`serve`) for that.
        """
        segments = self._segments(request.path)
        if segments is None:
            return error_response(404, "Not found")
        if not segments or segments[0] != "api":
            return self._page(request, segments)
        route = self._api_route(segments[1:])
        if route is None:
            return error_response(404, "Not found")
        method, handler = route
        allowed = "GET, HEAD" if method == "GET" else method
        if request.method not in allowed.split(", "):
            return error_response(405, "Method not allowed", headers=[("Allow", allowed)])
        if method == "POST":
            refusal = csrf_failure(request)
            if refusal is not None:
                return error_response(403, refusal)
        return handler(request)

    # -- routing --------------------------------------------------------------------

    def _segments(self, path: str) -> list[str] | None:
        """Path segments after base_path (empty ones dropped), or None outside base_path."""
        base = self._wsgi_base
        if path != base and not path.startswith(base + "/"):
            return None
        return [segment for segment in path[len(base) :].split("/") if segment]

    def _api_route(self, segments: list[str]) -> tuple[str, Callable[[Request], Response]] | None:
        """(method, handler) for an API path, or None when no route matches."""
        if segments == ["jobs"]:
            return "GET", self.list_jobs
        if segments == ["process"]:
            return "POST", self.process_jobs
        if segments == ["stats"]:
            return "GET", self.get_stats
        if len(segments) < 2 or segments[0] != "jobs":
            return None
        job_segment, action = segments[1], segments[2:]
        routes: dict[tuple[str, ...], tuple[str, Callable[[Request, int], Response]]] = {
            (): ("GET", self.get_job),
            ("events",): ("GET", self.get_job_events),
            ("cancel",): ("POST", self.cancel_job),
            ("retry",): ("POST", self.retry_job),
        }
        found = routes.get(tuple(action))
        if found is None:
            return None
        method, handler = found
        return method, lambda request: handler(request, parse_job_id(job_segment))

    def _page(self, request: Request, segments: list[str]) -> Response:
        if segments[:1] == ["static"]:
            asset = static_asset("/".join(segments[1:]))
            if asset is None:
                return error_response(404, "Not found")
            if request.method not in ("GET", "HEAD"):
                return error_response(405, "Method not allowed", headers=[("Allow", "GET, HEAD")])
            content_type, body = asset
            headers = [
                ("Content-Type", content_type),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
            ]
            return Response(200, headers, body)
        if segments:  # the page lives at base_path only (it routes with #/...)
            return text_response(404, "Not Found\n")
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "Method not allowed", headers=[("Allow", "GET, HEAD")])
        html = render_page(self.base_path, can_process=self.handlers is not None)
        return Response(200, _page_headers(), html.encode("utf-8"))

    # -- API handlers ---------------------------------------------------------------

    def list_jobs(self, request: Request) -> Response:
        """``GET api/jobs``: a page of jobs (status wins over jobType) and ``hasMore``."""
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
        status = request.param("status")
        job_type = request.param("jobType")
        if status is not None:
            if status not in _STATUSES:
                names = ", ".join(s.value for s in JobStatus)
                raise BadRequestError(f"Unknown status {status!r}; expected one of {names}")
            jobs = self.queue.get_jobs_by_status(status, limit + 1, offset)
        elif job_type is not None:
            jobs = self.queue.get_jobs({"job_type": job_type}, limit + 1, offset)
        else:
            jobs = self.queue.get_all_jobs(limit + 1, offset)
        return json_response(
            200,
            {"jobs": [serialize_job(job) for job in jobs[:limit]], "hasMore": len(jobs) > limit},
        )

    def get_job(self, request: Request, job_id: int) -> Response:
        """``GET api/jobs/<id>``: ``{"job": ...}`` or 404. What ``useJob`` polls."""
        job = self.queue.get_job(job_id)
        if job is None:
            return error_response(404, "Job not found")
        return json_response(200, {"job": serialize_job(job)})

    def get_job_events(self, request: Request, job_id: int) -> Response:
        """``GET api/jobs/<id>/events``: the job's events, oldest first."""
        events = self.queue.get_job_events(job_id)
        return json_response(200, {"events": [e.to_dict(camel_case=True) for e in events]})

    def get_stats(self, request: Request) -> Response:
        """``GET api/stats``: ``{"stats": ...}``, :meth:`JobQueue.get_stats` as camelCase
        JSON; ``window`` in seconds, 1..3600 (default 300)."""
        window = _int_param(request, "window", DEFAULT_STATS_WINDOW, 1, int(MAX_STATS_WINDOW))
        stats = self.queue.get_stats(window=window)
        return json_response(200, {"stats": stats.to_dict(camel_case=True)})

    def cancel_job(self, request: Request, job_id: int) -> Response:
        """``POST api/jobs/<id>/cancel``: ``{"ok": true, "changed": bool, "job": ...}``."""
        return self._act(job_id, self.queue.cancel_job(job_id))

    def retry_job(self, request: Request, job_id: int) -> Response:
        """``POST api/jobs/<id>/retry``: ``{"ok": true, "changed": bool, "job": ...}``."""
        return self._act(job_id, self.queue.retry_job(job_id))

    def _act(self, job_id: int, changed: bool) -> Response:
        job = self.queue.get_job(job_id)
        if job is None:
            return error_response(404, "Job not found", ok=False)
        return json_response(200, {"ok": True, "changed": changed, "job": serialize_job(job)})

    def process_jobs(self, request: Request) -> Response:
        """``POST api/process``: one batch in this request; ``{"processed": n}``."""
        if self.handlers is None:
            return error_response(
                400, "No handlers configured: pass handlers to create_dashboard() to process jobs"
            )
        options: dict[str, Any] = {
            "worker_id": f"dashboard-{time.time_ns() // 1_000_000}",
            "batch_size": 10,
            **self.processor_options,
        }
        processor = self.queue.create_processor(self.handlers, **options)
        processed = processor.start()
        logger.info(
            "[dataqueue-dashboard] %s processed %d job(s)",
            options["worker_id"],
            processed,
            extra={
                "action": "jobs_processed",
                "worker_id": options["worker_id"],
                "count": processed,
            },
        )
        return json_response(200, {"processed": processed})


def _page_headers() -> list[tuple[str, str]]:
    # The page loads only its own script and stylesheet and talks only to its own API;
    # it may not be framed (its buttons change jobs).
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "same-origin"),
    ]


def normalize_base_path(base_path: str) -> str:
    """``/admin/dataqueue/`` -> ``/admin/dataqueue``; ``/`` or ``""`` -> ``""`` (the root).

    Raises :class:`ConfigurationError` for a non-string, a path not starting with ``/``,
    or one holding a query, fragment, backslash, whitespace or control character.
    """
    if not isinstance(base_path, str):
        raise ConfigurationError(f"base_path must be a string, got {base_path!r}")
    if base_path and not base_path.startswith("/"):
        raise ConfigurationError(f"base_path must start with '/', got {base_path!r}")
    if any(ch in "?#\\" or ch.isspace() or ord(ch) < 32 for ch in base_path):
        raise ConfigurationError(f"base_path must be a plain URL path, got {base_path!r}")
    return base_path.rstrip("/")


def create_dashboard(
    queue: JobQueue,
    handlers: Mapping[str, Callable[..., Any]] | None = None,
    *,
    base_path: str = "/admin/dataqueue",
    processor_options: Mapping[str, Any] | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Dashboard:
    """The dashboard for ``queue`` as a WSGI application served under ``base_path``.

    ``handlers`` enable the "Process jobs" button (``POST api/process`` runs one batch
    with them inside the request); without them that route answers 400.
    ``processor_options`` are keyword arguments for ``queue.create_processor``, applied
    over the defaults ``worker_id="dashboard-<epoch ms>"`` and ``batch_size=10``; they
    are checked when the button is used.

    ``allowed_hosts`` are the host names the app answers; a request with any other
    ``Host`` header (or none) gets a 400 before any handler runs. Entries are exact
    names or addresses (``"jobs.example.com"``, ``"10.0.0.5"``, ``"::1"``), leading-dot
    wildcards (``".example.com"``: the domain and its subdomains) or ``"*"`` (no check);
    comparison ignores case and the port. The default, None, answers only
    ``localhost``, ``127.0.0.1`` and ``::1`` when the app is served directly: pass your
    real host names when you mount it elsewhere. Mounted with
    :func:`dataqueue.contrib.flask.dashboard_blueprint` or
    :func:`dataqueue.contrib.django.dashboard_urls`, None defers to the framework's own
    host check instead (Flask's ``TRUSTED_HOSTS``/``SERVER_NAME``, Django's
    ``ALLOWED_HOSTS``).

    Bad arguments raise TypeError or :class:`~dataqueue.errors.ConfigurationError`.
    """
    return Dashboard(
        queue,
        handlers,
        base_path=base_path,
        processor_options=processor_options,
        allowed_hosts=allowed_hosts,
    )
