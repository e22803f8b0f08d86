from typing import Any

from hiphops.matcher import Matcher
from hiphops.sensor import Sensor, compile_sensor


def sensor(name: str, when: dict[str, Any] | None, project: str = "p", **extra: Any) -> Sensor:
    spec: dict[str, Any] = {"tasks": [{"name": "a.b"}], **extra}
    if when is not None:
        spec["when"] = when
    return compile_sensor(spec, name=name, project=project)


def event(source: str, kind: str, action: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "project_id": fields.pop("project", "p"),
        "hiphops": {"source": source, "event": kind, "action": action},
        **fields,
    }


def names(sensors: list[Sensor]) -> list[str]:
    return [s.name for s in sensors]


GH = "event.hiphops.source"
EV = "event.hiphops.event"
AC = "event.hiphops.action"


def test_matches_only_sensors_whose_when_holds() -> None:
    m = Matcher(
        [
            sensor("opened", {GH: "github", EV: "pull_request", AC: "opened"}),
            sensor("any-pr", {GH: "github", EV: "pull_request"}),
            sensor("closed", {GH: "github", EV: "pull_request", AC: "closed"}),
            sensor("push", {GH: "github", EV: "push"}),
            sensor("everything", None),
            sensor("glob-action", {AC: "open*"}),
        ]
    )
    result = m.match(event("github", "pull_request", "opened"))
    assert names(result.sensors) == ["any-pr", "everything", "glob-action", "opened"]
    assert result.errors == []


def test_projects_are_isolated() -> None:
    m = Matcher([sensor("a", None, project="team-a"), sensor("b", None, project="team-b")])
    assert names(m.match(event("github", "push", project="team-a")).sensors) == ["a"]
    assert m.match(event("github", "push", project="nobody")).sensors == []


def test_index_rules_out_sensors_without_evaluating_them() -> None:
    sensors = [
        sensor(f"repo-{i}", {GH: "github", EV: "pull_request", "event.repository.name": f"r{i}"})
        for i in range(50)
    ]
    sensors += [sensor(f"slack-{i}", {GH: "slack", AC: f"cmd{i}"}) for i in range(50)]
    sensors.append(sensor("glob", {GH: "github", "event.repository.name": "r1*"}))
    m = Matcher(sensors)
    e = event("github", "pull_request", "opened", repository={"name": "r17"})
    assert names(m.candidates(e)) == ["glob", "repo-17"]
    assert names(m.match(e).sensors) == ["glob", "repo-17"]


def test_list_of_literals_and_list_fields_are_indexed_correctly() -> None:
    m = Matcher(
        [
            sensor("two-actions", {AC: ["opened", "reopened"]}),
            sensor("label", {"event.labels": "deploy"}),
        ]
    )
    assert names(m.match(event("github", "pull_request", "reopened")).sensors) == ["two-actions"]
    e = event("github", "pull_request", "closed", labels=["bug", "deploy"])
    assert names(m.match(e).sensors) == ["label"]


def test_negated_and_mixed_clauses_are_not_indexed_but_still_match() -> None:
    m = Matcher(
        [
            sensor("not-push", {f"(not){EV}": "push"}),
            sensor("bucket", {EV: ["**", "!push"]}),
        ]
    )
    assert names(m.match(event("github", "pull_request")).sensors) == ["bucket", "not-push"]
    assert m.match(event("github", "push")).sensors == []


def test_add_replace_remove_one_at_a_time() -> None:
    m = Matcher()
    m.add(sensor("s", {EV: "push"}))
    assert names(m.match(event("github", "push")).sensors) == ["s"]
    m.add(sensor("s", {EV: "pull_request"}))  # replaced, not duplicated
    assert len(m) == 1
    assert m.match(event("github", "push")).sensors == []
    assert names(m.match(event("github", "pull_request")).sensors) == ["s"]
    removed = m.remove(("p", "s"))
    assert removed is not None and removed.name == "s"
    assert m.remove(("p", "s")) is None
    assert len(m) == 0
    assert m.match(event("github", "pull_request")).sensors == []
    assert m._projects == {}  # no empty buckets left behind


def test_disabled_sensor_stays_out() -> None:
    m = Matcher()
    m.add(sensor("s", None))
    m.add(sensor("s", None, enabled=False))
    assert len(m) == 0
    assert m.match(event("github", "push")).sensors == []


def test_javascript_error_is_reported_not_raised() -> None:
    m = Matcher([sensor("bad", {"$": "event.nope.deeper"}), sensor("good", None)])
    result = m.match(event("github", "push"))
    assert names(result.sensors) == ["good"]
    assert [e.sensor.name for e in result.errors] == ["bad"]
    assert "TypeError" in result.errors[0].error


def test_sensor_vars_are_visible_to_when() -> None:
    m = Matcher([sensor("v", {"$": "event.repo === vars.repo"}, vars={"repo": "x"})])
    assert names(m.match(event("github", "push", repo="x")).sensors) == ["v"]
    assert m.match(event("github", "push", repo="y")).sensors == []


def test_two_exact_clauses_on_one_list_field_both_apply() -> None:
    # Two keys naming one path (whitespace differs): each must hold, element-wise.
    m = Matcher([sensor("both", {"event.labels": "a", "event.labels ": "b"})])
    assert names(m.match(event("github", "push", labels=["a", "b"])).sensors) == ["both"]
    assert m.match(event("github", "push", labels=["a"])).sensors == []
