"""Handlers loaded by the CLI tests as ``tests.integration.cli_handlers:HANDLERS``."""

from __future__ import annotations

from typing import Any


def greet(payload: dict[str, Any]) -> str:
    return f"hello {payload['name']}"


HANDLERS = {"greet": greet}
NOT_A_MAPPING = 42


def make_handlers() -> dict[str, Any]:
    return dict(HANDLERS)
