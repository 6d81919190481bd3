"""The array literals the batch enqueue statement takes as column parameters.

Their round trip through PostgreSQL is tested in tests/integration/test_enqueue_paths.py;
these pin the text itself.
"""

from __future__ import annotations

import datetime as dt

from dataqueue.backends.postgres import sql as pg_sql
from dataqueue.validation import NewJob


def test_text_literal_quotes_every_element_and_escapes_quotes_and_backslashes() -> None:
    values = ["a,b", '"q"', "back\\slash", "NULL", "", "{x}"]
    assert pg_sql.text_array_literal(values) == (
        '{"a,b","\\"q\\"","back\\\\slash","NULL","","{x}"}'
    )


def test_text_literal_writes_none_as_an_unquoted_null() -> None:
    assert pg_sql.text_array_literal(["a", None, '"']) == '{"a",NULL,"\\""}'
    assert pg_sql.text_array_literal([None]) == "{NULL}"


def test_text_literal_of_one_element_and_of_none_at_all() -> None:
    assert pg_sql.text_array_literal(["only"]) == '{"only"}'
    assert pg_sql.text_array_literal([]) == "{}"


def test_text_literal_with_nul_takes_the_element_by_element_path() -> None:
    # Validation rejects NUL first; the literal stays well-formed regardless.
    assert pg_sql.text_array_literal(["a\x00b", "c"]) == '{"a\x00b","c"}'


def test_number_boolean_and_timestamp_literals() -> None:
    assert pg_sql.int_array_literal([1, -2, 3]) == "{1,-2,3}"
    assert pg_sql.int_array_literal([1, None]) == "{1,NULL}"
    assert pg_sql.bool_array_literal([True, False, None]) == "{t,f,NULL}"
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert pg_sql.timestamp_array_literal([moment, None]) == (
        '{"2030-01-02T03:04:05.000006+02:00",NULL}'
    )


def test_batch_parameters_send_columns_without_any_value_as_null() -> None:
    jobs = [NewJob("a", "{}"), NewJob("b", '"x"', tags=["t,1", 'q"'], depends_on_job_ids=[-1])]
    params = pg_sql.enqueue_parameters(jobs)
    assert params["job_type"] == '{"a","b"}'
    assert params["payload"] == '{"{}","\\"x\\""}'
    assert params["max_attempts"] == "{3,3}"
    assert params["force_kill_on_timeout"] == "{f,f}"
    # Each row's list is an array literal, itself an element of the column's text[].
    assert params["tags"] == '{NULL,"{\\"t,1\\",\\"q\\\\\\"\\"}"}'
    assert params["depends_on_job_ids"] == '{NULL,"{-1}"}'
    assert params["run_at"] is None
    assert params["group_id"] is None
