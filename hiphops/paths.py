"""Dot paths over the run context (`event.pull_request.base.ref`, `tasks.build.result.sha`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

#: The names a path may start with: the run context's top-level keys.
ROOTS: Final = ("event", "tasks", "vars", "run")


class _Missing:
    """Marks a path that leads nowhere; distinct from JSON null, which is a value."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

Path = tuple[str, ...]


class PathError(ValueError):
    """A dot path that is malformed."""


def parse_path(text: str) -> Path:
    """Split and check a dot path. Raises PathError for empty segments or an unknown root."""
    if not isinstance(text, str) or not text.strip():
        raise PathError("a path must be a non-empty string")
    segments = tuple(text.strip().split("."))
    if any(not s for s in segments):
        raise PathError(f"{text!r} has an empty segment")
    if segments[0] not in ROOTS:
        raise PathError(
            f"{text!r} must start with one of {', '.join(r + '.' for r in ROOTS)} "
            f"(did you mean 'event.{text}'?)"
        )
    return segments


def resolve(data: Any, path: Sequence[str]) -> Any:
    """The value at `path`, or MISSING. Numeric segments index lists; maps are indexed by key."""
    current = data
    for segment in path:
        # dict first: the ABC check for Mapping is several times slower, and this is the hot path.
        if isinstance(current, dict | Mapping):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list):
            if not segment.isdigit():
                return MISSING
            index = int(segment)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


#: What a path may read of a task: its lifecycle fields, and the time it reached each state.
TASK_FIELDS: Final = frozenset(
    {"id", "name", "state", "input", "result", "error"}
    | {"PENDING", "READY", "RUNNING", "COMPLETE", "FAILURE", "SKIPPED"}
)


def task_reference_problem(path: Path, task_ids: Sequence[str]) -> str | None:
    """Why a `tasks.<id>...` path cannot refer to a task of this sensor, or None when it can.

    Tasks are addressed by id or by index; `task_ids` lists the ids in task order.
    """
    if len(path) < 2 or path[0] != "tasks":
        return None
    ref = path[1]
    if ref not in task_ids and not (ref.isdigit() and int(ref) < len(task_ids)):
        known = ", ".join(task_ids) or "none"
        return f"no task {ref!r} in this sensor (task ids: {known})"
    if len(path) >= 3 and path[2] not in TASK_FIELDS:
        fields = ", ".join(sorted(TASK_FIELDS))
        return f"a task has no field {path[2]!r} (fields: {fields})"
    return None


def task_id_of(path: Path, task_ids: Sequence[str]) -> str | None:
    """The id of the task a `tasks.<id|index>...` path refers to, if any."""
    if len(path) < 2 or path[0] != "tasks":
        return None
    ref = path[1]
    if ref in task_ids:
        return ref
    if ref.isdigit() and int(ref) < len(task_ids):
        return task_ids[int(ref)]
    return None
