"""The `hiphops` command line, run as a subprocess on the bundled examples."""

import json
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import ROOT, hiphops


def run_test(event: str, *sensors: str) -> dict[str, Any]:
    result = hiphops("test", "--sensors", *sensors, "--event", event, "--output", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def matched(data: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    return {m["sensor"]: {t["id"]: t for t in m["tasks"]} for m in data["matched"]}


def test_validate_examples_in_both_forms() -> None:
    result = hiphops("validate", "examples/sensors", "examples/manifests", "examples/local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 12 sensor(s) valid" in result.stderr


def test_validate_reports_every_error_of_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """\
resource: sensor
id: broken
when:
  event.hiphops.source: [github, {a: 1}]
  $: "event.("
tasks:
  - name: github.merge_pr
    id: merge
    input:
      (pth)repo: event.repo_name
  - name: slack.post_message
    id: merge
    depends:
      tasks.nope.COMPLETE: "*"
"""
    )
    result = hiphops("validate", str(bad))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5, result.stdout
    assert all(line.startswith(f'{bad}: document 1 (sensor "broken"): ') for line in lines)
    assert "when.event.hiphops.source[1]: a map is not a pattern" in result.stdout
    assert "when.$: JavaScript does not compile" in result.stdout
    assert "tasks[0].input.(pth)repo: unknown decorator (pth)" in result.stdout
    assert "tasks[1].id: duplicate task id 'merge'" in result.stdout
    assert "tasks[1].depends.tasks.nope.COMPLETE: no task 'nope'" in result.stdout


def test_slack_command_echo_example() -> None:
    data = run_test("examples/events/slack.command.echo.json", "examples/sensors")
    tasks = matched(data)["slack echo command"]
    assert tasks["reply"]["state"] == "READY"
    assert tasks["reply"]["input"]["text"] == "hello big world"
    assert tasks["reply"]["input"]["response_url"].startswith("https://hooks.slack.com/")
    assert tasks["usage"]["state"] == "SKIPPED"


def test_merge_pr_example_with_path_inputs() -> None:
    data = run_test("examples/events/hiphops.change.open.json", "examples/sensors")
    merge = matched(data)["auto merge dependabot"]["merge"]
    assert merge["name"] == "github.merge_pr"
    assert merge["input"] == {
        "repo": "backend",
        "pr_number": 55,
        "merge_comment_title": merge["input"]["merge_comment_title"],
        "head_sha": merge["input"]["head_sha"],
        "merge_method": "squash",
    }
    assert isinstance(merge["input"]["pr_number"], int)  # (path) keeps the JSON type


def test_slack_message_example_with_interpolation() -> None:
    data = run_test("examples/events/slack.command.echo.json", "examples/manifests")
    post = matched(data)["slack command receiver"]["post"]
    assert post["input"]["text"] == "Command: echo, Args: hello,big world"


def test_non_matching_sensors_say_why() -> None:
    data = run_test("examples/events/pull_request.opened.json", "examples/sensors")
    reasons = {m["sensor"]: m["reason"] for m in data["not_matched"]}
    assert "event.hiphops.source" in reasons["slack echo command"]


def test_text_output_is_readable() -> None:
    result = hiphops(
        "test",
        "--sensors",
        "examples/sensors",
        "--event",
        "examples/events/pull_request.opened.json",
    )
    assert result.returncode == 0
    assert 'MATCH    sensor "welcome new pull requests"' in result.stdout
    assert "no task was executed" in result.stdout


def test_convert_gives_valid_manifests_equal_to_the_examples(tmp_path: Path) -> None:
    result = hiphops("convert", "examples/sensors", "--namespace", "demo")
    assert result.returncode == 0, result.stderr
    converted = {d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout)}
    out = tmp_path / "converted.yaml"
    out.write_text(result.stdout)
    assert hiphops("validate", str(out)).returncode == 0
    examples = {
        d["metadata"]["name"]: d
        for path in sorted((ROOT / "examples/manifests").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    }
    assert converted.keys() == examples.keys()
    for name, manifest in converted.items():
        assert manifest["spec"] == examples[name]["spec"], name
        assert manifest["metadata"] == {"name": name, "namespace": "demo"}


def test_test_command_reports_invalid_sensors_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("resource: sensor\nid: x\ntasks: [{name: nope}]\n")
    result = hiphops(
        "test", "--sensors", str(bad), "--event", "examples/events/pull_request.opened.json"
    )
    assert result.returncode == 1
    assert "tasks[0].name" in result.stderr


def test_validate_warns_about_task_names_no_handler_serves(tmp_path: Path) -> None:
    sensor = tmp_path / "typo.yaml"
    sensor.write_text("resource: sensor\nid: t\ntasks: [{name: github.merge_prr}]\n")
    result = hiphops("validate", str(sensor))
    assert result.returncode == 0  # a warning: the operator may know more handlers
    assert "no built-in handler for 'github.merge_prr' (did you mean 'github.merge_pr'?)" in (
        result.stdout
    )
    listed = hiphops("tasks").stdout.split()
    assert {"github.merge_pr", "slack.post_message", "k8s.run_job", "log.message"} <= set(listed)


def test_test_accepts_a_raw_github_payload_and_its_change_event() -> None:
    result = hiphops(
        "test",
        "--sensors",
        "examples/manifests",
        "--event",
        "tests/fixtures/github/pull_request.opened.large.json",
        "--github-event",
        "pull_request",
        "--project",
        "demo",
        "--output",
        "json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    kinds = [(e["hiphops"]["source"], e["hiphops"]["event"]) for e in data["events"]]
    assert kinds == [("github", "pull_request"), ("hiphops", "change")]
    [match] = data["matched"]
    assert match["sensor"] == "welcome new pull requests"
    assert match["event"]["hiphops"]["event"] == "pull_request"
    change_misses = [m for m in data["not_matched"] if m["event"]["hiphops"]["event"] == "change"]
    assert {m["sensor"] for m in change_misses} >= {"auto merge dependabot"}
