"""Cron expressions and their next run (pure rules, no database).

Dialect
-------
Five whitespace-separated fields, ``minute hour day-of-month month day-of-week``:

============  =======  =====================================================================
field         values   extras
============  =======  =====================================================================
minute        0-59
hour          0-23
day of month  1-31     ``L`` (last day of the month; also in a list, ``1,L``), ``nW`` (the
                       weekday nearest to day n, alone in the field), ``?`` (same as ``*``)
month         1-12     names ``JAN``-``DEC``
day of week   0-7      names ``SUN``-``SAT``; 0 and 7 are Sunday; ``n#k`` (the k-th weekday n
                       of the month, k = 1..5), ``n#L`` (the last weekday n of the month),
                       ``?`` (same as ``*``)
============  =======  =====================================================================

Every field takes ``*``, numbers, ranges ``a-b``, steps ``*/s``, ``a-b/s`` and ``a/s`` (from a
to the end of the field), and comma lists. Names and the letters ``L`` and ``W`` are
case-insensitive; names may appear in ranges (``MON-FRI``). The nicknames ``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight`` and ``@hourly`` stand for
their usual five fields.

When both day of month and day of week are restricted (neither is ``*`` nor ``?``) a day matches
if *either* matches (classic cron and croner): ``0 0 13 * 5`` fires on the 13th and on every
Friday. Otherwise the restricted one alone decides.

Rejected, with :class:`~dataqueue.errors.InvalidCronExpressionError`: 6- and 7-field forms
(seconds, years), ranges that run backwards (``22-2``), steps of 0 or larger than the field,
croniter's hashed/random ``H``/``R``, ``L`` outside the two day fields, ``LW``, ``L-n``, Quartz's
``5L`` (write ``5#L``), ``W`` in a list or range, and a day-of-week field mixing ``#`` items with
plain days (``1,5#2``).

Differences from croner (the Node.js dataqueue's cron library): no seconds field; ``?``
means ``*`` (croner substitutes the current time's value); ``nW`` in a month shorter than
n uses the month's last day (``31W`` in a February is the last weekday of February).

Evaluation and daylight saving time
-----------------------------------
Fields are matched against the wall clock of the IANA zone; results are aware UTC datetimes,
strictly after the reference instant. Occurrences are searched up to 50 years ahead
(croniter's window); an expression with no occurrence in that window never fires
(:func:`next_run` returns None, e.g. ``0 0 30 2 *``).

A schedule "runs every hour" when its hour field covers all 24 hours (``*``, ``*/1``, ``0-23``).

- Spring forward (a wall-clock time that does not exist): any other schedule fires
  once, at the first instant after the gap (``30 2 * * *`` in America/New_York fires at
  03:00 EDT on the day clocks jump from 02:00 to 03:00). A schedule that runs every hour skips the
  missing times: it simply fires in each real hour.
- Fall back (a wall-clock time that occurs twice): any other schedule fires once, at the
  first of the two instants (``30 1 * * *`` fires at 01:30 EDT, not again at 01:30 EST). A
  schedule that runs every hour fires at both instants, so it fires once per real hour.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping

import attrs
from croniter import croniter

from dataqueue.errors import InvalidCronExpressionError, InvalidJobError

NICKNAMES: Mapping[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}
#: Zone files that describe the machine's configuration rather than an IANA zone.
_NOT_ZONE_NAMES = frozenset({"localtime", "posixrules"})

_ITEM = re.compile(
    r"^(?:(?P<star>\*)|(?P<start>[0-9]+|[A-Za-z]+)(?:-(?P<end>[0-9]+|[A-Za-z]+))?)"
    r"(?:/(?P<step>[0-9]+))?$"
)
_NEAREST_WEEKDAY = re.compile(r"^(?P<day>[0-9]+)W$", re.IGNORECASE)
_NTH_WEEKDAY = re.compile(r"^(?P<day>[0-9]+|[A-Za-z]+)#(?P<nth>[0-9]+|L)$", re.IGNORECASE)


@attrs.frozen
class _Field:
    """One cron field: its name, its bounds and the range ``*`` stands for."""

    name: str
    low: int
    high: int
    star_high: int  # day of week: 7 is a valid value, but ``*`` means 0-6
    names: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def size(self) -> int:
        return self.star_high - self.low + 1


_MINUTE = _Field("minute", 0, 59, 59)
_HOUR = _Field("hour", 0, 23, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31, 31)
_MONTH = _Field("month", 1, 12, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _Field("day-of-week", 0, 7, 6, _DAY_NAMES)


class _CronSyntaxError(Exception):
    """Internal: why an expression is invalid (becomes InvalidCronExpressionError)."""


@attrs.frozen
class _Schedule:
    """A parsed expression, with each field in the form croniter reads unambiguously."""

    minute: str
    hour: str
    day_of_month: str | None  # None: unrestricted
    month: str
    day_of_week: str | None  # None: unrestricted
    every_hour: bool

    def croniter_expressions(self) -> list[str]:
        """Expressions whose union is this schedule (two when the day fields combine by OR)."""
        head = f"{self.minute} {self.hour}"
        dom = self.day_of_month or "*"
        dow = self.day_of_week or "*"
        if self.day_of_month is not None and self.day_of_week is not None:
            return [f"{head} {dom} {self.month} *", f"{head} * {self.month} {dow}"]
        return [f"{head} {dom} {self.month} {dow}"]


def validate_cron_expression(expression: str) -> str:
    """Check a five-field cron expression (see the module docstring) and return it normalised.

    Normalised means surrounding whitespace removed, fields separated by single spaces and a
    nickname lower-cased (``" 0  0 * * * "`` -> ``"0 0 * * *"``, ``"@DAILY"`` -> ``"@daily"``);
    names keep their spelling. Whether the expression can ever fire is not checked here (see
    :func:`never_fires`). Raises :class:`InvalidCronExpressionError` with the message
    ``Invalid cron expression: "<expr>" (<reason>)``; a non-string is named by its ``repr``.
    """
    _parse(expression)
    return _normalise(expression)


def validate_timezone(name: str) -> str:
    """Check an IANA time zone name (``"Europe/Berlin"``, ``"UTC"``) and return it unchanged.

    Raises :class:`InvalidCronExpressionError` (``Invalid timezone: "Mars/Base"``) for an
    unknown or malformed name, a non-string, or the machine-dependent ``localtime``.
    """
    _zone(name)
    return name


def next_run(
    expression: str, timezone: str = "UTC", after: dt.datetime | None = None
) -> dt.datetime | None:
    """First occurrence of ``expression`` strictly after ``after``, as an aware UTC datetime.

    Fields are matched against the wall clock of ``timezone`` (IANA name, default UTC); see the
    module docstring for daylight saving time. ``after`` defaults to now and must be
    timezone-aware (otherwise :class:`InvalidJobError`). An ``after`` exactly on an occurrence
    yields the following one. Returns None when no occurrence exists in the next 50 years (or
    before the end of the datetime range), e.g. for ``0 0 30 2 *``; this is decided in
    milliseconds. An invalid expression or zone raises :class:`InvalidCronExpressionError`.
    """
    schedule = _parse(expression)
    zone = _zone(timezone)
    candidate = _reference_instant(after)
    # Each round moves strictly forward and croniter gives up after 50 years, so the loop ends:
    # it only repeats to skip the second pass through a repeated (fall-back) wall-clock time.
    while True:
        found = _next_candidate(schedule, zone, candidate)
        if found is None:
            return None
        if schedule.every_hour or not _is_repeated_wall_time(found, zone):
            return found
        candidate = found


def never_fires(expression: str, timezone: str = "UTC") -> bool:
    """True when ``expression`` has no occurrence from now on in ``timezone`` (``0 0 31 4 *``).

    Raises :class:`InvalidCronExpressionError` for an invalid expression or zone.
    """
    return next_run(expression, timezone) is None


# --- parsing ---------------------------------------------------------------------------------


def _normalise(expression: str) -> str:
    text = " ".join(expression.split())
    return text.lower() if text.lower() in NICKNAMES else text


def _parse(expression: object) -> _Schedule:
    if not isinstance(expression, str):
        raise InvalidCronExpressionError(
            f"Invalid cron expression: {expression!r} (expected a string)"
        )
    try:
        return _parse_fields(_fields_of(expression))
    except _CronSyntaxError as problem:
        raise InvalidCronExpressionError(
            f'Invalid cron expression: "{expression}" ({problem})'
        ) from None


def _fields_of(expression: str) -> list[str]:
    text = _normalise(expression)
    if not text:
        raise _CronSyntaxError("empty expression")
    if text.startswith("@"):
        if text not in NICKNAMES:
            raise _CronSyntaxError(f"unknown nickname, expected one of {', '.join(NICKNAMES)}")
        text = NICKNAMES[text]
    fields = text.split(" ")
    if len(fields) != 5:
        raise _CronSyntaxError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    return fields


def _parse_fields(fields: list[str]) -> _Schedule:
    minute_text, hour_text, dom_text, month_text, dow_text = fields
    minutes = _field_values(minute_text, _MINUTE)
    hours = _field_values(hour_text, _HOUR)
    return _Schedule(
        minute=_as_list(minutes, _MINUTE),
        hour=_as_list(hours, _HOUR),
        day_of_month=_day_of_month(dom_text),
        month=_as_list(_field_values(month_text, _MONTH), _MONTH),
        day_of_week=_day_of_week(dow_text),
        every_hour=len(hours) == _HOUR.size,
    )


def _as_list(values: set[int], field: _Field) -> str:
    """croniter text for a set of values: ``*`` when it is every value, else a plain list.

    Handing croniter explicit lists sidesteps its readings of ranges that differ from cron's
    (``5-5`` means the whole field to croniter, ``22-2`` wraps around).
    """
    if len(values) == field.size:
        return "*"
    return ",".join(str(value) for value in sorted(values))


def _field_values(text: str, field: _Field) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _item_values(item, field)
    return values


def _item_values(item: str, field: _Field) -> set[int]:
    match = _ITEM.match(item)
    if match is None:
        raise _CronSyntaxError(f"{field.name} field has an invalid item {item!r}")
    step = _step(match["step"], item, field)
    if match["star"]:
        start, end = field.low, field.star_high
    else:
        start = _value(match["start"], field, is_range_end=False)
        if match["end"] is not None:
            end = _value(match["end"], field, is_range_end=True)
        elif match["step"] is not None:
            end = field.star_high
        else:
            end = start
        if start > end and match["end"] is not None:
            raise _CronSyntaxError(f"{field.name} range {item!r} runs backwards")
    values = set(range(start, end + 1, step))
    if not values:
        raise _CronSyntaxError(f"{field.name} item {item!r} selects no value")
    return values


def _step(text: str | None, item: str, field: _Field) -> int:
    if text is None:
        return 1
    step = int(text)
    if not 1 <= step <= field.size:
        raise _CronSyntaxError(f"{field.name} step in {item!r} must be between 1 and {field.size}")
    return step


def _value(text: str, field: _Field, *, is_range_end: bool) -> int:
    if text.isdigit():
        value = int(text)
        if not field.low <= value <= field.high:
            raise _CronSyntaxError(
                f"{field.name} value {text} is out of range ({field.low}-{field.high})"
            )
        return value
    name = text.upper()
    if name not in field.names:
        raise _CronSyntaxError(f"{field.name} field has an unknown name {text!r}")
    if field is _DAY_OF_WEEK and name == "SUN" and is_range_end:
        return 7  # FRI-SUN is Friday to Sunday, as in croner
    return field.names[name]


def _day_of_month(text: str) -> str | None:
    if text in ("*", "?"):
        return None
    if "?" in text:
        raise _CronSyntaxError("'?' must be the whole day-of-month field")
    nearest = _NEAREST_WEEKDAY.match(text)
    if nearest is not None:
        day = int(nearest["day"])
        if not _DAY_OF_MONTH.low <= day <= _DAY_OF_MONTH.high:
            raise _CronSyntaxError(f"day-of-month value {day} is out of range (1-31)")
        return f"{day}W"
    items = text.split(",")
    if any(_NEAREST_WEEKDAY.match(item) for item in items):
        raise _CronSyntaxError("'W' must be alone in the day-of-month field, as in '15W'")
    has_last = any(item.upper() == "L" for item in items)
    values: set[int] = set()
    for item in items:
        if item.upper() != "L":
            values |= _item_values(item, _DAY_OF_MONTH)
    listed = [str(value) for value in sorted(values)]
    return ",".join([*listed, "L"] if has_last else listed)


def _day_of_week(text: str) -> str | None:
    if text in ("*", "?"):
        return None
    if "?" in text:
        raise _CronSyntaxError("'?' must be the whole day-of-week field")
    items = text.split(",")
    nth_items = [_NTH_WEEKDAY.match(item) for item in items]
    if all(match is not None for match in nth_items):
        return ",".join(_nth_weekday(match) for match in nth_items if match is not None)
    if any(match is not None for match in nth_items):
        raise _CronSyntaxError(
            "day-of-week field cannot mix '#' items with plain days (croniter cannot evaluate it)"
        )
    values = {value % 7 for value in _field_values(text, _DAY_OF_WEEK)}  # 7 is Sunday
    return ",".join(str(value) for value in sorted(values))


def _nth_weekday(match: re.Match[str]) -> str:
    day = _value(match["day"], _DAY_OF_WEEK, is_range_end=False) % 7
    nth = match["nth"].upper()
    if nth == "L":
        return f"L{day}"  # croniter's spelling of croner's 'n#L'
    if not 1 <= int(nth) <= 5:
        raise _CronSyntaxError(f"day-of-week '#{nth}' must be 1-5 or L")
    return f"{day}#{int(nth)}"


# --- evaluation ------------------------------------------------------------------------------


def _zone(name: object) -> dt.tzinfo:
    if not isinstance(name, str):
        raise InvalidCronExpressionError(f"Invalid timezone: {name!r} (expected a string)")
    if name == "UTC":
        return dt.timezone.utc  # needs no tz database
    if name in _NOT_ZONE_NAMES:
        raise InvalidCronExpressionError(f'Invalid timezone: "{name}" (not an IANA zone)')
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # Not found, malformed keys ('', '../x', 'America/') and files that are not zones.
        raise InvalidCronExpressionError(f'Invalid timezone: "{name}"') from None


def _reference_instant(after: object) -> dt.datetime:
    if after is None:
        return dt.datetime.now(dt.timezone.utc)
    if not isinstance(after, dt.datetime) or after.utcoffset() is None:
        raise InvalidJobError(f"after must be a timezone-aware datetime, got {after!r}")
    return after


def _next_candidate(schedule: _Schedule, zone: dt.tzinfo, after: dt.datetime) -> dt.datetime | None:
    local_after = after.astimezone(zone)
    found: list[dt.datetime] = []
    for expression in schedule.croniter_expressions():
        iterator = croniter(expression, local_after)
        try:
            occurrence = iterator.get_next(dt.datetime)
        except (ValueError, OverflowError):
            # CroniterBadDateError (a ValueError): nothing within croniter's 50-year window;
            # ValueError/OverflowError from datetime: past the end of the representable range.
            continue
        found.append(occurrence.astimezone(dt.timezone.utc))
    return min(found, default=None)


def _is_repeated_wall_time(instant: dt.datetime, zone: dt.tzinfo) -> bool:
    """True when ``instant`` is the second pass through a wall-clock time (after fall back)."""
    local = instant.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
