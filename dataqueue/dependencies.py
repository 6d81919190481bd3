"""Pure rules for job dependencies: normalisation and batch placeholders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dataqueue.errors import InvalidJobError, JobDependencyError
from dataqueue.records import DependsOn


def batch_dep_ref(index: int) -> int:
    """Placeholder for "the job at ``index`` of this ``add_jobs`` call" in ``depends_on``.

    Returns ``-(index + 1)``. Raises :class:`ValueError` for a negative or
    non-integer index.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InvalidJobError(f"batch_dep_ref: expected non-negative integer index, got {index!r}")
    return -(index + 1)


def _dedupe(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for value in values:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


def normalise_depends_on(
    depends_on: DependsOn | Mapping[str, Any] | None,
) -> tuple[list[int] | None, list[str] | None]:
    """Validate ``depends_on`` and return ``(job_ids, tags)``.

    Empty lists mean "absent" (None); duplicates are dropped keeping first-seen order.
    Raises :class:`JobDependencyError` for non-integer ids and :class:`InvalidJobError`
    for malformed tags or unknown keys.
    """
    if depends_on is None:
        return None, None
    if isinstance(depends_on, DependsOn):
        raw_ids, raw_tags = depends_on.job_ids, depends_on.tags
    elif isinstance(depends_on, Mapping):
        unknown = set(depends_on) - {"job_ids", "tags"}
        if unknown:
            raise InvalidJobError(
                f"depends_on: unknown key(s) {sorted(unknown)!r}; expected 'job_ids' and/or 'tags'"
            )
        raw_ids, raw_tags = depends_on.get("job_ids"), depends_on.get("tags")
    else:
        raise InvalidJobError(
            f"depends_on must be a DependsOn or a mapping, got {type(depends_on).__name__}"
        )
    job_ids = None
    if raw_ids is not None:
        if isinstance(raw_ids, str | bytes) or not isinstance(raw_ids, Iterable):
            raise JobDependencyError(f"depends_on.job_ids must be a list of ints, got {raw_ids!r}")
        raw_list = list(raw_ids)
        bad = [v for v in raw_list if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise JobDependencyError(f"depends_on.job_ids must be integers, got {bad!r}")
        job_ids = _dedupe(raw_list) or None
    tags = None
    if raw_tags is not None:
        tags = _dedupe(validate_tags(raw_tags, what="depends_on.tags")) or None
    return job_ids, tags


def validate_tags(tags: Any, *, what: str = "tags") -> list[str]:
    """Return ``tags`` as a list of strings or raise :class:`InvalidJobError`."""
    if isinstance(tags, str | bytes) or not isinstance(tags, list | tuple):
        raise InvalidJobError(f"{what} must be a list of strings, got {tags!r}")
    bad = [t for t in tags if not isinstance(t, str) or "\x00" in t]
    if bad:
        raise InvalidJobError(f"{what} must contain only strings, got {bad!r}")
    return list(tags)


def resolve_batch_placeholders(job_ids: list[int], position: int, batch_size: int) -> None:
    """Check that every placeholder in ``job_ids`` names an earlier job of the batch.

    ``position`` is the index of the job that carries ``job_ids``. Raises
    :class:`JobDependencyError` for a placeholder that points at itself, a later job or
    outside the batch (which also rules out cycles inside one batch).
    """
    for job_id in job_ids:
        if job_id >= 0:
            continue
        index = -job_id - 1
        if index >= position:
            raise JobDependencyError(
                f"Invalid batch-relative job id {job_id}: index {index} out of range for "
                f"{position} inserted job(s) (job {position} of {batch_size} may only depend "
                "on earlier jobs of the batch)",
                [job_id],
            )
