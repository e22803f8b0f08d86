"""The intake: events POSTed by the gateway become SensorRuns that run to completion."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from hiphops.runs import run_name
from hiphops_operator.kube import EVENTS, SENSORRUNS, SENSORS
from hiphops_operator.settings import Settings
from webhook_gateway.intake_client import HTTPIntake

from .conftest import (
    NAMESPACE,
    TOKEN,
    AsyncApi,
    condition_of,
    github_event,
    sensor_manifest,
    wait_for,
)

pytestmark = pytest.mark.asyncio

SENSOR = {
    "id": "say hello",
    "when": {"event.hiphops.event": "pull_request"},
    "tasks": [
        {"name": "log.message", "id": "hello", "input": {"(path)pr": "event.pull_request.number"}},
        {
            "name": "log.message",
            "id": "after",
            "depends": {"tasks.hello.COMPLETE": "*"},
            "input": {"text": "PR ${event.pull_request.title}"},
        },
    ],
}


async def _finished_run(api: AsyncApi, name: str) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        body = await api.get(SENSORRUNS, NAMESPACE, name)
        state = ((body or {}).get("status") or {}).get("state")
        return body if state in ("COMPLETE", "FAILURE") else None

    body: dict[str, Any] = await wait_for(finished)
    return body


async def _ready_sensor(api: AsyncApi, name: str, spec: dict[str, Any]) -> None:
    await api.create(SENSORS, NAMESPACE, sensor_manifest(name, spec))

    async def ready() -> bool:
        ready = condition_of(await api.get(SENSORS, NAMESPACE, name), "Ready")
        return ready is not None and ready["status"] == "True"

    await wait_for(ready)


async def test_an_event_becomes_a_sensorrun_that_completes_once(
    api: AsyncApi, settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings)
    await _ready_sensor(api, "hello", SENSOR)
    intake = HTTPIntake(operator.intake_url + "/intake", TOKEN)
    try:
        result = await intake.accept([github_event("delivery-1")])
        name = run_name("delivery-1", NAMESPACE, "hello")
        assert (result.runs, result.duplicates) == ([name], [])
        # Acknowledged only once recorded: the SensorRun is there as soon as accept returns.
        created = await api.get(SENSORRUNS, NAMESPACE, name)
        assert created is not None
        spec = created["spec"]
        assert spec["sensor"] == "hello" and spec["sensorID"] == "say hello"
        assert spec["delivery"] == "delivery-1"
        assert spec["event"]["pull_request"]["number"] == 7
        assert spec["sensorSnapshot"]["tasks"][0]["id"] == "hello"
        assert created["metadata"]["labels"]["hiphops.io/sensor"] == "hello"

        body = await _finished_run(api, name)
        status = body["status"]
        assert status["state"] == "COMPLETE", status
        assert status["duration"].endswith("s")
        hello, after = status["tasks"]
        assert (hello["id"], hello["state"], hello["attempts"]) == ("hello", "COMPLETE", 1)
        assert hello["result"] == {"logged": {"pr": 7}}
        assert after["result"] == {"logged": {"text": "PR Bump deps"}}
        assert set(after["times"]) == {"PENDING", "READY", "RUNNING", "COMPLETE"}

        # The same delivery again: a duplicate, nothing runs twice.
        again = await intake.accept([github_event("delivery-1")])
        assert (again.runs, again.duplicates) == ([], [name])
        runs = await api.list(SENSORRUNS, NAMESPACE)
        assert [r["metadata"]["name"] for r in runs] == [name]
        assert (await api.get(SENSORRUNS, NAMESPACE, name))["status"] == status
    finally:
        await intake.close()

    # Events on the SensorRun and the Sensor, and the sensor's statistics.
    async def reasons(kind_name: str) -> set[str]:
        return {
            e["reason"]
            for e in await api.list(EVENTS, NAMESPACE)
            if e["involvedObject"]["name"] == kind_name
        }

    await wait_for(lambda: _has(reasons(name), {"RunStarted", "RunComplete"}))
    await wait_for(lambda: _has(reasons("hello"), {"RunStarted", "RunComplete"}))

    async def counted() -> dict[str, Any] | None:
        status = (await api.get(SENSORS, NAMESPACE, "hello"))["status"]
        counters = status.get("counters") or {}
        return status if (counters.get("runs") or {}).get("complete") == 1 else None

    status = await wait_for(counted)
    assert status["counters"]["matched"] == 1
    assert status["lastRun"] == name
    assert status["lastMatched"].endswith("Z")


async def _has(found: Any, wanted: set[str]) -> bool:
    return wanted <= await found


async def test_the_intake_refuses_requests_without_the_token(
    settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings)
    body = {"events": [github_event("d-401")]}
    async with aiohttp.ClientSession() as http:
        url = operator.intake_url + "/intake"
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 401, headers
        good = {"Authorization": f"Bearer {TOKEN}"}
        for bad in ({"events": "no"}, {"events": [{"project_id": "x"}]}, ["not", "an object"]):
            async with http.post(url, json=bad, headers=good) as response:
                assert response.status == 400, bad
        async with http.post(url, json=body, headers=good) as response:
            assert response.status == 200
            assert await response.json() == {"runs": [], "duplicates": []}  # no sensor
        async with http.get(operator.intake_url + "/readyz") as response:
            assert response.status == 200
        metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        async with http.get(metrics_url) as response:
            text = await response.text()
    assert 'hiphops_operator_intake_rejections_total{reason="unauthorized"} 4.0' in text
    assert 'hiphops_operator_events_received_total{source="github"} 1.0' in text
    assert "hiphops_operator_active 1.0" in text


async def test_an_intake_without_a_token_file_refuses_everything(
    settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings, intake_token_file=None)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            operator.intake_url + "/intake",
            json={"events": []},
            headers={"Authorization": "Bearer "},
        ) as response,
    ):
        assert response.status == 401


async def test_an_event_too_large_for_a_sensorrun_is_recorded_as_a_failed_run(
    api: AsyncApi, settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings, max_run_bytes=50_000)
    await _ready_sensor(api, "hello", SENSOR)
    event = github_event("big-1", padding="x" * 60_000)
    intake = HTTPIntake(operator.intake_url + "/intake", TOKEN)
    try:
        result = await intake.accept([event])
    finally:
        await intake.close()
    name = run_name("big-1", NAMESPACE, "hello")
    # Acknowledged (a sender retrying would only fail again), never silently truncated:
    assert result.runs == [name]
    body = await _finished_run(api, name)
    assert body["spec"]["eventOmitted"]["bytes"] > 60_000
    assert body["spec"]["eventOmitted"]["limit"] == 50_000
    assert "padding" not in body["spec"]["event"]
    assert body["metadata"]["annotations"]["hiphops.io/event-omitted"].endswith("/50000")
    assert body["spec"]["event"]["hiphops"]["delivery"] == "big-1"
    status = body["status"]
    assert status["state"] == "FAILURE"
    assert "event too large to record" in status["error"] and "no task ran" in status["error"]
    assert all(task["state"] == "PENDING" for task in status["tasks"])
    assert operator.runtime.metrics.events_too_large._value.get() == 1


async def test_a_failed_task_is_reported_in_events_and_metrics(
    api: AsyncApi, settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings)
    spec = {
        "tasks": [
            {"name": "log.message", "id": "fine"},
            {"name": "nope.missing", "id": "broken"},
        ]
    }
    await _ready_sensor(api, "flaky", spec)
    intake = HTTPIntake(operator.intake_url + "/intake", TOKEN)
    try:
        await intake.accept([github_event("fail-1")])
    finally:
        await intake.close()
    name = run_name("fail-1", NAMESPACE, "flaky")
    body = await _finished_run(api, name)
    assert body["status"]["state"] == "FAILURE"
    assert body["status"]["error"] == "task broken failed"

    async def warnings(involved: str) -> dict[str, str]:
        return {
            e["reason"]: e["message"]
            for e in await api.list(EVENTS, NAMESPACE)
            if e["involvedObject"]["name"] == involved and e["type"] == "Warning"
        }

    found = await wait_for(lambda: _both(warnings(name)))
    assert (
        "task broken (nope.missing) failed: no handler for task 'nope.missing'"
        in (found["TaskFailed"])
    )
    assert found["RunFailed"] == "run failed: task broken failed"
    on_sensor = await wait_for(lambda: _both(warnings("flaky")))
    assert on_sensor["RunFailed"].startswith(f"{name}: ")

    registry = operator.runtime.metrics.registry
    assert (
        registry.get_sample_value("hiphops_operator_runs_finished_total", {"outcome": "FAILURE"})
        == 1
    )
    assert (
        registry.get_sample_value(
            "hiphops_operator_task_seconds_count", {"task": "log.message", "outcome": "COMPLETE"}
        )
        == 1
    )
    assert registry.get_sample_value("hiphops_operator_runs_created_total") == 1
    assert registry.get_sample_value("hiphops_operator_sensors_loaded") == 1


async def _both(found: Any) -> dict[str, str] | None:
    reasons: dict[str, str] = await found
    return reasons if {"TaskFailed", "RunFailed"} <= set(reasons) else None
