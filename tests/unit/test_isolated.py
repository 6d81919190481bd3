"""force_kill_on_timeout: handler validation and running handlers in killable child processes."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dataqueue.processing.isolated import (
    HandlerCheck,
    IsolatedOutcome,
    run_isolated,
    validate_handler_serializable,
)
from tests.unit import isolated_handlers as handlers

# --- validate_handler_serializable --------------------------------------------------------


def test_module_level_function_is_serializable() -> None:
    assert validate_handler_serializable(handlers.echo, "echo") == HandlerCheck(True, None)


def test_static_method_reached_through_its_class_is_serializable() -> None:
    assert validate_handler_serializable(handlers.Greeter.static_greet).is_serializable


def test_lambda_is_rejected_with_job_type_label() -> None:
    check = validate_handler_serializable(lambda payload: payload, "email")
    assert check == HandlerCheck(
        False,
        'Handler for job type "email" is a lambda, which cannot be run in a separate process. '
        "Define it as a module-level function when force_kill_on_timeout is enabled.",
    )


def test_module_level_lambda_is_rejected() -> None:
    check = validate_handler_serializable(handlers.module_level_lambda, "email")
    assert check.error is not None
    assert check.error.startswith('Handler for job type "email" is a lambda')


def test_closure_is_rejected() -> None:
    check = validate_handler_serializable(handlers.make_closure("x"), "report")
    assert not check.is_serializable
    assert check.error is not None
    assert check.error.startswith(
        'Handler for job type "report" is a nested function (closure), which cannot be run'
    )


def test_bound_method_is_rejected() -> None:
    check = validate_handler_serializable(handlers.Greeter().greet, "greet")
    assert not check.is_serializable
    assert check.error is not None
    assert check.error.startswith('Handler for job type "greet" is a bound method, which')


def test_builtin_is_rejected_as_native_code() -> None:
    check = validate_handler_serializable(len, "count")
    assert check == HandlerCheck(
        False,
        'Handler for job type "count" contains native code which cannot be serialized. '
        "Ensure your handler is a plain function when force_kill_on_timeout is enabled.",
    )


def test_partial_is_rejected_as_not_a_plain_function() -> None:
    check = validate_handler_serializable(functools.partial(handlers.echo, {}), "echo")
    assert check.error == (
        'Handler for job type "echo" cannot be serialized: a partial object is not a plain '
        "function. When using force_kill_on_timeout, handlers must be module-level functions "
        "importable by module path."
    )


def test_function_defined_in_main_script_is_rejected() -> None:
    def handler(payload: Any) -> Any:
        return payload

    handler.__module__ = "__main__"
    handler.__qualname__ = "handler"
    check = validate_handler_serializable(handler, "email")
    assert check.error is not None
    assert check.error.startswith(
        'Handler for job type "email" cannot be serialized: handler is defined in the '
        "__main__ script"
    )
    assert check.error.endswith(
        "handlers must be module-level functions importable by module path."
    )


def test_function_whose_name_now_refers_to_another_object_is_rejected() -> None:
    check = validate_handler_serializable(handlers.original_replaced, "x")
    assert check.error is not None
    assert "tests.unit.isolated_handlers:replaced refers to a different object" in check.error


def test_function_in_unimportable_module_is_rejected() -> None:
    def handler(payload: Any) -> Any:
        return payload

    handler.__module__ = "no_such_module_for_dataqueue_tests"
    handler.__qualname__ = "handler"
    check = validate_handler_serializable(handler, "x")
    assert check.error is not None
    assert "cannot be imported (ModuleNotFoundError" in check.error


def test_label_without_job_type_is_handler() -> None:
    check = validate_handler_serializable(lambda payload: payload)
    assert check.error is not None
    assert check.error.startswith("Handler for handler is a lambda")


# --- run_isolated -------------------------------------------------------------------------


def _run(handler: Any, payload: Any = None, timeout_ms: int = 10_000) -> IsolatedOutcome:
    return run_isolated(handler, payload, timeout_ms, job_id=1, job_type="test")


def _assert_process_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_handler_output_is_returned() -> None:
    outcome = _run(handlers.echo, {"to": "a@example.com", "n": [1, 2]})
    assert outcome.kind == "completed"
    assert outcome.error_message is None
    assert outcome.output["payload"] == {"to": "a@example.com", "n": [1, 2]}
    assert outcome.output["aborted"] is False
    assert outcome.output["reason"] is None
    assert outcome.output["waited"] is False
    assert outcome.output["pid"] != os.getpid()
    _assert_process_gone(outcome.output["pid"])


def test_handler_taking_only_the_payload_is_called_with_it() -> None:
    assert _run(handlers.double, {"n": 21}) == IsolatedOutcome("completed", output=42)


def test_handler_returning_none_completes_without_output() -> None:
    assert _run(handlers.returns_nothing) == IsolatedOutcome("completed", output=None)


def test_output_is_encoded_like_a_payload() -> None:
    outcome = _run(handlers.returns_datetime)
    assert outcome.output == {"at": "2024-01-02T03:04:05+00:00"}


def test_handler_exception_fails_with_its_message_and_type() -> None:
    outcome = _run(handlers.raises_value_error, {"n": 7})
    assert outcome.kind == "failed"
    assert outcome.error_message == "bad input: 7"
    assert outcome.error_type == "ValueError"
    assert outcome.error_traceback is not None
    assert "raises_value_error" in outcome.error_traceback


def test_exception_without_message_is_reported_by_its_repr() -> None:
    outcome = _run(handlers.raises_without_message)
    assert (outcome.kind, outcome.error_message, outcome.error_type) == (
        "failed",
        "RuntimeError()",
        "RuntimeError",
    )


def test_output_that_json_cannot_hold_fails() -> None:
    outcome = _run(handlers.returns_object)
    assert outcome.kind == "failed"
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("Handler output is not JSON-serialisable")


def test_handler_requiring_ctx_fails_clearly() -> None:
    outcome = _run(handlers.needs_ctx)
    assert outcome.kind == "failed"
    assert outcome.error_type == "TypeError"
    assert outcome.error_message is not None
    assert "requires a ctx argument" in outcome.error_message


def test_crash_reports_the_exit_code() -> None:
    outcome = _run(handlers.exits_hard)
    assert outcome == IsolatedOutcome("failed", error_message="Worker stopped with exit code 3")


def test_non_serializable_handler_fails_without_starting_a_process() -> None:
    outcome = _run(lambda payload: payload)
    assert outcome.kind == "failed"
    assert outcome.error_message is not None
    assert outcome.error_message.startswith('Handler for job type "test" is a lambda')


def test_handler_the_child_cannot_import_fails_as_not_deserializable(tmp_path: Path) -> None:
    # Importable here only: the directory leaves sys.path before the child is spawned.
    name = f"dq_vanishing_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("def handler(payload, signal):\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(tmp_path))
    try:
        outcome = _run(module.handler)
    finally:
        del sys.modules[name]
    assert outcome.kind == "failed"
    assert outcome.error_message is not None
    assert outcome.error_message.startswith(
        "Handler cannot be deserialized in worker process. ModuleNotFoundError"
    )


def _kill_at_timeout(handler: Any, tmp_path: Path) -> tuple[IsolatedOutcome, float, int]:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    outcome = run_isolated(handler, {"pid_file": str(pid_file)}, 500, job_id=7, job_type="hang")
    return outcome, time.monotonic() - started, int(pid_file.read_text())


def test_hanging_handler_is_killed_at_the_deadline(tmp_path: Path) -> None:
    outcome, elapsed, pid = _kill_at_timeout(handlers.sleeps_forever, tmp_path)
    assert outcome == IsolatedOutcome(
        "timeout", error_message="Job timed out after 500 ms and was forcefully terminated"
    )
    assert elapsed < 0.5 + 2
    _assert_process_gone(pid)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be ignored on Windows")
def test_handler_ignoring_sigterm_is_still_killed(tmp_path: Path) -> None:
    outcome, elapsed, pid = _kill_at_timeout(handlers.ignores_sigterm, tmp_path)
    assert outcome.kind == "timeout"
    assert elapsed < 0.5 + 2
    _assert_process_gone(pid)


def test_timeout_counts_from_the_handler_call_not_the_process_start() -> None:
    # Interpreter start-up and imports take longer than this timeout; the handler does not.
    outcome = _run(handlers.sleeps, {"seconds": 0.05}, timeout_ms=300)
    assert outcome == IsolatedOutcome("completed", output="slept")


def test_concurrent_runs_from_worker_threads_get_their_own_outcomes() -> None:
    outcomes: dict[int, IsolatedOutcome] = {}

    def work(n: int) -> None:
        outcomes[n] = run_isolated(handlers.double, {"n": n}, 10_000, job_id=n, job_type="d")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: o.output for n, o in outcomes.items()} == {0: 0, 1: 2, 2: 4}
