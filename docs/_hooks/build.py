"""MkDocs hooks of the documentation site (``hooks:`` in ``mkdocs.yml``).

- ``<!-- dataqueue-help: worker -->`` in a page is replaced by the real ``--help``
  text of that command (``<!-- dataqueue-help: -->`` for the program itself), taken
  from :func:`dataqueue.cli.build_parser` at build time, so the CLI reference never
  drifts from the code.
- Every name in ``dataqueue.__all__`` must be rendered by a ``::: dataqueue.<name>``
  directive on some page under ``reference/api/``; a missing one fails the build and
  names the page to add it to.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

_HELP_MARKER = re.compile(r"<!--\s*dataqueue-help:\s*([\w-]*)\s*-->")
_DIRECTIVE = re.compile(r"^:::\s*(\S+)", re.MULTILINE)
#: Width of the generated help text (argparse reads COLUMNS).
_HELP_WIDTH = "88"


def on_pre_build(config: Any, **kwargs: Any) -> None:
    _check_api_coverage(Path(config["docs_dir"]) / "reference" / "api")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if "dataqueue-help:" not in markdown:
        return markdown
    return _HELP_MARKER.sub(lambda match: _help_block(match.group(1)), markdown)


def _help_block(command: str) -> str:
    return "```text\n" + command_help(command).rstrip() + "\n```"


def command_help(command: str) -> str:
    """``dataqueue [COMMAND] --help`` as argparse prints it, ``_HELP_WIDTH`` columns wide."""
    from dataqueue.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _HELP_WIDTH
    try:
        parser = build_parser()
        if not command:
            return parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return str(action.choices[command].format_help())
        raise PluginError(f"docs: 'dataqueue {command}' is no command of the CLI")
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _check_api_coverage(api_dir: Path) -> None:
    import dataqueue

    documented: set[str] = set()
    for page in api_dir.glob("*.md"):
        for target in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            documented.add(target)
    missing = [
        name
        for name in dataqueue.__all__
        if f"dataqueue.{name}" not in documented and name != "__version__"
    ]
    if missing:
        raise PluginError(
            "docs: public names without an API reference entry: "
            + ", ".join(missing)
            + ". Add a '::: dataqueue.<name>' line for each to a page in docs/reference/api/."
        )
