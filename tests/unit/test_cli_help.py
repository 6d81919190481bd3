"""The command line explains itself: every flag of every command has help text."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import pytest

from dataqueue.cli import _log_level, build_parser


def _actions(parser: argparse.ArgumentParser, name: str) -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                found += _actions(sub, command)
        elif not isinstance(action, argparse._HelpAction):
            found.append((name, action))
    return found


def test_every_flag_and_argument_has_help_text() -> None:
    missing = [
        f"{command} {action.option_strings or action.dest}"
        for command, action in _actions(build_parser(), "dataqueue")
        if not action.help
    ]
    assert missing == []


def test_version_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dataqueue", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith("dataqueue ")


@pytest.mark.parametrize(
    ("text", "level"),
    [("debug", logging.DEBUG), (" INFO ", logging.INFO), ("error", logging.ERROR)],
)
def test_log_levels(text: str, level: int) -> None:
    assert _log_level(text) == level


def test_bad_log_level_is_a_usage_error_naming_the_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dataqueue", "worker", "m:H", "--log-level", "loud"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid log level 'loud'" in result.stderr
