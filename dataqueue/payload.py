"""JSON encoding of payloads, outputs and step results, and what text PostgreSQL can store.

Payloads are stored as JSONB. Beyond plain JSON values this accepts attrs instances and
dataclasses (serialised from their fields), timezone-aware datetimes and dates
(ISO-8601 strings), UUIDs and tuples/sets (as lists). Refused, because PostgreSQL
cannot store them: NaN and infinities, NUL characters and lone (unpaired) surrogates in
strings or keys, and containers nested deeper than :data:`MAX_PAYLOAD_DEPTH`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterator
from typing import Any

import attrs

from dataqueue.errors import InvalidJobError

#: How many levels containers (dicts, lists) may nest in a payload, output or step
#: result; the outermost container is level 1. Python's JSON decoder, which reads
#: values back, gives up a few hundred levels further down.
MAX_PAYLOAD_DEPTH = 100

#: How much of a bad value an error message shows (its ``repr``, then ``…``).
SHOWN_CHARS = 80

# A text column takes no NUL and no surrogate code point at all (not valid UTF-8).
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
# A JSON string takes no NUL, and surrogates only as a high one followed by a low one.
_UNSTORABLE_JSON_STRING = re.compile(
    "\x00|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]"
)
# Escapes in the encoder's (ASCII) output, read left to right so that an escaped
# backslash is never mistaken for the start of an escape. The group is non-empty for
# an escape JSONB refuses (NUL, a lone surrogate); a surrogate pair is skipped whole.
_JSON_ESCAPE = re.compile(
    r"\\(?:\\|ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|(u(?:0000|d[89a-f][0-9a-f]{2})))"
)
# Keeps of JSON text only its quotes and brackets ("{" becomes "[", "}" becomes "]").
_QUOTES_AND_BRACKETS = str.maketrans(
    {chr(c): None for c in range(128) if chr(c) not in '"[]{}'} | {"{": "[", "}": "]"}
)


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`SHOWN_CHARS` characters (then ``…``) for messages."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than str() may convert
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def _describe(char: str) -> str:
    return "a NUL character" if char == "\x00" else f"a lone surrogate {char!r}"


def text_problem(text: str) -> str | None:
    """What in ``text`` a PostgreSQL text column cannot store, or None if nothing.

    ``"a NUL character"`` or ``"a lone surrogate '\\ud800'"``: any surrogate code point
    counts, since it cannot be encoded as UTF-8. O(1) for ASCII text without NUL.
    """
    if text.isascii():
        return "a NUL character" if "\x00" in text else None
    match = _UNSTORABLE_TEXT.search(text)
    return None if match is None else _describe(match.group())


def _json_string_problem(text: str) -> str | None:
    match = _UNSTORABLE_JSON_STRING.search(text)
    return None if match is None else _describe(match.group())


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

# What _nodes() yields: (kind, path, value). Kinds: "value" (anything that is not a
# container, after conversion), "key" (a dict key, path of its dict) and "deep" (a
# container beyond MAX_PAYLOAD_DEPTH, not entered).
_Node = tuple[str, str, Any]


def _nodes(value: Any, path: str, depth: int = 1) -> Iterator[_Node]:
    """Walk ``value`` as the encoder sees it (error paths only: it is slow)."""
    if isinstance(value, dict | list | tuple) and depth > MAX_PAYLOAD_DEPTH:
        yield "deep", path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield "key", path, key
            yield from _nodes(item, f"{path}[{shown(key)}]", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _nodes(item, f"{path}[{index}]", depth + 1)
    elif value is None or isinstance(value, str | int | float):
        yield "value", path, value
    else:
        try:
            converted = _default(value)
        except TypeError:
            yield "value", path, value
            return
        yield from _nodes(converted, path, depth)


def _non_finite_float(value: Any, what: str) -> tuple[str, float] | None:
    """Where ``value`` holds a NaN or an infinity: (its path, the float), else None."""
    for kind, path, item in _nodes(value, what):
        if kind == "value" and isinstance(item, float) and not math.isfinite(item):
            return path, item
    return None


def _unstorable_string(value: Any, what: str) -> str:
    """The message for the first string or key of ``value`` that JSONB cannot store."""
    for kind, path, item in _nodes(value, what):
        problem = _json_string_problem(item) if isinstance(item, str) else None
        if problem is None:
            continue
        if kind == "key":
            return f"{path} has a key that contains {problem}: {shown(item)}"
        return f"{path} contains {problem}: {shown(item)}"
    # Not reached for values the encoder took; kept so that the error is never lost.
    return f"{what} contains a NUL character or a lone surrogate, which JSONB cannot store"


def _too_deep(value: Any, what: str) -> str:
    """The message for ``value`` nested deeper than :data:`MAX_PAYLOAD_DEPTH`."""
    where = next((path for kind, path, _ in _nodes(value, what) if kind == "deep"), what)
    if len(where) > 2 * SHOWN_CHARS:
        where = where[:SHOWN_CHARS] + "…"
    return f"{what} nests containers more than {MAX_PAYLOAD_DEPTH} levels deep (at {where})"


def _has_unstorable_escape(text: str) -> bool:
    return any(_JSON_ESCAPE.findall(text))


def _nesting_exceeds_cap(text: str) -> bool:
    """Whether JSON ``text`` nests containers deeper than :data:`MAX_PAYLOAD_DEPTH`.

    Only string and C-level operations: this runs for every large payload.
    """
    if "\\" in text:
        # Drop escaped backslashes, then escaped quotes: every '"' left delimits a string.
        text = text.replace("\\\\", "").replace('\\"', "")
    skeleton = text.translate(_QUOTES_AND_BRACKETS)
    # Strings without brackets are now '""'. If removing those (left to right) leaves
    # no quote, no string held a bracket; otherwise cut the strings out properly.
    brackets = skeleton.replace('""', "")
    if '"' in brackets:
        brackets = "".join(skeleton.split('"')[::2])
    for _ in range(MAX_PAYLOAD_DEPTH):
        if not brackets:
            return False
        brackets = brackets.replace("[]", "")  # one level of innermost containers
    return bool(brackets)


def encode_json(value: Any, *, what: str = "payload") -> str:
    """Encode ``value`` as compact JSON text that PostgreSQL's JSONB accepts.

    Raises :class:`InvalidJobError` naming ``what`` (and, where it applies, the path
    inside the value, e.g. ``payload['a'][2]``) when the value cannot be represented
    in JSON (unsupported types, non-string keys JSON cannot hold, NaN/Infinity), when
    a string or key contains a NUL character or a lone surrogate, or when containers
    nest deeper than :data:`MAX_PAYLOAD_DEPTH` levels.
    """
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise InvalidJobError(_too_deep(value, what)) from None
    except (TypeError, ValueError) as exc:
        # A circular value is not walked: the walk would follow the cycle.
        circular = "Circular reference" in str(exc)
        where = None if circular else _non_finite_float(value, what)
        if where is not None:
            raise InvalidJobError(
                f"{what} is not JSON-serialisable: {where[1]!r} at {where[0]} "
                "(NaN and Infinity cannot be stored in JSON)"
            ) from None
        raise InvalidJobError(f"{what} is not JSON-serialisable: {exc}") from None
    # Cheap tests first (this is the enqueue hot path). Nesting deeper than the cap
    # takes more than twice as many characters, and at least as many brackets. The
    # output is ASCII: NUL and surrogates can only be \u0000 and \udXXX escapes.
    if (
        len(text) > 2 * MAX_PAYLOAD_DEPTH
        and text.count("[") + text.count("{") > MAX_PAYLOAD_DEPTH
        and _nesting_exceeds_cap(text)
    ):
        raise InvalidJobError(_too_deep(value, what))
    if "\\u" in text and ("\\u0000" in text or "\\ud" in text) and _has_unstorable_escape(text):
        raise InvalidJobError(_unstorable_string(value, what))
    return text
