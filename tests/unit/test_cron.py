"""Cron expressions: validation, next run, day-of-month/day-of-week OR, time zones and DST."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from dataqueue.cron import never_fires, next_run, validate_cron_expression, validate_timezone
from dataqueue.errors import InvalidCronExpressionError, InvalidJobError

UTC = dt.timezone.utc
JAN_1 = dt.datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def runs(
    expression: str, after: dt.datetime, count: int, timezone: str = "UTC"
) -> list[dt.datetime]:
    """``count`` consecutive next runs, each computed from the previous one."""
    found: list[dt.datetime] = []
    current = after
    for _ in range(count):
        following = next_run(expression, timezone, current)
        assert following is not None
        found.append(following)
        current = following
    return found


def days(expression: str, count: int, after: dt.datetime = JAN_1) -> list[str]:
    return [run.date().isoformat() for run in runs(expression, after, count)]


# --- upstream test vectors -------------------------------------------------------------------


def test_every_five_minutes_after_ten_past_two() -> None:
    assert next_run("*/5 * * * *", after=utc(2026, 1, 15, 10, 2)) == utc(2026, 1, 15, 10, 5)


def test_daily_midnight_is_the_next_utc_midnight() -> None:
    assert next_run("0 0 * * *", after=utc(2026, 1, 15, 10, 0)) == utc(2026, 1, 16)


def test_tokyo_evening_is_eleven_utc_the_same_day() -> None:
    found = next_run("0 20 * * *", "Asia/Tokyo", utc(2026, 1, 15, 10, 2))
    assert found == utc(2026, 1, 15, 11, 0)
    assert found is not None and found.tzinfo is UTC


def test_february_thirtieth_never_fires() -> None:
    assert next_run("0 0 30 2 *", after=utc(2026, 1, 15, 10, 2)) is None


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("0 0 * * * *", "got 6"),
        ("0 0 * * * * *", "got 7"),
        ("* * *", "got 3"),
        ("garbage", "got 1"),
        ("a b c d e", "minute field has an unknown name 'a'"),
        ("", "empty"),
        ("   ", "empty"),
        ("60 * * * *", "minute value 60 is out of range"),
        ("0 24 * * *", "hour value 24"),
        ("0 0 32 * *", "day-of-month value 32"),
        ("0 0 0 * *", "day-of-month value 0"),
        ("0 0 * 13 *", "month value 13"),
        ("0 0 * 0 *", "month value 0"),
        ("0 0 * * 8", "day-of-week value 8"),
        ("-5 * * * *", "invalid item"),
        ("*/0 * * * *", "step"),
        ("*/61 * * * *", "step"),
        ("0 0 * * */8", "step"),
        ("22-2 * * * *", "runs backwards"),
        ("0 0 * * FRI-MON", "runs backwards"),
        ("1,,2 * * * *", "invalid item"),
        ("1- * * * *", "invalid item"),
        ("H * * * *", "unknown name"),
        ("R * * * *", "unknown name"),
        ("0 0 * FOO *", "unknown name 'FOO'"),
        ("0 0 * * JAN", "unknown name 'JAN'"),
        ("0 0 MON * *", "unknown name 'MON'"),
        ("0 JAN * * *", "unknown name"),
        ("@reboot", "unknown nickname"),
        ("@every 5m", "unknown nickname"),
        ("? 0 * * *", "invalid item"),
        ("0 0 1,? * *", "'?' must be the whole"),
        ("0 0 * * 1,?", "'?' must be the whole"),
        ("0 0 1,15W * *", "'W' must be alone"),
        ("0 0 1-5W * *", "invalid item"),
        ("0 0 LW * *", "unknown name 'LW'"),
        ("0 0 L-2 * *", "unknown name 'L'"),
        ("0 0 25-L * *", "unknown name 'L'"),
        ("0 0 32W * *", "out of range"),
        ("0 L * * *", "unknown name 'L'"),
        ("0 0 * * L", "unknown name 'L'"),
        ("0 0 * * 5L", "invalid item"),
        ("0 0 * * L5", "invalid item"),
        ("0 0 * * 1,5#2", "cannot mix"),
        ("0 0 * * 5#6", "must be 1-5 or L"),
        ("0 0 * * 5#0", "must be 1-5 or L"),
        ("0 0 * * 8#1", "out of range"),
        ("0 0 5#2 * *", "invalid item"),
    ],
)
def test_invalid_expressions_are_rejected_with_a_reason(expression: str, reason: str) -> None:
    with pytest.raises(InvalidCronExpressionError) as caught:
        validate_cron_expression(expression)
    message = str(caught.value)
    assert message.startswith(f'Invalid cron expression: "{expression}"')
    assert reason in message


@pytest.mark.parametrize("value", [None, 5, b"* * * * *", ["*"] * 5])
def test_non_string_expressions_are_rejected_naming_the_value(value: object) -> None:
    with pytest.raises(InvalidCronExpressionError, match="Invalid cron expression") as caught:
        validate_cron_expression(value)  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)


def test_invalid_expression_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Invalid cron expression"):
        validate_cron_expression("0 0 * * * *")


def test_next_run_rejects_an_invalid_expression() -> None:
    with pytest.raises(InvalidCronExpressionError, match='"0 0 32 \\* \\*"'):
        next_run("0 0 32 * *", after=JAN_1)


@pytest.mark.parametrize(
    ("expression", "normalised"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("  0   0 * *\t*  ", "0 0 * * *"),
        ("0 9 * jan,JUL Mon-Fri", "0 9 * jan,JUL Mon-Fri"),
        ("@DAILY", "@daily"),
        (" @hourly ", "@hourly"),
        ("0 0 L * *", "0 0 L * *"),
        ("0 0 15W * *", "0 0 15W * *"),
        ("0 0 * * FRI#2", "0 0 * * FRI#2"),
        ("0 0 * * 5#L", "0 0 * * 5#L"),
        ("0 0 ? * 1", "0 0 ? * 1"),
    ],
)
def test_valid_expressions_are_returned_normalised(expression: str, normalised: str) -> None:
    assert validate_cron_expression(expression) == normalised


def test_validation_does_not_reject_expressions_that_never_fire() -> None:
    assert validate_cron_expression("0 0 30 2 *") == "0 0 30 2 *"


# --- nicknames, names, ranges and steps --------------------------------------------------------


@pytest.mark.parametrize(
    ("nickname", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_nicknames_fire_like_their_five_fields(nickname: str, expression: str) -> None:
    after = utc(2026, 1, 15, 10, 2)
    assert runs(nickname, after, 3) == runs(expression, after, 3)


def test_weekly_fires_on_sunday_midnight() -> None:
    assert next_run("@weekly", after=JAN_1) == utc(2026, 1, 4)


def test_month_and_day_names_are_case_insensitive() -> None:
    found = runs("0 9 * jan,JUL Mon-Fri", utc(2026, 1, 29), 3)
    assert found == [utc(2026, 1, 29, 9), utc(2026, 1, 30, 9), utc(2026, 7, 1, 9)]


def test_sunday_is_both_zero_and_seven() -> None:
    assert days("0 0 * * 7", 2) == ["2026-01-04", "2026-01-11"]
    assert days("0 0 * * 0", 2) == ["2026-01-04", "2026-01-11"]


def test_day_range_may_end_on_sunday() -> None:
    assert days("0 0 * * FRI-SUN", 4) == ["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-09"]


def test_stepped_day_range_through_seven_includes_sunday() -> None:
    assert days("0 0 * * 3-7/2", 4) == ["2026-01-02", "2026-01-04", "2026-01-07", "2026-01-09"]


def test_single_value_range_is_that_value_only() -> None:
    # croniter alone reads "5-5" as the whole field; cron means minute 5.
    assert runs("5-5 * * * *", utc(2026, 1, 15, 10, 2), 2) == [
        utc(2026, 1, 15, 10, 5),
        utc(2026, 1, 15, 11, 5),
    ]


def test_start_with_step_runs_to_the_end_of_the_field() -> None:
    minutes = [run.minute for run in runs("10/15 * * * *", utc(2026, 1, 15, 10, 0), 5)]
    assert minutes == [10, 25, 40, 55, 10]


def test_start_at_field_end_with_step_is_that_value() -> None:
    assert runs("59/15 * * * *", utc(2026, 1, 15, 10, 0), 2) == [
        utc(2026, 1, 15, 10, 59),
        utc(2026, 1, 15, 11, 59),
    ]


def test_range_with_step_and_list() -> None:
    minutes = [run.minute for run in runs("0-20/10,45 * * * *", utc(2026, 1, 15, 10, 0), 4)]
    assert minutes == [10, 20, 45, 0]


# --- day of month and day of week --------------------------------------------------------------


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 13th (a Tuesday in January 2026) and every Friday.
    assert days("0 0 13 * 5", 5) == [
        "2026-01-02",
        "2026-01-09",
        "2026-01-13",
        "2026-01-16",
        "2026-01-23",
    ]


def test_stepped_day_of_month_also_combines_by_or() -> None:
    assert days("0 0 */10 * 1", 5) == [
        "2026-01-05",
        "2026-01-11",
        "2026-01-12",
        "2026-01-19",
        "2026-01-21",
    ]


def test_day_of_month_alone_when_day_of_week_is_a_wildcard() -> None:
    assert days("0 0 13 * *", 2) == ["2026-01-13", "2026-02-13"]


@pytest.mark.parametrize("wildcard", ["*", "?"])
def test_day_of_week_alone_when_day_of_month_is_a_wildcard(wildcard: str) -> None:
    assert days(f"0 0 {wildcard} * 1", 2) == ["2026-01-05", "2026-01-12"]


def test_question_mark_in_day_of_week_means_any_day() -> None:
    assert days("0 0 13 * ?", 2) == ["2026-01-13", "2026-02-13"]


def test_last_day_of_month() -> None:
    assert days("0 0 L * *", 3) == ["2026-01-31", "2026-02-28", "2026-03-31"]
    assert days("0 0 L 2 *", 1, after=utc(2028, 1, 1)) == ["2028-02-29"]


def test_last_day_of_month_in_a_list() -> None:
    assert days("0 0 1,L * *", 3) == ["2026-01-31", "2026-02-01", "2026-02-28"]


def test_last_day_of_month_or_fridays() -> None:
    assert days("0 0 L * 5", 6, after=utc(2026, 1, 20)) == [
        "2026-01-23",
        "2026-01-30",
        "2026-01-31",
        "2026-02-06",
        "2026-02-13",
        "2026-02-20",
    ]


def test_nearest_weekday_stays_in_the_month() -> None:
    # 15 Feb 2026 is a Sunday -> Monday 16th; 15 Aug 2026 is a Saturday -> Friday 14th.
    assert "2026-02-16" in days("0 0 15W * *", 8)
    assert "2026-08-14" in days("0 0 15W * *", 8)
    # 1 Aug 2026 is a Saturday: Monday the 3rd, not Friday 31 July.
    assert days("0 0 1W 8 *", 1) == ["2026-08-03"]


def test_nearest_weekday_past_the_end_of_a_short_month_uses_its_last_day() -> None:
    assert days("0 0 31W * *", 3) == ["2026-01-30", "2026-02-27", "2026-03-31"]


@pytest.mark.parametrize("expression", ["0 0 * * 5#2", "0 0 * * FRI#2", "0 0 * * fri#2"])
def test_nth_weekday_of_month(expression: str) -> None:
    assert days(expression, 3) == ["2026-01-09", "2026-02-13", "2026-03-13"]


@pytest.mark.parametrize("expression", ["0 0 * * 5#L", "0 0 * * FRI#L", "0 0 * * 5#l"])
def test_last_weekday_of_month(expression: str) -> None:
    assert days(expression, 3) == ["2026-01-30", "2026-02-27", "2026-03-27"]


def test_fifth_weekday_only_in_months_that_have_one() -> None:
    assert days("0 0 * * 0#5", 4) == ["2026-03-29", "2026-05-31", "2026-08-30", "2026-11-29"]


def test_list_of_nth_weekdays() -> None:
    assert days("0 0 * * 1#1,5#3", 4) == ["2026-01-05", "2026-01-16", "2026-02-02", "2026-02-20"]


def test_nth_weekday_combines_with_day_of_month_by_or() -> None:
    # The 1st, or the second Friday.
    assert days("0 0 1 * 5#2", 4) == ["2026-01-09", "2026-02-01", "2026-02-13", "2026-03-01"]


# --- strictly after ----------------------------------------------------------------------------


def test_after_exactly_on_an_occurrence_gives_the_next_one() -> None:
    assert next_run("*/5 * * * *", after=utc(2026, 1, 15, 10, 5)) == utc(2026, 1, 15, 10, 10)
    assert next_run("0 0 * * *", after=utc(2026, 1, 16)) == utc(2026, 1, 17)


def test_after_just_before_an_occurrence_gives_that_occurrence() -> None:
    after = dt.datetime(2026, 1, 15, 10, 4, 59, 999999, tzinfo=UTC)
    assert next_run("*/5 * * * *", after=after) == utc(2026, 1, 15, 10, 5)


def test_after_just_past_an_occurrence_skips_it() -> None:
    after = dt.datetime(2026, 1, 15, 10, 5, 0, 1, tzinfo=UTC)
    assert next_run("*/5 * * * *", after=after) == utc(2026, 1, 15, 10, 10)


def test_after_defaults_to_now() -> None:
    before = dt.datetime.now(UTC)
    found = next_run("* * * * *")
    assert found is not None
    assert before < found <= before + dt.timedelta(minutes=1, seconds=1)
    assert found.tzinfo is UTC


def test_after_in_another_offset_is_the_same_instant() -> None:
    tokyo_time = dt.datetime(2026, 1, 15, 19, 2, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert next_run("*/5 * * * *", after=tokyo_time) == utc(2026, 1, 15, 10, 5)


@pytest.mark.parametrize(
    "after", [dt.datetime(2026, 1, 15, 10, 2), dt.date(2026, 1, 15), "2026-01-15T10:02:00Z"]
)
def test_after_must_be_an_aware_datetime(after: object) -> None:
    with pytest.raises(InvalidJobError) as caught:
        next_run("* * * * *", after=after)  # type: ignore[arg-type]
    assert caught.type is InvalidJobError
    assert repr(after) in str(caught.value)


# --- time zones ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+5"])
def test_valid_timezones_are_returned_unchanged(name: str) -> None:
    assert validate_timezone(name) == name


@pytest.mark.parametrize(
    "name", ["Mars/Base", "", "America/", "America", "../etc/passwd", " UTC", "localtime"]
)
def test_invalid_timezones_are_rejected_naming_the_zone(name: str) -> None:
    with pytest.raises(InvalidCronExpressionError) as caught:
        validate_timezone(name)
    assert str(caught.value).startswith(f'Invalid timezone: "{name}"')


@pytest.mark.parametrize("value", [None, 9, dt.timezone.utc])
def test_non_string_timezones_are_rejected_naming_the_value(value: object) -> None:
    with pytest.raises(InvalidCronExpressionError, match="Invalid timezone") as caught:
        validate_timezone(value)  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)


def test_next_run_rejects_an_unknown_timezone() -> None:
    with pytest.raises(InvalidCronExpressionError, match='Invalid timezone: "Mars/Base"'):
        next_run("0 0 * * *", "Mars/Base", JAN_1)


def test_daily_time_follows_the_zone_offset_through_the_year() -> None:
    winter = next_run("0 9 * * *", "Europe/Berlin", utc(2026, 1, 15))
    summer = next_run("0 9 * * *", "Europe/Berlin", utc(2026, 7, 15))
    assert (winter, summer) == (utc(2026, 1, 15, 8), utc(2026, 7, 15, 7))


def test_day_fields_are_matched_in_the_zone() -> None:
    # Midnight on the 1st in Tokyo is the last day of the previous month in UTC.
    assert next_run("0 0 1 * *", "Asia/Tokyo", JAN_1) == utc(2026, 1, 31, 15)


# --- daylight saving time -----------------------------------------------------------------------
# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
# Europe/Berlin:    2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.


@pytest.mark.parametrize(
    ("timezone", "after", "first", "second"),
    [
        ("America/New_York", utc(2026, 3, 8, 5), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)),
        ("Europe/Berlin", utc(2026, 3, 28, 23), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)),
    ],
)
def test_missing_wall_time_fires_once_at_the_end_of_the_gap(
    timezone: str, after: dt.datetime, first: dt.datetime, second: dt.datetime
) -> None:
    # 02:30 does not exist on the spring-forward day: the job fires at 03:00 local instead.
    assert runs("30 2 * * *", after, 2, timezone) == [first, second]


@pytest.mark.parametrize(
    ("expression", "timezone", "after", "first", "second"),
    [
        ("30 1 * * *", "America/New_York", utc(2026, 11, 1, 4), utc(2026, 11, 1, 5, 30),
         utc(2026, 11, 2, 6, 30)),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 22), utc(2026, 10, 25, 0, 30),
         utc(2026, 10, 26, 1, 30)),
    ],
)  # fmt: skip
def test_repeated_wall_time_fires_once(
    expression: str, timezone: str, after: dt.datetime, first: dt.datetime, second: dt.datetime
) -> None:
    assert runs(expression, after, 2, timezone) == [first, second]


def test_repeated_wall_time_is_not_fired_again_from_inside_the_repeat() -> None:
    # After 01:30 EDT has fired, 01:30 EST is skipped whether asked before or during it.
    assert next_run("30 1 * * *", "America/New_York", utc(2026, 11, 1, 5, 45)) == utc(
        2026, 11, 2, 6, 30
    )
    assert next_run("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 10)) == utc(
        2026, 11, 2, 6, 30
    )


def test_every_minute_of_a_repeated_hour_fires_once() -> None:
    started = time.perf_counter()
    found = next_run("* 1 * * *", "America/New_York", utc(2026, 11, 1, 5, 59))
    assert found == utc(2026, 11, 2, 6, 0)  # 01:00 EST the next day
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("timezone", "after"),
    [
        ("America/New_York", utc(2026, 3, 8, 3)),
        ("America/New_York", utc(2026, 11, 1, 2)),
        ("Europe/Berlin", utc(2026, 3, 28, 22)),
        ("Europe/Berlin", utc(2026, 10, 24, 21)),
    ],
)
def test_hourly_job_fires_once_per_real_hour_across_transitions(
    timezone: str, after: dt.datetime
) -> None:
    found = runs("0 * * * *", after, 8, timezone)
    assert found == [after + dt.timedelta(hours=hour) for hour in range(1, 9)]


def test_half_hourly_job_keeps_its_spacing_across_fall_back() -> None:
    after = utc(2026, 11, 1, 4)
    found = runs("*/30 * * * *", after, 8, "America/New_York")
    assert found == [after + dt.timedelta(minutes=30 * step) for step in range(1, 9)]


def test_hourly_job_asked_mid_repeat_fires_at_the_next_real_hour() -> None:
    assert next_run("0 * * * *", "America/New_York", utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 1, 6)


def test_hour_field_listing_every_hour_counts_as_hourly() -> None:
    after = utc(2026, 11, 1, 4)
    assert runs("0 0-23 * * *", after, 3, "America/New_York") == runs(
        "0 * * * *", after, 3, "America/New_York"
    )


def test_hour_list_through_fall_back_fires_each_wall_time_once() -> None:
    found = runs("0 0-3 * * *", utc(2026, 11, 1, 3), 4, "America/New_York")
    # 00:00 EDT, 01:00 EDT, (01:00 EST skipped), 02:00 EST, 03:00 EST
    assert found == [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 1, 7),
                     utc(2026, 11, 1, 8)]  # fmt: skip


# --- expressions that never fire ------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *", "0 0 30,31 2 *", "0 0 30 FEB ?"],
)
@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_impossible_dates_return_none_quickly(expression: str, timezone: str) -> None:
    started = time.perf_counter()
    assert next_run(expression, timezone, JAN_1) is None
    assert time.perf_counter() - started < 0.5
    assert never_fires(expression, timezone)


def test_leap_day_fires_in_the_next_leap_year() -> None:
    assert next_run("0 0 29 2 *", after=JAN_1) == utc(2028, 2, 29)
    assert not never_fires("0 0 29 2 *")


def test_impossible_day_of_month_still_fires_on_its_day_of_week() -> None:
    # OR semantics: 30 February never comes, the fifth Monday of a February does (2044).
    assert next_run("0 0 30 2 1#5", after=JAN_1) == utc(2044, 2, 29)


def test_never_fires_is_false_for_ordinary_expressions() -> None:
    assert not never_fires("*/5 * * * *")
    assert not never_fires("0 20 * * *", "Asia/Tokyo")


def test_never_fires_rejects_invalid_input() -> None:
    with pytest.raises(InvalidCronExpressionError):
        never_fires("0 0 * * * *")
    with pytest.raises(InvalidCronExpressionError):
        never_fires("0 0 * * *", "Mars/Base")


def test_no_occurrence_past_the_end_of_the_datetime_range() -> None:
    assert next_run("0 0 * * *", after=dt.datetime.max.replace(tzinfo=UTC)) is None
