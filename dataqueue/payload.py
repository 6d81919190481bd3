"""JSON encoding of payloads, outputs and step results.

Payloads are stored as JSONB. Beyond plain JSON values this accepts attrs instances and
dataclasses (serialised from their fields), timezone-aware datetimes and dates
(ISO-8601 strings), UUIDs and tuples/sets (as lists). NaN and infinities are rejected
because PostgreSQL's JSONB cannot store them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import uuid
from typing import Any

import attrs

from dataqueue.errors import InvalidJobError

# A JSON escape of NUL: "\u0000" preceded by an even number of backslashes.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _default(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise TypeError(f"naive datetime {value!r} (pass a timezone-aware datetime)")
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} {value!r:.80} is not JSON serialisable")


# One encoder for every call: json.dumps() with options builds a new one each time.
# It keeps no state between encode() calls, so threads can share it.
_ENCODER = json.JSONEncoder(default=_default, allow_nan=False, separators=(",", ":"))


def _non_finite_float(value: Any, path: str, depth: int = 0) -> tuple[str, float] | None:
    """Where ``value`` holds a NaN or an infinity: (its path, the float), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if depth > 100:  # the encoder reports deeper nesting itself
        return None
    if isinstance(value, dict):
        items: Any = ((f"{path}[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{n}]", item) for n, item in enumerate(value))
    else:
        try:
            converted = _default(value)
        except TypeError:
            return None
        return _non_finite_float(converted, path, depth + 1)
    for item_path, item in items:
        found = _non_finite_float(item, item_path, depth + 1)
        if found is not None:
            return found
    return None


def encode_json(value: Any, *, what: str = "payload") -> str:
    """Encode ``value`` as compact JSON text.

    Raises :class:`InvalidJobError` naming ``what`` and the offending value when the
    value cannot be represented in JSON (including NaN/Infinity and non-string keys
    that JSON cannot hold).
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        where = _non_finite_float(value, what)
        if where is not None:
            raise InvalidJobError(
                f"{what} is not JSON-serialisable: {where[1]!r} at {where[0]} "
                "(NaN and Infinity cannot be stored in JSON)"
            ) from None
        raise InvalidJobError(f"{what} is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        # PostgreSQL's JSONB cannot store NUL characters; fail here, not mid-transaction.
        raise InvalidJobError(
            f"{what} contains a NUL character (\\u0000), which JSONB cannot store"
        )
    return text
