"""Matcher benchmark: our index against a naive scan, measured side by side in one run.

Sensors are spread over 100 projects with a realistic mix of `when` clauses; the event is a real
GitHub pull_request `opened` payload (from @octokit/webhooks-examples), normalized.
Run: `python -m bench.matcher` (or `make bench`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hiphops.context import Context
from hiphops.events import Origin, normalize_github
from hiphops.matcher import Matcher
from hiphops.sensor import Sensor, compile_sensor

FIXTURE = Path(__file__).parent.parent / "tests/fixtures/github/pull_request.opened.large.json"
PROJECTS = 100
REPOS = 20
SIZES = (10, 1_000, 10_000)


def load_event() -> dict[str, Any]:
    payload = json.loads(FIXTURE.read_text())
    [event, _change] = normalize_github("pull_request", payload, Origin("team-0", "github", "d1"))
    return event


def _when(j: int, repo: str) -> dict[str, Any]:
    """The j-th sensor of a project: ten kinds in equal shares, as teams write them, each kind
    spread over the project's repositories (one of which is the event's)."""
    kind, nth = j % 10, j // 10
    repo_k = repo if nth % REPOS == 0 else f"service-{nth % REPOS}"
    gh = {"event.hiphops.source": "github"}
    return [
        {
            **gh,
            "event.hiphops.event": "pull_request",
            "event.hiphops.action": ["opened", "reopened"],
            "event.repository.name": repo_k,
            "event.pull_request.base.ref": "master",
        },
        {
            **gh,
            "event.hiphops.event": "pull_request",
            "event.repository.name": repo_k,
            "event.pull_request.labels.0.name": "release/*",
        },
        {
            **gh,
            "event.hiphops.event": "push",
            "event.repository.name": repo_k,
            "event.ref": ["refs/heads/release/**", "!**/wip"],
        },
        {
            "event.hiphops.source": "slack",
            "event.hiphops.action": ["deploy", "echo", "rollback"][nth % 3],
        },
        {
            "event.hiphops.source": "hiphops",
            "event.hiphops.event": "change",
            "event.hiphops.action": "open",
            "event.branch": "main",
            "event.author": "dependabot*",
        },
        {
            **gh,
            "event.hiphops.event": "pull_request",
            "event.hiphops.action": "closed",
            "$": "event.pull_request.merged && event.pull_request.additions < 500",
        },
        {
            **gh,
            "event.hiphops.event": "issue_comment",
            "event.hiphops.action": "created",
            "$": "event.comment.body.startsWith('/deploy')",
        },
        {
            **gh,
            "event.hiphops.event": "pull_request",
            "event.hiphops.action": "synchronize",
            "event.repository.full_name": f"org/{repo_k}",
        },
        {
            **gh,
            "event.hiphops.event": "pull_request",
            "event.hiphops.action": "labeled",
            "event.label.name": ["automerge", "ship-it"],
        },
        {
            **gh,
            "event.hiphops.event": "workflow_run",
            "event.hiphops.action": "completed",
            "event.workflow_run.conclusion": "failure",
        },
    ][kind]


def make_sensors(count: int, repo: str) -> list[Sensor]:
    sensors = []
    for i in range(count):
        spec = {
            "when": _when(i // PROJECTS, repo),
            "tasks": [
                {"name": "slack.post_message", "input": {"text": "hi ${event.repository.name}"}}
            ],
        }
        sensors.append(compile_sensor(spec, name=f"sensor-{i}", project=f"team-{i % PROJECTS}"))
    return sensors


def naive_match(sensors: list[Sensor], event: dict[str, Any]) -> list[Sensor]:
    """What a matcher without an index does: evaluate every sensor."""
    context = Context.for_event(event)
    project = event["project_id"]
    return [
        s for s in sensors if s.project == project and (s.when is None or s.when.holds(context))
    ]


def median_us(fn: Callable[[], object], rounds: int) -> float:
    for _ in range(min(rounds, 50)):
        fn()  # warm caches (regexes, JavaScript functions)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> dict[str, float]:
    event = load_event()
    repo = event["repository"]["name"]
    results: dict[str, float] = {}
    print(
        f"matcher: real pull_request opened event ({FIXTURE.stat().st_size} bytes), "
        f"sensors over {PROJECTS} projects"
    )
    ours: dict[int, float] = {}
    for size in SIZES:
        sensors = make_sensors(size, repo)
        matcher = Matcher(sensors)
        matched = len(matcher.match(event).sensors)
        candidates = len(matcher.candidates(event))
        ours[size] = median_us(lambda m=matcher: m.match(event), 3000)
        print(
            f"  {size:>6} sensors: median {ours[size]:8.2f} us/event "
            f"({candidates} candidates evaluated, {matched} matched)"
        )
        if size == SIZES[-1]:
            assert [s.key for s in naive_match(sensors, event)] == [
                s.key for s in matcher.match(event).sensors
            ], "the index and the naive scan disagree"
            naive = median_us(lambda s=sensors: naive_match(s, event), 200)
            print(f"  {size:>6} sensors, naive scan: median {naive:8.2f} us/event")
            results["naive_over_ours"] = naive / ours[size]
    results["ratio_10000_over_10"] = ours[SIZES[-1]] / ours[SIZES[0]]
    print(f"  ratio {SIZES[-1]}/{SIZES[0]}: {results['ratio_10000_over_10']:.2f} (target <= 2)")
    print(f"  ratio naive/ours at {SIZES[-1]}: {results['naive_over_ours']:.1f} (target >= 50)")
    return results


if __name__ == "__main__":
    main()
