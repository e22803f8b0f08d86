"""The intake: where verified, normalized events are handed over to be matched and recorded.

The webhook gateway acknowledges a webhook only after ``Intake.accept`` returned, so an
implementation must have recorded every run durably by then (DESIGN §1: nothing accepted is lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from hiphops.executor import Executor
from hiphops.matcher import Matcher
from hiphops.runs import Run, run_name
from hiphops.store import RunStore, StoredRun

logger = logging.getLogger("hiphops.intake")


@dataclass(frozen=True)
class IntakeResult:
    """What the intake did with the events of one delivery."""

    runs: list[str]  # names of runs created for these events
    duplicates: list[str]  # names of runs that already existed (a redelivery)


class IntakeUnavailable(Exception):
    """The intake could not durably accept the events; the sender should retry."""


class Intake(Protocol):
    """Accepts the normalized events of one delivery."""

    async def accept(self, events: Sequence[Mapping[str, Any]]) -> IntakeResult:
        """Durably accept normalized events (match, record runs).

        Returns only once every run is recorded. Raises IntakeUnavailable.
        """
        ...


class LocalIntake:
    """The in-process intake of local mode: match, record the runs in the run store, start them.

    Runs are recorded in one transaction before `accept` returns; a run name already in the store
    (the same delivery again) is a duplicate and starts nothing.
    """

    def __init__(
        self,
        matcher: Matcher,
        store: RunStore,
        executor: Executor,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.matcher = matcher
        self.store = store
        self.executor = executor
        self.clock = clock

    async def accept(self, events: Sequence[Mapping[str, Any]]) -> IntakeResult:
        now = self.clock()
        runs: list[Run] = []
        for event in events:
            # Off the event loop: a sensor's JavaScript may take up to its time limit, and the
            # loop serves every other webhook meanwhile.
            result = await asyncio.to_thread(self.matcher.match, event)
            for error in result.errors:
                logger.warning(
                    "sensor %s/%s: %s", error.sensor.project, error.sensor.name, error.error
                )
            delivery = str(event["hiphops"]["delivery"])
            for sensor in result.sensors:
                name = run_name(delivery, sensor.project, sensor.name)
                runs.append(Run.start(sensor, event, name=name, now=now))
        if not runs:
            return IntakeResult(runs=[], duplicates=[])
        stored = [StoredRun(record=run.record, sensor_spec=run.sensor.spec) for run in runs]
        try:
            created = await asyncio.to_thread(self.store.create_many, stored)
        except Exception as exc:  # a full disk, a locked database: the sender must retry
            logger.exception("could not record runs")
            raise IntakeUnavailable(f"could not record runs: {type(exc).__name__}") from None
        new = [run for run, ok in zip(runs, created, strict=True) if ok]
        await self.executor.start_runs(new)
        return IntakeResult(
            runs=[run.record.name for run in new],
            duplicates=[run.record.name for run, ok in zip(runs, created, strict=True) if not ok],
        )
