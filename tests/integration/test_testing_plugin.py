"""dataqueue.testing: the pytest plugin (run on small user test files with ``pytester``),
``run_until_idle`` and the assertion helpers.

The plugin's fixtures are pointed at this suite's servers explicitly
(``--dataqueue-database-url``/``--dataqueue-redis-url``), except in the test of the
embedded default.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa

import dataqueue as dq
from dataqueue.testing import (
    JobsFailedError,
    RunLimitError,
    TemplateDatabases,
    assert_enqueued,
    assert_not_enqueued,
    enqueued_jobs,
    run_until_idle,
)

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[2]
FLASK_EXAMPLE = REPO_ROOT / "examples" / "flask_testing"


def _existing_databases(admin_url: str, names: list[str]) -> list[str]:
    engine = sa.create_engine(admin_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                {"names": names},
            )
            return [row[0] for row in rows]
    finally:
        engine.dispose()


@pytest.fixture
def user_tests(pytester: pytest.Pytester, pg_admin_url: str) -> Iterator[pytest.Pytester]:
    """A pytester whose runs use this suite's PostgreSQL; checks afterwards that every
    database a user test wrote to ``databases.txt`` is gone."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    yield pytester
    record = pytester.path / "databases.txt"
    names = record.read_text().split() if record.exists() else []
    assert _existing_databases(pg_admin_url, names) == []


