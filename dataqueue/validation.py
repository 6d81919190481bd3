"""Validation of user input into the normalised values the backends store.

Everything here is pure: no database, no clock. Each function raises a
:mod:`dataqueue.errors` class whose message names the field and the bad value (its
``repr``, cut short when long), before any statement runs: a value PostgreSQL would
refuse must never reach it, since the error would abort the caller's transaction
(``db=``). Refused, besides wrong types:

- text with a NUL character or a surrogate code point (text columns cannot store
  either; see :func:`dataqueue.payload.text_problem`), in names, tags and filters;
- names longer than their ``varchar(255)`` column and tags longer than
  :data:`MAX_TAG_LENGTH` (the ``MAX_*_LENGTH`` constants below);
- integers outside their column: ``int4`` for job ids, attempts, priorities and
  delays, ``int8`` for ``limit`` and ``offset``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import attrs

from dataqueue.dependencies import normalise_depends_on
from dataqueue.enums import JobStatus, TagMatch
from dataqueue.errors import InvalidCronExpressionError, InvalidJobError, JobDependencyError
from dataqueue.payload import encode_json, shown, text_problem
from dataqueue.records import DependsOn, JobGroup, JobOptions

INT4_MAX = 2_147_483_647
INT4_MIN = -2_147_483_648
#: Largest ``limit`` and ``offset`` (PostgreSQL takes them as ``bigint``).
INT8_MAX = 9_223_372_036_854_775_807
_VARCHAR_MAX = 255

#: Longest ``job_type`` (and ``dead_letter_job_type``): the columns are ``varchar(255)``.
MAX_JOB_TYPE_LENGTH = _VARCHAR_MAX
#: Longest ``idempotency_key`` (``varchar(255)``).
MAX_IDEMPOTENCY_KEY_LENGTH = _VARCHAR_MAX
#: Longest group id and group tier (``varchar(255)``).
MAX_GROUP_LENGTH = _VARCHAR_MAX
#: Longest tag of a job, a dependency or a token. Tags are ``text``, but one much
#: longer than this overflows an entry of the GIN index on ``job_queue.tags`` (8 kB).
#: Tag *filters* are not capped: a longer value simply matches nothing.
MAX_TAG_LENGTH = 255
#: Longest token id (``waitpoints.id`` is ``varchar(255)``).
MAX_TOKEN_ID_LENGTH = _VARCHAR_MAX
#: Longest cron schedule name and (normalised) cron expression (``varchar(255)``).
MAX_SCHEDULE_NAME_LENGTH = _VARCHAR_MAX
MAX_CRON_EXPRESSION_LENGTH = _VARCHAR_MAX
#: Longest cron time zone name (``cron_schedules.timezone`` is ``varchar(100)``).
MAX_TIMEZONE_LENGTH = 100

#: Names accepted by ``add_job`` besides ``job_type`` and ``payload``.
JOB_OPTION_NAMES = frozenset(f.name for f in attrs.fields(JobOptions)) - {"job_type", "payload"}

#: Fields ``edit_job`` and ``edit_all_pending_jobs`` may change.
EDITABLE_FIELDS = (
    "payload",
    "max_attempts",
    "priority",
    "run_at",
    "timeout_ms",
    "tags",
    "retry_delay",
    "retry_backoff",
    "retry_delay_max",
    "dead_letter_job_type",
)

#: Upstream's camelCase name of each editable field: its key in the ``edited`` event's
#: metadata (and its Redis hash field).
EDITED_KEYS = {
    name: re.sub(r"_(\w)", lambda m: m.group(1).upper(), name) for name in EDITABLE_FIELDS
}

#: Keys of a ``filters`` mapping.
FILTER_NAMES = frozenset({"job_type", "priority", "run_at", "tags", "cursor"})
RUN_AT_OPERATORS = frozenset({"gt", "gte", "lt", "lte", "eq"})


@attrs.define
class NewJob:
    """A validated job, ready to insert. ``payload_json`` is the encoded payload.

    Treat it as immutable (change a copy with ``attrs.evolve``). It is not frozen only
    because a frozen attrs class sets every field through ``object.__setattr__``: six
    times slower to build, which ``add_jobs`` does once per job.
    """

    job_type: str
    payload_json: str
    max_attempts: int = 3
    priority: int = 0
    run_at: dt.datetime | None = None
    timeout_ms: int | None = None
    force_kill_on_timeout: bool = False
    tags: list[str] | None = None
    idempotency_key: str | None = None
    retry_delay: int | None = None
    retry_backoff: bool | None = None
    retry_delay_max: int | None = None
    dead_letter_job_type: str | None = None
    group_id: str | None = None
    group_tier: str | None = None
    depends_on_job_ids: list[int] | None = None
    depends_on_tags: list[str] | None = None
    #: The job's first ``step_data`` as JSON text; None means ``{}``. Not a user
    #: option: ``add_job``/``add_jobs`` set it to carry the trace context
    #: (:mod:`dataqueue.tracing`).
    step_data_json: str | None = None


@attrs.frozen
class JobFilter:
    """Validated filters of ``get_jobs`` and the bulk operations."""

    job_type: str | None = None
    priority: int | None = None
    run_at: tuple[tuple[str, dt.datetime], ...] = ()
    tag_values: tuple[str, ...] = ()
    tag_mode: TagMatch = TagMatch.ALL
    cursor: int | None = None
    status: JobStatus | None = None
    match_tags_when_empty: bool = False


def _too_long(what: str, value: str, max_len: int) -> InvalidJobError:
    return InvalidJobError(
        f"{what} must be at most {max_len} characters, got {len(value)} characters: {shown(value)}"
    )


def require_text(value: Any, what: str) -> str:
    """A string a text column can store: no NUL character, no surrogate code point.

    Any length, empty included (for filter values, which need no cap).
    """
    if not isinstance(value, str):
        raise InvalidJobError(f"{what} must be a string, got {shown(value)}")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidJobError(f"{what} contains {problem}, got {shown(value)}")
    return value


def _plain_text(value: Any, max_len: int) -> TypeGuard[str]:
    """The common case, decided fast: ASCII ``str`` without NUL of at most ``max_len``."""
    return (
        isinstance(value, str)
        and value.isascii()  # O(1) in CPython
        and len(value) <= max_len
        and "\x00" not in value
    )


def require_str(value: Any, what: str, *, max_len: int = _VARCHAR_MAX) -> str:
    """A non-empty string of at most ``max_len`` characters that a text column can store.

    Raises :class:`InvalidJobError` for a non-string, ``""``, a NUL character, a
    surrogate code point, or a longer string (255 by default: ``varchar(255)``).
    """
    if _plain_text(value, max_len) and value:
        return value
    if not isinstance(value, str) or not value:
        raise InvalidJobError(f"{what} must be a non-empty string, got {shown(value)}")
    require_text(value, what)
    if len(value) > max_len:
        raise _too_long(what, value, max_len)
    return value


def require_tags(
    value: Any, what: str = "tags", *, max_len: int | None = MAX_TAG_LENGTH
) -> list[str]:
    """A list (or tuple) of tags as a new list: strings a text column can store.

    Each tag may be empty and at most ``max_len`` characters (None: no cap, for
    filters). Errors name the position, e.g. ``tags[1] contains a NUL character``.
    """
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise InvalidJobError(f"{what} must be a list of strings, got {shown(value)}")
    cap = INT8_MAX if max_len is None else max_len
    for index, tag in enumerate(value):
        if not _plain_text(tag, cap):
            require_text(tag, f"{what}[{index}]")
            if len(tag) > cap:
                raise _too_long(f"{what}[{index}]", tag, cap)
    return list(value)


def _optional_str(value: Any, what: str) -> str | None:
    return None if value is None else require_str(value, what)


def require_int(value: Any, what: str, *, minimum: int = INT4_MIN, maximum: int = INT4_MAX) -> int:
    """An ``int`` (not ``bool``) from ``minimum`` to ``maximum`` (default: the int4 range)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(f"{what} must be an integer, got {shown(value)}")
    if not minimum <= value <= maximum:
        raise InvalidJobError(f"{what} must be between {minimum} and {maximum}, got {shown(value)}")
    return value


