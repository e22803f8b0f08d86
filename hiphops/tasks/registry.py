"""Task handlers by name (`<integration>.<task>`, DESIGN §5) and what a handler receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hiphops.sensor import TASK_NAME


@dataclass(frozen=True)
class TaskCall:
    """One call of a handler: the rendered input plus where it comes from.

    `input` and `event` belong to the run record: handlers read them and never modify them.
    `attempt` counts from 1; it is higher when the task is started again after a restart.
    """

    run: str
    task_id: str
    name: str
    input: Mapping[str, Any]
    event: Mapping[str, Any]
    project: str
    attempt: int


class TaskError(Exception):
    """A handler failed; `str(error)` becomes the task's error, so it must never hold a secret."""


#: A handler: awaited with the call, returns the task's JSON result or raises TaskError.
TaskHandler = Callable[[TaskCall], Awaitable[Any]]


class Registry:
    """The handlers the executor can call, by task name."""

    def __init__(self) -> None:
        self._handlers: dict[str, TaskHandler] = {}

    def register(self, name: str, handler: TaskHandler) -> None:
        """Add the handler for tasks named `name`; a name can be registered once."""
        if not TASK_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a task name (<integration>.<task>)")
        if name in self._handlers:
            raise ValueError(f"a handler for {name!r} is already registered")
        self._handlers[name] = handler

    def get(self, name: str) -> TaskHandler | None:
        """The handler for `name`, or None when there is none."""
        return self._handlers.get(name)

    def names(self) -> list[str]:
        """Every registered task name, sorted."""
        return sorted(self._handlers)
