"""`hiphops send`: sign and post a sample webhook, as GitHub or Slack would.

The event file is a raw payload (give the GitHub event type) or a normalized event such as those
in examples/events (the type is read from its `hiphops` block and the added keys are removed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shlex
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

#: Keys normalization adds to a payload (DESIGN §3); a sample event has them, a webhook does not.
ADDED_KEYS = ("project_id", "hiphops")


class SendError(ValueError):
    """The event cannot be sent to that URL (wrong kind of event, missing type)."""


@dataclass(frozen=True)
class Webhook:
    headers: dict[str, str]
    body: bytes


def source_of(url: str) -> str:
    """`github` or `slack`, from a gateway URL (`.../hooks/<source>/<project>/<integration>`)."""
    parts = urlsplit(url).path.strip("/").split("/")
    if len(parts) >= 4 and parts[-4] == "hooks" and parts[-3] in ("github", "slack"):
        return parts[-3]
    raise SendError(f"{url} is not a gateway hook URL (.../hooks/<github|slack>/<project>/<name>)")


def github_webhook(
    event: Mapping[str, Any], secret: bytes, *, event_type: str | None, delivery: str | None
) -> Webhook:
    """A GitHub webhook: the payload, X-GitHub-Event/Delivery and X-Hub-Signature-256."""
    hiphops = event.get("hiphops") if isinstance(event.get("hiphops"), Mapping) else None
    if hiphops is not None and hiphops.get("source") not in (None, "github"):
        raise SendError(
            f"this is a {hiphops.get('source')} event: only GitHub events can be sent as GitHub "
            "webhooks (change events are derived from pull_request webhooks)"
        )
    kind = event_type or (hiphops.get("event") if hiphops else None)
    if not kind:
        raise SendError("the event type is unknown: pass --event-type (e.g. pull_request)")
    payload = {k: v for k, v in event.items() if k not in ADDED_KEYS}
    body = json.dumps(payload).encode()
    signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "hiphops-send",
        "X-GitHub-Event": str(kind),
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
    }
    return Webhook(headers, body)


def slack_webhook(
    event: Mapping[str, Any], secret: bytes, *, delivery: str | None, now: float | None = None
) -> Webhook:
    """A Slack slash command: the form fields and a v0 signature. `delivery` becomes the
    trigger id (from which the gateway derives the delivery id); a fresh one when None."""
    hiphops = event.get("hiphops") if isinstance(event.get("hiphops"), Mapping) else None
    if hiphops is not None and hiphops.get("source") != "slack":
        raise SendError(f"this is a {hiphops.get('source')} event, not a Slack command")
    text = event.get("text")
    if not isinstance(text, str):
        words = [str(event.get("command", ""))] + [str(a) for a in event.get("args") or []]
        text = " ".join(shlex.quote(w) if w else "" for w in words).strip()
    form = {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in event.items()
        if key
        not in (*ADDED_KEYS, "args", "action", "command", "slash_command", "text", "trigger_id")
        and value is not None
        and not isinstance(value, dict | list)
    }
    form["command"] = str(event.get("slash_command") or "/hiphops")
    form["text"] = text
    form["trigger_id"] = delivery or f"{int(time.time())}.{uuid.uuid4().hex[:12]}"
    body = urlencode(form).encode()
    timestamp = str(int(now if now is not None else time.time()))
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "hiphops-send",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }
    return Webhook(headers, body)