def _optional_int(value: Any, what: str, *, minimum: int = INT4_MIN) -> int | None:
    return None if value is None else require_int(value, what, minimum=minimum)


def require_aware(value: Any, what: str) -> dt.datetime:
    """A timezone-aware datetime."""
    if not isinstance(value, dt.datetime):
        raise InvalidJobError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidJobError(f"{what} must be timezone-aware, got naive datetime {value!r}")
    return value


def _optional_bool(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidJobError(f"{what} must be a bool or None, got {value!r}")


def _group(value: Any) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    group_id: Any
    tier: Any
    if isinstance(value, JobGroup):
        group_id, tier = value.id, value.tier
    elif isinstance(value, Mapping):
        unknown = set(value) - {"id", "tier"}
        if unknown:
            raise InvalidJobError(
                f"group: unknown key(s) {sorted(unknown)!r}; expected 'id', 'tier'"
            )
        group_id, tier = value.get("id"), value.get("tier")
    else:
        raise InvalidJobError(f"group must be a JobGroup or a mapping, got {value!r}")
    return (
        require_str(group_id, "group.id", max_len=MAX_GROUP_LENGTH),
        None if tier is None else require_str(tier, "group.tier", max_len=MAX_GROUP_LENGTH),
    )


def _dependency_id(job_id: int) -> int:
    # Negative ids are batch placeholders, checked against the batch by the caller.
    if job_id == 0 or not INT4_MIN <= job_id <= INT4_MAX:
        raise JobDependencyError(
            f"depends_on.job_ids: {shown(job_id)} is neither a job id (1 to {INT4_MAX}) nor a "
            "batch_dep_ref() placeholder",
            [job_id],
        )
    return job_id


def _depends_on(value: Any) -> tuple[list[int] | None, list[str] | None]:
    """``depends_on`` as (job ids, tags); see :func:`normalise_depends_on`.

    Also refuses ids outside int4 (and 0) and tags a job's own tags could not hold.
    """
    raw_tags: Any = None
    if isinstance(value, DependsOn):
        raw_tags = value.tags
    elif isinstance(value, Mapping):
        raw_tags = value.get("tags")
    if raw_tags is not None:
        require_tags(raw_tags, "depends_on.tags")
    job_ids, tags = normalise_depends_on(value)
    if job_ids is not None:
        for job_id in job_ids:
            _dependency_id(job_id)
    return job_ids, tags


def _pair(names: tuple[str, str], values: tuple[Any, Any]) -> dict[str, Any]:
    return dict(zip(names, values, strict=True))


def _force_kill(value: Any) -> dict[str, Any]:
    if not isinstance(value, bool):
        raise InvalidJobError(f"force_kill_on_timeout must be a bool, got {value!r}")
    return {"force_kill_on_timeout": value}


#: How each ``add_job`` option becomes :class:`NewJob` fields (validated).
_OPTION_RULES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "max_attempts": lambda v: {"max_attempts": require_int(v, "max_attempts", minimum=1)},
    "priority": lambda v: {"priority": require_int(v, "priority")},
    "run_at": lambda v: {"run_at": require_aware(v, "run_at")},
    "timeout_ms": lambda v: {"timeout_ms": require_int(v, "timeout_ms", minimum=0)},
    "force_kill_on_timeout": _force_kill,
    "tags": lambda v: {"tags": require_tags(v)},
    "idempotency_key": lambda v: {
        "idempotency_key": require_str(v, "idempotency_key", max_len=MAX_IDEMPOTENCY_KEY_LENGTH)
    },
    "retry_delay": lambda v: {"retry_delay": require_int(v, "retry_delay", minimum=0)},
    "retry_backoff": lambda v: {"retry_backoff": _optional_bool(v, "retry_backoff")},
    "retry_delay_max": lambda v: {"retry_delay_max": require_int(v, "retry_delay_max", minimum=0)},
    "dead_letter_job_type": lambda v: {
        "dead_letter_job_type": require_str(v, "dead_letter_job_type", max_len=MAX_JOB_TYPE_LENGTH)
    },
    "group": lambda v: _pair(("group_id", "group_tier"), _group(v)),
    "depends_on": lambda v: _pair(("depends_on_job_ids", "depends_on_tags"), _depends_on(v)),
}

