"""``native_statement``: a statement rendered for SQLAlchemy ``text()``, made ready for a
psycopg cursor (the processor's cycle runs on psycopg directly)."""

from __future__ import annotations

from dataqueue.backends.postgres import sql as pg_sql


def test_binds_become_psycopg_placeholders_and_casts_stay() -> None:
    sql = "SELECT CAST(:ids AS integer[]),\n    NULL::jsonb  WHERE x = :worker_id"
    assert pg_sql.native_statement(sql) == (
        "SELECT CAST(%(ids)s AS integer[]), NULL::jsonb WHERE x = %(worker_id)s"
    )


def test_quoted_names_and_literals_are_kept_as_they_are() -> None:
    # A schema name with two spaces, a percent sign and a colon (escaped for text()),
    # and a literal whose spaces must not be compacted.
    sql = """UPDATE "a  b %\\:c".job_queue SET x = 'two  spaces', y = :y  WHERE z LIKE 'p%'"""
    assert pg_sql.native_statement(sql) == (
        """UPDATE "a  b %%:c".job_queue SET x = 'two  spaces', y = %(y)s WHERE z LIKE 'p%%'"""
    )


def test_a_colon_escaped_for_text_is_a_colon() -> None:
    assert pg_sql.native_statement("SELECT '{\"a\"' || '\\:1}' , :v") == (
        "SELECT '{\"a\"' || ':1}' , %(v)s"
    )


def test_the_cycle_statement_fits_psycopgs_parse_cache() -> None:
    sql = pg_sql.render_advance(None, type_filter=True, group_limit=False, scan_size=50)
    native = pg_sql.native_statement(sql)
    assert len(native) <= 4096
    assert ":worker_id" not in native and "%(worker_id)s" in native
