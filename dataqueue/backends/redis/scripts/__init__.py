"""The Lua scripts of the Redis backend, one file per script.

Each ``<name>.lua`` starts with a header naming its KEYS and ARGV. :func:`load`
prepends ``_lib.lua`` (shared helpers) and registers the scripts with redis-py's
``register_script``: calls go as EVALSHA, falling back to EVAL once after a server
restart or ``SCRIPT FLUSH``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

#: The scripts of this folder, by name (file name without ``.lua``).
SCRIPT_NAMES = (
    "add_jobs",
    "cancel_jobs",
    "cleanup_events",
    "cleanup_jobs",
    "edit_jobs",
    "page_all",
    "page_scan",
    "retry_job",
)


def source(name: str) -> str:
    """The full text of script ``name`` as sent to Redis (helpers included)."""
    folder = resources.files(__name__)
    library = folder.joinpath("_lib.lua").read_text(encoding="utf-8")
    return library + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def load(client: Any) -> dict[str, Any]:
    """Every script registered on ``client`` (redis-py ``Script`` objects), by name."""
    return {name: client.register_script(source(name)) for name in SCRIPT_NAMES}
