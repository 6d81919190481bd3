"""Run a handler in a child process that is killed at its deadline (``force_kill_on_timeout``).

A thread cannot be stopped from outside, so a job with ``force_kill_on_timeout`` and a
``timeout_ms`` runs its handler in a fresh interpreter (the multiprocessing *spawn* start
method: never ``fork``, which would copy the parent's locks, threads and database sockets).
At the deadline the child is killed (SIGKILL on POSIX, ``TerminateProcess`` on Windows), so
a handler that ignores its signal, blocks in C code or ignores SIGTERM still stops.

What the child receives:

- The handler by reference: its ``module`` and ``qualname``. The child imports the module
  and looks the name up, so the handler must be a module-level function
  (:func:`validate_handler_serializable` says why one is not).
- The payload, pickled.
- ``signal``: an :class:`IsolatedAbortSignal`, which is never aborted (the process is
  killed instead). There is no ``ctx``: progress, output, steps, waits and tokens are not
  available. Handlers taking one positional parameter are called with ``(payload)``.

The handler's return value must be JSON-serialisable (see :mod:`dataqueue.payload`); it is
encoded in the child and decoded in the parent, so the parent receives plain JSON values.

The clock: ``timeout_ms`` starts when the child is about to call the handler, as with a
thread-run handler. Starting the interpreter and importing the handler's module is bounded
separately (``max(timeout_ms, 30 s)``), so a slow import is not mistaken for a slow job,
yet a child that hangs while importing is still killed.

The child is a daemonic process: it is terminated if the parent exits normally while it
runs, and it cannot start ``multiprocessing`` children of its own (``subprocess`` works).

Like every spawn child, the child imports the parent's ``__main__`` module again (as
``__mp_main__``) before it runs anything. A worker script must therefore keep its start-up
code under ``if __name__ == "__main__":``, or be started with ``python -m``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import multiprocessing
import pickle
import signal as signals
import threading
import time
import traceback
import types
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import attrs

from dataqueue.payload import encode_json

logger = logging.getLogger("dataqueue.isolated")

#: How long the interpreter start-up and the handler import may take, at least.
STARTUP_LIMIT_SECONDS = 30.0
#: How long a child that has reported its result may take to exit before it is killed.
EXIT_GRACE_SECONDS = 2.0
#: How long to wait for a killed child to be reaped before giving up (and logging).
KILL_REAP_SECONDS = 5.0

# What _next_report returns besides a decoded message.
_NO_REPORT_YET = object()
_EXITED = object()

_MAIN_MODULE_NAMES = frozenset({"__main__", "__mp_main__"})
_NATIVE_CALLABLE_TYPES = (
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


@attrs.frozen
class HandlerCheck:
    """Whether a handler can run in a child process; ``error`` says why not."""

    is_serializable: bool
    error: str | None = None


@attrs.frozen
class IsolatedOutcome:
    """How an isolated handler run ended.

    ``kind`` is ``completed`` (``output`` holds the decoded JSON return value, ``None`` when
    the handler returned ``None``), ``failed`` (``error_message`` is set) or ``timeout``.
    ``error_type`` and ``error_traceback`` are set only when an exception was raised in the
    child (by the handler, its import or the output encoding); a timeout, a crash or a
    handler that fails validation leaves them ``None``.
    """

    kind: Literal["completed", "failed", "timeout"]
    output: Any = None
    error_message: str | None = None
    error_type: str | None = None
    error_traceback: str | None = None


class IsolatedAbortSignal:
    """The ``signal`` a handler receives in a child process.

    Same interface as the thread-mode signal, but it is never aborted: at the deadline the
    whole process is killed. ``wait(timeout)`` therefore just sleeps and returns ``False``
    (``wait()`` with no timeout blocks until the process is killed).
    """

    @property
    def aborted(self) -> bool:
        """Always ``False``."""
        return False

    @property
    def reason(self) -> str | None:
        """Always ``None``."""
        return None

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep for ``timeout`` seconds (forever when ``None``) and return ``False``."""
        if timeout is None:
            threading.Event().wait()
        elif timeout > 0:
            time.sleep(timeout)
        return False

    def raise_if_aborted(self) -> None:
        """Do nothing: the signal is never aborted."""


# --- validation -------------------------------------------------------------------------


