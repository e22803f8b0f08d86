"""The `github.*` integration: task handlers acting on GitHub or GitHub Enterprise Server.

`register` adds every handler to a registry; `GitHubTasks` does the same with a chosen client
pool (retry policy, timeouts, clock) and can close its connections.
"""

from __future__ import annotations

from hiphops.tasks.connections import Connections
from hiphops.tasks.github.client import GitHubClients
from hiphops.tasks.github.tasks import GitHubTasks
from hiphops.tasks.registry import Registry

__all__ = ["GitHubClients", "GitHubTasks", "register"]


def register(registry: Registry, connections: Connections) -> None:
    """Register every `github.*` handler, acting through `connections`' GitHub integrations."""
    GitHubTasks(connections).register(registry)
