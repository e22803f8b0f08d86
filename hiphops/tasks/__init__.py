"""Task handlers (DESIGN §5): the registry and the built-in integrations."""

from __future__ import annotations

from hiphops.tasks import log
from hiphops.tasks.registry import Registry, TaskCall, TaskError, TaskHandler

__all__ = ["Registry", "TaskCall", "TaskError", "TaskHandler", "default_registry"]


def default_registry() -> Registry:
    """A registry holding every built-in handler."""
    registry = Registry()
    registry.register("log.message", log.message)
    return registry
