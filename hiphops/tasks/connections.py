"""Which credentials a task uses: the project's Integration of the task's tool, resolved.

A `github.*` task in project N acts through a GitHub Integration of N: the one named by the
task's `integration` input if given, else the one the event came through when it is a GitHub
integration, else the project's only GitHub integration. The same rule holds for Slack.
Credentials are resolved from secrets when asked for, so a rotated Secret is used at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hiphops.integrations import Integration, SecretRef, SecretSource
from hiphops.tasks.registry import TaskError


@dataclass(frozen=True, repr=False)
class GitHubCredentials:
    """A GitHub API base URL with a token, or a GitHub App (id and private key)."""

    integration: str
    api_url: str
    token: str | None = None
    app_id: str | None = None
    private_key: bytes | None = None

    def __repr__(self) -> str:
        kind = "app" if self.app_id else "token"
        return f"GitHubCredentials({self.integration!r}, {self.api_url!r}, {kind}=<redacted>)"


@dataclass(frozen=True, repr=False)
class SlackCredentials:
    integration: str
    api_url: str
    bot_token: str

    def __repr__(self) -> str:
        return f"SlackCredentials({self.integration!r}, {self.api_url!r}, bot_token=<redacted>)"


class Connections(Protocol):
    """Resolves the credentials of the integration a task acts through. Raises TaskError with a
    clear reason (never a secret) when there is none, several, or a secret is missing."""

    def github(
        self, project: str, event: Mapping[str, Any], name: str | None
    ) -> GitHubCredentials: ...

    def slack(
        self, project: str, event: Mapping[str, Any], name: str | None
    ) -> SlackCredentials: ...


class StaticConnections:
    """Connections over a fixed set of Integrations and a secret source (local mode, tests)."""

    def __init__(self, integrations: Iterable[Integration], secrets: SecretSource) -> None:
        self._integrations = list(integrations)
        self._secrets = secrets

    def _choose(
        self, kind: str, project: str, event: Mapping[str, Any], name: str | None
    ) -> Integration:
        candidates = [i for i in self._integrations if i.project == project and i.type == kind]
        by_name = {i.name: i for i in candidates}
        if name is not None:
            if name not in by_name:
                raise TaskError(f"no {kind} integration {name!r} in project {project!r}")
            return by_name[name]
        hiphops = event.get("hiphops")
        if isinstance(hiphops, Mapping) and hiphops.get("source") == kind:
            arrived = by_name.get(str(hiphops.get("integration")))
            if arrived is not None:
                return arrived
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise TaskError(f"project {project!r} has no {kind} integration")
        names = ", ".join(sorted(by_name))
        raise TaskError(
            f"project {project!r} has several {kind} integrations ({names}): "
            "name one with the task's `integration` input"
        )

    def _secret(self, integration: Integration, ref: SecretRef, what: str) -> bytes:
        value = self._secrets.get(integration.project, ref)
        if value is None:
            raise TaskError(
                f"integration {integration.project}/{integration.name}: {what} ({ref}) not found"
            )
        return value

    def github(self, project: str, event: Mapping[str, Any], name: str | None) -> GitHubCredentials:
        integration = self._choose("github", project, event, name)
        if integration.app_id is not None and integration.private_key is not None:
            key = self._secret(integration, integration.private_key, "the GitHub App private key")
            return GitHubCredentials(
                integration.name, integration.api_url, app_id=integration.app_id, private_key=key
            )
        if integration.token is not None:
            token = self._secret(integration, integration.token, "the GitHub token")
            return GitHubCredentials(integration.name, integration.api_url, token=token.decode())
        raise TaskError(
            f"integration {integration.project}/{integration.name} has no credentials "
            "(set tokenSecretRef, or appID and privateKeySecretRef)"
        )

    def slack(self, project: str, event: Mapping[str, Any], name: str | None) -> SlackCredentials:
        integration = self._choose("slack", project, event, name)
        if integration.token is None:
            raise TaskError(
                f"integration {integration.project}/{integration.name} has no botTokenSecretRef"
            )
        token = self._secret(integration, integration.token, "the Slack bot token")
        return SlackCredentials(integration.name, integration.api_url, token.decode())
