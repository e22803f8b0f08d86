"""The index never changes the answer: the matcher agrees with evaluating every sensor."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hiphops.context import Context
from hiphops.matcher import Matcher
from hiphops.sensor import compile_sensor

PATHS = [
    "event.hiphops.source",
    "event.hiphops.event",
    "event.hiphops.action",
    "event.repo",
    "event.labels",
]
VALUES = ["github", "slack", "push", "pull_request", "opened", "a", "b"]
PATTERNS = st.sampled_from([*VALUES, "*", "**", "!a", "!github", "p*", "[ab]", "?"])

clause_values = st.one_of(PATTERNS, st.lists(PATTERNS, min_size=1, max_size=3))
keys = st.sampled_from(PATHS).flatmap(lambda p: st.sampled_from([p, f"(not){p}"]))
whens = st.dictionaries(keys, clause_values, max_size=4)
field_values = st.one_of(
    st.sampled_from(VALUES), st.lists(st.sampled_from(VALUES), max_size=3), st.none()
)


@st.composite
def events(draw: Any) -> dict[str, Any]:
    hiphops = {k: draw(st.sampled_from(VALUES)) for k in ("source", "event", "action")}
    event: dict[str, Any] = {"project_id": draw(st.sampled_from(["p", "q"])), "hiphops": hiphops}
    if draw(st.booleans()):
        del hiphops["action"]
    for key in ("repo", "labels"):
        value = draw(field_values)
        if value is not None:
            event[key] = value
    return event


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(whens, st.sampled_from(["p", "q"])), max_size=12), events())
def test_matcher_agrees_with_a_naive_scan(
    specs: list[tuple[dict[str, Any], str]], event: Any
) -> None:
    sensors = [
        compile_sensor({"when": when, "tasks": [{"name": "a.b"}]}, name=f"s{i}", project=project)
        for i, (when, project) in enumerate(specs)
    ]
    context = Context.for_event(event)
    expected = [
        s.key
        for s in sensors
        if s.project == event["project_id"] and (s.when is None or s.when.holds(context))
    ]
    assert [s.key for s in Matcher(sensors).match(event).sensors] == sorted(expected)
