"""``python manage.py dataqueue_worker [--concurrency N] [--poll-interval MS] ...``

Processes jobs with ``settings.DATAQUEUE_HANDLERS`` until SIGTERM/SIGINT, then drains.
"""

from __future__ import annotations

from dataqueue.contrib.django import WorkerCommand


class Command(WorkerCommand):
    pass
