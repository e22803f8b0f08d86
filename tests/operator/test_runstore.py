"""The SensorRun-backed run store against the API emulator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hiphops.runs import Run, RunState, TaskState, run_name
from hiphops.sensor import compile_sensor
from hiphops.store import StoredRun
from hiphops_operator.kube import SENSORRUNS
from hiphops_operator.metrics import OperatorMetrics
from hiphops_operator.runstore import KubeRunStore, RunStoreUnavailable, record_from_object

from .conftest import NAMESPACE, AsyncApi, Emulator, github_event

pytestmark = pytest.mark.asyncio

SPEC = {"tasks": [{"name": "log.message", "id": "a"}, {"name": "log.message"}]}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _run(delivery: str, sensor: str = "s", namespace: str = NAMESPACE, **extra: Any) -> StoredRun:
    compiled = compile_sensor(SPEC, name=sensor, project=namespace)
    event = github_event(delivery, namespace=namespace, **extra)
    run = Run.start(compiled, event, name=run_name(delivery, namespace, sensor), now=NOW)
    return StoredRun(record=run.record, sensor_spec=SPEC)


def _store(api: AsyncApi, **options: Any) -> KubeRunStore:
    return KubeRunStore(api.kube, **options)


async def test_create_then_duplicate_then_read_back(api: AsyncApi) -> None:
    store = _store(api)
    first = _run("d1")
    created = await asyncio.to_thread(store.create_many, [first, _run("d2")])
    assert created == [True, True]
    assert await asyncio.to_thread(store.create_many, [_run("d1")]) == [False]

    # Without a status yet, a SensorRun reads as the run's first state.
    stored = await asyncio.to_thread(store.get, first.record.name)
    assert stored is not None
    assert stored.record == first.record
    assert stored.sensor_spec == SPEC
    unfinished = await asyncio.to_thread(store.unfinished)
    assert sorted(s.record.name for s in unfinished) == sorted(
        [first.record.name, run_name("d2", NAMESPACE, "s")]
    )
    assert [r.name for r in await asyncio.to_thread(store.list, limit=1)] == [
        max(first.record.name, run_name("d2", NAMESPACE, "s"))
    ]
    assert await asyncio.to_thread(store.get, "no-such-run") is None
    await asyncio.to_thread(store.close)


async def test_saves_write_only_what_changed(api: AsyncApi) -> None:
    store = _store(api)
    stored = _run("d1")
    await asyncio.to_thread(store.create_many, [stored])
    writes = store.writes
    run = Run(compile_sensor(SPEC, name="s", project=NAMESPACE), stored.record)
    run.advance(NOW)
    await asyncio.to_thread(store.save, run.record)
    await asyncio.to_thread(store.save, run.record)  # nothing changed: no write
    assert store.writes == writes + 1
    run.mark_running("a", NOW)
    run.complete("a", {"ok": 1}, NOW + timedelta(seconds=2))
    await asyncio.to_thread(store.save, run.record)
    assert store.writes == writes + 2
    body = await api.get(SENSORRUNS, NAMESPACE, stored.record.name)
    assert body is not None
    assert record_from_object(body) == run.record
    assert body["status"]["tasks"][0]["result"] == {"ok": 1}
    assert "error" not in body["status"]["tasks"][0]  # absent, never null

    missing = _run("never-created").record
    with pytest.raises(KeyError):
        await asyncio.to_thread(store.save, missing)
    await asyncio.to_thread(store.close)


async def test_retention_deletes_runs_finished_before_the_cutoff(api: AsyncApi) -> None:
    store = _store(api)
    old, recent, running = _run("old"), _run("recent"), _run("running")
    await asyncio.to_thread(store.create_many, [old, recent, running])
    for stored, finished in ((old, NOW), (recent, NOW + timedelta(days=2))):
        stored.record.state = RunState.COMPLETE
        stored.record.finished = finished.isoformat().replace("+00:00", "Z")
        await asyncio.to_thread(store.save, stored.record)
    body = await api.get(SENSORRUNS, NAMESPACE, recent.record.name)
    assert body is not None and body["status"]["duration"] == "48h0m0s"
    deleted = await asyncio.to_thread(store.delete_finished_before, NOW + timedelta(days=1))
    assert deleted == 1
    names = {o["metadata"]["name"] for o in await api.list(SENSORRUNS, NAMESPACE)}
    assert names == {recent.record.name, running.record.name}
    await asyncio.to_thread(store.close)


async def test_a_failed_creation_rolls_back_the_others(api: AsyncApi, emulator: Emulator) -> None:
    store = _store(api)
    emulator["post /apis/hiphops.io/v1alpha1/namespaces/team-b/sensorruns"] << 500
    good, bad = _run("d1"), _run("d1", namespace="team-b")
    with pytest.raises(RunStoreUnavailable, match="could not create SensorRuns"):
        await asyncio.to_thread(store.create_many, [good, bad])
    # Nothing is left that the sender's retry would take for a duplicate and never start.
    assert await api.get(SENSORRUNS, NAMESPACE, good.record.name) is None
    await asyncio.to_thread(store.close)


async def test_a_status_too_large_is_written_without_the_largest_results(api: AsyncApi) -> None:
    metrics = OperatorMetrics()
    store = _store(api, max_bytes=20_000, metrics=metrics)
    stored = _run("d1")
    await asyncio.to_thread(store.create_many, [stored])
    run = Run(compile_sensor(SPEC, name="s", project=NAMESPACE), stored.record)
    run.advance(NOW)
    run.mark_running("a", NOW)
    run.complete("a", {"blob": "x" * 30_000}, NOW)
    await asyncio.to_thread(store.save, run.record)
    body = await api.get(SENSORRUNS, NAMESPACE, stored.record.name)
    assert body is not None
    status = body["status"]
    assert status["state"] == "FAILURE"
    assert "too large to record" in status["error"] and "a result" in status["error"]
    assert "result" not in status["tasks"][0]
    assert status["tasks"][0]["state"] == TaskState.COMPLETE.value
    assert metrics.status_too_large._value.get() == 1
    await asyncio.to_thread(store.close)
