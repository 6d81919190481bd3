"""Values PostgreSQL refuses, shared by the bad-input tests."""

from __future__ import annotations

LONE = "\ud800"
NUL = "\x00"
INT4_OVER = 2**31


def nested(levels: int) -> object:
    """A list nested ``levels`` deep around a string."""
    value: object = "leaf"
    for _ in range(levels):
        value = [value]
    return value
