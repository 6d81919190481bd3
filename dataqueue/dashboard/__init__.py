"""A web dashboard for a :class:`~dataqueue.JobQueue`, as a plain WSGI application.

::

    from dataqueue.dashboard import create_dashboard

    app = create_dashboard(queue, handlers, base_path="/admin/dataqueue")
    # wsgiref, gunicorn, a dispatcher, or a Flask/Django view calling it

Standard library only. The page is a server-rendered shell plus a small plain script
and stylesheet served from ``{base}/static/`` (no build step, no CDN, works offline).

Routes (``{base}`` is ``base_path``; trailing slashes and empty segments are ignored;
the path matched is ``SCRIPT_NAME + PATH_INFO``, so ``base_path`` is the prefix the
browser sees, whether the app is mounted as the root app, by a dispatcher, or called
from a framework view):

==========================================  ==============================================
``GET {base}/api/jobs``                     ``{"jobs": [job...], "hasMore": bool}``. Query:
                                            ``status`` (wins), else ``jobType``, else all;
                                            ``limit`` 1..500 (default 25), ``offset``
                                            0..2**31-1 (default 0). Bad values or an
                                            unknown status: 400 (upstream: 500, W-API-5).
``GET {base}/api/jobs/<id>``                ``{"job": job}``; 404 ``Job not found``; 400
                                            ``Invalid job ID`` (not in 1..2**31-1). What
                                            the React ``useJob`` hook polls (it reads
                                            ``.job.status``, ``.progress``, ``.output``).
``GET {base}/api/jobs/<id>/events``         ``{"events": [event...]}``, oldest first.
``POST {base}/api/jobs/<id>/cancel``        ``{"ok": true, "changed": bool, "job": job}``;
``POST {base}/api/jobs/<id>/retry``         ``changed`` is false when the job was not in a
                                            state the action applies to (upstream said
                                            ``ok`` without telling); 404 for no such job.
``POST {base}/api/process``                 Runs one batch in the request with a processor
                                            ``worker_id="dashboard-<epoch ms>"``,
                                            ``batch_size=10`` (``processor_options`` win):
                                            ``{"processed": n}``; 400 without handlers.
``GET {base}/api/stats``                    ``{"stats": stats}``: ``queue.get_stats()``
                                            as camelCase JSON (``jobTypes`` a list in
                                            type order); ``window`` seconds 1..3600
                                            (default 300). What the page's overview shows.
``GET {base}/static/dashboard.{js,css}``    The page's script and stylesheet.
``GET`` any other path not under ``api``    The HTML page (hash routes ``#/``, the list
                                            filtered by ``#/?status=<s>`` or
                                            ``#/?type=<t>``, and ``#/jobs/<id>``).
==========================================  ==============================================

A job is upstream's JSON (camelCase keys, ISO-8601 UTC dates or null) with every
field of :class:`~dataqueue.JobRecord`, plus ``canCancel`` (pending or waiting) and
``canRetry`` (failed only: a cancelled job cannot be retried, and retrying a processing
job from a browser would run it twice). The page shows the buttons these allow.
Unknown API routes answer 404, a wrong method 405 with ``Allow``, unexpected errors
500 ``{"error": "Internal server error"}`` (logged as ``[dataqueue-dashboard] Error:``
on the ``dataqueue.dashboard`` logger; the details never reach the client). JSON is
``application/json`` with ``Cache-Control: no-store``.

Host names (DNS rebinding): a page on ``evil.example`` whose DNS name is re-pointed at
the dashboard's address would otherwise be same-origin with it, so every request, GET
or POST, whose ``Host`` header is not allowed gets a 400 before any handler runs
(``{"error": ...}`` under ``{base}/api``, a line of text elsewhere); a request without a
``Host`` header (HTTP/1.0) is refused too. ``create_dashboard(..., allowed_hosts=[...])``
takes exact names or addresses (``"jobs.example.com"``, ``"::1"``), ``".example.com"``
for a domain and its subdomains, or ``"*"`` to turn the check off; case and port are
ignored. Without ``allowed_hosts`` the app answers only ``localhost``, ``127.0.0.1``
and ``::1``, except when mounted with the Flask or Django adapters
(:mod:`dataqueue.contrib`), which leave the check to the framework (``TRUSTED_HOSTS`` or
``SERVER_NAME``; ``ALLOWED_HOSTS``). ``dataqueue dashboard`` and ``dataqueue demo``
answer the loopback names and their ``--host`` address (for ``0.0.0.0``, the machine's
host name), plus each ``--allowed-host NAME``.

Cross-site request forgery: every POST must carry the header
``X-Requested-With: dataqueue`` (the page's ``fetch`` calls send it). A browser sends
a custom header cross-site only after a CORS preflight, which this app never approves,
so a forged form or script on another site cannot. In addition, when the request has an
``Origin`` header (or, without one, a ``Referer``), its host must equal the request's
``Host``. Either failure is a 403. Behind a proxy that rewrites ``Host``, pass the
original one on (e.g. werkzeug's ``ProxyFix(x_host=1)``). The HTML page is sent with a
strict Content-Security-Policy (own script and styles only) and may not be framed.

Authentication: the dashboard has none of its own and lets anyone who reaches it
cancel, retry and run jobs. Put it behind your application's login:

- any WSGI stack: wrap it, e.g. ``def guarded(environ, start_response):`` check the
  session or ``REMOTE_USER`` and answer 403 yourself, else ``return app(environ,
  start_response)``;
- Flask: :func:`dataqueue.contrib.flask.dashboard_blueprint` takes your login decorator;
  or call it from a view protected by your own ``login_required`` (then pass your host
  names)::

      dashboard = create_dashboard(
          queue, handlers, base_path="/admin/dataqueue", allowed_hosts=["jobs.example.com"]
      )

      @app.route("/admin/dataqueue/", defaults={"rest": ""}, methods=["GET", "HEAD", "POST"])
      @app.route("/admin/dataqueue/<path:rest>", methods=["GET", "HEAD", "POST"])
      @login_required
      def dataqueue_dashboard(rest: str) -> Response:
          return Response.from_app(dashboard, request.environ)

- Django: :func:`dataqueue.contrib.django.dashboard_urls` (staff only by default, host
  names from ``ALLOWED_HOSTS``); or the same as for Flask from a view decorated with
  ``staff_member_required`` that passes ``request.META`` as the environ. Mark that view
  ``csrf_exempt``: the page does not send Django's CSRF token, and the dashboard makes
  its own check described above.

``POST api/process`` runs handlers inside the HTTP request (W-API-5): keep batches
small (``processor_options={"batch_size": ...}``) and run real workers with
``dataqueue worker``.
"""

from __future__ import annotations

from dataqueue.dashboard.app import Dashboard, create_dashboard

__all__ = ["Dashboard", "create_dashboard"]
