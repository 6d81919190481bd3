"""The dashboard's HTML shell and its static files (``static/dashboard.js``, ``.css``).

The shell holds no job data at all: the script fetches JSON from the API and builds the
DOM with ``createElement``/``textContent``, so untrusted payloads are always text. The
only value put into the HTML is the configuration (base path, whether processing is
enabled), JSON-encoded and HTML-escaped into a ``data-config`` attribute.
"""

from __future__ import annotations

import html
import json
from importlib import resources

from dataqueue import __version__

#: Files served under ``{base}/static/`` and their content types.
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

_SHELL = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>dataqueue Dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/dashboard.css?v={version}">
<script src="{static}/dashboard.js?v={version}" defer></script>
</head>
<body>
<div class="dq-layout">
<nav class="dq-sidebar" aria-label="Main">
<div class="dq-brand">dataqueue Dashboard</div>
<a class="dq-nav-item dq-active" href="#/">Jobs</a>
</nav>
<main id="dq-app" class="dq-main" data-config="{config}">
<noscript>The dataqueue dashboard needs JavaScript.</noscript>
</main>
</div>
<div id="dq-toasts" class="dq-toasts" role="status" aria-live="polite"></div>
</body>
</html>
"""


def render_page(base_path: str, *, can_process: bool) -> str:
    """The page for a dashboard served under ``base_path`` (already normalized)."""
    config = json.dumps({"basePath": base_path, "canProcess": can_process})
    return _SHELL.format(
        static=html.escape(base_path + "/static", quote=True),
        version=html.escape(__version__, quote=True),
        config=html.escape(config, quote=True),
    )


def static_asset(name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of a file under ``static/``, or None for any other name."""
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        return None
    body = resources.files("dataqueue.dashboard").joinpath("static").joinpath(name).read_bytes()
    return content_type, body
