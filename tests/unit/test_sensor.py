from typing import Any

import pytest

from hiphops.problems import SensorInvalid
from hiphops.sensor import compile_sensor, name_from_id


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"tasks": [{"name": "github.merge_pr"}]}
    base.update(overrides)
    return base


def errors(raw: dict[str, Any], name: str = "s") -> list[str]:
    with pytest.raises(SensorInvalid) as info:
        compile_sensor(raw, name=name, project="p")
    return [str(p) for p in info.value.problems if p.severity == "error"]


def test_minimal_sensor_defaults() -> None:
    sensor = compile_sensor(spec(), name="merge", project="team-a")
    assert sensor.id == "merge"
    assert sensor.enabled
    assert sensor.when is None
    assert sensor.key == ("team-a", "merge")
    assert [(t.id, t.name, t.integration) for t in sensor.tasks] == [
        ("0", "github.merge_pr", "github")
    ]


def test_name_from_id() -> None:
    assert name_from_id("Auto merge Dependabot!") == "auto-merge-dependabot"
    assert name_from_id("x" * 80) == "x" * 63


def test_unknown_fields_and_bad_tasks_all_reported() -> None:
    found = errors(
        {
            "whenn": {},
            "enabled": "yes",
            "tasks": [
                {"name": "merge", "inputs": {}},
                {"name": "github.merge_pr", "id": "a"},
                {"name": "slack.post_message", "id": "a"},
                "not a map",
            ],
        }
    )
    joined = "\n".join(found)
    assert "whenn: unknown sensor field" in joined
    assert "enabled: must be true or false" in joined
    assert "tasks[0].name: required: the task to run as <integration>.<task>" in joined
    assert "tasks[0].inputs: unknown task field" in joined
    assert "tasks[2].id: duplicate task id 'a' (also tasks[1])" in joined
    assert "tasks[3]: a task must be a map" in joined


def test_tasks_required() -> None:
    assert errors({"tasks": []}) == ["tasks: required: a non-empty list of tasks"]
    assert "tasks: required" in errors({"id": "x"})[0]


def test_numeric_task_id_must_be_its_index() -> None:
    found = errors(spec(tasks=[{"name": "a.b", "id": "1"}, {"name": "a.c"}]))
    assert "tasks[0].id: a numeric id must be the task's own index (0)" in found[0]


def test_invalid_resource_name() -> None:
    assert "metadata.name" in errors(spec(), name="Not_Valid")[0]


def test_depends_on_missing_task_and_cycles() -> None:
    found = errors(
        spec(
            tasks=[
                {"name": "a.b", "id": "a", "depends": {"tasks.b.COMPLETE": "*"}},
                {"name": "a.b", "id": "b", "depends": {"tasks.a.COMPLETE": "*"}},
                {"name": "a.b", "id": "c", "depends": {"tasks.c.COMPLETE": "*"}},
                {"name": "a.b", "id": "d", "depends": {"tasks.x.COMPLETE": "*"}},
            ]
        )
    )
    joined = "\n".join(found)
    assert "no task 'x'" in joined
    # cycles are only searched once references resolve
    found = errors(
        spec(
            tasks=[
                {"name": "a.b", "id": "a", "depends": {"tasks.b.COMPLETE": "*"}},
                {"name": "a.b", "id": "b", "depends": {"tasks.a.COMPLETE": "*"}},
                {"name": "a.b", "id": "c", "depends": {"tasks.2.COMPLETE": "*"}},
            ]
        )
    )
    joined = "\n".join(found)
    assert "tasks[0].depends: dependency cycle a -> b -> a" in joined
    assert "tasks[2].depends: a task cannot depend on itself" in joined


def test_when_reading_a_task_it_does_not_depend_on_warns() -> None:
    sensor = compile_sensor(
        spec(
            tasks=[
                {"name": "a.b", "id": "a"},
                {"name": "a.b", "id": "b", "when": {"tasks.a.result.ok": "true"}},
            ]
        ),
        name="s",
        project="p",
    )
    assert "does not depend on it" in str(sensor.warnings[0])


def test_vars_must_be_a_map() -> None:
    assert errors(spec(vars=[1])) == ["vars: must be a map"]
