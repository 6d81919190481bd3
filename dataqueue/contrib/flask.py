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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

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
