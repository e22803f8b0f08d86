"""Event normalization (DESIGN §3) over real GitHub payloads and Slack slash commands."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hiphops.events import (
    Origin,
    normalize_github,
    normalize_slack_command,
    slack_delivery_id,
    split_args,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "github"
ORIGIN = Origin(
    project="team-a", integration="github", delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958"
)


def _load_slices() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name.removesuffix(".payloads.json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(FIXTURES.glob("*.payloads.json"))
    }


SLICES = _load_slices()
EXAMPLES = [
    pytest.param(event, example, id=f"{event}-{i}-{example.get('action', 'none')}")
    for event, examples in SLICES.items()
    for i, example in enumerate(examples)
]
PULL_REQUESTS = {example["action"]: example for example in SLICES["pull_request"]}
LARGE_PR = json.loads((FIXTURES / "pull_request.opened.large.json").read_text(encoding="utf-8"))

# Written out independently of the implementation: the change event's action for each
# GitHub pull_request action found in the fixtures.
EXPECTED_CHANGE_ACTION = {
    "opened": "open",
    "reopened": "open",
    "ready_for_review": "open",
    "closed": "closed",
    "assigned": "updated",
    "unassigned": "updated",
    "labeled": "updated",
    "unlabeled": "updated",
    "synchronize": "updated",
    "converted_to_draft": "updated",
    "locked": "updated",
    "unlocked": "updated",
    "review_requested": "updated",
    "review_request_removed": "updated",
}


def _merged(closed: dict[str, Any]) -> dict[str, Any]:
    """The real `closed` example as GitHub sends it for a merge (the package has no merged one)."""
    payload = copy.deepcopy(closed)
    pr = payload["pull_request"]
    pr["merged"] = True
    pr["merged_at"] = pr["closed_at"]
    pr["merge_commit_sha"] = "2c5a4ed2c1e5d9cf1a9b5b1a5ba7f0b3d3c1e0aa"
    pr["merged_by"] = copy.deepcopy(pr["user"])
    return payload


def _without_added_keys(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("project_id", "hiphops")}


# --- GitHub: every event type -------------------------------------------------------------


def test_fixtures_cover_every_event_type_of_the_package() -> None:
    assert len(SLICES) == 58
    assert all(len(examples) >= 1 for examples in SLICES.values())
    assert {"push", "pull_request", "issues", "workflow_run", "ping"} <= SLICES.keys()


@pytest.mark.parametrize(("event_name", "payload"), EXAMPLES)
def test_every_github_event_passes_through(event_name: str, payload: dict[str, Any]) -> None:
    before = copy.deepcopy(payload)

    events = normalize_github(event_name, payload, ORIGIN)

    assert payload == before  # input untouched
    event = events[0]
    assert _without_added_keys(event) == payload
    assert event["project_id"] == "team-a"
    expected = {
        "source": "github",
        "event": event_name,
        "delivery": ORIGIN.delivery,
        "integration": "github",
    }
    if "action" in payload:
        expected["action"] = payload["action"]
    assert event["hiphops"] == expected
    assert len(events) == (2 if event_name == "pull_request" else 1)
    json.dumps(events)  # events are stored as JSON in SensorRuns


def test_events_without_action_omit_the_action_key() -> None:
    no_action = sorted(e for e, examples in SLICES.items() if "action" not in examples[0])
    assert {"push", "create", "delete", "ping"} <= set(no_action)
    for event_name in no_action:
        (event,) = normalize_github(event_name, SLICES[event_name][0], ORIGIN)
        assert "action" not in event["hiphops"]


def test_unknown_event_type_passes_through() -> None:
    payload = {"action": "frobnicated", "thing": {"id": 1}}
    (event,) = normalize_github("future_event", payload, ORIGIN)
    assert event["thing"] == {"id": 1}
    assert event["hiphops"]["event"] == "future_event"
    assert event["hiphops"]["action"] == "frobnicated"


def test_sender_cannot_choose_project_or_hiphops_block() -> None:
    payload = copy.deepcopy(SLICES["push"][0])
    payload["project_id"] = "someone-else"
    payload["hiphops"] = {"source": "forged"}
    before = copy.deepcopy(payload)
    (event,) = normalize_github("push", payload, ORIGIN)
    assert event["project_id"] == "team-a"
    assert event["hiphops"]["source"] == "github"
    assert payload == before


def test_non_string_action_is_omitted() -> None:
    (event,) = normalize_github("custom", {"action": {"nested": True}}, ORIGIN)
    assert "action" not in event["hiphops"]
    assert event["action"] == {"nested": True}
    payload = {**PULL_REQUESTS["opened"], "action": ["opened"]}
    github, change = normalize_github("pull_request", payload, ORIGIN)
    assert "action" not in github["hiphops"]
    assert change["hiphops"]["action"] == "updated"


@pytest.mark.parametrize(
    ("event_name", "payload", "message"),
    [
        ("", {"action": "opened"}, "event name"),
        ("push", ["not", "an", "object"], "JSON object"),
        ("pull_request", {"action": "opened", "number": 1}, "pull_request object"),
        ("pull_request", {"action": "opened", "pull_request": None}, "pull_request object"),
    ],
)
def test_malformed_github_input_is_rejected(event_name: str, payload: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_github(event_name, payload, ORIGIN)


# --- GitHub: merged vs closed ------------------------------------------------------------


def test_closed_without_merge() -> None:
    payload = PULL_REQUESTS["closed"]
    assert payload["pull_request"]["merged"] is False
    github, change = normalize_github("pull_request", payload, ORIGIN)
    assert github["hiphops"]["action"] == "closed"
    assert change["hiphops"]["action"] == "closed"
    assert change["status"] == "CLOSED"


def test_closed_with_merge_is_merged() -> None:
    payload = _merged(PULL_REQUESTS["closed"])
    before = copy.deepcopy(payload)
    github, change = normalize_github("pull_request", payload, ORIGIN)
    assert github["action"] == "closed"  # the payload's own action stays
    assert github["hiphops"]["action"] == "merged"
    assert change["hiphops"]["action"] == "merged"
    assert change["status"] == "MERGED"
    assert change["merge_sha"] == "2c5a4ed2c1e5d9cf1a9b5b1a5ba7f0b3d3c1e0aa"
    assert payload == before


def test_merged_flag_only_matters_for_closed() -> None:
    # A still-open PR cannot be merged; "merged" is decided on the closed action only.
    payload = copy.deepcopy(PULL_REQUESTS["labeled"])
    github, change = normalize_github("pull_request", payload, ORIGIN)
    assert github["hiphops"]["action"] == "labeled"
    assert change["hiphops"]["action"] == "updated"
    assert change["status"] == "OPEN"


# --- GitHub: the change event ------------------------------------------------------------


def test_fixtures_hold_every_expected_pull_request_action() -> None:
    assert set(PULL_REQUESTS) == set(EXPECTED_CHANGE_ACTION)


@pytest.mark.parametrize("action", sorted(EXPECTED_CHANGE_ACTION))
def test_change_event_from_each_pull_request_action(action: str) -> None:
    payload = PULL_REQUESTS[action]
    pr = payload["pull_request"]

    _, change = normalize_github("pull_request", payload, ORIGIN)

    assert change["project_id"] == "team-a"
    assert change["hiphops"] == {
        "source": "hiphops",
        "event": "change",
        "action": EXPECTED_CHANGE_ACTION[action],
        "delivery": ORIGIN.delivery + ":change",
        "integration": "github",
    }
    assert change["repo_name"] == payload["repository"]["name"] == "Hello-World"
    assert change["full_repo_name"] == "Codertocat/Hello-World"
    assert change["pr_number"] == pr["number"] == payload["number"]
    assert change["title"] == pr["title"]
    assert change["body"] == pr["body"]
    assert change["sha"] == pr["head"]["sha"]
    assert change["merge_sha"] == pr["merge_commit_sha"]
    assert change["branch"] == pr["base"]["ref"]
    assert change["source_branch"] == pr["head"]["ref"]
    assert change["author"] == pr["user"]["login"]
    assert change["additions"] == pr["additions"]
    assert change["deletions"] == pr["deletions"]
    assert change["status"] == ("CLOSED" if action == "closed" else "OPEN")
    assert change["labels"] == [label["name"] for label in pr["labels"]]
    assert change["source_url"] == pr["html_url"]
    assert change["created_at"] == pr["created_at"]
    assert change["updated_at"] == pr["updated_at"]
    # Flat: no nested GitHub objects leak in besides the labels list and the hiphops block.
    assert all(not isinstance(v, dict) for k, v in change.items() if k != "hiphops")


def test_change_event_of_the_large_opened_payload() -> None:
    _, change = normalize_github("pull_request", LARGE_PR, ORIGIN)
    assert {k: v for k, v in change.items() if k not in ("hiphops", "project_id")} == {
        "repo_name": "Hello-World",
        "full_repo_name": "Codertocat/Hello-World",
        "pr_number": 2,
        "title": "Update the README with new information.",
        "body": "This is a pretty simple change that we need to pull into master.",
        "sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
        "merge_sha": None,
        "branch": "master",
        "source_branch": "changes",
        "author": "Codertocat",
        "additions": 1,
        "deletions": 1,
        "status": "OPEN",
        "labels": ["bug"],
        "source_url": "https://github.com/Codertocat/Hello-World/pull/2",
        "created_at": "2019-05-15T15:20:33Z",
        "updated_at": "2019-05-15T15:20:33Z",
    }
    assert change["hiphops"]["action"] == "open"


def test_large_fixture_is_a_realistic_pull_request_opened() -> None:
    size = (FIXTURES / "pull_request.opened.large.json").stat().st_size
    assert 20_000 <= size <= 30_000
    assert LARGE_PR["action"] == "opened"


def test_only_pull_request_yields_a_change_event() -> None:
    # pull_request_review carries a pull_request object too, but is not a change of the PR.
    events = normalize_github("pull_request_review", SLICES["pull_request_review"][0], ORIGIN)
    assert [e["hiphops"]["source"] for e in events] == ["github"]


def test_unknown_pull_request_action_counts_as_update() -> None:
    payload = copy.deepcopy(PULL_REQUESTS["opened"])
    payload["action"] = "auto_merge_enabled"
    _, change = normalize_github("pull_request", payload, ORIGIN)
    assert change["hiphops"]["action"] == "updated"


# --- Slack -------------------------------------------------------------------------------

SLACK_FORM = {
    "token": "gIkuvaNzQIHg97ATvDxqgjtO",
    "team_id": "T0001",
    "team_domain": "example",
    "enterprise_id": "E0001",
    "enterprise_name": "Globular%20Construct%20Inc",
    "channel_id": "C2147483705",
    "channel_name": "test",
    "user_id": "U2147483697",
    "user_name": "Steve",
    "command": "/hiphops",
    "text": 'deploy "my service" --env=prod',
    "response_url": "https://hooks.slack.com/commands/1234/5678",
    "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    "api_app_id": "A123456",
    "is_enterprise_install": "false",
}
SLACK_ORIGIN = Origin(project="team-a", integration="slack", delivery=slack_delivery_id(SLACK_FORM))


def test_slack_command_event() -> None:
    before = dict(SLACK_FORM)
    event = normalize_slack_command(SLACK_FORM, SLACK_ORIGIN)
    assert before == SLACK_FORM
    assert event == {
        "team_id": "T0001",
        "team_domain": "example",
        "enterprise_id": "E0001",
        "enterprise_name": "Globular%20Construct%20Inc",
        "channel_id": "C2147483705",
        "channel_name": "test",
        "user_id": "U2147483697",
        "user_name": "Steve",
        "slash_command": "/hiphops",
        "command": "deploy",
        "args": ["my service", "--env=prod"],
        "text": 'deploy "my service" --env=prod',
        "response_url": "https://hooks.slack.com/commands/1234/5678",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "api_app_id": "A123456",
        "is_enterprise_install": False,
        "project_id": "team-a",
        "hiphops": {
            "source": "slack",
            "event": "command",
            "action": "deploy",
            "delivery": SLACK_ORIGIN.delivery,
            "integration": "slack",
        },
    }


def test_slack_verification_token_is_not_copied_into_the_event() -> None:
    event = normalize_slack_command(SLACK_FORM, SLACK_ORIGIN)
    assert "token" not in event
    assert SLACK_FORM["token"] not in json.dumps(event)


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_slack_empty_text(text: str) -> None:
    event = normalize_slack_command({**SLACK_FORM, "text": text}, SLACK_ORIGIN)
    assert event["command"] == ""
    assert event["args"] == []
    assert event["hiphops"]["action"] == ""


def test_slack_enterprise_install_and_missing_enterprise() -> None:
    form = {k: v for k, v in SLACK_FORM.items() if k not in ("enterprise_id", "enterprise_name")}
    event = normalize_slack_command({**form, "is_enterprise_install": "true"}, SLACK_ORIGIN)
    assert event["is_enterprise_install"] is True
    assert event["enterprise_id"] is None
    event = normalize_slack_command({**SLACK_FORM, "enterprise_id": ""}, SLACK_ORIGIN)
    assert event["enterprise_id"] is None


def test_slack_minimal_form_still_has_every_documented_field() -> None:
    event = normalize_slack_command({"text": "status"}, SLACK_ORIGIN)
    for key in ("response_url", "trigger_id", "team_id", "channel_id", "user_id"):
        assert event[key] == ""
    assert event["is_enterprise_install"] is False
    assert event["command"] == "status"


def test_slack_delivery_id_is_stable_and_distinct() -> None:
    same = slack_delivery_id(dict(SLACK_FORM))
    assert same == slack_delivery_id({"team_id": "T0001", "trigger_id": SLACK_FORM["trigger_id"]})
    assert re.fullmatch(r"slack-[0-9a-f]{40}", same)
    assert same != slack_delivery_id({**SLACK_FORM, "trigger_id": "13345224609.1.2"})
    assert same != slack_delivery_id({**SLACK_FORM, "team_id": "T0002"})
    # The pair is encoded unambiguously.
    assert slack_delivery_id({"team_id": "a:b", "trigger_id": "c"}) != slack_delivery_id(
        {"team_id": "a", "trigger_id": "b:c"}
    )


@pytest.mark.parametrize(
    "form", [{}, {"team_id": "T1"}, {"trigger_id": "1.2.3"}, {"team_id": "", "trigger_id": "1"}]
)
def test_slack_delivery_id_needs_team_and_trigger(form: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="team_id or trigger_id"):
        slack_delivery_id(form)


# --- split_args --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   \t\n ", []),
        ("deploy", ["deploy"]),
        ("  deploy   prod  ", ["deploy", "prod"]),
        ('deploy "my app" prod', ["deploy", "my app", "prod"]),
        ("deploy 'my app' prod", ["deploy", "my app", "prod"]),
        ('say "it\'s fine"', ["say", "it's fine"]),
        ("say 'a \"quoted\" word'", ["say", 'a "quoted" word']),
        (r'say "a \"quoted\" word"', ["say", 'a "quoted" word']),
        (r'"back\\slash"', ["back\\slash"]),
        (r"say \"hi\"", ["say", '"hi"']),
        (r"one\ word", ["one word"]),
        (r"C:\temp\new", [r"C:\temp\new"]),
        ("trailing\\", ["trailing\\"]),
        ('a"b c"d', ["ab cd"]),
        ('"" x', ["", "x"]),
        ("''", [""]),
        ("'single\\'", ["single\\"]),  # no escapes inside single quotes
        # Unbalanced quotes are ordinary characters.
        ("don't stop", ["don't", "stop"]),
        ('deploy "my app', ["deploy", '"my', "app"]),
        ("a 'b", ["a", "'b"]),
        ('"a" "b', ["a", '"b']),
        ('"a\\"', ['"a"']),
        # Unicode: any whitespace separates, other characters are kept.
        ("héllo wörld", ["héllo", "wörld"]),
        ("日本\u00a0語\u3000x", ["日本", "語", "x"]),
        ('"🚀 launch" now', ["🚀 launch", "now"]),
        ("\u201csmart quotes\u201d here", ["smart quotes", "here"]),
        ("x \u2018y z\u2019", ["x", "y z"]),
        ("don\u2019t stop", ["don\u2019t", "stop"]),
    ],
)
def test_split_args(text: str, expected: list[str]) -> None:
    assert split_args(text) == expected


@given(st.text())
def test_split_args_never_raises(text: str) -> None:
    words = split_args(text)
    assert all(isinstance(word, str) for word in words)


@given(st.text(alphabet=st.characters(blacklist_characters="\"'\\\u201c\u2018")))
def test_split_args_without_quotes_is_whitespace_split(text: str) -> None:
    assert split_args(text) == text.split()


@given(st.lists(st.text()))
def test_split_args_reads_back_double_quoted_words(words: list[str]) -> None:
    quoted = " ".join('"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in words)
    assert split_args(quoted) == words


@given(st.text(alphabet="ab '\"\t"))
def test_split_args_agrees_with_shlex_on_balanced_input(text: str) -> None:
    try:
        expected = shlex.split(text)
    except ValueError:
        assume(False)
    assert split_args(text) == expected
