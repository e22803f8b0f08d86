"""Task handlers (DESIGN §5): the registry and the built-in integrations."""

from __future__ import annotations

from hiphops.integrations import EnvSecrets
from hiphops.tasks import github, log, slack
from hiphops.tasks.connections import Connections, StaticConnections
from hiphops.tasks.registry import Registry, TaskCall, TaskError, TaskHandler

__all__ = ["Registry", "TaskCall", "TaskError", "TaskHandler", "default_registry"]


def default_registry(connections: Connections | None = None) -> Registry:
    """A registry holding every built-in handler, acting through `connections`. Without
    connections, `github.*` and `slack.*` tasks fail with "project ... has no ... integration"."""
    connections = connections or StaticConnections((), EnvSecrets({}))
    registry = Registry()
    registry.register("log.message", log.message)
    github.register(registry, connections)
    slack.register(registry, connections)
    return registry
