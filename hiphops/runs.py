"""The run lifecycle (DESIGN §4 "Runs") as a pure, resumable state machine.

A run executor drives it: `advance()` after start and after every task result returns the tasks
that are READY to start; the executor reports `mark_running`, `complete` and `fail`. Everything
that matters lives in the serializable `RunRecord`, so a run interrupted by a restart resumes
from its record. Nothing here does I/O or reads the clock: callers pass `now`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from hiphops import js
from hiphops.context import Context
from hiphops.inputs import InputError
from hiphops.sensor import Sensor, TaskSpec


class TaskState(StrEnum):
    PENDING = "PENDING"
    READY = "READY"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"


class RunState(StrEnum):
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILURE = "FAILURE"


FINAL_TASK_STATES = frozenset({TaskState.COMPLETE, TaskState.FAILURE, TaskState.SKIPPED})


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, the form every record and context uses."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_name(delivery: str, project: str, sensor_name: str) -> str:
    """The deterministic name of the run of one sensor for one delivered event.

    A redelivered webhook yields the same name, so the run is found already there and nothing
    starts twice. The name is a valid Kubernetes resource name (it names SensorRuns too).
    """
    digest = hashlib.sha256(f"{project}\x00{sensor_name}\x00{delivery}".encode()).hexdigest()
    return f"{sensor_name[:40].rstrip('-')}-{digest[:16]}"


class TransitionError(RuntimeError):
    """The executor reported something the lifecycle does not allow (a bug in the caller)."""


@dataclass
class TaskRecord:
    """A task's lifecycle within one run: state, when each state was reached, input and outcome."""

    id: str
    name: str
    index: int
    state: TaskState = TaskState.PENDING
    times: dict[str, str] = field(default_factory=dict)
    input: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    reason: str | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        return cls(**{**data, "state": TaskState(data["state"]), "times": dict(data["times"])})

    def context(self) -> dict[str, Any]:
        """What `tasks.<id>` shows paths and expressions."""
        view: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "result": self.result,
            "error": self.error,
        }
        if self.input is not None:
            view["input"] = self.input
        view.update(self.times)
        return view


@dataclass
class RunRecord:
    """Everything about one (event, sensor) run; the durable record a run resumes from."""

    name: str
    project: str
    sensor: str
    sensor_id: str
    event: dict[str, Any]
    started: str
    tasks: list[TaskRecord]
    state: RunState = RunState.RUNNING
    finished: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = [t.to_dict() for t in self.tasks]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        return cls(
            **{
                **data,
                "state": RunState(data["state"]),
                "tasks": [TaskRecord.from_dict(t) for t in data["tasks"]],
            }
        )

    def task(self, task_id: str) -> TaskRecord:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)


