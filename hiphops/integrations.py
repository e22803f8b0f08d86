"""Integrations (DESIGN §2): how a project connects to a tool, and the secrets they reference.

The engine reads Integration manifests and resolves their secret references through a
`SecretSource`: Secret manifests and environment variables in local mode, the Kubernetes API in
the operator. Secret values are bytes held only here; they are never part of a repr or an error.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from hiphops.problems import Problem, Problems, SensorInvalid, join_path

TYPES: Final = ("github", "slack")
DEFAULT_API_URLS: Final = {"github": "https://api.github.com", "slack": "https://slack.com/api/"}


@dataclass(frozen=True)
class SecretRef:
    """A key of a Secret in the integration's namespace."""

    name: str
    key: str

    def __str__(self) -> str:
        return f"secret {self.name}/{self.key}"


@dataclass(frozen=True)
class Integration:
    """A parsed Integration. Secrets are references here; values are resolved separately."""

    name: str
    project: str
    type: str
    api_url: str
    app_id: str | None = None
    private_key: SecretRef | None = None
    token: SecretRef | None = None
    webhook_secrets: tuple[SecretRef, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str]:
        return (self.project, self.name)

    @property
    def webhook_path(self) -> str:
        """The gateway path to configure on the tool."""
        return f"/hooks/{self.type}/{self.project}/{self.name}"


class IntegrationInvalid(SensorInvalid):
    """An Integration manifest failed validation; `problems` lists every error."""


def _ref(raw: Any, where: str, problems: Problems) -> SecretRef | None:
    if not isinstance(raw, Mapping):
        problems.error(where, "must be a secret reference {name, key}")
        return None
    name, key = raw.get("name"), raw.get("key")
    if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
        problems.error(where, "a secret reference needs a non-empty `name` and `key`")
        return None
    extra = set(raw) - {"name", "key"}
    if extra:
        problems.error(where, f"unknown field(s) {', '.join(sorted(map(str, extra)))}")
    return SecretRef(name=name, key=key)


def _refs(raw: Any, where: str, problems: Problems) -> tuple[SecretRef, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.error(where, "must be a list of secret references (several allow rotation)")
        return ()
    refs = [_ref(item, join_path(where, i), problems) for i, item in enumerate(raw)]
    return tuple(r for r in refs if r is not None)


_FIELDS: Final = {
    "github": ("apiURL", "appID", "privateKeySecretRef", "tokenSecretRef", "webhookSecretRefs"),
    "slack": ("apiURL", "botTokenSecretRef", "signingSecretRefs"),
}


def parse_integration(manifest: Mapping[str, Any], *, default_project: str) -> Integration:
    """Parse an Integration manifest. Raises IntegrationInvalid listing every problem."""
    problems = Problems()
    metadata = manifest.get("metadata") if isinstance(manifest.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    name = metadata.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        problems.error("metadata.name", "required: a DNS-1123 name")
        name = ""
    project = str(metadata.get("namespace") or default_project)
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        raise IntegrationInvalid([Problem("spec", "required: a map with `type`")])
    kind = spec.get("type")
    if kind not in TYPES:
        problems.error("spec.type", f"must be one of {', '.join(TYPES)}")
        raise IntegrationInvalid(problems.items)
    for key in spec:
        if key not in ("type", kind):
            problems.error(join_path("spec", str(key)), f"unknown field for a {kind} integration")
    body = spec.get(kind)
    if body is None:
        body = {}
    elif not isinstance(body, Mapping):
        problems.error(join_path("spec", kind), "must be a map")
        body = {}
    where = join_path("spec", kind)
    for key in body:
        if key not in _FIELDS[kind]:
            problems.error(
                join_path(where, str(key)), f"unknown field (known: {', '.join(_FIELDS[kind])})"
            )
    api_url = body.get("apiURL") or DEFAULT_API_URLS[kind]
    if not isinstance(api_url, str) or not re.match(r"^https?://", api_url):
        problems.error(join_path(where, "apiURL"), "must be an http(s) URL")

    def optional_ref(key: str) -> SecretRef | None:
        return _ref(body[key], join_path(where, key), problems) if key in body else None

    app_id = body.get("appID")
    if app_id is not None and (isinstance(app_id, bool) or not isinstance(app_id, str | int)):
        problems.error(join_path(where, "appID"), "must be a string or a number")
        app_id = None
    private_key = optional_ref("privateKeySecretRef")
    if kind == "github":
        token = optional_ref("tokenSecretRef")
        secrets_key = "webhookSecretRefs"
        if (app_id is None) != (private_key is None):
            problems.error(where, "a GitHub App needs both `appID` and `privateKeySecretRef`")
    else:
        token = optional_ref("botTokenSecretRef")
        secrets_key = "signingSecretRefs"
    integration = Integration(
        name=name,
        project=project,
        type=kind,
        api_url=str(api_url),
        app_id=None if app_id is None else str(app_id),
        private_key=private_key,
        token=token,
        webhook_secrets=_refs(body.get(secrets_key), join_path(where, secrets_key), problems),
    )
    if problems.errors:
        raise IntegrationInvalid(problems.items)
    return integration


class SecretSource(Protocol):
    def get(self, project: str, ref: SecretRef) -> bytes | None:
        """The secret's value, or None when it does not exist."""


class ManifestSecrets:
    """Secrets from `kind: Secret` manifests (`data` base64, `stringData` plain), as in kubectl."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str, str], bytes] = {}

    def add_manifest(self, manifest: Mapping[str, Any], *, default_project: str) -> list[str]:
        """Add a Secret manifest's keys; returns problems (never including a value)."""
        metadata = manifest.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not isinstance(name, str) or not name:
            return ["metadata.name: required"]
        assert isinstance(metadata, Mapping)
        project = str(metadata.get("namespace") or default_project)
        errors = []
        data = manifest.get("data") or {}
        for key, value in data.items() if isinstance(data, Mapping) else ():
            try:
                self._values[(project, name, str(key))] = base64.b64decode(
                    str(value), validate=True
                )
            except (binascii.Error, ValueError):
                errors.append(f"data.{key}: not valid base64")
        string_data = manifest.get("stringData") or {}
        for key, value in string_data.items() if isinstance(string_data, Mapping) else ():
            self._values[(project, name, str(key))] = str(value).encode()
        return errors

    def get(self, project: str, ref: SecretRef) -> bytes | None:
        return self._values.get((project, ref.name, ref.key))


def env_var_name(project: str, ref: SecretRef) -> str:
    """The environment variable that holds a secret in local mode:
    HIPHOPS_SECRET_<PROJECT>_<NAME>_<KEY>, upper-cased, other characters as '_'."""
    raw = f"HIPHOPS_SECRET_{project}_{ref.name}_{ref.key}"
    return re.sub(r"[^A-Z0-9]", "_", raw.upper())


class EnvSecrets:
    """Secrets from environment variables (see `env_var_name`), so none need be written to disk."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, project: str, ref: SecretRef) -> bytes | None:
        value = self._environ.get(env_var_name(project, ref))
        return None if value is None else value.encode()


class ChainedSecrets:
    """The first source that has the secret wins."""

    def __init__(self, sources: Sequence[SecretSource]) -> None:
        self._sources = list(sources)

    def get(self, project: str, ref: SecretRef) -> bytes | None:
        for source in self._sources:
            value = source.get(project, ref)
            if value is not None:
                return value
        return None
