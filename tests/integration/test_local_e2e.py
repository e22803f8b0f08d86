"""Local mode end to end: a signed Slack slash command runs the documented Slack sensors.

`webhook_gateway.local.serve` runs in-process with the real `slack.*` handlers, built from the
same Integration and Secret manifests it serves; the integration's apiURL points at a fake Slack
on loopback (tests/fakes/slack_server.py). The command goes to the gateway over real HTTP with a
signature computed here, independently of the gateway's verifier.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from hiphops.runs import RunRecord
from hiphops.store import SQLiteRunStore
from tests.fakes.slack_server import RESPONSE_URL, FakeSlack
from tests.integration.conftest import ROOT, free_port, hiphops
from webhook_gateway.local import ServeOptions, load_local, serve

BOT_TOKEN = "xoxb-5555-6666-e2eBotToken"
SIGNING_SECRET = "e2e-slack-signing-secret"
SENSORS = [
    ROOT / "examples/sensors/slack-echo.yaml",
    ROOT / "examples/sensors/slack-command-receiver.yaml",
]


def manifests(api_url: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "hiphops.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "slack", "namespace": "demo"},
            "spec": {
                "type": "slack",
                "slack": {
                    "apiURL": api_url,
                    "botTokenSecretRef": {"name": "slack", "key": "bot-token"},
                    "signingSecretRefs": [{"name": "slack", "key": "signing-secret"}],
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "slack", "namespace": "demo"},
            "stringData": {"bot-token": BOT_TOKEN, "signing-secret": SIGNING_SECRET},
        },
    ]


def signed(form: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The form body with Slack's v0 headers: HMAC-SHA256 over `v0:<timestamp>:<body>`."""
    body = urlencode(form).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + stamp.encode() + b":" + body, "sha256")
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }


def finished_runs(state_dir: Path, count: int) -> list[RunRecord] | None:
    store = SQLiteRunStore(state_dir / "runs.db")
    try:
        records = store.list()
    finally:
        store.close()
    if len(records) == count and all(r.finished for r in records):
        return records
    return None


async def wait_for_runs(state_dir: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(finished_runs, state_dir, count) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} finished runs not recorded within {timeout}s")
        await asyncio.sleep(0.05)


async def run_command(tmp_path: Path, fake: FakeSlack, form: dict[str, str]) -> httpx.Response:
    """Serve the sensors in local mode, send the command, wait for both runs to finish."""
    documents = manifests(fake.api_url)
    config = tmp_path / "integrations.yaml"
    config.write_text(yaml.safe_dump_all(documents))
    setup = load_local([*map(str, SENSORS), str(config)], project="demo", environ={})
    assert not setup.errors, setup.errors

    port = free_port()
    state_dir = tmp_path / "state"
    started, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        serve(
            setup,
            ServeOptions(port=port, state_dir=state_dir),
            started=started,
            stop=stop,
        )
    )
    try:
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({waiting, server}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert started.is_set(), "local mode did not start"
        body, headers = signed(form)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"http://127.0.0.1:{port}/hooks/slack/demo/slack", content=body, headers=headers
            )
        await wait_for_runs(state_dir, 2)
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)
    return response


def test_slack_echo_command_end_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> tuple[httpx.Response, FakeSlack, str]:
        async with FakeSlack(BOT_TOKEN) as fake:
            response_url = fake.response_url("T0FAKE0001-4902701257719-echo")
            form = {
                "token": "legacy-verification-token",
                "team_id": "T0FAKE0001",
                "team_domain": "fake",
                "channel_id": "C0GENERAL1",
                "channel_name": "general",
                "user_id": "U0HUMAN001",
                "user_name": "codertocat",
                "command": "/hiphops",
                "text": 'echo hello "big world"',
                "api_app_id": "A0FAKE0001",
                "is_enterprise_install": "false",
                "response_url": response_url,
                "trigger_id": "4902701257719.2761450016.0f1e2d3c4b5a",
            }
            response = await run_command(tmp_path, fake, form)
            return response, fake, response_url

    response, fake, response_url = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert response.status_code == 200, response.text
    assert response.json()["response_type"] == "ephemeral"

    # What Slack received: the echo through response_url, and the receiver's post to #general.
    (reply,) = fake.calls(RESPONSE_URL)
    assert reply.body == {"text": "hello big world", "response_type": "ephemeral"}
    assert "Authorization" not in reply.headers
    (post,) = fake.calls("chat.postMessage")
    assert post.body == {"channel": "general", "text": "Command: echo, Args: hello,big world"}
    assert post.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    ((channel, ts),) = fake.messages

    # What the run records say, through the CLI.
    listed = hiphops("runs", "--state-dir", str(tmp_path / "state"), "--output", "json")
    assert listed.returncode == 0, listed.stderr
    for text in (listed.stdout, caplog.text):
        assert BOT_TOKEN not in text and SIGNING_SECRET not in text
    runs = {run["sensor"]: run for run in json.loads(listed.stdout)}
    assert set(runs) == {"slack echo command", "slack command receiver"}

    echo = runs["slack echo command"]
    assert echo["state"] == "COMPLETE", echo
    tasks = {task["id"]: task for task in echo["tasks"]}
    assert tasks["reply"]["state"] == "COMPLETE"
    assert tasks["reply"]["input"] == {"response_url": response_url, "text": "hello big world"}
    assert tasks["reply"]["result"] == {"ok": True, "response_type": "ephemeral"}
    assert tasks["usage"]["state"] == "SKIPPED"

    receiver = runs["slack command receiver"]
    assert receiver["state"] == "COMPLETE", receiver
    (posted,) = receiver["tasks"]
    assert posted["state"] == "COMPLETE"
    assert posted["result"] == {
        "ok": True,
        "channel": channel,
        "ts": ts,
        "permalink": f"{fake.url}/archives/{channel}/p{ts.replace('.', '')}",
    }
