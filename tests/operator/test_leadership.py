"""Several replicas: only the one kopf's peering lets run takes events and executes runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import kmock
import pytest

from hiphops_operator.kube import CLUSTER_PEERINGS, SENSORS
from hiphops_operator.leadership import is_active
from hiphops_operator.settings import Settings

from .conftest import NAMESPACE, VERBS, AsyncApi, Emulator, sensor_manifest, wait_for

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _peer(priority: int, seen: datetime = NOW, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("peers", "active"),
    [
        ({}, True),
        ({"me": _peer(5)}, True),
        ({"me": _peer(5), "low": _peer(1)}, True),
        ({"me": _peer(5), "high": _peer(9)}, False),
        ({"me": _peer(5), "twin": _peer(5)}, False),  # kopf pauses every tied replica
        ({"me": _peer(5), "dead": _peer(9, NOW - timedelta(seconds=61))}, True),
        ({"me": _peer(5), "odd": "not a peer"}, True),
    ],
)
def test_kopfs_peering_rule(peers: dict[str, Any], active: bool) -> None:
    assert is_active(peers, 5, NOW) is active


async def _readyz(port: int) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status


@pytest.mark.asyncio
async def test_a_replica_outranked_by_a_live_peer_stays_passive_until_the_peer_is_gone(
    api: AsyncApi, emulator: Emulator, settings: Settings, start_operator: Any
) -> None:
    emulator.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs=set(VERBS)
    )
    now = datetime.now(UTC)
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "hiphops"},
        "status": {"other-replica": _peer(1000, now, lifetime=600)},
    }
    await api.call(api.kube.create, CLUSTER_PEERINGS, None, peering)
    await api.create(SENSORS, NAMESPACE, sensor_manifest("s", {"tasks": [{"name": "log.message"}]}))

    operator = await start_operator(settings, active=False, peering_name="hiphops", priority=5)
    runtime = await wait_for(lambda: operator.memo.get("hiphops_runtime"))
    # This replica announced itself, saw the higher priority and did not take over.
    await wait_for(lambda: _announced(api))
    assert runtime.intake() is None and runtime.executor is None
    assert await _readyz(settings.intake_port) == 503

    # The other replica leaves (its entry is removed): this one becomes active.
    await api.call(
        api.kube.patch, CLUSTER_PEERINGS, None, "hiphops", {"status": {"other-replica": None}}
    )
    await wait_for(lambda: runtime.intake() is not None)
    assert await _readyz(settings.intake_port) == 200
    assert runtime.matcher.get((NAMESPACE, "s")) is not None


async def _announced(api: AsyncApi) -> bool:
    body = await api.call(api.kube.get, CLUSTER_PEERINGS, None, "hiphops")
    peers = (body or {}).get("status") or {}
    return any(isinstance(p, dict) and p.get("priority") == 5 for p in peers.values())
