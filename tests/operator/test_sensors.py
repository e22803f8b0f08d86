"""Sensors: the matcher and the status follow every change of the Sensor resources."""

from __future__ import annotations

from typing import Any

import pytest

from hiphops_operator.kube import EVENTS, SENSORS
from hiphops_operator.settings import Settings

from .conftest import NAMESPACE, AsyncApi, condition_of, sensor_manifest, wait_for

pytestmark = pytest.mark.asyncio

VALID = {
    "when": {"event.hiphops.source": "github", "event.hiphops.event": "pull_request"},
    "tasks": [{"name": "log.message", "input": {"text": "hello"}}],
}


async def _sensor(api: AsyncApi, name: str) -> dict[str, Any] | None:
    return await api.get(SENSORS, NAMESPACE, name)


async def _status_for_generation(api: AsyncApi, name: str, generation: int) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        body = await _sensor(api, name)
        status = (body or {}).get("status") or {}
        return body if status.get("observedGeneration") == generation else None

    body: dict[str, Any] = await wait_for(settled)
    return body


async def test_apply_change_break_fix_disable_delete(
    api: AsyncApi, settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings)
    matcher = operator.runtime.matcher
    key = (NAMESPACE, "automerge")

    await api.create(SENSORS, NAMESPACE, sensor_manifest("automerge", VALID))
    body = await _status_for_generation(api, "automerge", 1)
    ready = condition_of(body, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Loaded", 1)
    assert ready["lastTransitionTime"]
    assert body["status"]["taskCount"] == 1
    assert condition_of(body, "Stalled") is None
    loaded = matcher.get(key)
    assert loaded is not None and [t.name for t in loaded.tasks] == ["log.message"]

    # Change: a second task; the matcher holds the new version, the status its generation.
    changed = {**VALID, "tasks": [*VALID["tasks"], {"name": "log.message", "id": "second"}]}
    await api.patch(SENSORS, NAMESPACE, "automerge", {"spec": changed})
    body = await _status_for_generation(api, "automerge", 2)
    assert body["status"]["taskCount"] == 2
    await wait_for(lambda: (s := matcher.get(key)) is not None and len(s.tasks) == 2)

    # Break it: every problem is reported, and the sensor leaves the matcher.
    broken = {
        "when": {"event.hiphops.source": "github"},
        "tasks": [{"name": "not a task name"}, {"name": "log.message", "id": "bad id!"}],
    }
    await api.patch(SENSORS, NAMESPACE, "automerge", {"spec": broken})
    body = await _status_for_generation(api, "automerge", 3)
    ready = condition_of(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "Invalid")
    assert "tasks[0].name" in ready["message"] and "tasks[1].id" in ready["message"]
    assert ready["message"].startswith("2 problems")
    stalled = condition_of(body, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert matcher.get(key) is None
    events = await wait_for(lambda: _events_for(api, "automerge", "Invalid"), timeout=10)
    assert events[0]["type"] == "Warning" and "tasks[0].name" in events[0]["message"]

    # Fix it: back in the matcher, Ready again, no longer stalled.
    await api.patch(SENSORS, NAMESPACE, "automerge", {"spec": VALID})
    body = await _status_for_generation(api, "automerge", 4)
    ready = condition_of(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Loaded")
    assert condition_of(body, "Stalled") is None
    assert matcher.get(key) is not None

    # Disable it: valid, Ready, but out of the matcher.
    await api.patch(SENSORS, NAMESPACE, "automerge", {"spec": {"enabled": False}})
    body = await _status_for_generation(api, "automerge", 5)
    ready = condition_of(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Disabled")
    assert matcher.get(key) is None

    # Enable and delete it: gone from the matcher.
    await api.patch(SENSORS, NAMESPACE, "automerge", {"spec": {"enabled": True}})
    await wait_for(lambda: matcher.get(key) is not None)
    await api.delete(SENSORS, NAMESPACE, "automerge")
    await wait_for(lambda: matcher.get(key) is None)
    assert len(matcher) == 0


async def _events_for(api: AsyncApi, name: str, reason: str) -> list[dict[str, Any]]:
    events = await api.list(EVENTS, NAMESPACE)
    return [e for e in events if e["involvedObject"]["name"] == name and e["reason"] == reason]


async def test_sensor_reports_a_missing_integration(
    api: AsyncApi, settings: Settings, start_operator: Any
) -> None:
    await start_operator(settings)
    spec = {"tasks": [{"name": "github.merge_pr", "input": {"repo": "app"}}]}
    await api.create(SENSORS, NAMESPACE, sensor_manifest("merge", spec))
    body = await _status_for_generation(api, "merge", 1)
    ready = condition_of(body, "Ready")
    integrations = condition_of(body, "IntegrationsReady")
    assert ready is not None and ready["status"] == "True"
    assert integrations is not None
    assert (integrations["status"], integrations["reason"]) == ("False", "IntegrationMissing")
    assert "github" in integrations["message"] and NAMESPACE in integrations["message"]


async def test_sensors_present_at_start_are_loaded_before_events_are_taken(
    api: AsyncApi, settings: Settings, start_operator: Any
) -> None:
    await api.create(SENSORS, NAMESPACE, sensor_manifest("early", VALID))
    operator = await start_operator(settings)
    # start_operator returns once the intake is ready: the listing was already taken in.
    assert operator.runtime.matcher.get((NAMESPACE, "early")) is not None
