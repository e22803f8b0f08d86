"""The gateway as its own Deployment (`hiphops gateway`): integrations come from the operator's
`GET /directory`, events go to its intake; the gateway itself holds no Kubernetes access."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from hiphops.loader import API_VERSION
from hiphops_operator.kube import INTEGRATIONS, SECRETS, SENSORRUNS, SENSORS
from hiphops_operator.settings import Settings
from webhook_gateway.remote import GatewayOptions, run_gateway

from .conftest import NAMESPACE, TOKEN, AsyncApi, condition_of, free_port, sensor_manifest, wait_for

pytestmark = pytest.mark.asyncio

WEBHOOK_SECRET = "gateway-deployment-webhook-secret"


async def test_directory_needs_the_token(settings: Settings, start_operator: Any) -> None:
    operator = await start_operator(settings)
    async with httpx.AsyncClient() as client:
        missing = await client.get(operator.intake_url + "/directory")
        wrong = await client.get(
            operator.intake_url + "/directory", headers={"Authorization": "Bearer nope"}
        )
        right = await client.get(
            operator.intake_url + "/directory", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert right.status_code == 200 and right.json() == {"integrations": []}


async def test_a_signed_webhook_through_a_separate_gateway_creates_a_run(
    api: AsyncApi, settings: Settings, start_operator: Any, token_file: Path
) -> None:
    operator = await start_operator(settings)
    secret = base64.b64encode(WEBHOOK_SECRET.encode()).decode()
    await api.create(
        SECRETS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gh-webhook", "namespace": NAMESPACE},
            "data": {"secret": secret},
        },
    )
    await api.create(
        INTEGRATIONS,
        NAMESPACE,
        {
            "apiVersion": API_VERSION,
            "kind": "Integration",
            "metadata": {"name": "github", "namespace": NAMESPACE},
            "spec": {
                "type": "github",
                "github": {"webhookSecretRefs": [{"name": "gh-webhook", "key": "secret"}]},
            },
        },
    )
    spec = {
        "when": {"event.hiphops.event": "push"},
        "tasks": [{"name": "log.message", "id": "log", "input": {"(path)ref": "event.ref"}}],
    }
    await api.create(SENSORS, NAMESPACE, sensor_manifest("on-push", spec))
    await wait_for(
        lambda: _ready(api, "on-push"),
    )

    port = free_port()
    stop = asyncio.Event()
    options = GatewayOptions(
        intake_url=operator.intake_url + "/intake",
        token_file=token_file,
        host="127.0.0.1",
        port=port,
        refresh_s=0.2,
    )
    gateway = asyncio.create_task(run_gateway(options, stop))
    body = json.dumps({"ref": "refs/heads/main", "repository": {"name": "app"}}).encode()
    signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "through-gateway-1",
        "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    }
    url = f"http://127.0.0.1:{port}/hooks/github/{NAMESPACE}/github"
    try:
        async with httpx.AsyncClient() as client:

            async def accepted() -> httpx.Response | None:
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.TransportError:
                    return None  # the gateway is still starting
                return response if response.status_code == 202 else None

            response = await wait_for(accepted)
            forged = await client.post(
                url, content=body, headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
            )
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
    finally:
        stop.set()
        await gateway

    [name] = response.json()["runs"]
    assert forged.status_code == 401
    assert ready.status_code == 200

    async def finished() -> dict[str, Any] | None:
        run = await api.get(SENSORRUNS, NAMESPACE, name)
        return run if ((run or {}).get("status") or {}).get("state") == "COMPLETE" else None

    run = await wait_for(finished)
    assert run["status"]["tasks"][0]["result"] == {"logged": {"ref": "refs/heads/main"}}


async def _ready(api: AsyncApi, name: str) -> bool:
    ready = condition_of(await api.get(SENSORS, NAMESPACE, name), "Ready")
    return ready is not None and ready["status"] == "True"
