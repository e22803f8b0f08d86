"""Which integrations exist, and their secrets: what the gateway looks a webhook path up in.

In a cluster the operator fills a directory from Integration resources and their Secrets; in
local mode and in tests a :class:`StaticDirectory` holds the configurations.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, repr=False)
class IntegrationConfig:
    """One integration as the gateway needs it: where it lives, its type and its secrets."""

    project: str  # the namespace
    name: str  # the Integration's name
    type: str  # "github" | "slack"
    # Webhook (GitHub) or signing (Slack) secrets; several while one is being rotated out.
    secrets: tuple[bytes, ...]

    def __repr__(self) -> str:
        # Configurations end up in logs and tracebacks: show how many secrets, never their values.
        return (
            f"IntegrationConfig(project={self.project!r}, name={self.name!r}, "
            f"type={self.type!r}, secrets=<{len(self.secrets)} redacted>)"
        )


class Directory(Protocol):
    """Looks integrations up by project (namespace) and name."""

    def get(self, project: str, name: str) -> IntegrationConfig | None:
        """The integration ``name`` in ``project``, or None if there is none."""
        ...


class StaticDirectory:
    """A dict-backed :class:`Directory`; :meth:`replace` swaps the whole set atomically."""

    def __init__(self, configs: Iterable[IntegrationConfig] = ()) -> None:
        self._by_key = _index(configs)

    def get(self, project: str, name: str) -> IntegrationConfig | None:
        """The integration ``name`` in ``project``, or None if there is none."""
        return self._by_key.get((project, name))

    def replace(self, configs: Iterable[IntegrationConfig]) -> None:
        """Serve ``configs`` from now on, replacing every previous configuration.

        The new index is built first and then swapped in with one assignment, so a concurrent
        ``get`` sees either the old set or the new one, never a mixture. Raises ValueError
        (leaving the previous set in place) if two configurations share a project and name.
        """
        self._by_key = _index(configs)


def _index(configs: Iterable[IntegrationConfig]) -> dict[tuple[str, str], IntegrationConfig]:
    by_key: dict[tuple[str, str], IntegrationConfig] = {}
    for config in configs:
        key = (config.project, config.name)
        if key in by_key:
            raise ValueError(
                f"integration {config.name!r} is configured twice in project {config.project!r}"
            )
        by_key[key] = config
    return by_key


def to_wire(config: IntegrationConfig) -> dict[str, Any]:
    """The JSON form in which the operator hands a configuration to a gateway Deployment."""
    return {
        "project": config.project,
        "name": config.name,
        "type": config.type,
        "secrets": [base64.b64encode(secret).decode() for secret in config.secrets],
    }


def from_wire(data: Mapping[str, Any]) -> IntegrationConfig:
    """The inverse of `to_wire`. Raises ValueError (with no secret in it) when malformed."""
    try:
        secrets = tuple(base64.b64decode(s, validate=True) for s in data["secrets"])
        config = IntegrationConfig(
            project=str(data["project"]),
            name=str(data["name"]),
            type=str(data["type"]),
            secrets=secrets,
        )
    except (KeyError, TypeError, ValueError):
        raise ValueError("malformed integration in the directory") from None
    if config.type not in ("github", "slack"):
        raise ValueError(f"unknown integration type {config.type!r} in the directory")
    return config
