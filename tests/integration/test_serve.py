"""`hiphops serve` end to end: real processes, signed webhooks over loopback, the run store."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import HIPHOPS, ROOT, hiphops

GITHUB_SECRET = "demo-github-webhook-secret"
SLACK_SECRET = "demo-slack-signing-secret"


def runs(state_dir: Path) -> list[dict[str, Any]]:
    result = hiphops("runs", "--state-dir", str(state_dir), "--output", "json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def settled_runs(state_dir: Path, count: int) -> list[dict[str, Any]] | None:
    """The runs, once there are `count` of them and none is still RUNNING."""
    records = runs(state_dir) if (state_dir / "runs.db").exists() else []
    if len(records) == count and all(r["state"] != "RUNNING" for r in records):
        return records
    return None


def wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def serve_examples(state: Path) -> list[str]:
    """`hiphops serve` on the examples in dry-run mode (what `make run` starts)."""
    return [
        *HIPHOPS,
        *("serve", "examples/sensors", "examples/local", "--project", "demo", "--dry-run"),
        *("--port", "{port}", "--state-dir", str(state)),
    ]


def test_serve_send_runs_end_to_end(tmp_path: Path, start_server: Any) -> None:
    state = tmp_path / "state"
    server = start_server(serve_examples(state))
    hook = f"{server.url}/hooks/github/demo/github"
    sent = hiphops(
        "send",
        "examples/events/pull_request.opened.json",
        "--to",
        hook,
        "--delivery",
        "d-1",
        env={"HIPHOPS_WEBHOOK_SECRET": GITHUB_SECRET},
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.startswith("202 Accepted")
    body = json.loads(sent.stdout.split("\n", 1)[1])
    assert body["delivery"] == "d-1" and len(body["runs"]) == 1 and body["duplicates"] == []

    # The same delivery again: acknowledged, but nothing starts twice.
    again = hiphops(
        "send",
        "examples/events/pull_request.opened.json",
        "--to",
        hook,
        "--delivery",
        "d-1",
        env={"HIPHOPS_WEBHOOK_SECRET": GITHUB_SECRET},
    )
    assert json.loads(again.stdout.split("\n", 1)[1])["duplicates"] == body["runs"]

    slack = hiphops(
        "send",
        "examples/events/slack.command.echo.json",
        "--to",
        f"{server.url}/hooks/slack/demo/slack",
        env={"HIPHOPS_WEBHOOK_SECRET": SLACK_SECRET},
    )
    assert slack.returncode == 0, slack.stdout + slack.stderr
    assert "started 2 runs" in slack.stdout

    records = wait_for(lambda: settled_runs(state, 3))
    by_sensor = {r["sensor"]: r for r in records}
    welcome = by_sensor["welcome new pull requests"]
    assert welcome["state"] == "COMPLETE"
    assert welcome["delivery"] == "d-1"
    tasks = {t["id"]: t for t in welcome["tasks"]}
    # dry run: the rendered input is recorded as what the task would have done
    assert tasks["comment"]["result"] == {"dry_run": True, "input": tasks["comment"]["input"]}
    assert tasks["comment"]["input"]["pr_number"] == 2
    echo = {t["id"]: t for t in by_sensor["slack echo command"]["tasks"]}
    assert echo["reply"]["input"]["text"] == "hello big world"
    assert echo["usage"]["state"] == "SKIPPED"

    shown = hiphops("runs", "show", welcome["name"], "--state-dir", str(state))
    assert shown.returncode == 0
    assert f"run {welcome['name']}: COMPLETE" in shown.stdout
    assert "task comment (github.create_or_update_pr_comment): COMPLETE" in shown.stdout


def test_bad_signature_is_rejected_and_records_nothing(tmp_path: Path, start_server: Any) -> None:
    state = tmp_path / "state"
    server = start_server(serve_examples(state))
    sent = hiphops(
        "send",
        "examples/events/pull_request.opened.json",
        "--to",
        f"{server.url}/hooks/github/demo/github",
        env={"HIPHOPS_WEBHOOK_SECRET": "wrong"},
    )
    assert sent.returncode == 1
    assert sent.stdout.startswith("401")
    assert GITHUB_SECRET not in server.log.read_text()
    assert runs(state) == []


def test_serve_refuses_invalid_sensors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("resource: sensor\nid: x\ntasks: [{name: nope}]\n")
    result = hiphops("serve", str(bad), "--port", "1", "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 1
    assert "tasks[0].name" in result.stderr and "not serving" in result.stderr


def _signed(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def test_a_killed_server_resumes_the_run_and_runs_each_task_once(
    tmp_path: Path, start_server: Any
) -> None:
    sensors = tmp_path / "sensors.yaml"
    sensors.write_text(
        """\
resource: sensor
id: two steps
when: {event.hiphops.event: push}
tasks:
  - {name: test.record, id: first}
  - name: test.hang
    id: second
    depends: {tasks.first.COMPLETE: "*"}
    input: {(path)from_first: tasks.first.result.task}
"""
    )
    calls = tmp_path / "calls.txt"
    state = tmp_path / "state"
    argv = [
        sys.executable,
        str(ROOT / "tests/integration/serve_child.py"),
        "{port}",
        str(state),
        str(sensors),
        str(ROOT / "examples/local"),
    ]
    server = start_server(argv, env={"CALLS": str(calls), "HANG": "1"})
    body = json.dumps({"ref": "refs/heads/main", "repository": {"name": "r"}}).encode()
    response = httpx.post(
        f"{server.url}/hooks/github/demo/github", content=body, headers=_signed(body, "p-1")
    )
    assert response.status_code == 202, response.text
    wait_for(lambda: calls.exists() and "second 1" in calls.read_text())

    server.process.send_signal(signal.SIGKILL)  # no shutdown of any kind
    server.process.wait()
    [record] = runs(state)
    assert record["state"] == "RUNNING"

    restarted = start_server(argv, env={"CALLS": str(calls)})
    [record] = wait_for(lambda: settled_runs(state, 1))
    assert record["state"] == "COMPLETE"
    assert calls.read_text().splitlines() == ["first 1", "second 1", "second 2"]
    second = {t["id"]: t for t in record["tasks"]}["second"]
    assert second["input"] == {"from_first": "first"}
    assert second["attempts"] == 2
    restarted.stop()
