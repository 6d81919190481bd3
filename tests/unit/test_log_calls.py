"""Every log call of the library passes its facts as ``extra`` (structured logs)."""

from __future__ import annotations

import ast
from pathlib import Path

import dataqueue

_LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
_PACKAGE = Path(dataqueue.__file__).parent


def _log_calls_without_extra(path: Path) -> list[str]:
    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver = ast.unparse(node.func.value)
        if node.func.attr not in _LEVELS or not receiver.endswith(("logger", "log", ")")):
            continue
        if receiver.endswith(")") and "getLogger" not in receiver:
            continue
        if not any(keyword.arg == "extra" for keyword in node.keywords):
            missing.append(f"{path.relative_to(_PACKAGE.parent)}:{node.lineno}")
    return missing


def test_every_log_call_passes_extra() -> None:
    missing = [where for path in _PACKAGE.rglob("*.py") for where in _log_calls_without_extra(path)]
    assert missing == [], "log calls without extra= (see dataqueue/logs.py): " + ", ".join(missing)
