"""Griffe extension: render the reST constructs of dataqueue's docstrings as Markdown.

The docstrings are written for ``help()`` and editors, in the reST flavour Python
itself uses: ``:class:`Name``` roles, ``.. code-block:: python`` directives and
paragraphs ending in ``::`` before an indented example. mkdocstrings reads Markdown,
so once the package is loaded this rewrites every docstring:

- roles become optional cross-references (``<autoref ... optional>``): a link when the
  target is documented on the site, plain code otherwise (builtins such as
  ``ValueError``, internal modules), never a broken link or a build warning;
- ``.. code-block:: LANG`` and ``::`` blocks become fenced code blocks;
- definition lists whose terms are inline code (````name````, then an indented
  description) become Markdown definition lists (the ``def_list`` extension).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|data|exc|obj|const):`([^`]+)`")
_CODE_BLOCK = re.compile(r"^(\s*)\.\. code-block::\s*(\w*)\s*$")
_LITERAL_INTRO = re.compile(r"^(\s*)(.*?)::\s*$")
_CODE_TERM = re.compile(r"^(\s*)``[^`]+``(\s*/\s*``[^`]+``)*\s*$")


class ReSTToMarkdown(griffe.Extension):
    """Rewrite reST roles and literal blocks in every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg, set()):
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)


def _walk(obj: griffe.Object, seen: set[str]) -> Any:
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member, seen)  # type: ignore[arg-type]


def convert(text: str, obj: griffe.Object | None = None) -> str:
    """``text`` with roles and literal blocks in Markdown (see the module docstring)."""
    text = _ROLE.sub(lambda match: _role(match, obj), text)
    return _definition_lists(_literal_blocks(text))


def _definition_lists(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    in_fence = False
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        term = None if in_fence else _CODE_TERM.match(line)
        if term and _next_is_indented(lines, index) and index + 1 < len(lines):
            indent = term.group(1)
            block, index = _indented_block(lines, index + 1, indent)
            body = _dedent(block)
            if out and out[-1].strip():
                out.append("")
            out.append(line)
            out.append(f"{indent}:   {body[0]}" if body else f"{indent}:")
            out.extend(f"{indent}    {rest}" if rest else "" for rest in body[1:])
            out.append("")
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


def _role(match: re.Match[str], obj: griffe.Object | None) -> str:
    target = match.group(2).strip()
    short = target.startswith("~")
    target = target.lstrip("~")
    shown = target.rsplit(".", 1)[-1] if short else target
    identifier = _resolve(target, obj)
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(shown)}</code></autoref>"
    )


def _resolve(target: str, obj: griffe.Object | None) -> str:
    """The full path of ``target`` as seen from ``obj``'s scope (unchanged if unknown)."""
    if obj is None:
        return target
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except Exception:
        return target
    return f"{resolved}.{rest}" if rest else resolved


def _literal_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        language = None
        directive = _CODE_BLOCK.match(line)
        if directive:
            language = directive.group(2) or "python"
            indent = directive.group(1)
        else:
            intro = _LITERAL_INTRO.match(line)
            if intro and not line.rstrip().endswith(":::") and _next_is_indented(lines, index):
                indent, body = intro.group(1), intro.group(2)
                if body:
                    out.append(f"{indent}{body}:")
                language = "python"
            else:
                out.append(line)
                index += 1
                continue
        block, index = _indented_block(lines, index + 1, indent)
        out.append("")
        out.append(f"{indent}```{language}")
        out.extend(f"{indent}{code}" if code else "" for code in _dedent(block))
        out.append(f"{indent}```")
        out.append("")
    return "\n".join(out)


def _next_is_indented(lines: list[str], index: int) -> bool:
    current = len(lines[index]) - len(lines[index].lstrip())
    for line in lines[index + 1 :]:
        if line.strip():
            return len(line) - len(line.lstrip()) > current
    return False


def _indented_block(lines: list[str], start: int, indent: str) -> tuple[list[str], int]:
    block: list[str] = []
    index = start
    while index < len(lines):
        line = lines[index]
        if line.strip() and len(line) - len(line.lstrip()) <= len(indent):
            break
        block.append(line)
        index += 1
    while block and not block[-1].strip():
        block.pop()
    while block and not block[0].strip():
        block.pop(0)
    return block, index


def _dedent(block: list[str]) -> list[str]:
    widths = [len(line) - len(line.lstrip()) for line in block if line.strip()]
    cut = min(widths, default=0)
    return [line[cut:] for line in block]
