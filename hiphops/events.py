"""Webhook payloads as Hiphops events (DESIGN §3).

Every event is the source's payload plus, at its root, ``project_id`` and a ``hiphops`` block::

    project_id: <namespace>
    hiphops: {source, event, action, delivery, integration}

Conventions chosen here and relied on downstream:

* ``hiphops.action`` is omitted when the source has no action (GitHub ``push``, ``create``, ...),
  mirroring the payload, which has no ``action`` key either. A sensor path to it is then
  missing (an empty bucket), never the JSON text ``null``.
* ``project_id`` and ``hiphops`` always come from the :class:`Origin`, overwriting any keys of
  that name a sender put in its payload: the project is never the sender's to choose.
* Events are shallow copies: the input mapping is not modified, but nested values are shared
  with it (the caller owns a freshly parsed body; copying 25 KB payloads deeply buys nothing).
* A GitHub ``pull_request`` delivery also yields the release manager's ``change`` event, whose
  delivery id is ``<delivery>:change`` so that it is distinguishable from the GitHub event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

GITHUB: Final = "github"
SLACK: Final = "slack"
HIPHOPS: Final = "hiphops"

#: Suffix of the change event's delivery id; the GitHub event keeps the delivery id unchanged.
CHANGE_DELIVERY_SUFFIX: Final = ":change"

# GitHub pull_request actions that (re)start a change's life; "closed" is decided by `merged`;
# every other action (synchronize, edited, labeled, assigned, ...) updates an open change.
_OPENING_ACTIONS: Final = frozenset({"opened", "reopened", "ready_for_review"})

# Slack's legacy verification token is a shared secret: it must not travel inside events.
_SLACK_DROPPED_FIELDS: Final = frozenset({"token"})


@dataclass(frozen=True)
class Origin:
    """Where an event came in."""

    project: str  # the namespace / project id
    integration: str  # the Integration's name
    delivery: str  # delivery id (GitHub X-GitHub-Delivery; Slack: slack_delivery_id)


def _hiphops_block(
    source: str, event: str, action: str | None, delivery: str, integration: str
) -> dict[str, Any]:
    block: dict[str, Any] = {"source": source, "event": event}
    if action is not None:
        block["action"] = action
    block["delivery"] = delivery
    block["integration"] = integration
    return block


def _dig(value: Any, *keys: str) -> Any:
    """The value at nested mapping keys, or None where the path leads nowhere."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _is_merged(pull_request: Mapping[str, Any]) -> bool:
    return pull_request.get("merged") is True


def normalize_github(
    event_name: str, payload: Mapping[str, Any], origin: Origin
) -> list[dict[str, Any]]:
    """The event(s) one GitHub webhook yields: the event and, for pull_request, the `change` event.

    Every GitHub event type passes through (payload + project_id + hiphops block). ``event_name`` is
    the ``X-GitHub-Event`` header. ``hiphops.action`` is the payload's ``action`` when it is a
    string and omitted otherwise; a ``pull_request`` closed with ``merged: true`` gets ``merged``.
    Raises ValueError for an empty event name, a payload that is not a JSON object, or a
    ``pull_request`` event without a ``pull_request`` object (GitHub never sends one).
    """
    if not event_name:
        raise ValueError("GitHub event name is empty")
    if not isinstance(payload, Mapping):
        raise ValueError("GitHub payload is not a JSON object")
    raw_action = payload.get("action")
    payload_action = raw_action if isinstance(raw_action, str) else None
    action = payload_action

    pull_request: Mapping[str, Any] | None = None
    if event_name == "pull_request":
        candidate = payload.get("pull_request")
        if not isinstance(candidate, Mapping):
            raise ValueError("pull_request event without a pull_request object")
        pull_request = candidate
        if action == "closed" and _is_merged(pull_request):
            action = "merged"

    event = dict(payload)
    event["project_id"] = origin.project
    event["hiphops"] = _hiphops_block(
        GITHUB, event_name, action, origin.delivery, origin.integration
    )
    if pull_request is None:
        return [event]
    return [event, _change_event(payload, pull_request, payload_action, origin)]


def _change_action(github_action: str | None, pull_request: Mapping[str, Any]) -> str:
    if github_action in _OPENING_ACTIONS:
        return "open"
    if github_action == "closed":
        return "merged" if _is_merged(pull_request) else "closed"
    return "updated"


def _change_status(pull_request: Mapping[str, Any]) -> str:
    if _is_merged(pull_request):
        return "MERGED"
    return "CLOSED" if pull_request.get("state") == "closed" else "OPEN"


def _change_event(
    payload: Mapping[str, Any],
    pull_request: Mapping[str, Any],
    github_action: str | None,
    origin: Origin,
) -> dict[str, Any]:
    """The release manager's flat view of a pull request; values are as GitHub sent them."""
    labels = pull_request.get("labels")
    return {
        "repo_name": _dig(payload, "repository", "name"),
        "full_repo_name": _dig(payload, "repository", "full_name"),
        "pr_number": pull_request.get("number", payload.get("number")),
        "title": pull_request.get("title"),
        "body": pull_request.get("body"),
        "sha": _dig(pull_request, "head", "sha"),
        "merge_sha": pull_request.get("merge_commit_sha"),
        "branch": _dig(pull_request, "base", "ref"),
        "source_branch": _dig(pull_request, "head", "ref"),
        "author": _dig(pull_request, "user", "login"),
        "additions": pull_request.get("additions"),
        "deletions": pull_request.get("deletions"),
        "status": _change_status(pull_request),
        "labels": [
            label["name"]
            for label in (labels if isinstance(labels, list) else [])
            if isinstance(label, Mapping) and isinstance(label.get("name"), str)
        ],
        "source_url": pull_request.get("html_url"),
        "created_at": pull_request.get("created_at"),
        "updated_at": pull_request.get("updated_at"),
        "project_id": origin.project,
        "hiphops": _hiphops_block(
            HIPHOPS,
            "change",
            _change_action(github_action, pull_request),
            origin.delivery + CHANGE_DELIVERY_SUFFIX,
            origin.integration,
        ),
    }


