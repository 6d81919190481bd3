"""Flask integration: keep the application's queue on the app.

.. code-block:: python

    import dataqueue as dq
    from dataqueue.contrib.flask import init_app

    def create_app() -> Flask:
        app = Flask(__name__)
        init_app(app, dq.init_job_queue())       # DATAQUEUE_DATABASE_URL
        return app

    # in a view
    queue = current_app.extensions["dataqueue"]

The queue is fork-safe, so one created before gunicorn forks its workers is fine in each
of them. The processor (the part that runs handlers) is started separately, e.g. from
gunicorn's ``post_fork`` hook (see ``examples/gunicorn.conf.py``) or by ``dataqueue worker``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Blueprint, Flask

    from dataqueue.dashboard.hosts import AllowedHosts
    from dataqueue.queue import JobQueue

__all__ = ["EXTENSION_KEY", "init_app"]

#: Key of the queue in ``app.extensions``.
EXTENSION_KEY = "dataqueue"


def init_app(app: Flask, queue: JobQueue) -> JobQueue:
    """Store ``queue`` as ``app.extensions["dataqueue"]`` and return it.

    Raises :class:`ValueError` if the app already holds a different queue (initialising
    twice with the same queue is harmless). The app does not close the queue: it usually
    lives as long as the process, and :meth:`JobQueue.close` is yours to call.
    """
    existing = app.extensions.get(EXTENSION_KEY)
    if existing is not None and existing is not queue:
        raise ValueError(
            f"app {app.name!r} already has a dataqueue queue in app.extensions[{EXTENSION_KEY!r}]"
        )
    app.extensions[EXTENSION_KEY] = queue
    return queue


def dashboard_blueprint(
    queue: JobQueue,
    handlers: Mapping[str, Callable[..., Any]] | None = None,
    *,
    url_prefix: str = "/admin/dataqueue",
    decorators: Sequence[Callable[[Callable[..., Any]], Callable[..., Any]]] = (),
    processor_options: Mapping[str, Any] | None = None,
    name: str = "dataqueue_dashboard",
    allowed_hosts: Sequence[str] | None = None,
) -> Blueprint:
    """A Blueprint serving the dashboard under ``url_prefix``.

    ``decorators`` wrap the view, outermost first — put your login check here (for
    example ``[login_required]``); the dashboard has no login of its own. Register it
    with ``app.register_blueprint(blueprint)``.

    Host names (DNS-rebinding protection; other hosts get a 400), decided per request
    from the app serving it:

    - ``app.config["TRUSTED_HOSTS"]`` set (Flask 3.1+): Flask's own check, which this
      view repeats with werkzeug's ``get_host`` so that it also holds on Flask 3.0;
    - else ``allowed_hosts`` when given (see :func:`~dataqueue.dashboard.create_dashboard`);
    - else ``app.config["SERVER_NAME"]``'s host (and its subdomains when the app uses
      ``subdomain_matching``), which Flask 3.1+ itself no longer enforces;
    - else only ``localhost``, ``127.0.0.1`` and ``::1``.

    ``allowed_hosts`` given together with ``TRUSTED_HOSTS`` must both match.
    """
    from flask import Blueprint, Response, current_app, request
    from werkzeug.exceptions import HTTPException

    from dataqueue.dashboard import create_dashboard

    prefix = "/" + url_prefix.strip("/")
    dashboard = create_dashboard(
        queue,
        handlers,
        base_path=prefix,
        processor_options=processor_options,
        allowed_hosts=allowed_hosts,
    )

    def serve(path: str = "") -> Any:
        default_hosts = _app_allowed_hosts(current_app, request.environ)

        def app(environ: Any, start_response: Any) -> Any:
            return dashboard.serve(environ, start_response, default_hosts=default_hosts)

        return Response.from_app(app, request.environ)

    protected: Callable[..., Any] = serve
    for decorator in reversed(decorators):
        protected = decorator(protected)

    def view(path: str = "") -> Any:
        # API calls your login decorator turns away get 401/403 JSON, not a redirect
        # to a login page (which suits the page, not fetch()).
        api = path.split("/", 1)[0] == "api"
        try:
            response = current_app.make_response(protected(path=path))
        except HTTPException as exc:
            if not api or exc.code not in (401, 403):
                raise
            response = current_app.make_response(exc.get_response())
        if api and 300 <= response.status_code < 400:
            return current_app.response_class(
                '{"error":"Authentication required"}\n', 401, mimetype="application/json"
            )
        if api and response.status_code in (401, 403) and not response.is_json:
            message = "Authentication required" if response.status_code == 401 else "Forbidden"
            return current_app.response_class(
                '{"error":"' + message + '"}\n', response.status_code, mimetype="application/json"
            )
        return response

    blueprint = Blueprint(name, __name__, url_prefix=prefix)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]  # the app answers 405 itself
    blueprint.add_url_rule("/", "index", view, defaults={"path": ""}, methods=methods)
    blueprint.add_url_rule("/<path:path>", "path", view, methods=methods)
    return blueprint


def _app_allowed_hosts(app: Flask, environ: dict[str, Any]) -> AllowedHosts:
    """The hosts ``app``'s configuration allows, for a dashboard created without any.

    Raises werkzeug's ``SecurityError`` (a 400) when ``TRUSTED_HOSTS`` refuses the host.
    """
    from werkzeug.wsgi import get_host

    from dataqueue.dashboard.app import LOOPBACK_ONLY
    from dataqueue.dashboard.hosts import ANY_HOST, AllowedHosts, host_of

    # An empty TRUSTED_HOSTS makes werkzeug accept any host: treat it as unset.
    trusted = app.config.get("TRUSTED_HOSTS")
    if trusted:
        get_host(environ, trusted_hosts=trusted)
        return AllowedHosts([ANY_HOST])
    server_host = host_of(app.config.get("SERVER_NAME"))
    if server_host is None:
        return LOOPBACK_ONLY
    if app.subdomain_matching and ":" not in server_host:
        return AllowedHosts(["." + server_host])
    return AllowedHosts([server_host])
