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
) -> Blueprint:
    """A Blueprint serving the dashboard under ``url_prefix``.

    ``decorators`` wrap the view, outermost first — put your login check here (for
    example ``[login_required]``); the dashboard has no login of its own. Register it
    with ``app.register_blueprint(blueprint)``.
    """
    from flask import Blueprint, Response, request

    from dataqueue.dashboard import create_dashboard

    prefix = "/" + url_prefix.strip("/")
    dashboard = create_dashboard(
        queue, handlers, base_path=prefix, processor_options=processor_options
    )

    def serve(path: str = "") -> Any:
        return Response.from_app(dashboard, request.environ)

    view: Callable[..., Any] = serve
    for decorator in reversed(decorators):
        view = decorator(view)
    blueprint = Blueprint(name, __name__, url_prefix=prefix)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]  # the app answers 405 itself
    blueprint.add_url_rule("/", "index", view, defaults={"path": ""}, methods=methods)
    blueprint.add_url_rule("/<path:path>", "path", view, methods=methods)
    return blueprint
