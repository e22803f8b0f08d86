"""Integrations: Secrets read (and read again), credentials checked against the tool, status and
webhookPath published, and the gateway and task handlers fed from them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hiphops.loader import API_VERSION
from hiphops.runs import run_name
from hiphops_operator.kube import INTEGRATIONS, SECRETS, SENSORRUNS, SENSORS
from hiphops_operator.settings import Settings

from .conftest import NAMESPACE, AsyncApi, condition_of, free_port, sensor_manifest, wait_for

pytestmark = pytest.mark.asyncio

GOOD_SLACK_TOKEN = "xoxb-good-token"
GOOD_GITHUB_TOKEN = "ghp_good_token"
APP_ID = "4242"


class FakeTools:
    """Slack's auth.test and GitHub's /rate_limit and /app, on loopback."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.calls: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def private_key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    async def auth_test(self, request: web.Request) -> web.Response:
        self.calls.append("auth.test")
        if request.headers.get("Authorization") == f"Bearer {GOOD_SLACK_TOKEN}":
            return web.json_response({"ok": True, "team": "Acme", "user_id": "U1"})
        return web.json_response({"ok": False, "error": "invalid_auth"})

    async def rate_limit(self, request: web.Request) -> web.Response:
        self.calls.append("rate_limit")
        if request.headers.get("Authorization") == f"Bearer {GOOD_GITHUB_TOKEN}":
            return web.json_response({"resources": {}})
        return web.json_response({"message": "Bad credentials"}, status=401)

    async def app(self, request: web.Request) -> web.Response:
        self.calls.append("app")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, self.key.public_key(), algorithms=["RS256"])
        except jwt.PyJWTError:
            return web.json_response({"message": "JWT could not be decoded"}, status=401)
        assert claims["iss"] == APP_ID and claims["exp"] - claims["iat"] <= 600
        return web.json_response({"id": int(APP_ID), "slug": "hiphops"})

    async def __aenter__(self) -> FakeTools:
        app = web.Application()
        app.router.add_post("/slack/api/auth.test", self.auth_test)
        app.router.add_get("/github/rate_limit", self.rate_limit)
        app.router.add_get("/github/app", self.app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest_asyncio.fixture
async def tools() -> AsyncIterator[FakeTools]:
    async with FakeTools() as fake:
        yield fake


def _secret(name: str, values: dict[str, str | bytes]) -> dict[str, Any]:
    data = {
        k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
        for k, v in values.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": data,
    }


def _integration(name: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Integration",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"type": kind, kind: body},
    }


async def _ready_condition(
    api: AsyncApi, resource: Any, name: str, type_: str, status: str, reason: str | None = None
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        condition = condition_of(await api.get(resource, NAMESPACE, name), type_)
        if condition is None or condition["status"] != status:
            return None
        return condition if reason is None or condition["reason"] == reason else None

    found: dict[str, Any] = await wait_for(reached)
    return found


async def test_a_slack_integration_follows_its_secret(
    api: AsyncApi, tools: FakeTools, settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings)
    await api.create(
        SECRETS, NAMESPACE, _secret("slack", {"bot-token": GOOD_SLACK_TOKEN, "signing": "s1"})
    )
    slack = {
        "apiURL": f"{tools.url}/slack/api/",
        "botTokenSecretRef": {"name": "slack", "key": "bot-token"},
        "signingSecretRefs": [{"name": "slack", "key": "signing"}],
    }
    await api.create(INTEGRATIONS, NAMESPACE, _integration("slack", "slack", slack))
    ready = await _ready_condition(api, INTEGRATIONS, "slack", "Ready", "True")
    assert ready["reason"] == "CredentialsAccepted" and "Acme" in ready["message"]
    body = await api.get(INTEGRATIONS, NAMESPACE, "slack")
    assert body is not None
    assert body["status"]["webhookPath"] == f"/hooks/slack/{NAMESPACE}/slack"
    assert body["status"]["observedGeneration"] == 1

    # What the gateway and the task handlers get.
    book = operator.runtime.integrations
    config = book.directory.get(NAMESPACE, "slack")
    assert config is not None and (config.type, config.secrets) == ("slack", (b"s1",))
    credentials = book.connections.slack(NAMESPACE, {}, None)
    assert credentials.bot_token == GOOD_SLACK_TOKEN
    assert credentials.api_url == f"{tools.url}/slack/api/"

    spec = {"tasks": [{"name": "slack.post_message", "input": {"channel": "general"}}]}
    await api.create(SENSORS, NAMESPACE, sensor_manifest("notify", spec))
    await _ready_condition(api, SENSORS, "notify", "IntegrationsReady", "True")

    # The token is rotated to one Slack refuses: seen without any change to the Integration.
    rotated = _secret("slack", {"bot-token": "xoxb-revoked", "signing": "s2"})
    await api.patch(SECRETS, NAMESPACE, "slack", {"data": rotated["data"]})
    refused = await _ready_condition(
        api, INTEGRATIONS, "slack", "Ready", "False", "CredentialsRejected"
    )
    assert "invalid_auth" in refused["message"]
    assert "xoxb" not in json.dumps(await api.get(INTEGRATIONS, NAMESPACE, "slack"))
    sensor = await _ready_condition(api, SENSORS, "notify", "IntegrationsReady", "False")
    assert sensor["reason"] == "IntegrationNotReady"
    config = book.directory.get(NAMESPACE, "slack")
    assert config is not None and config.secrets == (b"s2",)

    # The Secret goes away: named in the status, never its content.
    await api.delete(SECRETS, NAMESPACE, "slack")
    missing = await _ready_condition(api, INTEGRATIONS, "slack", "Ready", "False", "SecretMissing")
    assert "secret slack/bot-token" in missing["message"]

    # The Integration goes away: the sensor says so.
    await api.delete(INTEGRATIONS, NAMESPACE, "slack")
    gone = await _ready_condition(
        api, SENSORS, "notify", "IntegrationsReady", "False", "IntegrationMissing"
    )
    assert "slack" in gone["message"]
    await wait_for(lambda: book.directory.get(NAMESPACE, "slack") is None)


async def test_a_github_app_is_checked_with_a_signed_jwt(
    api: AsyncApi, tools: FakeTools, settings: Settings, start_operator: Any
) -> None:
    await start_operator(settings)
    await api.create(SECRETS, NAMESPACE, _secret("gh-app", {"key.pem": tools.private_key_pem}))
    github = {
        "apiURL": f"{tools.url}/github",
        "appID": APP_ID,
        "privateKeySecretRef": {"name": "gh-app", "key": "key.pem"},
    }
    await api.create(INTEGRATIONS, NAMESPACE, _integration("app", "github", github))
    ready = await _ready_condition(api, INTEGRATIONS, "app", "Ready", "True")
    assert ready["reason"] == "CredentialsAccepted" and APP_ID in ready["message"]
    assert "app" in tools.calls

    # Another App's key: GitHub refuses the JWT.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    await api.patch(SECRETS, NAMESPACE, "gh-app", {"data": _secret("x", {"key.pem": pem})["data"]})
    await _ready_condition(api, INTEGRATIONS, "app", "Ready", "False", "CredentialsRejected")


async def test_a_signed_webhook_through_the_in_process_gateway_starts_a_run(
    api: AsyncApi, tools: FakeTools, settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings, gateway_port=free_port())
    secret = _secret("gh", {"token": GOOD_GITHUB_TOKEN, "webhook": "whsec"})
    await api.create(SECRETS, NAMESPACE, secret)
    github = {
        "apiURL": f"{tools.url}/github",
        "tokenSecretRef": {"name": "gh", "key": "token"},
        "webhookSecretRefs": [{"name": "gh", "key": "webhook"}],
    }
    await api.create(INTEGRATIONS, NAMESPACE, _integration("github", "github", github))
    await _ready_condition(api, INTEGRATIONS, "github", "Ready", "True", "CredentialsAccepted")
    spec = {
        "when": {"event.hiphops.event": "pull_request", "event.hiphops.action": "opened"},
        "tasks": [{"name": "log.message", "input": {"(path)title": "event.pull_request.title"}}],
    }
    await api.create(SENSORS, NAMESPACE, sensor_manifest("on-pr", spec))
    await _ready_condition(api, SENSORS, "on-pr", "Ready", "True")

    with open("tests/fixtures/github/pull_request.payloads.json", encoding="utf-8") as fixture:
        payload = next(p for p in json.load(fixture) if p["action"] == "opened")
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(b"whsec", body, hashlib.sha256).hexdigest()
    url = f"http://127.0.0.1:{operator.runtime.gateway_port}/hooks/github/{NAMESPACE}/github"
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "gw-delivery-1",
        "X-Hub-Signature-256": signature,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers=headers) as response:
            assert response.status == 202, await response.text()
            answer = await response.json()
        name = run_name("gw-delivery-1", NAMESPACE, "on-pr")
        assert answer["runs"] == [name]
        bad = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        async with http.post(url, data=body, headers=bad) as response:
            assert response.status == 401

    async def complete() -> dict[str, Any] | None:
        run = await api.get(SENSORRUNS, NAMESPACE, name)
        status = (run or {}).get("status") or {}
        return status if status.get("state") == "COMPLETE" else None

    status = await wait_for(complete)
    assert status["tasks"][0]["result"] == {"logged": {"title": payload["pull_request"]["title"]}}
