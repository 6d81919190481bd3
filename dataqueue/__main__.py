"""``python -m dataqueue``: the same command line as the ``dataqueue`` script."""

from __future__ import annotations

from dataqueue.cli import main

raise SystemExit(main())
