"""What the operator tells about runs: metrics, Kubernetes Events and sensor statistics.

The run store calls the reporter after each successful write (from its own threads); the
reporter hands the record over to the event loop and there compares it with the previous one it
saw, so that each transition is reported once: a run created (Event `RunStarted` on the SensorRun
and the Sensor), a task failed (`TaskFailed`, Warning), a task finished (duration metric by task
and outcome), a run finished (`RunComplete`, or `RunFailed` as a Warning, on both objects).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime
from typing import Final

from hiphops.loader import API_VERSION
from hiphops.runs import FINAL_TASK_STATES, RunRecord, RunState, TaskState

from .events import EventPoster, Involved
from .metrics import OperatorMetrics
from .sensors import SensorBook, SensorStats

logger = logging.getLogger("hiphops.operator.reporter")

#: Finished runs remembered, so that a repeated final save is not reported twice.
_DONE_MEMORY: Final = 10_000


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        began = datetime.fromisoformat(start.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max((ended - began).total_seconds(), 0.0)


class RunReporter:
    """A `runstore.RunListener` turning run records into metrics, Events and statistics."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        metrics: OperatorMetrics,
        events: EventPoster,
        sensors: SensorBook,
        stats: SensorStats,
    ) -> None:
        self._loop = loop
        self._metrics = metrics
        self._events = events
        self._sensors = sensors
        self._stats = stats
        # Task states last reported per run in flight: what a new record is compared with.
        self._seen: dict[str, dict[str, TaskState]] = {}
        self._uids: dict[str, str | None] = {}
        self._done: OrderedDict[str, None] = OrderedDict()

    # --- RunListener (any thread) -----------------------------------------------------------

    def created(self, record: RunRecord, uid: str | None) -> None:
        # The executor changes this record once it starts the run: its task states are taken now.
        states = {t.id: t.state for t in record.tasks}
        self._loop.call_soon_threadsafe(self._created, record, uid, states)

    def saved(self, record: RunRecord, uid: str | None) -> None:
        self._loop.call_soon_threadsafe(self._saved, record, uid)

    def loaded(self, record: RunRecord, uid: str | None) -> None:
        self._loop.call_soon_threadsafe(self._loaded, record, uid)

    # --- on the loop ------------------------------------------------------------------------

    def _run_object(self, record: RunRecord) -> Involved:
        uid = self._uids.get(record.name)
        return Involved(API_VERSION, "SensorRun", record.project, record.name, uid)

    def _sensor_object(self, record: RunRecord) -> Involved | None:
        entry = self._sensors.get(record.project, record.sensor)
        return None if entry is None else entry.about

    def _post(self, record: RunRecord, reason: str, message: str, warning: bool = False) -> None:
        self._events.post(self._run_object(record), reason, message, warning=warning)
        sensor = self._sensor_object(record)
        if sensor is not None:
            self._events.post(sensor, reason, f"{record.name}: {message}", warning=warning)

    def _created(self, record: RunRecord, uid: str | None, states: dict[str, TaskState]) -> None:
        self._uids[record.name] = uid
        self._metrics.runs_created.inc()
        self._stats.matched((record.project, record.sensor), record.name, record.started)
        delivery = (record.event.get("hiphops") or {}).get("delivery")
        self._post(record, "RunStarted", f"run started for delivery {delivery}")
        self._seen[record.name] = states
        if record.state is not RunState.RUNNING:
            self._finished(record)

    def _loaded(self, record: RunRecord, uid: str | None) -> None:
        # A run resumed after a restart: what its record already says was reported before.
        self._uids[record.name] = uid
        self._seen[record.name] = {t.id: t.state for t in record.tasks}

    def _saved(self, record: RunRecord, uid: str | None) -> None:
        if record.name in self._done:
            return
        if uid is not None:
            self._uids.setdefault(record.name, uid)
        before = self._seen.setdefault(record.name, {})
        for task in record.tasks:
            previous = before.get(task.id)
            if task.state == previous:
                continue
            before[task.id] = task.state
            if task.state not in FINAL_TASK_STATES or task.state is TaskState.SKIPPED:
                continue
            outcome = task.state.value
            seconds = _seconds(task.times.get(TaskState.RUNNING.value), task.times.get(outcome))
            if seconds is not None:
                self._metrics.task_seconds.labels(task.name, outcome).observe(seconds)
            if task.state is TaskState.FAILURE:
                self._post(
                    record, "TaskFailed", f"task {task.id} ({task.name}) failed: {task.error}", True
                )
        if record.state is not RunState.RUNNING:
            self._finished(record)

    def _finished(self, record: RunRecord) -> None:
        outcome = record.state.value
        self._metrics.runs_finished.labels(outcome).inc()
        self._stats.finished((record.project, record.sensor), record.state is RunState.COMPLETE)
        if record.state is RunState.COMPLETE:
            self._post(record, "RunComplete", "run complete")
        else:
            self._post(record, "RunFailed", f"run failed: {record.error}", warning=True)
        self._seen.pop(record.name, None)
        self._uids.pop(record.name, None)
        self._done[record.name] = None
        if len(self._done) > _DONE_MEMORY:
            self._done.popitem(last=False)
