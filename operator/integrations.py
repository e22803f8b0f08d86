"""Integrations in the cluster: parsed, their Secrets read, their credentials checked.

For every Integration the operator keeps the parsed spec and the values of the Secrets it
references, read again every `secret_refresh_interval` (a rotated Secret is picked up without a
watch on every Secret of the cluster, which would need far wider RBAC). The credentials are
checked against the tool when the spec or a secret value changes, and again every
`credential_check_interval`:

* GitHub App: `GET {apiURL}/app` with a JWT signed by the private key;
* GitHub token: `GET {apiURL}/rate_limit` (any valid token may read it, an invalid one gets 401);
* Slack: `POST {apiURL}auth.test` with the bot token.

Status: `Ready` (True: every referenced Secret exists and the tool accepted the credentials;
False: a Secret is missing or the credentials were refused; Unknown: not checked yet, or the tool
could not be reached) and `webhookPath`. The same knowledge feeds the gateway (`directory`, a
`webhook_gateway.directory.Directory`) and the task handlers (`connections`, a
`hiphops.tasks.connections.Connections`); both answer from memory, never blocking on the API.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from hiphops.integrations import Integration, IntegrationInvalid, SecretRef, parse_integration
from hiphops.tasks.connections import GitHubCredentials, SlackCredentials, StaticConnections
from webhook_gateway.directory import IntegrationConfig

from . import conditions
from .conditions import Condition
from .events import EventPoster, involved
from .kube import INTEGRATIONS, SECRETS, ApiError, Kube, is_stale, object_state, patch_status

logger = logging.getLogger("hiphops.operator.integrations")

_CHECK_TIMEOUT = 10.0


@dataclass(frozen=True)
class CheckResult:
    """What the tool said about the credentials: True accepted, False refused, None unknown."""

    ready: bool | None
    reason: str
    message: str


@dataclass
class IntegrationEntry:
    """One Integration resource as the operator knows it."""

    namespace: str
    name: str
    body: dict[str, Any]  # apiVersion, kind, metadata: for Events
    generation: int | None
    spec: dict[str, Any]
    integration: Integration | None
    problems: tuple[str, ...]
    status: dict[str, Any]  # as last seen on the object or written
    loaded_at: float
    fingerprint: str | None = None  # of the secret values last read
    missing: tuple[str, ...] = ()
    check: CheckResult | None = None
    checked_fingerprint: str | None = None
    checked_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ready(self) -> bool | None:
        return self._condition().status

    def _condition(self) -> Condition:
        if self.integration is None:
            message = "; ".join(self.problems)
            return Condition("Ready", False, "Invalid", message)
        if self.missing:
            return Condition(
                "Ready", False, "SecretMissing", f"not found: {', '.join(self.missing)}"
            )
        if self.check is None:
            return Condition("Ready", None, "Checking", "credentials not checked yet")
        return Condition("Ready", self.check.ready, self.check.reason, self.check.message)

    def desired_status(self) -> dict[str, Any]:
        """observedGeneration, the Ready condition and webhookPath."""
        status: dict[str, Any] = {
            "observedGeneration": self.generation,
            "conditions": conditions.render(
                [self._condition()], self.status.get("conditions"), self.generation
            ),
        }
        if self.integration is not None:
            status["webhookPath"] = self.integration.webhook_path
        return status


class SecretCache:
    """Secret values as last read (a `hiphops.integrations.SecretSource`)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], dict[str, bytes]] = {}

    def get(self, project: str, ref: SecretRef) -> bytes | None:
        return self._values.get((project, ref.name), {}).get(ref.key)

    def put(self, namespace: str, name: str, data: Mapping[str, bytes] | None) -> None:
        if data is None:
            self._values.pop((namespace, name), None)
        else:
            self._values[(namespace, name)] = dict(data)

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Forget every Secret not in `keys` (not referenced any more)."""
        for key in list(self._values):
            if key not in keys:
                del self._values[key]


def _decode(secret: Mapping[str, Any]) -> dict[str, bytes]:
    values = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            logger.warning("a key of a Secret is not valid base64; ignored")
    return values


def _refs(integration: Integration) -> list[tuple[str, SecretRef]]:
    refs: list[tuple[str, SecretRef]] = []
    if integration.private_key is not None:
        refs.append(("private key", integration.private_key))
    if integration.token is not None:
        refs.append(("token", integration.token))
    refs.extend(("webhook secret", ref) for ref in integration.webhook_secrets)
    return refs


class IntegrationBook:
    """Every Integration the operator serves, with its Secrets and readiness."""

    def __init__(
        self,
        kube: Kube,
        *,
        check_interval: float,
        events: EventPoster | None = None,
        on_readiness: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """`on_readiness(namespace)` is awaited when an integration of that namespace changes
        readiness (sensors there say whether their integrations are ready)."""
        self._kube = kube
        self._check_interval = check_interval
        self._events = events
        self._on_readiness = on_readiness
        self._entries: dict[tuple[str, str], IntegrationEntry] = {}
        self.secrets = SecretCache()
        self.directory = IntegrationDirectory(self)
        self.connections = KubeConnections(self)
        self._http: httpx.AsyncClient | None = None

    def entries(self) -> list[IntegrationEntry]:
        return list(self._entries.values())

    def get(self, namespace: str, name: str) -> IntegrationEntry | None:
        return self._entries.get((namespace, name))

    def readiness(self, namespace: str, kind: str) -> tuple[bool, bool | None]:
        """(whether the namespace has an integration of that type, whether one is Ready: True if
        any is, None if none is but one is unchecked, else False)."""
        found = [e for e in self._entries.values() if e.namespace == namespace]
        typed = [e for e in found if e.integration is not None and e.integration.type == kind]
        if not typed:
            return (False, False)
        states = [e.ready for e in typed]
        if True in states:
            return (True, True)
        return (True, None if None in states else False)

    # --- resources --------------------------------------------------------------------------

    async def apply(self, body: Mapping[str, Any], *, refresh: bool = True) -> IntegrationEntry:
        """Take in an Integration as the API shows it. If its spec changed, read its Secrets and
        check its credentials at once (unless `refresh` is False: the next `refresh_all` does)."""
        namespace, name, generation, spec = object_state(body)
        entry = self._entries.get((namespace, name))
        if entry is not None and is_stale(generation, entry.generation):
            return entry  # a stale copy (the list at activation saw a newer one)
        if entry is not None and entry.spec == spec:
            entry.generation = generation
            entry.status = dict(body.get("status") or {})
            await self._write_status(entry)
            return entry
        try:
            integration: Integration | None = parse_integration(body, default_project=namespace)
            problems: tuple[str, ...] = ()
        except IntegrationInvalid as invalid:
            integration = None
            problems = tuple(str(p) for p in invalid.problems)
        entry = IntegrationEntry(
            namespace=namespace,
            name=name,
            body={k: body.get(k) for k in ("apiVersion", "kind", "metadata")},
            generation=generation,
            spec=spec,
            integration=integration,
            problems=problems,
            status=dict(body.get("status") or {}),
            loaded_at=time.monotonic(),
        )
        self._entries[entry.key] = entry
        if integration is None and self._events is not None:
            self._events.post(involved(body), "Invalid", "; ".join(problems), warning=True)
        if not refresh:
            await self._write_status(entry)
            return entry
        try:
            await self.refresh(entry, force_check=True)
        except ApiError as error:  # reading a Secret failed: the next refresh tries again
            logger.warning("integration %s/%s: %s", namespace, name, error)
        return entry

    async def forget(self, namespace: str, name: str) -> None:
        if self._entries.pop((namespace, name), None) is not None and self._on_readiness:
            await self._on_readiness(namespace)

    async def prune(self, present: set[tuple[str, str]], listed_at: float) -> None:
        """Forget integrations loaded before `listed_at` that the listing did not show."""
        for key, entry in list(self._entries.items()):
            if key not in present and entry.loaded_at < listed_at:
                await self.forget(*key)

    # --- secrets and checks -----------------------------------------------------------------

    async def refresh_all(self) -> None:
        """Read every referenced Secret again; check credentials that changed or are due."""
        referenced: set[tuple[str, str]] = set()
        for entry in self.entries():
            if entry.integration is not None:
                referenced.update(
                    (entry.namespace, ref.name) for _, ref in _refs(entry.integration)
                )
            try:
                await self.refresh(entry)
            except ApiError as error:
                logger.warning("integration %s/%s: %s", entry.namespace, entry.name, error)
        self.secrets.retain(referenced)

    async def refresh(self, entry: IntegrationEntry, *, force_check: bool = False) -> None:
        """Read the integration's Secrets; check its credentials if they changed, if forced, or
        if the last check is older than the check interval; write its status if it changed."""
        before = entry.ready
        integration = entry.integration
        if integration is not None:
            await self._read_secrets(entry, integration)
            due = entry.checked_at is None or (
                time.monotonic() - entry.checked_at >= self._check_interval
            )
            changed = entry.fingerprint != entry.checked_fingerprint
            if entry.missing:
                entry.check = None
            elif force_check or changed or due or entry.check is None:
                entry.check = await self._check(integration)
                entry.checked_fingerprint = entry.fingerprint
                entry.checked_at = time.monotonic()
        await self._write_status(entry)
        if entry.ready != before:
            if entry.ready is False and self._events is not None:
                message = entry.desired_status()["conditions"][0]["message"]
                self._events.post(involved(entry.body), "NotReady", message, warning=True)
            if self._on_readiness is not None:
                await self._on_readiness(entry.namespace)

    async def _read_secrets(self, entry: IntegrationEntry, integration: Integration) -> None:
        names = sorted({ref.name for _, ref in _refs(integration)})
        for name in names:
            secret = await asyncio.to_thread(self._kube.get, SECRETS, entry.namespace, name)
            self.secrets.put(entry.namespace, name, None if secret is None else _decode(secret))
        digest = hashlib.sha256()
        missing = []
        for what, ref in _refs(integration):
            value = self.secrets.get(entry.namespace, ref)
            if value is None:
                missing.append(f"{what} ({ref})")
            digest.update(f"{ref.name}\x00{ref.key}\x00".encode() + (value or b"") + b"\x00")
        entry.fingerprint = digest.hexdigest()
        entry.missing = tuple(missing)

    async def _check(self, integration: Integration) -> CheckResult:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=_CHECK_TIMEOUT)
        if integration.type == "github":
            return await check_github(self._http, integration, self.secrets)
        if integration.type == "slack":
            return await check_slack(self._http, integration, self.secrets)
        return CheckResult(None, "Unchecked", f"no credential check for {integration.type}")

    async def _write_status(self, entry: IntegrationEntry) -> None:
        desired = entry.desired_status()
        current = {k: entry.status.get(k) for k in desired}
        if current == desired:
            return
        if await patch_status(self._kube, INTEGRATIONS, entry.namespace, entry.name, desired):
            entry.status.update(desired)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


async def check_github(
    http: httpx.AsyncClient, integration: Integration, secrets: SecretCache
) -> CheckResult:
    """Ask GitHub whether the App (or token) is accepted."""
    base = integration.api_url.rstrip("/")
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    if integration.app_id is not None and integration.private_key is not None:
        key = secrets.get(integration.project, integration.private_key) or b""
        now = int(time.time())
        try:
            token = jwt.encode(
                {"iat": now - 60, "exp": now + 540, "iss": integration.app_id}, key, "RS256"
            )
        except (ValueError, TypeError, jwt.PyJWTError):
            return CheckResult(
                False, "InvalidPrivateKey", "the App private key is not an RSA PEM key"
            )
        url, what = f"{base}/app", f"GitHub App {integration.app_id}"
    elif integration.token is not None:
        token = (secrets.get(integration.project, integration.token) or b"").decode().strip()
        url, what = f"{base}/rate_limit", "the GitHub token"
    else:
        return _webhooks_only()
    try:
        response = await http.get(url, headers={**headers, "Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        return CheckResult(None, "Unreachable", f"{base}: {type(error).__name__}")
    if response.status_code == 200:
        return CheckResult(True, "CredentialsAccepted", f"{what} is accepted by {base}")
    if response.status_code in (401, 403):
        return CheckResult(
            False, "CredentialsRejected", f"{base} refused {what} (HTTP {response.status_code})"
        )
    return CheckResult(None, "CheckFailed", f"{base} answered HTTP {response.status_code}")


async def check_slack(
    http: httpx.AsyncClient, integration: Integration, secrets: SecretCache
) -> CheckResult:
    """Ask Slack (`auth.test`) whether the bot token is accepted."""
    if integration.token is None:
        return _webhooks_only()
    token = (secrets.get(integration.project, integration.token) or b"").decode().strip()
    url = integration.api_url.rstrip("/") + "/auth.test"
    try:
        response = await http.post(url, headers={"Authorization": f"Bearer {token}"})
        data = response.json() if response.status_code == 200 else None
    except httpx.HTTPError as error:
        return CheckResult(None, "Unreachable", f"{url}: {type(error).__name__}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return CheckResult(None, "CheckFailed", f"{url} answered HTTP {response.status_code}")
    if data.get("ok") is True:
        team = data.get("team") or data.get("team_id") or "the workspace"
        return CheckResult(True, "CredentialsAccepted", f"the bot token is accepted by {team}")
    # Slack's error codes (invalid_auth, token_revoked, ...) name the problem, not the token.
    code = str(data.get("error") or "unknown_error")[:100]
    return CheckResult(False, "CredentialsRejected", f"auth.test refused the bot token: {code}")


def _webhooks_only() -> CheckResult:
    return CheckResult(
        True, "WebhooksOnly", "no credentials configured: webhooks are received, tasks cannot act"
    )


class IntegrationDirectory:
    """The gateway's `Directory`: integrations with the webhook secrets found for them."""

    def __init__(self, book: IntegrationBook) -> None:
        self._book = book

    def all(self) -> list[IntegrationConfig]:
        """Every integration that parsed, with its webhook secrets (for a gateway Deployment)."""
        configs = (self.get(e.namespace, e.name) for e in self._book.entries())
        return [c for c in configs if c is not None]

    def get(self, project: str, name: str) -> IntegrationConfig | None:
        entry = self._book.get(project, name)
        if entry is None or entry.integration is None:
            return None
        integration = entry.integration
        values = (self._book.secrets.get(project, ref) for ref in integration.webhook_secrets)
        return IntegrationConfig(
            project=project,
            name=name,
            type=integration.type,
            secrets=tuple(v for v in values if v is not None),
        )


class KubeConnections:
    """The task handlers' `Connections`: the namespace's Integrations and their Secrets as last
    read, chosen by the engine's rules (`StaticConnections`)."""

    def __init__(self, book: IntegrationBook) -> None:
        self.book = book

    def _static(self) -> StaticConnections:
        parsed = [e.integration for e in self.book.entries() if e.integration is not None]
        return StaticConnections(parsed, self.book.secrets)

    def github(self, project: str, event: Mapping[str, Any], name: str | None) -> GitHubCredentials:
        return self._static().github(project, event, name)

    def slack(self, project: str, event: Mapping[str, Any], name: str | None) -> SlackCredentials:
        return self._static().slack(project, event, name)
