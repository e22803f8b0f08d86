"""The in-process intake: matching a sensor's JavaScript does not stall the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hiphops.executor import Executor
from hiphops.intake import LocalIntake
from hiphops.matcher import Matcher
from hiphops.sensor import compile_sensor
from hiphops.store import SQLiteRunStore
from hiphops.tasks import default_registry

# Busy for 100 ms, then false: the event matches nothing, so `accept` awaits nothing but the
# matching itself.
SLOW = "(() => { const s = Date.now(); while (Date.now() - s < 100) {} return false })()"


async def _scenario(tmp_path: Path) -> int:
    sensor = compile_sensor(
        {"when": {"$": SLOW}, "tasks": [{"name": "log.message"}]}, name="slow", project="p"
    )
    store = SQLiteRunStore(tmp_path / "runs.db")
    executor = Executor(store, default_registry(), dry_run=True)
    intake = LocalIntake(Matcher([sensor]), store, executor)
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    event = {"project_id": "p", "hiphops": {"source": "github", "delivery": "d1"}}
    result = await intake.accept([event])
    ticker.cancel()
    await executor.close()
    store.close()
    assert result.runs == [] and result.duplicates == []
    return ticks


def test_the_loop_serves_other_work_while_a_sensor_evaluates(tmp_path: Path) -> None:
    # Were matching done on the loop, `other_work` could not run before `accept` returned.
    assert asyncio.run(_scenario(tmp_path)) > 1
