"""Cron schedules on Redis."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from dataqueue.backends.redis._base import RedisPart, not_yet
from dataqueue.records import CronScheduleRecord


class RedisCron(RedisPart):
    def add_cron_schedule(self, values: dict[str, Any]) -> int:
        not_yet("add_cron_schedule")

    def get_cron_schedule(
        self, schedule_id: int | None = None, name: str | None = None
    ) -> CronScheduleRecord | None:
        not_yet("get_cron_schedule")

    def list_cron_schedules(self, status: str | None) -> list[CronScheduleRecord]:
        not_yet("list_cron_schedules")

    def update_cron_schedule(self, schedule_id: int, values: dict[str, Any]) -> bool:
        not_yet("update_cron_schedule")

    def remove_cron_schedule(self, schedule_id: int) -> bool:
        not_yet("remove_cron_schedule")

    def enqueue_due_cron_jobs(
        self, next_run: Callable[[str, str, dt.datetime], dt.datetime | None]
    ) -> int:
        not_yet("enqueue_due_cron_jobs")