def _run(pytester: pytest.Pytester, pg_admin_url: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--dataqueue-database-url", pg_admin_url, *args)


RECORD = """
from pathlib import Path
from sqlalchemy.engine import make_url

def record(*urls_or_names):
    with Path("databases.txt").open("a") as out:
        for value in urls_or_names:
            out.write((make_url(value).database if "/" in value else value) + "\\n")
"""


# -- the plugin -------------------------------------------------------------------------


def test_each_test_gets_a_database_of_its_own_dropped_afterwards(
    user_tests: pytest.Pytester, pg_admin_url: str
) -> None:
    user_tests.makeconftest(RECORD)
    user_tests.makepyfile(
        """
        from conftest import record

        def test_first(dataqueue_queue, dataqueue_database_url, dataqueue_databases):
            record(dataqueue_database_url, dataqueue_databases.template_name)
            dataqueue_queue.add_job("email", {"to": "ada@example.com"})
            assert len(dataqueue_queue.get_all_jobs()) == 1

        def test_second_sees_nothing_of_the_first(dataqueue_queue, dataqueue_database_url):
            record(dataqueue_database_url)
            assert dataqueue_queue.get_all_jobs() == []
            assert dataqueue_queue.add_job("email", {}) == 1  # sequences start afresh
        """
    )
    result = _run(user_tests, pg_admin_url)
    result.assert_outcomes(passed=2)
    names = (user_tests.path / "databases.txt").read_text().split()
    assert len(set(names)) == 3  # two test databases and the template


def test_the_template_holds_what_dataqueue_prepare_database_creates(
    user_tests: pytest.Pytester, pg_admin_url: str
) -> None:
    user_tests.makeconftest(
        RECORD
        + """
import pytest

@pytest.fixture(scope="session")
def dataqueue_prepare_database():
    def prepare(engine):
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
            conn.exec_driver_sql("INSERT INTO notes (body) VALUES ('seed')")
    return prepare
"""
    )
    user_tests.makepyfile(
        """
        import pytest
        from conftest import record

        @pytest.mark.parametrize("body", ["one", "two"])
        def test_notes_start_from_the_template(body, dataqueue_engine, dataqueue_database_url):
            record(dataqueue_database_url)
            with dataqueue_engine.begin() as conn:
                conn.exec_driver_sql(f"INSERT INTO notes (body) VALUES ('{body}')")
                bodies = conn.exec_driver_sql("SELECT body FROM notes ORDER BY id").scalars()
                assert list(bodies) == ["seed", body]
        """
    )
    _run(user_tests, pg_admin_url).assert_outcomes(passed=2)


def test_a_session_that_uses_no_fixture_connects_to_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    unreachable = "postgresql://nobody@127.0.0.1:1/nothing"
    result = pytester.runpytest("--dataqueue-database-url", unreachable, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_uses_it(dataqueue_queue):\n    pass\n")
    result = pytester.runpytest("-p", "no:dataqueue", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'dataqueue_queue' not found*"])


def test_the_url_can_come_from_the_environment(
    user_tests: pytest.Pytester, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAQUEUE_TESTING_DATABASE_URL", pg_admin_url)
    user_tests.makeconftest(RECORD)
    user_tests.makepyfile(
        """
        from conftest import record

        def test_it(dataqueue_database_url):
            record(dataqueue_database_url)
        """
    )
    user_tests.runpytest().assert_outcomes(passed=1)


def test_without_a_url_an_embedded_postgres_runs_and_is_removed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("pgserver")
    # Short: the server's socket lives in its data folder, and socket paths are short.
    temp = Path(tempfile.mkdtemp(prefix="dqt-"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.delenv("DATAQUEUE_TESTING_DATABASE_URL", raising=False)
    pytester.makepyfile(
        """
        def test_it(dataqueue_queue, dataqueue_database_url):
            assert "host=" in dataqueue_database_url  # the embedded server's socket folder
            assert dataqueue_queue.add_job("email", {}) == 1
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert [p.name for p in temp.iterdir() if p.name.startswith("dataqueue-")] == []


def test_a_redis_queue_gets_a_key_prefix_of_its_own(
    pytester: pytest.Pytester, redis_url: str, redis_client: Any
) -> None:
    pytester.makepyfile(
        """
        def test_first(dataqueue_redis_queue):
            dataqueue_redis_queue.add_job("email", {"to": "ada@example.com"})
            assert len(dataqueue_redis_queue.get_all_jobs()) == 1

        def test_second_sees_nothing_of_the_first(dataqueue_redis_queue):
            assert dataqueue_redis_queue.get_all_jobs() == []
        """
    )
    result = pytester.runpytest("--dataqueue-redis-url", redis_url, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert list(redis_client.scan_iter(match="{dataqueue-test-*")) == []


def test_a_redis_queue_without_a_url_says_how_to_configure_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAQUEUE_TESTING_REDIS_URL", raising=False)
    pytester.makepyfile("def test_it(dataqueue_redis_queue):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ConfigurationError*--dataqueue-redis-url*"])


# -- run_until_idle and the assertions, as a user's tests see them -------------------------


def test_run_until_idle_in_a_user_test_runs_due_jobs_and_reports_failures(
    user_tests: pytest.Pytester, pg_admin_url: str
) -> None:
    user_tests.makeconftest(RECORD)
    user_tests.makepyfile(
        """
        import datetime as dt
        from conftest import record
        from dataqueue.testing import run_until_idle

        def greet(payload):
            return f"hello {payload['name']}"

        def fail(payload):
            raise ValueError("the mail server said no")

        def test_due_jobs_run(dataqueue_queue, dataqueue_database_url):
            record(dataqueue_database_url)
            later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
            first = dataqueue_queue.add_job("greet", {"name": "ada"})
            dataqueue_queue.add_job("greet", {"name": "bob"}, run_at=later)
            failing = dataqueue_queue.add_job("fail", {})
            result = run_until_idle(dataqueue_queue, {"greet": greet, "fail": fail})
            assert [(r.job_id, r.outcome) for r in result.runs] == [
                (first, "completed"), (failing, "failed")]
            assert dataqueue_queue.get_job(first).output == "hello ada"
            assert str(result.failed[0].error) == "the mail server said no"

        def test_raise_on_failure(dataqueue_queue, dataqueue_database_url):
            record(dataqueue_database_url)
            dataqueue_queue.add_job("fail", {})
            run_until_idle(dataqueue_queue, {"fail": fail}, raise_on_failure=True)
        """
    )
    result = _run(user_tests, pg_admin_url)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ValueError: the mail server said no",
            "*The above exception was the direct cause of the following exception*",
            "*JobsFailedError: 1 job run(s) failed:",
            "*job 1 (fail): ValueError: the mail server said no (a retry is scheduled)",
        ]
    )


def test_assert_enqueued_in_a_user_test_lists_what_was_enqueued_instead(
    user_tests: pytest.Pytester, pg_admin_url: str
) -> None:
    user_tests.makeconftest(RECORD)
    user_tests.makepyfile(
        """
        from conftest import record
        from dataqueue.testing import assert_enqueued

        def test_wrong_payload(dataqueue_queue, dataqueue_database_url):
            record(dataqueue_database_url)
            dataqueue_queue.add_job("send_email", {"to": "bob@example.com"}, priority=5)
            dataqueue_queue.add_job("resize", {"image": 7})
            assert_enqueued(dataqueue_queue, "send_email", {"to": "ada@example.com"}, priority=5)
        """
    )
    result = _run(user_tests, pg_admin_url)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: expected at least 1 'send_email' job(s) with payload "
            "{'to': 'ada@example.com'} and priority=5, found 0. The queue holds 2 job(s):",
            "E*#1 send_email payload={'to': 'bob@example.com'} status=pending priority=5",
            "E*#2 resize payload={'image': 7} status=pending priority=0",
        ]
    )


def test_the_flask_example_passes(pytester: pytest.Pytester, pg_admin_url: str) -> None:
    result = pytester.runpytest_subprocess(
        str(FLASK_EXAMPLE),
        "--dataqueue-database-url",
        pg_admin_url,
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=3)


# -- run_until_idle --------------------------------------------------------------------------


def _later(hours: float = 1) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)


@pytest.mark.all_backends
def test_run_until_idle_runs_the_jobs_that_handlers_enqueue(queue: dq.JobQueue) -> None:
    order: list[str] = []

    def signup(payload: dict[str, Any]) -> None:
        order.append("signup")
        queue.add_job("welcome", {"user": payload["user"]})

    def welcome(payload: dict[str, Any]) -> None:
        order.append("welcome")

    queue.add_job("signup", {"user": 1})
    result = run_until_idle(queue, {"signup": signup, "welcome": welcome})
    assert order == ["signup", "welcome"]
    assert [run.job_type for run in result.completed] == ["signup", "welcome"]


@pytest.mark.all_backends
def test_run_until_idle_leaves_future_jobs_and_other_types_alone(queue: dq.JobQueue) -> None:
    later = queue.add_job("greet", {}, run_at=_later())
    other = queue.add_job("not_mine", {})
    assert run_until_idle(queue, {"greet": lambda payload: None}).runs == ()
    assert {job.status for job in enqueued_jobs(queue)} == {"pending"}
    result = run_until_idle(queue, {"greet": lambda payload: None}, include_future=True)
    assert result.job_ids == [later]
    assert queue.get_job(other).status == "pending"  # type: ignore[union-attr]


@pytest.mark.all_backends
def test_a_failing_job_is_retried_only_with_include_future_until_attempts_run_out(
    queue: dq.JobQueue,
) -> None:
    job_id = queue.add_job("flaky", {}, max_attempts=3)

    def flaky(payload: Any) -> None:
        raise RuntimeError("down")

    first = run_until_idle(queue, {"flaky": flaky})
    assert [(run.outcome, run.will_retry) for run in first.runs] == [("failed", True)]
    rest = run_until_idle(queue, {"flaky": flaky}, include_future=True)
    assert [(run.outcome, run.will_retry) for run in rest.runs] == [
        ("failed", True),
        ("failed", False),
    ]
    job = queue.get_job(job_id)
    assert job is not None and job.is_final and job.attempts == 3


def test_raise_on_failure_raises_at_the_first_failure(pg_queue: dq.JobQueue) -> None:
    pg_queue.add_job("boom", {})
    pg_queue.add_job("boom", {})

    def boom(payload: Any) -> None:
        raise KeyError("missing")

    with pytest.raises(JobsFailedError) as raised:
        run_until_idle(pg_queue, {"boom": boom}, raise_on_failure=True)
    assert isinstance(raised.value.__cause__, KeyError)
    assert len(raised.value.result.runs) == 1
    assert isinstance(raised.value, AssertionError)


def test_jobs_that_keep_enqueueing_stop_at_max_jobs(pg_queue: dq.JobQueue) -> None:
    pg_queue.add_job("again", {})

    def again(payload: Any) -> None:
        pg_queue.add_job("again", {})

    with pytest.raises(RunLimitError, match="max_jobs=5") as raised:
        run_until_idle(pg_queue, {"again": again}, max_jobs=5)
    assert len(raised.value.result.runs) == 5
    assert [job.id for job in raised.value.due] == [6]


def test_reaching_max_jobs_exactly_as_the_queue_empties_returns(pg_queue: dq.JobQueue) -> None:
    pg_queue.add_jobs([{"job_type": "t", "payload": {"n": n}} for n in range(3)])
    result = run_until_idle(pg_queue, {"t": lambda payload: None}, max_jobs=3)
    assert len(result) == 3


def test_run_until_idle_rejects_a_bad_max_jobs(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(ValueError, match="max_jobs"):
        run_until_idle(pg_queue, {}, max_jobs=0)
    with pytest.raises(TypeError, match="max_jobs"):
        run_until_idle(pg_queue, {}, max_jobs=True)


def test_run_until_idle_reports_a_wait(pg_queue: dq.JobQueue) -> None:
    pg_queue.add_job("nap", {})

    def nap(payload: Any, signal: dq.AbortSignal, ctx: dq.JobContext) -> None:
        ctx.wait_for(hours=1)

    result = run_until_idle(pg_queue, {"nap": nap}, include_future=True)
    assert [run.outcome for run in result.runs] == ["waiting"]


# -- the assertion helpers ---------------------------------------------------------------


@pytest.mark.all_backends
def test_enqueued_jobs_are_oldest_first_and_filter_by_type_and_status(
    queue: dq.JobQueue,
) -> None:
    a = queue.add_job("a", {"n": 1})
    b = queue.add_job("b", {"n": 2})
    c = queue.add_job("a", {"n": 3})
    queue.cancel_job(c)
    assert [job.id for job in enqueued_jobs(queue)] == [a, b, c]
    assert [job.id for job in enqueued_jobs(queue, "a")] == [a, c]
    assert [job.id for job in enqueued_jobs(queue, "a", status="pending")] == [a]


def test_enqueued_jobs_reads_every_page(pg_queue: dq.JobQueue) -> None:
    ids = pg_queue.add_jobs([{"job_type": "bulk", "payload": n} for n in range(1001)])
    assert [job.id for job in enqueued_jobs(pg_queue, "bulk")] == ids


@pytest.mark.all_backends
def test_assert_enqueued_matches_payload_fields_and_count(queue: dq.JobQueue) -> None:
    first = queue.add_job("email", {"to": "ada@example.com", "at": "09:00"}, priority=5)
    queue.add_job("email", {"to": "bob@example.com", "at": "10:00"}, tags=["welcome"])
    matches = assert_enqueued(queue, "email", {"to": "ada@example.com", "at": mock.ANY})
    assert [job.id for job in matches] == [first]
    assert_enqueued(queue, "email", count=2)
    assert_enqueued(queue, "email", tags=["welcome"], status="pending", count=1)
    assert_not_enqueued(queue, "email", {"to": "eve@example.com"})
    assert_not_enqueued(queue, "sms")


@pytest.mark.all_backends
def test_assert_enqueued_failures_say_what_was_expected_and_found(queue: dq.JobQueue) -> None:
    queue.add_job("email", {"to": "ada@example.com"})
    with pytest.raises(AssertionError) as raised:
        assert_enqueued(queue, "email", count=2)
    assert str(raised.value) == (
        "expected 2 'email' job(s), found 1. The queue holds 1 job(s):\n"
        "  #1 email payload={'to': 'ada@example.com'} status=pending"
    )
    with pytest.raises(AssertionError, match="expected 0 'email' job"):
        assert_not_enqueued(queue, "email")


def test_assert_enqueued_on_an_empty_queue_says_so(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(AssertionError, match=r"found 0\. The queue is empty\.$"):
        assert_enqueued(pg_queue, "email")


def test_assert_enqueued_lists_at_most_twenty_jobs(pg_queue: dq.JobQueue) -> None:
    pg_queue.add_jobs([{"job_type": "other", "payload": n} for n in range(25)])
    with pytest.raises(AssertionError) as raised:
        assert_enqueued(pg_queue, "email")
    message = str(raised.value)
    assert "#20 other payload=19" in message and "#21" not in message
    assert message.endswith("… and 5 more")


def test_assert_enqueued_rejects_unknown_fields(pg_queue: dq.JobQueue) -> None:
    with pytest.raises(TypeError, match="no field"):
        assert_enqueued(pg_queue, "email", priorty=5)


# -- TemplateDatabases without pytest ------------------------------------------------------


def test_template_databases_close_drops_what_is_left(pg_admin_url: str) -> None:
    databases = TemplateDatabases(pg_admin_url, name_prefix="dq_test_tpl")
    kept = databases.create_database()
    dropped = databases.create_database()
    databases.drop_database(dropped)
    template = databases.template_name
    assert template is not None
    with dq.init_job_queue(kept) as queue:
        assert queue.add_job("t", {}) == 1
    names = [str(sa.make_url(url).database) for url in (kept, dropped)] + [template]
    assert sorted(_existing_databases(pg_admin_url, names)) == sorted([names[0], template])
    databases.close()
    assert _existing_databases(pg_admin_url, names) == []
    with pytest.raises(ValueError, match="not created by this"):
        databases.drop_database(kept)


def test_template_databases_rejects_an_unsafe_prefix(pg_admin_url: str) -> None:
    with pytest.raises(ValueError, match="name_prefix"):
        TemplateDatabases(pg_admin_url, name_prefix='x"; DROP')


def test_run_until_idle_runs_handlers_in_the_calling_thread(
    pg_queue: dq.JobQueue,
) -> None:
    import threading

    from dataqueue.testing import run_until_idle

    seen: list[str] = []
    local = threading.local()
    local.marker = "test thread"
    pg_queue.add_jobs([{"job_type": "t", "payload": n} for n in range(2)])
    result = run_until_idle(
        pg_queue, {"t": lambda p: seen.append(getattr(local, "marker", "another thread"))}
    )
    assert len(result.completed) == 2
    assert seen == ["test thread", "test thread"]