def validate_handler_serializable(
    handler: Callable[..., Any], job_type: str | None = None
) -> HandlerCheck:
    """Check that ``handler`` can be run in a child process (``force_kill_on_timeout``).

    A handler qualifies when it is a plain Python function defined at module level in an
    importable module: ``module:qualname`` must import to the very same object and the
    function must pickle. Lambdas, nested functions (closures), bound methods, builtins,
    other callables (``functools.partial``, instances with ``__call__``) and functions
    defined in the ``__main__`` script do not; ``error`` then says why, labelled with
    ``job type "<job_type>"`` (or ``handler`` when no job type is given). Never raises.
    """
    label = f'job type "{job_type}"' if job_type else "handler"
    try:
        problem = _serialization_problem(handler, label)
    except Exception as exc:
        where = f' for job type "{job_type}"' if job_type else ""
        return HandlerCheck(False, f"Failed to validate handler serialization{where}: {exc}")
    return HandlerCheck(problem is None, problem)


def _serialization_problem(handler: Any, label: str) -> str | None:
    if isinstance(handler, _NATIVE_CALLABLE_TYPES):
        return (
            f"Handler for {label} contains native code which cannot be serialized. "
            "Ensure your handler is a plain function when force_kill_on_timeout is enabled."
        )
    if inspect.ismethod(handler):
        return _not_module_level(label, "is a bound method")
    if not inspect.isfunction(handler):
        return _not_importable(label, f"a {type(handler).__name__} object is not a plain function")
    if handler.__name__ == "<lambda>":
        return _not_module_level(label, "is a lambda")
    if "<locals>" in handler.__qualname__:
        return _not_module_level(label, "is a nested function (closure)")
    if handler.__module__ in _MAIN_MODULE_NAMES:
        return _not_importable(
            label,
            f"{handler.__qualname__} is defined in the __main__ script, which a worker process "
            "cannot import by name; move it into a module",
        )
    return _reference_problem(handler, label)


def _reference_problem(handler: types.FunctionType, label: str) -> str | None:
    reference = f"{handler.__module__}:{handler.__qualname__}"
    try:
        module = importlib.import_module(handler.__module__)
        resolved = _resolve_qualname(module, handler.__qualname__)
    except Exception as exc:
        return _not_importable(label, f"{reference} cannot be imported ({_describe(exc)})")
    if getattr(module, "__spec__", None) is None:
        return _not_importable(
            label, f"module {handler.__module__} was not imported from a module path"
        )
    if resolved is not handler:
        return _not_importable(label, f"{reference} refers to a different object")
    try:
        pickle.dumps(handler)
    except Exception as exc:
        return _not_importable(label, f"pickling failed ({_describe(exc)})")
    return None


def _not_module_level(label: str, what: str) -> str:
    return (
        f"Handler for {label} {what}, which cannot be run in a separate process. "
        "Define it as a module-level function when force_kill_on_timeout is enabled."
    )


def _not_importable(label: str, reason: str) -> str:
    return (
        f"Handler for {label} cannot be serialized: {reason}. When using "
        "force_kill_on_timeout, handlers must be module-level functions importable by "
        "module path."
    )


def _resolve_qualname(module: types.ModuleType, qualname: str) -> Any:
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- parent side ------------------------------------------------------------------------


