"""The sensor model, compiled from a spec (the same in-memory form for both file formats)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hiphops import js
from hiphops.conditions import Condition, compile_condition
from hiphops.inputs import InputTemplate, compile_input
from hiphops.problems import Problem, Problems, SensorInvalid, join_path

SENSOR_FIELDS: Final = ("id", "enabled", "when", "tasks", "vars")
TASK_FIELDS: Final = ("name", "id", "when", "depends", "input")
TASK_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
TASK_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")
MAX_TASKS: Final = 100
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a sensor: which handler, when, after what, with which input."""

    index: int
    id: str
    name: str
    when: Condition | None
    depends: Condition | None
    input: InputTemplate

    @property
    def integration(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Sensor:
    """A compiled, valid sensor. `name` is unique within `project` (the namespace)."""

    name: str
    project: str
    id: str
    enabled: bool
    when: Condition | None
    tasks: tuple[TaskSpec, ...]
    vars: Mapping[str, Any]
    spec: Mapping[str, Any]
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str]:
        return (self.project, self.name)

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.tasks)


def name_from_id(display_id: str) -> str:
    """A DNS-1123 resource name derived from a display id ("Auto merge!" -> "auto-merge")."""
    slug = re.sub(r"[^a-z0-9]+", "-", display_id.lower()).strip("-")
    return slug[:63].rstrip("-")


def _task_ids(raw_tasks: list[Any], problems: Problems) -> list[str]:
    ids: list[str] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_tasks):
        where = join_path("tasks", index)
        task_id = str(index)
        if isinstance(raw, Mapping) and raw.get("id") is not None:
            raw_id = raw["id"]
            if not isinstance(raw_id, str) or not TASK_ID.fullmatch(raw_id):
                problems.error(
                    join_path(where, "id"),
                    "must be at most 63 letters, digits, '_' and '-' (used in tasks.<id> paths)",
                )
            elif raw_id.isdigit() and raw_id != str(index):
                problems.error(
                    join_path(where, "id"),
                    f"a numeric id must be the task's own index ({index}): tasks.{raw_id} "
                    f"already names task {raw_id} by index",
                )
            else:
                task_id = raw_id
        if task_id in seen:
            problems.error(
                join_path(where, "id"),
                f"duplicate task id {task_id!r} (also tasks[{seen[task_id]}])",
            )
        seen.setdefault(task_id, index)
        ids.append(task_id)
    return ids


def _compile_task(
    raw: Any, index: int, task_ids: list[str], problems: Problems, limits: js.JSLimits | None
) -> TaskSpec | None:
    where = join_path("tasks", index)
    if not isinstance(raw, Mapping):
        problems.error(where, "a task must be a map with at least `name`")
        return None
    for key in raw:
        if key not in TASK_FIELDS:
            problems.error(
                join_path(where, str(key)),
                f"unknown task field (known: {', '.join(TASK_FIELDS)})",
            )
    name = raw.get("name")
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        problems.error(
            join_path(where, "name"),
            "required: the task to run as <integration>.<task>, e.g. github.merge_pr",
        )
        name = ""
    when = depends = None
    if raw.get("when") is not None:
        when = compile_condition(raw["when"], join_path(where, "when"), problems, task_ids, limits)
    if raw.get("depends") is not None:
        depends_where = join_path(where, "depends")
        depends = compile_condition(raw["depends"], depends_where, problems, task_ids, limits)
    task_input = compile_input(
        raw.get("input"), join_path(where, "input"), problems, task_ids, limits
    )
    return TaskSpec(
        index=index, id=task_ids[index], name=name, when=when, depends=depends, input=task_input
    )


def _check_dependencies(tasks: list[TaskSpec], task_ids: list[str], problems: Problems) -> None:
    graph = {t.id: (t.depends.task_references(task_ids) if t.depends else set()) for t in tasks}
    for task in tasks:
        where = join_path("tasks", task.index)
        if task.id in graph[task.id]:
            problems.error(join_path(where, "depends"), "a task cannot depend on itself")
        if task.when is not None:
            unordered = task.when.task_references(task_ids) - graph[task.id] - {task.id}
            for ref in sorted(unordered):
                problems.warning(
                    join_path(where, "when"),
                    f"reads tasks.{ref} but the task does not depend on it, so `when` is checked "
                    f"before {ref!r} has run",
                )
    # Depth-first search for a cycle among distinct tasks; each cycle is reported once.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, set()) - {node}):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                index = task_ids.index(cycle[0])
                problems.error(
                    join_path(join_path("tasks", index), "depends"),
                    f"dependency cycle {' -> '.join(cycle)}: none of these tasks can ever start",
                )
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for task_id in task_ids:
        if task_id not in state:
            visit(task_id)


def compile_sensor(
    spec: Mapping[str, Any],
    *,
    name: str,
    project: str,
    limits: js.JSLimits | None = None,
    ignore_fields: tuple[str, ...] = (),
) -> Sensor:
    """Validate and compile a sensor spec. Raises SensorInvalid listing every error found.

    `spec` has the Sensor manifest's spec fields (the Hiphops file form minus `resource`);
    `ignore_fields` names keys the caller has already handled (such as `resource`).
    """
    problems = Problems()
    for key in spec:
        if key not in SENSOR_FIELDS and key not in ignore_fields:
            problems.error(str(key), f"unknown sensor field (known: {', '.join(SENSOR_FIELDS)})")
    if not DNS_LABEL.fullmatch(name) or len(name) > 253:
        problems.error("metadata.name", f"{name!r} is not a valid resource name (DNS-1123)")
    display_id = spec.get("id", name)
    if not isinstance(display_id, str) or not display_id.strip():
        problems.error("id", "must be a non-empty string")
        display_id = name
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.error("enabled", "must be true or false")
        enabled = True
    sensor_vars = spec.get("vars")
    if sensor_vars is None:
        sensor_vars = {}
    elif not isinstance(sensor_vars, Mapping):
        problems.error("vars", "must be a map")
        sensor_vars = {}
    raw_tasks = spec.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        problems.error("tasks", "required: a non-empty list of tasks")
        raw_tasks = []
    elif len(raw_tasks) > MAX_TASKS:
        problems.error("tasks", f"at most {MAX_TASKS} tasks per sensor")
    when = None
    if spec.get("when") is not None:
        when = compile_condition(spec["when"], "when", problems, None, limits)
    task_ids = _task_ids(raw_tasks, problems)
    tasks = [
        t
        for index, raw in enumerate(raw_tasks)
        if (t := _compile_task(raw, index, task_ids, problems, limits)) is not None
    ]
    if not problems.errors:
        _check_dependencies(tasks, task_ids, problems)
    if problems.errors:
        raise SensorInvalid(problems.items)
    return Sensor(
        name=name,
        project=project,
        id=display_id,
        enabled=enabled,
        when=when,
        tasks=tuple(tasks),
        vars=dict(sensor_vars),
        spec=dict(spec),
        warnings=tuple(problems.warnings),
    )