def slack_delivery_id(form: Mapping[str, str]) -> str:
    """A stable delivery id from team_id and trigger_id (same command delivered twice -> same id).

    ``slack-`` followed by 40 hex digits of SHA-256 over the pair: fixed length and safe in
    Kubernetes object names, unlike a raw trigger id. Raises ValueError if either field is missing
    or empty, since a command without them cannot be told apart from another.
    """
    team_id = form.get("team_id")
    trigger_id = form.get("trigger_id")
    if not team_id or not trigger_id:
        raise ValueError("Slack command without team_id or trigger_id")
    # JSON-encoding the pair keeps ("a:b", "c") and ("a", "b:c") apart.
    digest = hashlib.sha256(json.dumps([team_id, trigger_id]).encode()).hexdigest()
    return "slack-" + digest[:40]


def normalize_slack_command(form: Mapping[str, str], origin: Origin) -> dict[str, Any]:
    """A `/hiphops <command> <args...>` slash command as an event.

    The form fields are kept (``user_name``, ``channel_name``, ``text`` as Slack sent it, ...),
    except the legacy verification ``token``, which is a secret. ``command`` becomes the first
    word of ``text`` (the slash command itself, e.g. ``/hiphops``, moves to ``slash_command``) and
    ``args`` the remaining words, both split by :func:`split_args`; empty text gives command ``""``
    and args ``[]``. ``is_enterprise_install`` becomes a bool (Slack sends ``"true"``/``"false"``),
    ``enterprise_id`` is None outside Enterprise Grid, and the other documented fields are ``""``
    when absent.
    """
    words = split_args(form.get("text", ""))
    command = words[0] if words else ""
    event: dict[str, Any] = {k: v for k, v in form.items() if k not in _SLACK_DROPPED_FIELDS}
    event["slash_command"] = form.get("command", "")
    event["command"] = command
    event["args"] = words[1:]
    for key in ("response_url", "trigger_id", "team_id", "channel_id", "user_id"):
        event[key] = form.get(key, "")
    event["is_enterprise_install"] = form.get("is_enterprise_install", "").lower() == "true"
    event["enterprise_id"] = form.get("enterprise_id") or None
    event["project_id"] = origin.project
    event["hiphops"] = _hiphops_block(
        SLACK, "command", command, origin.delivery, origin.integration
    )
    return event


# Opening quote -> closing quote. Typographic pairs are what some clients substitute as you type.
_QUOTE_PAIRS: Final = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}
# Characters a backslash outside quotes makes literal (besides whitespace).
_ESCAPABLE: Final = frozenset(_QUOTE_PAIRS) | frozenset(_QUOTE_PAIRS.values()) | {"\\"}


def _closing_double_quote(text: str, start: int) -> int | None:
    """Index of the `"` closing the one at ``start``, honouring \\" and \\\\, or None."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            i += 2
        elif ch == '"':
            return i
        else:
            i += 1
    return None


def _unescape_double_quoted(content: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(content):
        if content[i] == "\\" and i + 1 < len(content) and content[i + 1] in '"\\':
            out.append(content[i + 1])
            i += 2
        else:
            out.append(content[i])
            i += 1
    return "".join(out)


def split_args(text: str) -> list[str]:
    """Shell-like split (quotes group words); never raises.

    The rules:

    * words are separated by runs of whitespace (any Unicode whitespace, e.g. no-break space);
    * ``'...'`` groups its content literally; ``"..."`` groups it with ``\\"`` and ``\\\\``
      standing for ``"`` and ``\\``; typographic quote pairs (U+201C U+201D and
      U+2018 U+2019) group literally;
    * quoted and unquoted parts that touch form one word (``a"b c"d`` -> ``ab cd``), and
      ``""`` is an empty word;
    * outside quotes, a backslash before a quote, a backslash or whitespace makes that character
      literal; any other backslash is kept (``C:\\temp`` stays as typed);
    * a quote with no closing quote after it is an ordinary character, so the apostrophes of
      chat text survive (``don't stop`` -> ``["don't", "stop"]``, ``"a b`` -> ``['"a', 'b']``).
    """
    words: list[str] = []
    current: list[str] = []
    # Separate from `current` so that an empty quoted word ("") still counts as a word.
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            if in_word:
                words.append("".join(current))
                current = []
                in_word = False
            i += 1
            continue
        in_word = True
        if ch == "\\":
            if i + 1 < len(text) and (text[i + 1] in _ESCAPABLE or text[i + 1].isspace()):
                current.append(text[i + 1])
                i += 2
            else:
                current.append(ch)
                i += 1
        elif ch in _QUOTE_PAIRS:
            if ch == '"':
                end = _closing_double_quote(text, i)
            else:
                found = text.find(_QUOTE_PAIRS[ch], i + 1)
                end = found if found >= 0 else None
            if end is None:
                current.append(ch)
                i += 1
            else:
                content = text[i + 1 : end]
                current.append(_unescape_double_quoted(content) if ch == '"' else content)
                i = end + 1
        else:
            current.append(ch)
            i += 1
    if in_word:
        words.append("".join(current))
    return words