def run_isolated(
    handler: Callable[..., Any],
    payload: Any,
    timeout_ms: int,
    *,
    job_id: int,
    job_type: str,
) -> IsolatedOutcome:
    """Run ``handler(payload, signal)`` in a spawned child process; kill it at the deadline.

    Blocks the calling (worker) thread until the child reports, exits or is killed, and
    always reaps the child. Never raises: every problem becomes an outcome.

    - The handler returns: ``completed`` with the decoded JSON ``output``.
    - The handler raises: ``failed`` with the exception's message (its ``repr`` when the
      message is empty), class name and formatted traceback.
    - The handler is still running ``timeout_ms`` after it was called: the child is killed
      and the outcome is ``timeout``, ``Job timed out after <timeout_ms> ms and was
      forcefully terminated``.
    - The child exits without reporting (``os._exit``, ``sys.exit``, a segfault, the OOM
      killer): ``failed``, ``Worker stopped with exit code <code>`` (negative: the signal
      number that ended it, as :attr:`multiprocessing.Process.exitcode` reports it).
    - The child cannot import the handler: ``failed``, ``Handler cannot be deserialized in
      worker process. …``.
    - The handler fails :func:`validate_handler_serializable`, ``timeout_ms`` is not
      positive, the return value is not JSON-serialisable, or the child cannot be started:
      ``failed`` with a message saying so.
    """
    check = validate_handler_serializable(handler, job_type)
    if not check.is_serializable:
        return IsolatedOutcome("failed", error_message=check.error)
    if timeout_ms <= 0:
        return IsolatedOutcome(
            "failed", error_message=f"timeout_ms must be positive to run isolated: {timeout_ms}"
        )
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main,
        args=(
            sender,
            getattr(handler, "__module__", ""),
            getattr(handler, "__qualname__", ""),
            payload,
        ),
        name=f"dataqueue-isolated-{job_id}",
        daemon=True,
    )
    try:
        try:
            process.start()
        except Exception as exc:
            logger.exception(
                "Job %s (%s): could not start a worker process",
                job_id,
                job_type,
                extra={"action": "child_start_failed", "job_id": job_id, "job_type": job_type},
            )
            return IsolatedOutcome(
                "failed", error_message=f"Worker process could not be started: {_describe(exc)}"
            )
        finally:
            # Only the child may hold the write end: its exit must read as end-of-file here.
            sender.close()
        logger.debug(
            "Job %s (%s): worker process %s started",
            job_id,
            job_type,
            process.pid,
            extra={
                "action": "child_started",
                "job_id": job_id,
                "job_type": job_type,
                "pid": process.pid,
            },
        )
        return _supervise(process, receiver, timeout_ms, job_id)
    finally:
        receiver.close()
        _release(process)


def _supervise(
    process: BaseProcess, receiver: Connection, timeout_ms: int, job_id: int
) -> IsolatedOutcome:
    startup_seconds = max(timeout_ms / 1000, STARTUP_LIMIT_SECONDS)
    report = _next_report(process, receiver, time.monotonic() + startup_seconds)
    if report is _NO_REPORT_YET:
        logger.warning(
            "Job %s: worker process %s did not start the handler within %.0f s; killing it",
            job_id,
            process.pid,
            startup_seconds,
            extra={
                "action": "child_start_timed_out",
                "job_id": job_id,
                "pid": process.pid,
                "timeout_ms": startup_seconds * 1000,
            },
        )
        _kill(process)
        return IsolatedOutcome(
            "failed",
            error_message=(
                f"Worker process did not start the handler within {startup_seconds:.0f} s "
                "and was forcefully terminated"
            ),
        )
    if isinstance(report, dict) and report.get("kind") == "started":
        report = _next_report(process, receiver, time.monotonic() + timeout_ms / 1000)
    if report is _NO_REPORT_YET:
        logger.warning(
            "Job %s timed out after %s ms; killing worker process %s",
            job_id,
            timeout_ms,
            process.pid,
            extra={
                "action": "child_timed_out",
                "job_id": job_id,
                "pid": process.pid,
                "timeout_ms": timeout_ms,
            },
        )
        _kill(process)
        return IsolatedOutcome(
            "timeout",
            error_message=f"Job timed out after {timeout_ms} ms and was forcefully terminated",
        )
    _reap(process)
    if report is _EXITED:
        logger.warning(
            "Job %s: worker process %s stopped with exit code %s without reporting",
            job_id,
            process.pid,
            process.exitcode,
            extra={
                "action": "child_exited",
                "job_id": job_id,
                "pid": process.pid,
                "exit_code": process.exitcode,
            },
        )
        return IsolatedOutcome(
            "failed", error_message=f"Worker stopped with exit code {process.exitcode}"
        )
    return _outcome_from_report(report)


def _next_report(process: BaseProcess, receiver: Connection, deadline: float) -> Any:
    """The child's next message, ``_EXITED`` if it ended without one, ``_NO_REPORT_YET``."""
    ready = wait([receiver, process.sentinel], timeout=max(0.0, deadline - time.monotonic()))
    if not ready:
        return _NO_REPORT_YET
    # A child that reported and then exited leaves its message readable after the exit.
    if receiver in ready or receiver.poll(0):
        try:
            return json.loads(receiver.recv_bytes())
        except EOFError:
            return _EXITED
    return _EXITED


