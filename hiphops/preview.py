"""What sensors would do with an event, without executing anything (`hiphops test`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hiphops import js
from hiphops.context import Context
from hiphops.matcher import Matcher
from hiphops.runs import Run, TaskState
from hiphops.sensor import Sensor


@dataclass(frozen=True)
class TaskPreview:
    id: str
    name: str
    state: TaskState
    input: dict[str, Any] | None
    reason: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "input": self.input,
            "reason": self.reason,
            "error": self.error,
        }


@dataclass(frozen=True)
class SensorPreview:
    sensor: Sensor
    matched: bool
    reason: str | None = None
    tasks: list[TaskPreview] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "sensor": self.sensor.id,
            "name": self.sensor.name,
            "project": self.sensor.project,
        }
        if self.matched:
            data["tasks"] = [t.to_dict() for t in self.tasks]
        else:
            data["reason"] = self.reason
        return data


@dataclass(frozen=True)
class Preview:
    event: Mapping[str, Any]
    matched: list[SensorPreview]
    not_matched: list[SensorPreview]

    def to_dict(self) -> dict[str, Any]:
        hiphops = self.event.get("hiphops")
        return {
            "event": {
                "project_id": self.event.get("project_id"),
                "hiphops": hiphops if isinstance(hiphops, dict) else None,
            },
            "matched": [p.to_dict() for p in self.matched],
            "not_matched": [p.to_dict() for p in self.not_matched],
        }


def _why_not(sensor: Sensor, event: Mapping[str, Any]) -> str:
    project = event.get("project_id")
    if sensor.project != project:
        return f"the sensor is in project {sensor.project!r}, the event in {project!r}"
    if not sensor.enabled:
        return "the sensor is disabled"
    if sensor.when is None:
        return "no reason found"
    try:
        reason = sensor.when.first_failure(Context.for_event(event, sensor.vars))
    except js.JSError as exc:
        return f"when: {exc}"
    return f"when did not hold: {reason}" if reason else "no reason found"


def preview(sensors: Iterable[Sensor], event: Mapping[str, Any], now: datetime) -> Preview:
    """Match `event` against `sensors` and show, for each match, the first wave of its run:
    tasks READY with their rendered input, SKIPPED with why, PENDING with what they wait on."""
    sensors = list(sensors)
    matcher = Matcher(sensors)
    result = matcher.match(event)
    matched_keys = {s.key for s in result.sensors}
    errors = {e.sensor.key: e.error for e in result.errors}
    matched = []
    for sensor in result.sensors:
        run = Run.start(sensor, event, name=f"preview-{sensor.name}", now=now)
        run.advance(now)
        tasks = [
            TaskPreview(
                id=t.id,
                name=t.name,
                state=t.state,
                input=t.input,
                reason=t.reason
                or (run.waiting_reason(t) if t.state is TaskState.PENDING else None),
                error=t.error,
            )
            for t in run.record.tasks
        ]
        matched.append(SensorPreview(sensor, True, tasks=tasks))
    not_matched = [
        SensorPreview(sensor, False, reason=errors.get(sensor.key) or _why_not(sensor, event))
        for sensor in sorted(sensors, key=lambda s: s.key)
        if sensor.key not in matched_keys
    ]
    return Preview(event, matched, not_matched)