class Run:
    """A run of one sensor for one event: the record plus the compiled sensor that drives it."""

    def __init__(self, sensor: Sensor, record: RunRecord) -> None:
        if [t.id for t in record.tasks] != list(sensor.task_ids):
            raise ValueError(f"run {record.name} does not belong to this version of the sensor")
        self.sensor = sensor
        self.record = record

    @classmethod
    def start(cls, sensor: Sensor, event: Mapping[str, Any], *, name: str, now: datetime) -> Run:
        """A new run with every task PENDING. Call `advance` to find the tasks to start."""
        started = timestamp(now)
        tasks = [
            TaskRecord(id=t.id, name=t.name, index=t.index, times={"PENDING": started})
            for t in sensor.tasks
        ]
        record = RunRecord(
            name=name,
            project=sensor.project,
            sensor=sensor.name,
            sensor_id=sensor.id,
            event=dict(event),
            started=started,
            tasks=tasks,
        )
        return cls(sensor, record)

    @property
    def finished(self) -> bool:
        return self.record.state is not RunState.RUNNING

    def context(self) -> Context:
        """What paths and expressions see now: the event, tasks by id and index, vars, run."""
        tasks: dict[str, Any] = {}
        for task in self.record.tasks:
            view = task.context()
            tasks[task.id] = view
            tasks[str(task.index)] = view
        run = {
            "name": self.record.name,
            "sensor": self.record.sensor_id,
            "sensor_name": self.record.sensor,
            "project": self.record.project,
            "started": self.record.started,
        }
        return Context(
            {"event": self.record.event, "tasks": tasks, "vars": dict(self.sensor.vars), "run": run}
        )

    def ready(self) -> list[TaskRecord]:
        return [t for t in self.record.tasks if t.state is TaskState.READY]

    def running(self) -> list[TaskRecord]:
        return [t for t in self.record.tasks if t.state is TaskState.RUNNING]

    def advance(self, now: datetime) -> list[TaskRecord]:
        """Settle every PENDING task whose `depends` now holds (READY, SKIPPED or, when its input
        cannot be rendered, FAILURE), repeat until nothing changes, finish the run if nothing can
        move any more, and return the READY tasks."""
        if self.finished:
            return []
        while self._settle_one(now):
            pass
        if not self.ready() and not self.running():
            self._finish(now)
        return self.ready()

    def _settle_one(self, now: datetime) -> bool:
        context = self.context()
        for spec, task in zip(self.sensor.tasks, self.record.tasks, strict=True):
            if task.state is not TaskState.PENDING:
                continue
            try:
                if spec.depends is not None and not spec.depends.holds(context):
                    continue
            except js.JSError as exc:
                self._set(task, TaskState.FAILURE, now, error=f"depends: {exc}")
                return True
            self._settle(spec, task, context, now)
            return True
        return False

    def _settle(self, spec: TaskSpec, task: TaskRecord, context: Context, now: datetime) -> None:
        if spec.when is not None:
            try:
                reason = spec.when.first_failure(context)
            except js.JSError as exc:
                self._set(task, TaskState.FAILURE, now, error=f"when: {exc}")
                return
            if reason is not None:
                self._set(task, TaskState.SKIPPED, now, reason=f"when did not hold: {reason}")
                return
        try:
            task.input = spec.input.render(context)
        except InputError as exc:
            self._set(task, TaskState.FAILURE, now, error=f"input: {exc}")
            return
        self._set(task, TaskState.READY, now)

    def waiting_reason(self, task: TaskRecord) -> str | None:
        """Why a PENDING task has not started: the first `depends` clause that does not hold."""
        spec = self.sensor.tasks[task.index]
        if task.state is not TaskState.PENDING or spec.depends is None:
            return None
        try:
            return spec.depends.first_failure(self.context())
        except js.JSError as exc:
            return f"depends: {exc}"

    def mark_running(self, task_id: str, now: datetime) -> TaskRecord:
        """The executor started (or, after a restart, restarted) the task's handler."""
        task = self.record.task(task_id)
        if task.state not in (TaskState.READY, TaskState.RUNNING) or self.finished:
            raise TransitionError(f"task {task_id} is {task.state}, not READY")
        task.attempts += 1
        if task.state is TaskState.READY:
            self._set(task, TaskState.RUNNING, now)
        return task

    def complete(self, task_id: str, result: Any, now: datetime) -> list[TaskRecord]:
        """The task's handler returned `result`. Returns the tasks now READY."""
        task = self._active(task_id, (TaskState.RUNNING,))
        self._set(task, TaskState.COMPLETE, now, result=result)
        return self.advance(now)

    def fail(self, task_id: str, error: str, now: datetime) -> list[TaskRecord]:
        """The task failed with `error` (before or while running). Returns the tasks now READY."""
        task = self._active(task_id, (TaskState.READY, TaskState.RUNNING))
        self._set(task, TaskState.FAILURE, now, error=error)
        return self.advance(now)

    def _active(self, task_id: str, allowed: tuple[TaskState, ...]) -> TaskRecord:
        task = self.record.task(task_id)
        if task.state not in allowed or self.finished:
            expected = " or ".join(allowed)
            raise TransitionError(f"task {task_id} is {task.state}, not {expected}")
        return task

    def _set(
        self,
        task: TaskRecord,
        state: TaskState,
        now: datetime,
        *,
        result: Any = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        task.state = state
        task.times[state.value] = timestamp(now)
        if result is not None:
            task.result = result
        task.error = error
        task.reason = reason

    def _finish(self, now: datetime) -> None:
        stuck = [t for t in self.record.tasks if t.state is TaskState.PENDING]
        failed = [t for t in self.record.tasks if t.state is TaskState.FAILURE]
        problems = []
        if failed:
            problems.append(f"task {', '.join(t.id for t in failed)} failed")
        for task in stuck:
            task.reason = f"can never start: {self.waiting_reason(task)}"
        if stuck:
            waits = "; ".join(f"{t.id} ({t.reason})" for t in stuck)
            problems.append(f"tasks that can never start: {waits}")
        self.record.state = RunState.FAILURE if problems else RunState.COMPLETE
        self.record.error = "; ".join(problems) or None
        self.record.finished = timestamp(now)
