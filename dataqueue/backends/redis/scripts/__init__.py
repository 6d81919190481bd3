"""The Lua scripts of the Redis backend, one file per script.

Each ``<name>.lua`` starts with a header naming its KEYS and ARGV. :func:`load`
prepends ``_lib.lua`` (shared helpers) and registers the scripts with redis-py's
``register_script``: calls go as EVALSHA, falling back to EVAL once after a server
restart or ``SCRIPT FLUSH``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any


def script_names() -> tuple[str, ...]:
    """The scripts of this folder, by name (file name without ``.lua``; ``_lib`` is
    the shared prelude, not a script)."""
    folder = resources.files(__name__)
    names = (
        entry.name[: -len(".lua")]
        for entry in folder.iterdir()
        if entry.name.endswith(".lua") and not entry.name.startswith("_")
    )
    return tuple(sorted(names))


def source(name: str) -> str:
    """The full text of script ``name`` as sent to Redis (helpers included)."""
    folder = resources.files(__name__)
    library = folder.joinpath("_lib.lua").read_text(encoding="utf-8")
    return library + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def load(client: Any) -> dict[str, Any]:
    """Every script registered on ``client`` (redis-py ``Script`` objects), by name."""
    return {name: client.register_script(source(name)) for name in script_names()}