def _outcome_from_report(report: Any) -> IsolatedOutcome:
    if not isinstance(report, dict) or report.get("kind") not in ("completed", "failed"):
        return IsolatedOutcome("failed", error_message=f"Unexpected worker report: {report!r}")
    if report["kind"] == "completed":
        text = report.get("output")
        return IsolatedOutcome("completed", output=None if text is None else json.loads(text))
    return IsolatedOutcome(
        "failed",
        error_message=report.get("error_message"),
        error_type=report.get("error_type"),
        error_traceback=report.get("error_traceback"),
    )


def _reap(process: BaseProcess) -> None:
    """Wait briefly for a child that is done (or dead) to exit; kill it if it lingers."""
    process.join(EXIT_GRACE_SECONDS)
    if process.exitcode is None:
        logger.warning(
            "Worker process %s did not exit %.0f s after reporting; killing it",
            process.pid,
            EXIT_GRACE_SECONDS,
            extra={"action": "child_lingered", "pid": process.pid},
        )
        _kill(process)


def _kill(process: BaseProcess) -> None:
    process.kill()
    process.join(KILL_REAP_SECONDS)
    if process.exitcode is None:
        logger.error(
            "Worker process %s is still alive %.0f s after being killed",
            process.pid,
            KILL_REAP_SECONDS,
            extra={"action": "child_unkillable", "pid": process.pid},
        )


def _release(process: BaseProcess) -> None:
    if process.exitcode is None and process.pid is not None:
        return  # still alive after a kill (logged); closing would raise
    try:
        process.close()
    except ValueError:
        logger.debug(
            "Worker process %s could not be closed",
            process.pid,
            exc_info=True,
            extra={"action": "child_close_failed", "pid": process.pid},
        )


# --- child side -------------------------------------------------------------------------


def _child_main(sender: Connection, module_name: str, qualname: str, payload: Any) -> None:
    """Entry point of the child process: import, call, encode, report, exit."""
    # Ctrl-C in a terminal reaches the whole process group; like a worker thread, the child
    # ignores it and leaves the decision (drain, kill at the deadline) to the parent.
    signals.signal(signals.SIGINT, signals.SIG_IGN)
    try:
        report = _run_handler(sender, module_name, qualname, payload)
        sender.send_bytes(json.dumps(report).encode("ascii"))
    finally:
        sender.close()


def _run_handler(
    sender: Connection, module_name: str, qualname: str, payload: Any
) -> dict[str, Any]:
    try:
        handler = _resolve_qualname(importlib.import_module(module_name), qualname)
        if not callable(handler):
            raise TypeError(f"{module_name}:{qualname} is not callable")
    except Exception as exc:
        return _failure_report(
            f"Handler cannot be deserialized in worker process. {_describe(exc)}", exc
        )
    sender.send_bytes(json.dumps({"kind": "started"}).encode("ascii"))
    try:
        result = _call_handler(handler, payload)
    except SystemExit:
        raise  # the process exits with the handler's code: reported as a crash
    except BaseException as exc:
        return _failure_report(str(exc) or repr(exc), exc)
    if result is None:
        return {"kind": "completed", "output": None}
    try:
        output = encode_json(result, what="Handler output")
    except ValueError as exc:
        return _failure_report(str(exc), exc)
    return {"kind": "completed", "output": output}


def _call_handler(handler: Callable[..., Any], payload: Any) -> Any:
    accepted, required = _positional_parameters(handler)
    if required > 2:
        raise TypeError(
            "the handler requires a ctx argument, which is not available when "
            "force_kill_on_timeout is enabled: it receives only (payload, signal)"
        )
    result = handler(payload) if accepted < 2 else handler(payload, IsolatedAbortSignal())
    if inspect.isawaitable(result):  # an async def handler: the child runs its own loop
        return asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _positional_parameters(handler: Callable[..., Any]) -> tuple[int, int]:
    """How many positional arguments ``handler`` accepts and requires (accepts 2 if unknown)."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return 2, 0
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    accepted = len(positional)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        accepted = max(accepted, 2)
    required = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    return accepted, required


def _failure_report(message: str, exc: BaseException) -> dict[str, Any]:
    return {
        "kind": "failed",
        "error_message": message,
        "error_type": type(exc).__name__,
        "error_traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
