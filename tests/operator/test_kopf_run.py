"""`kopf run -m hiphops_operator.handlers`: the same operator, configured by HIPHOPS_* variables."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kopf.testing import KopfRunner

from hiphops.runs import run_name
from hiphops_operator.kube import SENSORRUNS, SENSORS

from .conftest import (
    NAMESPACE,
    TOKEN,
    AsyncApi,
    Emulator,
    condition_of,
    free_port,
    github_event,
    sensor_manifest,
    wait_for,
)

pytestmark = pytest.mark.asyncio


async def test_kopf_run_with_the_handlers_module(
    api: AsyncApi, emulator: Emulator, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    for name, value in {
        "HIPHOPS_KUBE_API": str(emulator.url),
        "HIPHOPS_INTAKE_HOST": "127.0.0.1",
        "HIPHOPS_INTAKE_PORT": str(port),
        "HIPHOPS_INTAKE_TOKEN_FILE": str(token_file),
        "HIPHOPS_METRICS_PORT": "0",
        "HIPHOPS_LEADERSHIP_INTERVAL": "200ms",
    }.items():
        monkeypatch.setenv(name, value)
    await api.create(
        SENSORS, NAMESPACE, sensor_manifest("hi", {"tasks": [{"name": "log.message"}]})
    )
    runner = KopfRunner(["run", "-A", "--standalone", "-m", "hiphops_operator.handlers"])
    runner.__enter__()
    try:
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: _ready(http, port))
            ready = condition_of(await api.get(SENSORS, NAMESPACE, "hi"), "Ready")
            assert ready is not None and ready["status"] == "True"
            async with http.post(
                f"http://127.0.0.1:{port}/intake",
                json={"events": [github_event("kopf-run-1")]},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response:
                assert response.status == 200
                name = run_name("kopf-run-1", NAMESPACE, "hi")
                assert (await response.json())["runs"] == [name]

        async def complete() -> bool:
            body = await api.get(SENSORRUNS, NAMESPACE, name)
            return ((body or {}).get("status") or {}).get("state") == "COMPLETE"

        await wait_for(complete)
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exit_code == 0, runner.output


async def _ready(http: aiohttp.ClientSession, port: int) -> Any:
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False
