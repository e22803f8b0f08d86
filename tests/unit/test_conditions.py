from typing import Any

import pytest

from hiphops.conditions import compile_condition, value_text
from hiphops.context import Context
from hiphops.problems import Problems

EVENT: dict[str, Any] = {
    "project_id": "team-a",
    "hiphops": {"source": "github", "event": "pull_request", "action": "opened"},
    "ref": "refs/heads/releases/v1",
    "number": 42,
    "draft": False,
    "score": 1.5,
    "nothing": None,
    "pull_request": {
        "base": {"ref": "main"},
        "labels": [{"name": "bug"}, {"name": "ui"}],
        "user": {"login": "dependabot[bot]"},
    },
    "labels": ["bug", "ui", "release/1.0"],
    "commits": [{"id": "a1"}, {"id": "b2"}],
}


def check(block: dict[str, Any], event: dict[str, Any] = EVENT) -> bool:
    problems = Problems()
    condition = compile_condition(block, "when", problems, ["build", "notify"])
    assert not problems.errors, problems.errors
    assert condition is not None
    return condition.holds(Context.for_event(event))


def errors_of(block: Any, task_ids: list[str] | None = None) -> list[str]:
    problems = Problems()
    compile_condition(block, "when", problems, task_ids if task_ids is not None else ["build"])
    return [str(p) for p in problems.errors]


def test_all_clauses_must_hold() -> None:
    assert check({"event.hiphops.source": "github", "event.hiphops.action": "opened"})
    assert not check({"event.hiphops.source": "github", "event.hiphops.action": "closed"})


def test_dot_path_indexes_lists() -> None:
    assert check({"event.commits.1.id": "b2"})
    assert not check({"event.commits.5.id": "*"})


def test_missing_path_is_no_match_even_for_double_star() -> None:
    assert not check({"event.no.such.path": "**"})


def test_not_inverts_the_clause() -> None:
    assert check({"(not)event.pull_request.base.ref": "develop"})
    assert not check({"(not)event.pull_request.base.ref": "main"})
    assert check({"(not)event.no.such.path": "**"})


def test_star_does_not_cross_slash_but_double_star_does() -> None:
    assert not check({"event.ref": "refs/heads/*"})
    assert check({"event.ref": "refs/heads/**"})
    assert check({"event.ref": "refs/*/releases/*"})


def test_list_is_a_bucket_read_top_down() -> None:
    assert check({"event.ref": ["refs/heads/**", "!refs/heads/main"]})
    assert not check({"event.ref": ["refs/heads/**", "!refs/heads/releases/**"]})
    # a later positive pattern adds back what an earlier negative removed
    assert check({"event.ref": ["refs/heads/**", "!refs/heads/releases/**", "**/v1"]})


def test_negation_only_list_never_holds_and_warns() -> None:
    problems = Problems()
    condition = compile_condition({"event.ref": ["!main"]}, "when", problems, [])
    assert condition is not None and not problems.errors
    assert "never holds" in str(problems.warnings[0])
    assert not condition.holds(Context.for_event(EVENT))


def test_list_fields_contribute_each_element() -> None:
    assert check({"event.labels": "ui"})
    assert check({"event.labels": "release/*"})
    assert not check({"event.labels": "release"})
    # the bucket holds elements: removing `bug` leaves `ui` and `release/1.0`
    assert check({"event.labels": ["**", "!bug"]})
    assert not check({"event.labels": ["bug", "!bug"]})


def test_scalars_compare_by_json_text() -> None:
    assert check({"event.number": 42})
    assert check({"event.number": "42"})
    assert check({"event.number": "4?"})
    assert check({"event.draft": False})
    assert check({"event.draft": "false"})
    assert not check({"event.draft": True})
    assert check({"event.score": 1.5})
    assert check({"event.nothing": "null"})
    assert value_text(True) == "true"
    assert value_text({"a": 1}) == '{"a":1}'


def test_objects_compare_by_json_text() -> None:
    assert check({"event.pull_request.base": '{"ref":"main"}'})


def test_dollar_uses_javascript_truthiness() -> None:
    assert check({"$": "event.number > 40"})
    assert not check({"$": "event.number > 50"})
    assert check({"$": "event.labels"})  # a non-empty array is truthy
    assert check({"$": "[]"})  # so is an empty one, in JavaScript
    assert not check({"$": "''"})
    assert not check({"$": "0"})
    assert not check({"$": "event.missing"})
    assert check({"(not)$": "event.draft"})


def test_clause_errors_are_all_reported_with_paths() -> None:
    errors = errors_of(
        {
            "event.a": {"x": 1},
            "pull_request.base.ref": "main",
            "event.b": [],
            "event.c": None,
            "event.d": "[abc",
            "(nope)event.e": "x",
            "$": "event.(",
            "tasks.missing.COMPLETE": "*",
            "tasks.build.COMPLETED": "*",
        }
    )
    joined = "\n".join(errors)
    assert len(errors) == 9, joined
    assert "when.event.a: a map is not a pattern" in joined
    assert "did you mean 'event.pull_request.base.ref'" in joined
    assert "when.event.b: an empty list" in joined
    assert "when.event.c: null is not a pattern" in joined
    assert "unclosed '['" in joined
    assert "unknown decorator (nope)" in joined
    assert "when.$: JavaScript does not compile" in joined
    assert "no task 'missing'" in joined
    assert "no field 'COMPLETED'" in joined


def test_sensor_when_cannot_read_tasks() -> None:
    problems = Problems()
    compile_condition({"tasks.build.COMPLETE": "*"}, "when", problems, None)
    assert "cannot read tasks" in str(problems.errors[0])


def test_not_a_map() -> None:
    assert errors_of(["event.a"]) == ["when: must be a map of clauses (path: pattern)"]


def test_literal_clauses_for_indexing() -> None:
    problems = Problems()
    condition = compile_condition(
        {
            "event.hiphops.source": "github",
            "event.hiphops.action": ["opened", "reopened"],
            "event.ref": "refs/*",
            "(not)event.x": "y",
            "event.y": ["a", "!b"],
        },
        "when",
        problems,
        [],
    )
    assert condition is not None
    assert {path: c.literals() for path, c in condition.literal_clauses().items()} == {
        ("event", "hiphops", "source"): frozenset({"github"}),
        ("event", "hiphops", "action"): frozenset({"opened", "reopened"}),
    }


def test_first_failure_explains() -> None:
    problems = Problems()
    condition = compile_condition(
        {"event.hiphops.source": "github", "event.hiphops.action": "closed"}, "when", problems, []
    )
    assert condition is not None
    reason = condition.first_failure(Context.for_event(EVENT))
    assert reason == 'event.hiphops.action: "opened" does not match [closed]'


@pytest.mark.parametrize("value", ["*", ["*"], 1, True])
def test_accepted_value_forms(value: Any) -> None:
    assert errors_of({"event.x": value}) == []