#: Options whose None is a value to check, not "not given".
_NONE_IS_INVALID = frozenset({"max_attempts", "priority", "force_kill_on_timeout"})


def build_new_job(job_type: Any, payload: Any, options: Mapping[str, Any]) -> NewJob:
    """Validate one job's arguments (as given to ``add_job``) into a :class:`NewJob`.

    Unknown option names raise :class:`TypeError`, like an unknown keyword argument.
    A negative id in ``depends_on.job_ids`` is kept (a batch placeholder); the caller
    decides whether placeholders are allowed. Only options that were given are
    checked, which keeps large ``add_jobs`` batches cheap. Caps: ``job_type``,
    ``dead_letter_job_type``, ``idempotency_key`` and group id/tier at 255
    characters, each tag at :data:`MAX_TAG_LENGTH`; the payload as
    :func:`~dataqueue.payload.encode_json` (no NUL or lone surrogate, at most
    :data:`~dataqueue.payload.MAX_PAYLOAD_DEPTH` levels).
    """
    fields: dict[str, Any] = {}
    for name, value in options.items():
        rule = _OPTION_RULES.get(name)
        if rule is None:
            unknown = sorted(set(options) - JOB_OPTION_NAMES)
            raise TypeError(f"unknown job option(s): {', '.join(unknown)}")
        if value is not None or name in _NONE_IS_INVALID:
            fields.update(rule(value))
    job_type = require_str(job_type, "job_type", max_len=MAX_JOB_TYPE_LENGTH)
    return NewJob(job_type, encode_json(payload), **fields)


