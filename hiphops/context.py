"""The run context that paths and expressions read: `event`, `tasks`, `vars`, `run`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hiphops import js


class Context:
    """A read-only view of the context, with its JSON encoding for JavaScript made once, lazily.

    Many expressions are often evaluated over one event (a sensor's `$` clause, then each task's
    inputs); encoding the event once keeps each evaluation cheap.
    """

    __slots__ = ("_encoded", "data")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self._encoded: js.EncodedContext | None = None

    @classmethod
    def for_event(cls, event: Mapping[str, Any], vars: Mapping[str, Any] | None = None) -> Context:
        """The context a sensor's `when` sees: the event, no tasks yet."""
        return cls({"event": event, "tasks": {}, "vars": dict(vars or {}), "run": {}})

    @property
    def encoded(self) -> js.EncodedContext:
        if self._encoded is None:
            self._encoded = js.encode_context(self.data)
        return self._encoded
