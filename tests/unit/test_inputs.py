from typing import Any

import pytest

from hiphops.context import Context
from hiphops.inputs import InputError, compile_input, interpolation_text
from hiphops.paths import MISSING
from hiphops.problems import Problems

CONTEXT = Context(
    {
        "event": {
            "repo_name": "hiphops",
            "pr_number": 7,
            "labels": ["bug", "ui"],
            "mixed": [1, None, True, "x"],
            "objects": [{"a": 1}],
            "author": {"login": "octocat"},
            "body": None,
            "pull_request": {"labels": [{"name": "bug"}, {"name": "ui"}]},
        },
        "tasks": {"build": {"state": "COMPLETE", "result": {"sha": "abc"}}},
        "vars": {"channel": "#deploys"},
        "run": {"name": "r1"},
    }
)


def render(raw: Any) -> dict[str, Any]:
    problems = Problems()
    template = compile_input(raw, "tasks[0].input", problems, ["build"])
    assert not problems.errors, [str(p) for p in problems.errors]
    return template.render(CONTEXT)


def errors_of(raw: Any) -> list[str]:
    problems = Problems()
    compile_input(raw, "tasks[0].input", problems, ["build"])
    return [str(p) for p in problems.errors]


def test_literals_pass_through() -> None:
    assert render({"a": 1, "b": [True, None], "c": {"d": "e"}}) == {
        "a": 1,
        "b": [True, None],
        "c": {"d": "e"},
    }


def test_path_values_keep_their_type_and_missing_drops_the_key() -> None:
    assert render(
        {"(path)repo": "event.repo_name", "(path)n": "event.pr_number", "(path)x": "event.nope"}
    ) == {"repo": "hiphops", "n": 7}
    assert render({"(path)labels": "event.labels"}) == {"labels": ["bug", "ui"]}
    assert render({"(path)sha": "tasks.build.result.sha"}) == {"sha": "abc"}


def test_query_is_jmespath_over_the_context() -> None:
    assert render({"(query)names": "event.pull_request.labels[].name"}) == {"names": ["bug", "ui"]}
    assert render({"(query)none": "event.nope"}) == {}


def test_expr_is_javascript() -> None:
    assert render({"(expr)n": "event.pr_number * 2", "(expr)u": "undefined"}) == {"n": 14}
    assert render({"(expr)o": "({a: event.repo_name})"}) == {"o": {"a": "hiphops"}}


def test_dollar_merges_over_the_other_keys() -> None:
    assert render({"a": 1, "b": 2, "$": "({b: 3, c: event.pr_number})"}) == {"a": 1, "b": 3, "c": 7}
    assert render({"a": 1, "$": "null"}) == {"a": 1}


@pytest.mark.parametrize("expression", ["42", "'text'", "[1, 2]", "true"])
def test_dollar_returning_a_non_object_fails_clearly(expression: str) -> None:
    problems = Problems()
    template = compile_input({"$": expression}, "tasks[0].input", problems, [])
    with pytest.raises(InputError, match=r"tasks\[0\]\.input\.\$: must return an object"):
        template.render(CONTEXT)


def test_runtime_javascript_error_names_the_key() -> None:
    problems = Problems()
    template = compile_input({"(expr)x": "event.nope.deeper"}, "tasks[0].input", problems, [])
    with pytest.raises(InputError, match=r"tasks\[0\]\.input\.\(expr\)x: .*TypeError"):
        template.render(CONTEXT)


def test_interpolation_rendering_rules() -> None:
    assert render(
        {
            "s": "PR ${event.pr_number} on ${ event.repo_name }",
            "list": "labels: ${event.labels}",
            "mixed": "${event.mixed}",
            "obj": "by ${event.author}",
            "objs": "${event.objects}",
            "missing": "[${event.nope}]",
            "null": "[${event.body}]",
            "escaped": "$${event.repo_name} and $$ and $x",
            "nested": {"deep": ["${vars.channel}"]},
        }
    ) == {
        "s": "PR 7 on hiphops",
        "list": "labels: bug,ui",
        "mixed": "1,,true,x",
        "obj": 'by {"login":"octocat"}',
        "objs": '[{"a":1}]',
        "missing": "[]",
        "null": "[]",
        "escaped": "${event.repo_name} and $$ and $x",
        "nested": {"deep": ["#deploys"]},
    }


def test_interpolation_text_values() -> None:
    assert interpolation_text(MISSING) == ""
    assert interpolation_text(True) == "true"
    assert interpolation_text(1.5) == "1.5"


def test_decorators_work_in_nested_maps() -> None:
    assert render({"outer": {"(path)repo": "event.repo_name"}}) == {"outer": {"repo": "hiphops"}}


def test_every_input_problem_is_reported() -> None:
    errors = errors_of(
        {
            "(paht)repo": "event.repo_name",
            "(path)": "event.x",
            "(path)a": 3,
            "(path)b": "repo_name",
            "(path)c": "tasks.deploy.result",
            "(query)d": "event.[",
            "(expr)e": "event.(",
            "$": "{{",
            "f": "${event.unclosed",
            "g": "${tasks.nope.result}",
        }
    )
    joined = "\n".join(errors)
    assert len(errors) == 10, joined
    assert "tasks[0].input.(paht)repo: unknown decorator (paht)" in joined
    assert "malformed key '(path)'" in joined
    assert "(path) needs a string value" in joined
    assert "did you mean 'event.repo_name'" in joined
    assert "no task 'deploy'" in joined
    assert "JMESPath does not compile" in joined
    assert "tasks[0].input.(expr)e: JavaScript does not compile" in joined
    assert "tasks[0].input.$: JavaScript does not compile" in joined
    assert "unclosed '${'" in joined
    assert "no task 'nope'" in joined


def test_input_must_be_a_map() -> None:
    assert errors_of(["a"]) == ["tasks[0].input: must be a map of input keys"]