def job_from_entry(entry: Any) -> NewJob:
    """Validate one entry of ``add_jobs`` (a :class:`JobOptions` or a mapping)."""
    if isinstance(entry, JobOptions):
        fields = attrs.asdict(entry, recurse=False)
    elif isinstance(entry, Mapping):
        fields = dict(entry)
    else:
        raise InvalidJobError(f"add_jobs entries must be JobOptions or mappings, got {entry!r}")
    if "job_type" not in fields or "payload" not in fields:
        raise InvalidJobError(f"add_jobs entry needs 'job_type' and 'payload', got {entry!r}")
    job_type = fields.pop("job_type")
    payload = fields.pop("payload")
    return build_new_job(job_type, payload, fields)


def reject_placeholders(job: NewJob) -> None:
    """Raise :class:`JobDependencyError` if a single ``add_job`` uses a batch placeholder."""
    negative = [i for i in job.depends_on_job_ids or [] if i < 0]
    if negative:
        raise JobDependencyError(
            "depends_on.job_ids: batch-relative (negative) ids are only supported in "
            f"add_jobs(), got {negative!r}",
            negative,
        )


def build_update(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``edit_job`` keyword arguments.

    Returns the updates with payloads encoded (``payload`` becomes JSON text). Omitted
    fields are absent; an explicit ``None`` is kept and means "clear" (``run_at=None``
    means "now"; ``max_attempts`` and ``priority`` cannot be cleared). Unknown field
    names raise :class:`TypeError`.
    """
    unknown = set(updates) - set(EDITABLE_FIELDS)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TypeError(f"cannot edit field(s) {names}; editable: {', '.join(EDITABLE_FIELDS)}")
    out: dict[str, Any] = {}
    for name, value in updates.items():
        if name == "payload":
            out[name] = encode_json(value)
        elif name == "max_attempts":
            out[name] = require_int(value, name, minimum=1)
        elif name == "priority":
            out[name] = require_int(value, name)
        elif name == "run_at":
            out[name] = None if value is None else require_aware(value, name)
        elif name in ("timeout_ms", "retry_delay", "retry_delay_max"):
            out[name] = _optional_int(value, name, minimum=0)
        elif name == "tags":
            out[name] = None if value is None else require_tags(value)
        elif name == "retry_backoff":
            out[name] = _optional_bool(value, name)
        else:
            out[name] = _optional_str(value, name)  # dead_letter_job_type: varchar(255)
    return out


def tag_mode(mode: Any) -> TagMatch:
    """Parse a tag mode; unknown modes raise :class:`InvalidJobError` (a ``ValueError``)."""
    try:
        return TagMatch(mode)
    except ValueError:
        raise InvalidJobError(
            f"unknown tag mode {mode!r}; expected one of 'all', 'any', 'none', 'exact'"
        ) from None


def _run_at_filter(value: Any) -> tuple[tuple[str, dt.datetime], ...]:
    if isinstance(value, dt.datetime):
        return (("eq", require_aware(value, "filters.run_at")),)
    if not isinstance(value, Mapping):
        raise InvalidJobError(f"filters.run_at must be a datetime or a mapping, got {value!r}")
    unknown = set(value) - RUN_AT_OPERATORS
    if unknown:
        raise InvalidJobError(
            f"filters.run_at: unknown operator(s) {sorted(unknown)!r}; "
            "expected gt, gte, lt, lte, eq"
        )
    return tuple(
        (op, require_aware(value[op], f"filters.run_at.{op}"))
        for op in ("gt", "gte", "lt", "lte", "eq")
        if value.get(op) is not None
    )


def _tags_filter(value: Any) -> tuple[tuple[str, ...], TagMatch]:
    if not isinstance(value, Mapping):
        raise InvalidJobError(
            f"filters.tags must be a mapping with 'values' and 'mode', got {value!r}"
        )
    unknown = set(value) - {"values", "mode"}
    if unknown:
        raise InvalidJobError(f"filters.tags: unknown key(s) {sorted(unknown)!r}")
    values = require_tags(value.get("values") or [], "filters.tags.values", max_len=None)
    return tuple(values), tag_mode(value.get("mode", "all"))


def build_filter(filters: Mapping[str, Any] | None, *, allow_cursor: bool = True) -> JobFilter:
    """Validate a ``filters`` mapping of ``get_jobs`` and the bulk operations.

    Keys: ``job_type``, ``priority``, ``run_at`` (a datetime, or a mapping of ``gt``,
    ``gte``, ``lt``, ``lte``, ``eq``), ``tags`` (``{"values": [...], "mode": ...}``) and,
    when ``allow_cursor``, ``cursor``.

    ``job_type=""`` is ignored; a tag filter with no values is ignored. Unknown keys,
    text with a NUL character or a surrogate, and a ``cursor`` that is no job id (1 to
    int4 max) raise :class:`InvalidJobError`. Filter text has no length cap.
    """
    if filters is None:
        return JobFilter()
    if not isinstance(filters, Mapping):
        raise InvalidJobError(f"filters must be a mapping, got {filters!r}")
    allowed = FILTER_NAMES if allow_cursor else FILTER_NAMES - {"cursor"}
    unknown = set(filters) - allowed
    if unknown:
        raise InvalidJobError(f"unknown filter(s) {sorted(unknown)!r}; expected {sorted(allowed)}")
    job_type = filters.get("job_type")
    if job_type is not None:
        require_text(job_type, "filters.job_type")
    priority = filters.get("priority")
    cursor = filters.get("cursor")
    run_at = filters.get("run_at")
    tag_values: tuple[str, ...] = ()
    mode = TagMatch.ALL
    if filters.get("tags") is not None:
        tag_values, mode = _tags_filter(filters["tags"])
    return JobFilter(
        job_type=job_type or None,
        priority=None if priority is None else require_int(priority, "filters.priority"),
        run_at=() if run_at is None else _run_at_filter(run_at),
        tag_values=tag_values,
        tag_mode=mode,
        cursor=None if cursor is None else require_int(cursor, "filters.cursor", minimum=1),
    )


def page(limit: Any, offset: Any) -> tuple[int, int]:
    """Validate ``limit`` and ``offset``: integers (not bools) from 0 to :data:`INT8_MAX`."""
    return (
        require_int(limit, "limit", minimum=0, maximum=INT8_MAX),
        require_int(offset, "offset", minimum=0, maximum=INT8_MAX),
    )


def job_status(status: Any) -> JobStatus:
    """Parse a status name; unknown names raise :class:`InvalidJobError`."""
    try:
        return JobStatus(status)
    except ValueError:
        names = ", ".join(s.value for s in JobStatus)
        raise InvalidJobError(f"unknown job status {status!r}; expected one of {names}") from None


def require_job_id(job_id: Any) -> int:
    """A job id: an integer from 1 to the int4 maximum (the id column's type)."""
    if isinstance(job_id, bool) or not isinstance(job_id, int) or not 1 <= job_id <= INT4_MAX:
        raise InvalidJobError(
            f"job_id must be an integer from 1 to {INT4_MAX}, got {shown(job_id)}"
        )
    return job_id


def require_token_id(token_id: Any) -> str:
    """A token id: a non-empty string of at most :data:`MAX_TOKEN_ID_LENGTH` characters."""
    return require_str(token_id, "token_id", max_len=MAX_TOKEN_ID_LENGTH)


def check_cron_text(value: Any, what: str, *, max_len: int) -> None:
    """Refuse cron text (an expression or a time zone) that no column could store.

    A string with a NUL character or a surrogate, or longer than ``max_len``, raises
    :class:`InvalidCronExpressionError` naming ``what``. Anything else, non-strings
    included, is left to :mod:`dataqueue.cron`, which checks the syntax.
    """
    if not isinstance(value, str):
        return
    problem = text_problem(value)
    if problem is not None:
        raise InvalidCronExpressionError(f"{what} contains {problem}, got {shown(value)}")
    if len(value) > max_len:
        raise InvalidCronExpressionError(
            f"{what} must be at most {max_len} characters, got {len(value)} characters: "
            f"{shown(value)}"
        )
