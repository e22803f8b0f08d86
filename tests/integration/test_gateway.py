"""The webhook gateway over real HTTP on loopback, with signatures computed independently here.

Every test starts the app with aiohttp's AppRunner on 127.0.0.1 (port 0) and talks to it with
httpx. The intake is a small recording class implementing the Intake protocol. An autouse fixture
checks, for every test of the module, that no secret appears in a response or in the captured logs.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from hiphops.events import slack_delivery_id
from hiphops.intake import IntakeResult, IntakeUnavailable
from webhook_gateway.app import RUNNER_OPTIONS, GatewaySettings, create_app
from webhook_gateway.directory import IntegrationConfig, StaticDirectory
from webhook_gateway.intake_client import HTTPIntake

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "github"

GITHUB_SECRET = b"gh-webhook-secret-5f2c9a71"
ROTATED_SECRET = b"gh-previous-secret-81be0d3c"
SLACK_SECRET = b"slack-signing-secret-77d41e09"
UNKNOWN_SECRET = b"somebody-elses-secret-4410"
SLACK_LEGACY_TOKEN = "slack-legacy-verification-token-93ab"
INTAKE_TOKEN = "intake-bearer-token-c0ffee42"
SECRET_TEXTS = [
    secret.decode() for secret in (GITHUB_SECRET, ROTATED_SECRET, SLACK_SECRET, UNKNOWN_SECRET)
] + [SLACK_LEGACY_TOKEN, INTAKE_TOKEN]

PROJECT = "team-a"
GITHUB_PATH = f"/hooks/github/{PROJECT}/github"
SLACK_PATH = f"/hooks/slack/{PROJECT}/slack"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"

# Response texts and headers of every request the module sends; checked for secrets per test.
SEEN_RESPONSES: list[str] = []


def load_payloads(event: str) -> list[dict[str, Any]]:
    payloads: list[dict[str, Any]] = json.loads(
        (FIXTURES / f"{event}.payloads.json").read_text(encoding="utf-8")
    )
    return payloads


PUSH_BODY = json.dumps(load_payloads("push")[0]).encode()
PULL_REQUEST_OPENED = next(p for p in load_payloads("pull_request") if p["action"] == "opened")
PULL_REQUEST_BODY = json.dumps(PULL_REQUEST_OPENED).encode()
PING_BODY = json.dumps(load_payloads("ping")[0]).encode()


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def slack_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def slack_form(text: str = 'deploy "my service" --env=prod', **overrides: str) -> dict[str, str]:
    """A slash command as Slack documents it (fields and shapes from its example request)."""
    form = {
        "token": SLACK_LEGACY_TOKEN,
        "team_id": "T0001",
        "team_domain": "example",
        "enterprise_id": "",
        "channel_id": "C2147483705",
        "channel_name": "test",
        "user_id": "U2147483697",
        "user_name": "Steve",
        "command": "/hiphops",
        "text": text,
        "api_app_id": "A123456",
        "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.com/commands/1234/5678",
        "trigger_id": f"13345224609.738474920.{time.time_ns():x}",
    }
    form.update(overrides)
    return form


class RecordingIntake:
    """Records the events it accepts; one run per event, named after the event's delivery.

    ``unavailable`` makes the next that many calls raise IntakeUnavailable; ``match=False``
    accepts events without creating runs (no sensor matched).
    """

    def __init__(self, *, unavailable: int = 0, match: bool = True) -> None:
        self.unavailable = unavailable
        self.match = match
        self.calls = 0
        self.accepted: list[list[dict[str, Any]]] = []
        self._recorded: set[str] = set()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.accepted for event in batch]

    async def accept(self, events: Sequence[Mapping[str, Any]]) -> IntakeResult:
        self.calls += 1
        if self.unavailable > 0:
            self.unavailable -= 1
            raise IntakeUnavailable("the test intake is down")
        self.accepted.append([dict(event) for event in events])
        if not self.match:
            return IntakeResult(runs=[], duplicates=[])
        runs: list[str] = []
        duplicates: list[str] = []
        for event in events:
            name = "run-" + event["hiphops"]["delivery"]
            (duplicates if name in self._recorded else runs).append(name)
            self._recorded.add(name)
        return IntakeResult(runs=runs, duplicates=duplicates)


class BlockedIntake:
    """An intake that never answers (until released)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def accept(self, events: Sequence[Mapping[str, Any]]) -> IntakeResult:
        await self.release.wait()
        return IntakeResult(runs=[], duplicates=[])


class BrokenIntake:
    """An intake with a bug: it raises something other than IntakeUnavailable."""

    async def accept(self, events: Sequence[Mapping[str, Any]]) -> IntakeResult:
        raise RuntimeError("intake bug with internal details")


def make_directory() -> StaticDirectory:
    return StaticDirectory(
        [
            IntegrationConfig(PROJECT, "github", "github", (GITHUB_SECRET, ROTATED_SECRET)),
            IntegrationConfig(PROJECT, "slack", "slack", (SLACK_SECRET,)),
            IntegrationConfig(PROJECT, "github-no-secret", "github", ()),
            IntegrationConfig(PROJECT, "github-blank-secret", "github", (b"",)),
            IntegrationConfig(PROJECT, "slack-no-secret", "slack", ()),
        ]
    )


@dataclass
class Gateway:
    """A running gateway and what the test needs to drive and observe it."""

    url: str
    client: httpx.AsyncClient
    intake: Any
    registry: CollectorRegistry

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.request(method, self.url + path, **kwargs)
        SEEN_RESPONSES.append(response.text)
        SEEN_RESPONSES.append(str(response.headers))
        return response

    async def github(
        self,
        event: str | None,
        body: bytes,
        *,
        secret: bytes | None = GITHUB_SECRET,
        delivery: str | None = DELIVERY,
        path: str = GITHUB_PATH,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json"}
        if event is not None:
            sent["X-GitHub-Event"] = event
        if delivery is not None:
            sent["X-GitHub-Delivery"] = delivery
        if secret is not None:
            sent["X-Hub-Signature-256"] = github_signature(secret, body)
        sent.update(headers or {})
        return await self.request("POST", path, content=body, headers=sent)

    async def slack(
        self,
        form: Mapping[str, str] | bytes,
        *,
        secret: bytes | None = SLACK_SECRET,
        timestamp: str | None = None,
        path: str = SLACK_PATH,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        body = form if isinstance(form, bytes) else urlencode(form).encode()
        stamp = timestamp if timestamp is not None else str(int(time.time()))
        sent = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
        }
        if secret is not None:
            sent["X-Slack-Signature"] = slack_signature(secret, stamp, body)
        sent.update(headers or {})
        return await self.request("POST", path, content=body, headers=sent)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def rejections(self, source: str, reason: str) -> float:
        return self.metric("hiphops_gateway_rejections_total", source=source, reason=reason)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_gateway(
    intake: Any = None,
    settings: GatewaySettings | None = None,
    *,
    ready: Callable[[], bool] | None = None,
    directory: StaticDirectory | None = None,
) -> AsyncIterator[Gateway]:
    intake = intake if intake is not None else RecordingIntake()
    registry = CollectorRegistry()
    app = create_app(
        directory if directory is not None else make_directory(),
        intake,
        settings if settings is not None else GatewaySettings(intake_retry_delay_s=0),
        registry=registry,
        ready=ready,
    )
    async with serve(app) as url, httpx.AsyncClient(timeout=30) as client:
        yield Gateway(url, client, intake, registry)


def async_test(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (no asyncio pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture(autouse=True)
def no_secret_leaks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Across the whole module: no secret in any response, nor in any log line (access logs too)."""
    caplog.set_level(logging.DEBUG)
    first = len(SEEN_RESPONSES)
    yield
    texts = [*SEEN_RESPONSES[first:], caplog.text]
    for secret in SECRET_TEXTS:
        for text in texts:
            assert secret not in text


def assert_rejected(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert fragment in error
    assert "Traceback" not in response.text


def rejection_logged(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    return any(
        record.name == "webhook_gateway.app"
        and record.getMessage().startswith("rejected ")
        and f" {reason}: " in record.getMessage()
        for record in caplog.records
    )


# --- GitHub: accepted deliveries ------------------------------------------------------------


@async_test
async def test_github_push_is_accepted_after_the_intake_recorded_it() -> None:
    async with running_gateway() as gateway:
        response = await gateway.github("push", PUSH_BODY)
        assert response.status_code == 202
        assert response.json() == {
            "delivery": DELIVERY,
            "runs": [f"run-{DELIVERY}"],
            "duplicates": [],
        }
        [event] = gateway.intake.events
        assert event["project_id"] == PROJECT
        assert event["hiphops"] == {
            "source": "github",
            "event": "push",
            "delivery": DELIVERY,
            "integration": "github",
        }
        assert event["ref"] == json.loads(PUSH_BODY)["ref"]
        labels = {"source": "github", "event": "push"}
        assert gateway.metric("hiphops_gateway_events_accepted_total", **labels) == 1
        assert gateway.metric("hiphops_gateway_requests_total", source="github", code="202") == 1
        assert gateway.metric("hiphops_gateway_intake_seconds_count", outcome="ok") == 1
        assert gateway.metric("hiphops_gateway_body_bytes_sum", source="github") == len(PUSH_BODY)


@async_test
async def test_github_pull_request_yields_the_event_and_the_change_event() -> None:
    async with running_gateway() as gateway:
        response = await gateway.github("pull_request", PULL_REQUEST_BODY)
        assert response.status_code == 202
        assert response.json()["runs"] == [f"run-{DELIVERY}", f"run-{DELIVERY}:change"]
        # Both events of one delivery are handed over in one call, so they are recorded together.
        [[github_event, change_event]] = gateway.intake.accepted
        assert github_event["hiphops"]["event"] == "pull_request"
        assert github_event["hiphops"]["action"] == "opened"
        assert change_event["hiphops"]["source"] == "hiphops"
        assert change_event["hiphops"]["event"] == "change"
        assert change_event["hiphops"]["action"] == "open"
        assert change_event["pr_number"] == PULL_REQUEST_OPENED["pull_request"]["number"]
        assert change_event["repo_name"] == PULL_REQUEST_OPENED["repository"]["name"]
        for source, event in (("github", "pull_request"), ("hiphops", "change")):
            labels = {"source": source, "event": event}
            assert gateway.metric("hiphops_gateway_events_accepted_total", **labels) == 1


@async_test
async def test_github_merged_pull_request_has_action_merged() -> None:
    # The fixtures hold a pull request closed without merging; GitHub's merged close differs
    # from it only in `merged` (and the merge data, not used here).
    closed = next(p for p in load_payloads("pull_request") if p["action"] == "closed")
    merged = {**closed, "pull_request": {**closed["pull_request"], "merged": True}}
    async with running_gateway() as gateway:
        response = await gateway.github("pull_request", json.dumps(merged).encode())
        assert response.status_code == 202
        github_event, change_event = gateway.intake.events
        assert github_event["action"] == "closed"
        assert github_event["hiphops"]["action"] == "merged"
        assert change_event["hiphops"]["action"] == "merged"
        assert change_event["status"] == "MERGED"


@async_test
async def test_every_github_event_type_in_the_fixtures_is_accepted() -> None:
    slices = sorted(FIXTURES.glob("*.payloads.json"))
    assert len(slices) > 50
    expected_events = 0
    async with running_gateway() as gateway:
        for path in slices:
            event = path.name.removesuffix(".payloads.json")
            for index, payload in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                delivery = f"{event}-{index}"
                response = await gateway.github(
                    event, json.dumps(payload).encode(), delivery=delivery
                )
                if event == "ping":
                    assert response.status_code == 200
                    continue
                assert response.status_code == 202, (event, response.text)
                expected_events += 2 if event == "pull_request" else 1
        assert len(gateway.intake.events) == expected_events
        assert {e["hiphops"]["event"] for e in gateway.intake.events} >= {"issues", "release"}


@async_test
async def test_github_ping_is_answered_without_the_intake() -> None:
    async with running_gateway() as gateway:
        response = await gateway.github("ping", PING_BODY)
        assert response.status_code == 200
        assert response.json() == {"ok": True, "zen": json.loads(PING_BODY)["zen"]}
        assert gateway.intake.calls == 0


@async_test
async def test_github_rotation_accepts_either_configured_secret() -> None:
    async with running_gateway() as gateway:
        first = await gateway.github("push", PUSH_BODY, delivery="d-1", secret=GITHUB_SECRET)
        second = await gateway.github("push", PUSH_BODY, delivery="d-2", secret=ROTATED_SECRET)
        other = await gateway.github("push", PUSH_BODY, delivery="d-3", secret=UNKNOWN_SECRET)
        assert (first.status_code, second.status_code) == (202, 202)
        assert_rejected(other, 401, "does not match")
        assert [e["hiphops"]["delivery"] for e in gateway.intake.events] == ["d-1", "d-2"]


@async_test
async def test_github_redelivery_is_still_202_with_the_runs_as_duplicates() -> None:
    async with running_gateway() as gateway:
        first = await gateway.github("pull_request", PULL_REQUEST_BODY)
        again = await gateway.github("pull_request", PULL_REQUEST_BODY)
        assert first.status_code == again.status_code == 202
        assert again.json() == {
            "delivery": DELIVERY,
            "runs": [],
            "duplicates": [f"run-{DELIVERY}", f"run-{DELIVERY}:change"],
        }


@async_test
async def test_github_form_encoded_delivery_is_accepted() -> None:
    # GitHub's "application/x-www-form-urlencoded" content type puts the JSON in `payload`.
    body = urlencode({"payload": PUSH_BODY.decode()}).encode()
    async with running_gateway() as gateway:
        response = await gateway.github(
            "push", body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code == 202
        assert gateway.intake.events[0]["ref"] == json.loads(PUSH_BODY)["ref"]


@async_test
async def test_github_body_of_exactly_the_limit_is_accepted() -> None:
    body = json.dumps({"ref": "refs/heads/main", "pad": ""}).encode()
    limit = 4096
    body = json.dumps({"ref": "refs/heads/main", "pad": "x" * (limit - len(body))}).encode()
    assert len(body) == limit
    async with running_gateway(settings=GatewaySettings(max_body_bytes=limit)) as gateway:
        response = await gateway.github("push", body)
        assert response.status_code == 202


# --- GitHub: rejections ---------------------------------------------------------------------


def _deep_json() -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


GITHUB_REJECTIONS = [
    # id, request keyword arguments, status, reason code, fragment of the error message
    ("unknown-project", {"path": "/hooks/github/team-z/github"}, 404, "unknown_integration",
     "no integration 'github' in project 'team-z'"),
    ("unknown-integration", {"path": f"/hooks/github/{PROJECT}/nope"}, 404,
     "unknown_integration", "no integration 'nope'"),
    ("slack-integration-on-github-route", {"path": f"/hooks/github/{PROJECT}/slack"}, 404,
     "wrong_integration_type", "is not a github integration"),
    ("no-secret", {"path": f"/hooks/github/{PROJECT}/github-no-secret"}, 401, "no_secret",
     "no webhook secret configured for this integration"),
    ("blank-secret", {"path": f"/hooks/github/{PROJECT}/github-blank-secret"}, 401, "no_secret",
     "no webhook secret configured"),
    ("missing-signature", {"secret": None}, 401, "missing_signature",
     "missing X-Hub-Signature-256"),
    ("sha1-signature", {"headers": {"X-Hub-Signature-256": "sha1=" + "0" * 40}}, 401,
     "malformed_signature", "malformed X-Hub-Signature-256"),
    ("wrong-secret", {"secret": UNKNOWN_SECRET}, 401, "bad_signature", "does not match"),
    ("signed-other-body",
     {"headers": {"X-Hub-Signature-256": github_signature(GITHUB_SECRET, b"{}")}},
     401, "bad_signature", "does not match"),
    ("missing-event", {"event": None}, 400, "missing_event_header", "missing X-GitHub-Event"),
    ("empty-event", {"event": ""}, 400, "missing_event_header", "missing X-GitHub-Event"),
    ("malformed-event", {"event": "Push Event"}, 400, "malformed_event_header",
     "malformed X-GitHub-Event"),
    ("missing-delivery", {"delivery": None}, 400, "missing_delivery_header",
     "missing X-GitHub-Delivery"),
    ("change-like-delivery", {"delivery": f"{DELIVERY}:change"}, 400,
     "malformed_delivery_header", "malformed X-GitHub-Delivery"),
    ("unparsable-json", {"body": b"{not json"}, 400, "invalid_json",
     "body is not valid JSON: unexpected character"),
    ("json-array", {"body": b"[1, 2]"}, 400, "not_an_object", "body is not a JSON object"),
    ("json-string", {"body": b'"push"'}, 400, "not_an_object", "body is not a JSON object"),
    ("json-nan", {"body": b'{"x": NaN}'}, 400, "invalid_json", "body is not valid JSON"),
    ("json-infinite-number", {"body": b'{"x": 1e400}'}, 400, "invalid_json",
     "body is not valid JSON"),
    ("json-lone-surrogate", {"body": b'{"x": "\\ud800"}'}, 400, "invalid_json",
     "body is not valid JSON"),
    ("not-utf8", {"body": b'{"x": "\xff"}'}, 400, "invalid_json", "body is not valid JSON"),
    ("deep-nesting", {"body": _deep_json()}, 400, "invalid_json", "depth limit exceeded"),
    ("pull-request-without-pull-request", {"event": "pull_request", "body": b'{"action": "x"}'},
     400, "invalid_payload", "without a pull_request object"),
    ("form-without-payload", {"body": b"ref=main",
     "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400, "invalid_form",
     "no payload field"),
    ("gzip-body", {"body": gzip.compress(PUSH_BODY), "headers": {"Content-Encoding": "gzip"}}, 415,
     "unsupported_content_encoding", "compressed bodies are not accepted"),
    ("body-over-limit", {"body": b"{}" + b" " * 5000}, 413, "body_too_large",
     "body is larger than 4096 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_args", "status", "reason", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in GITHUB_REJECTIONS],
)
@async_test
async def test_github_rejections(
    caplog: pytest.LogCaptureFixture,
    request_args: dict[str, Any],
    status: int,
    reason: str,
    fragment: str,
) -> None:
    args = dict(request_args)
    event = args.pop("event", "push")
    body = args.pop("body", PUSH_BODY)
    settings = GatewaySettings(max_body_bytes=4096, intake_retry_delay_s=0)
    if len(body) > 4096 and reason != "body_too_large":
        settings = GatewaySettings(intake_retry_delay_s=0)
    async with running_gateway(settings=settings) as gateway:
        response = await gateway.github(event, body, **args)
        assert_rejected(response, status, fragment)
        assert gateway.rejections("github", reason) == 1
        code = str(status)
        assert gateway.metric("hiphops_gateway_requests_total", source="github", code=code) == 1
        assert gateway.intake.calls == 0
    assert rejection_logged(caplog, reason)


@async_test
async def test_verification_comes_before_headers_and_parsing() -> None:
    async with running_gateway() as gateway:
        # Unsigned garbage without headers: the signature is what fails, nothing was parsed.
        response = await gateway.github(None, b"{not json", secret=None, delivery=None)
        assert_rejected(response, 401, "missing X-Hub-Signature-256")
        assert gateway.rejections("github", "invalid_json") == 0


@async_test
async def test_body_limit_via_content_length_is_checked_before_reading() -> None:
    async with running_gateway(settings=GatewaySettings(max_body_bytes=4096)) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        # Announce a gigabyte and send none of it: the answer cannot depend on reading the body.
        writer.write(
            f"POST {GITHUB_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "X-GitHub-Event: push\r\nContent-Length: 1000000000\r\n\r\n".encode()
        )
        await writer.drain()
        # Without the Content-Length check the server would wait for the body: fail, not hang.
        status_line = await asyncio.wait_for(reader.readline(), timeout=30)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        writer.close()
        await writer.wait_closed()
        assert status_line.startswith(b"HTTP/1.1 413 ")
        assert json.loads(body) == {"error": "body is larger than 4096 bytes"}
        assert gateway.rejections("github", "body_too_large") == 1
        assert gateway.metric("hiphops_gateway_body_bytes_count", source="github") == 0


@async_test
async def test_body_limit_is_enforced_while_reading_a_chunked_body() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"ref": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    async with running_gateway(settings=GatewaySettings(max_body_bytes=4096)) as gateway:
        response = await gateway.request(
            "POST",
            GITHUB_PATH,
            content=chunks(),
            headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": DELIVERY},
        )
        assert response.request.headers["Transfer-Encoding"] == "chunked"
        assert_rejected(response, 413, "body is larger than 4096 bytes")
        assert gateway.rejections("github", "body_too_large") == 1
        assert gateway.intake.calls == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@async_test
async def test_wrong_method_on_a_hook_route_is_a_json_405(method: str) -> None:
    async with running_gateway() as gateway:
        for path, source in ((GITHUB_PATH, "github"), (SLACK_PATH, "slack")):
            response = await gateway.request(method, path)
            assert_rejected(response, 405, f"method {method} is not allowed here; use POST")
            assert response.headers["Allow"] == "POST"
            assert gateway.rejections(source, "method_not_allowed") == 1


@pytest.mark.parametrize(
    ("path", "source"),
    [("/nope", "other"), ("/hooks/github/team-a", "github"), ("/hooks/gitlab/team-a/x", "other")],
)
@async_test
async def test_unknown_route_is_a_json_404(path: str, source: str) -> None:
    async with running_gateway() as gateway:
        response = await gateway.request("POST", path, content=b"{}")
        assert_rejected(response, 404, "no such route")
        assert gateway.rejections(source, "unknown_route") == 1


# --- Slack ----------------------------------------------------------------------------------


@async_test
async def test_slack_command_is_recorded_and_acknowledged_ephemerally() -> None:
    form = slack_form('deploy "my service" --env=prod')
    async with running_gateway() as gateway:
        response = await gateway.slack(form)
        assert response.status_code == 200
        delivery = slack_delivery_id(form)
        assert response.json() == {
            "response_type": "ephemeral",
            "text": "`/hiphops deploy`: started 1 run.",
        }
        [event] = gateway.intake.events
        assert event["command"] == "deploy"
        assert event["args"] == ["my service", "--env=prod"]
        assert event["slash_command"] == "/hiphops"
        assert event["project_id"] == PROJECT
        assert event["hiphops"] == {
            "source": "slack",
            "event": "command",
            "action": "deploy",
            "delivery": delivery,
            "integration": "slack",
        }
        # Slack's legacy verification token is a secret and stays out of events.
        assert "token" not in event
        labels = {"source": "slack", "event": "command"}
        assert gateway.metric("hiphops_gateway_events_accepted_total", **labels) == 1


@async_test
async def test_slack_unbalanced_quotes_are_kept_as_characters() -> None:
    async with running_gateway() as gateway:
        response = await gateway.slack(slack_form("""say "hello world don't"""))
        assert response.status_code == 200
        assert gateway.intake.events[0]["args"] == ['"hello', "world", "don't"]


@async_test
async def test_slack_command_without_a_matching_sensor_says_so() -> None:
    async with running_gateway(RecordingIntake(match=False)) as gateway:
        response = await gateway.slack(slack_form("<!channel> now"))
        assert response.status_code == 200
        # The command is shown escaped, so the reply cannot mention anybody.
        assert response.json()["text"] == (
            "`/hiphops &lt;!channel&gt;`: no sensor matched this command, so nothing was started."
        )
        assert gateway.intake.calls == 1


@async_test
async def test_slack_same_trigger_again_is_reported_as_already_received() -> None:
    form = slack_form("deploy")
    async with running_gateway() as gateway:
        first = await gateway.slack(form)
        # The same command (same trigger id) signed afresh, e.g. a retry through a proxy.
        again = await gateway.slack(form, timestamp=str(int(time.time()) - 1))
        assert first.json()["text"] == "`/hiphops deploy`: started 1 run."
        assert again.json()["text"] == "`/hiphops deploy` was already received: 1 run started then."


@async_test
async def test_slack_replayed_request_is_rejected() -> None:
    form = slack_form("deploy")
    stamp = str(int(time.time()))
    async with running_gateway() as gateway:
        first = await gateway.slack(form, timestamp=stamp)
        replay = await gateway.slack(form, timestamp=stamp)
        assert first.status_code == 200
        assert_rejected(replay, 401, "replay")
        assert gateway.rejections("slack", "replay") == 1
        assert gateway.intake.calls == 1
        assert gateway.metric("hiphops_gateway_slack_replay_cache_entries") == 1


@pytest.mark.parametrize(
    ("form_args", "status", "reason", "fragment"),
    [
        pytest.param({"offset": -301}, 401, "stale_timestamp",
                     "outside the allowed window", id="stale-timestamp"),
        pytest.param({"offset": 400}, 401, "stale_timestamp",
                     "outside the allowed window", id="future-timestamp"),
        pytest.param({"headers": {"X-Slack-Request-Timestamp": ""}}, 401, "missing_timestamp",
                     "missing X-Slack-Request-Timestamp", id="missing-timestamp"),
        pytest.param({"timestamp": "1e9"}, 401, "malformed_timestamp",
                     "malformed X-Slack-Request-Timestamp", id="malformed-timestamp"),
        pytest.param({"secret": None}, 401, "missing_signature", "missing X-Slack-Signature",
                     id="missing-signature"),
        pytest.param({"headers": {"X-Slack-Signature": "v1=abc"}}, 401, "malformed_signature",
                     "malformed X-Slack-Signature", id="malformed-signature"),
        pytest.param({"secret": UNKNOWN_SECRET}, 401, "bad_signature", "does not match",
                     id="wrong-secret"),
        pytest.param({"path": f"/hooks/slack/{PROJECT}/slack-no-secret"}, 401, "no_secret",
                     "no signing secret configured for this integration", id="no-secret"),
        pytest.param({"path": f"/hooks/slack/{PROJECT}/github"}, 404, "wrong_integration_type",
                     "is not a slack integration", id="github-integration-on-slack-route"),
        pytest.param({"path": "/hooks/slack/team-z/slack"}, 404, "unknown_integration",
                     "no integration 'slack' in project 'team-z'", id="unknown-project"),
        pytest.param({"drop": "command"}, 400, "missing_command", "form has no command field",
                     id="no-command"),
        pytest.param({"drop": "text"}, 400, "missing_text", "form has no text field",
                     id="no-text"),
        pytest.param({"drop": "trigger_id"}, 400, "missing_trigger",
                     "without team_id or trigger_id", id="no-trigger-id"),
        pytest.param({"raw": b"command=%2Fhiphops&text=\xff"}, 400, "invalid_form",
                     "not UTF-8 form data", id="not-utf8"),
        pytest.param({"raw": b"&".join(b"f%d=1" % i for i in range(200))}, 400,
                     "invalid_form", "more than 100 fields", id="too-many-fields"),
        pytest.param({"raw": b"text=" + b"x" * 5000}, 413, "body_too_large",
                     "body is larger than 4096 bytes", id="body-over-limit"),
    ],
)  # fmt: skip
@async_test
async def test_slack_rejections(
    caplog: pytest.LogCaptureFixture,
    form_args: dict[str, Any],
    status: int,
    reason: str,
    fragment: str,
) -> None:
    args = dict(form_args)
    form: dict[str, str] | bytes = slack_form()
    if "drop" in args:
        assert isinstance(form, dict)
        del form[args.pop("drop")]
    if "raw" in args:
        form = args.pop("raw")
    if "offset" in args:
        args["timestamp"] = str(int(time.time()) + args.pop("offset"))
    settings = GatewaySettings(max_body_bytes=4096, intake_retry_delay_s=0)
    async with running_gateway(settings=settings) as gateway:
        response = await gateway.slack(form, **args)
        assert_rejected(response, status, fragment)
        assert gateway.rejections("slack", reason) == 1
        assert gateway.intake.calls == 0
    assert rejection_logged(caplog, reason)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@async_test
async def test_slack_ssl_check_is_answered_without_the_intake(signed: bool) -> None:
    body = urlencode({"ssl_check": "1", "token": SLACK_LEGACY_TOKEN}).encode()
    async with running_gateway() as gateway:
        response = await gateway.slack(body, secret=SLACK_SECRET if signed else None)
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert gateway.intake.calls == 0
        assert gateway.rejections("slack", "missing_signature") == 0


@async_test
async def test_unsigned_slack_command_is_not_mistaken_for_an_ssl_check() -> None:
    async with running_gateway() as gateway:
        response = await gateway.slack(slack_form(ssl_check="0"), secret=None)
        assert_rejected(response, 401, "missing X-Slack-Signature")


# --- the intake -----------------------------------------------------------------------------


@async_test
async def test_intake_unavailable_is_retried_then_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = GatewaySettings(intake_attempts=3, intake_retry_delay_s=0, retry_after_s=7)
    async with running_gateway(RecordingIntake(unavailable=100), settings) as gateway:
        response = await gateway.github("push", PUSH_BODY)
        assert_rejected(response, 503, "retry later")
        assert response.headers["Retry-After"] == "7"
        assert gateway.intake.calls == 3
        assert gateway.rejections("github", "intake_unavailable") == 1
        assert gateway.metric("hiphops_gateway_intake_seconds_count", outcome="unavailable") == 3
        assert gateway.metric("hiphops_gateway_events_accepted_total", source="github",
                              event="push") == 0  # fmt: skip

        slack = await gateway.slack(slack_form("deploy"))
        assert_rejected(slack, 503, "retry later")
        assert gateway.intake.calls == 6
    warnings = [r.getMessage() for r in caplog.records if "intake unavailable" in r.getMessage()]
    assert warnings[0] == "github intake unavailable (attempt 1 of 3): the test intake is down"


@async_test
async def test_intake_unavailable_once_then_accepted_is_202() -> None:
    async with running_gateway(RecordingIntake(unavailable=1)) as gateway:
        response = await gateway.github("push", PUSH_BODY)
        assert response.status_code == 202
        assert gateway.intake.calls == 2
        assert len(gateway.intake.events) == 1


@async_test
async def test_slack_gives_up_on_a_stuck_intake_before_slack_does() -> None:
    intake = BlockedIntake()
    settings = GatewaySettings(slack_deadline_s=0.2)
    async with running_gateway(intake, settings) as gateway:
        response = await gateway.slack(slack_form("deploy"))
        assert_rejected(response, 503, "retry later")
        assert "Retry-After" in response.headers
        intake.release.set()


@async_test
async def test_unexpected_error_is_a_bare_500_with_the_traceback_only_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_gateway(BrokenIntake()) as gateway:
        response = await gateway.github("push", PUSH_BODY)
        assert response.status_code == 500
        assert response.json() == {"error": "internal error"}
        assert gateway.rejections("github", "internal_error") == 1
    [record] = [r for r in caplog.records if r.getMessage().startswith("internal error")]
    assert record.exc_info is not None
    assert "intake bug with internal details" in caplog.text


# --- probes and metrics ---------------------------------------------------------------------


@async_test
async def test_healthz_and_readyz() -> None:
    readiness = {"ready": False}
    async with running_gateway(ready=lambda: readiness["ready"]) as gateway:
        health = await gateway.request("GET", "/healthz")
        assert (health.status_code, health.json()) == (200, {"ok": True})
        not_ready = await gateway.request("GET", "/readyz")
        assert (not_ready.status_code, not_ready.json()) == (503, {"ready": False})
        readiness["ready"] = True
        ready = await gateway.request("GET", "/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})


@async_test
async def test_readyz_defaults_to_ready_and_a_failing_check_is_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("directory not loaded")

    async with running_gateway() as gateway:
        assert (await gateway.request("GET", "/readyz")).status_code == 200
    async with running_gateway(ready=broken) as gateway:
        response = await gateway.request("GET", "/readyz")
        assert (response.status_code, response.json()) == (503, {"ready": False})


@async_test
async def test_metrics_endpoint_serves_prometheus_text() -> None:
    async with running_gateway() as gateway:
        await gateway.github("push", PUSH_BODY)
        await gateway.github("push", PUSH_BODY, secret=UNKNOWN_SECRET)
        response = await gateway.request("GET", "/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.text
        for line in (
            'hiphops_gateway_requests_total{code="202",source="github"} 1.0',
            'hiphops_gateway_requests_total{code="401",source="github"} 1.0',
            'hiphops_gateway_rejections_total{reason="bad_signature",source="github"} 1.0',
            'hiphops_gateway_events_accepted_total{event="push",source="github"} 1.0',
            'hiphops_gateway_intake_seconds_count{outcome="ok"} 1.0',
            'hiphops_gateway_body_bytes_count{source="github"} 2.0',
            "hiphops_gateway_slack_replay_cache_entries 0.0",
        ):
            assert _normalized_labels(line) in {_normalized_labels(x) for x in text.splitlines()}
        openmetrics = await gateway.request(
            "GET", "/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


def _normalized_labels(line: str) -> str:
    """A sample line with its labels sorted, since the exposition order is not ours to fix."""
    if "{" not in line:
        return line
    name, rest = line.split("{", 1)
    labels, value = rest.split("}", 1)
    return name + "{" + ",".join(sorted(labels.split(","))) + "}" + value


@async_test
async def test_apps_without_a_registry_do_not_collide() -> None:
    first = create_app(make_directory(), RecordingIntake())
    second = create_app(make_directory(), RecordingIntake())
    async with serve(first) as url_1, serve(second) as url_2, httpx.AsyncClient() as client:
        for url in (url_1, url_2):
            response = await client.get(url + "/metrics")
            assert "hiphops_gateway_requests_total" in response.text


@async_test
async def test_access_log_names_the_request_but_holds_no_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = json.dumps({"ref": "refs/heads/body-marker-7731"}).encode()
    async with running_gateway() as gateway:
        assert (await gateway.github("push", body)).status_code == 202
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any(f"POST {GITHUB_PATH}" in line for line in access)
    assert "body-marker-7731" not in caplog.text


# --- the directory --------------------------------------------------------------------------


def test_integration_config_repr_hides_secrets() -> None:
    config = IntegrationConfig(PROJECT, "github", "github", (GITHUB_SECRET, ROTATED_SECRET))
    assert repr(config) == (
        "IntegrationConfig(project='team-a', name='github', type='github', secrets=<2 redacted>)"
    )
    assert GITHUB_SECRET.decode() not in str(config)


def test_static_directory_replace_swaps_the_whole_set() -> None:
    old = IntegrationConfig(PROJECT, "github", "github", (GITHUB_SECRET,))
    new = IntegrationConfig(PROJECT, "slack", "slack", (SLACK_SECRET,))
    directory = StaticDirectory([old])
    assert directory.get(PROJECT, "github") == old
    directory.replace([new])
    assert directory.get(PROJECT, "github") is None
    assert directory.get(PROJECT, "slack") == new
    with pytest.raises(ValueError, match="configured twice") as raised:
        directory.replace([old, old])
    assert GITHUB_SECRET.decode() not in str(raised.value)
    assert directory.get(PROJECT, "slack") == new


@async_test
async def test_directory_changes_apply_to_a_running_gateway() -> None:
    directory = make_directory()
    async with running_gateway(directory=directory) as gateway:
        assert (await gateway.github("push", PUSH_BODY, delivery="d-1")).status_code == 202
        directory.replace([IntegrationConfig(PROJECT, "github", "github", (UNKNOWN_SECRET,))])
        refused = await gateway.github("push", PUSH_BODY, delivery="d-2")
        assert_rejected(refused, 401, "does not match")
        rotated = await gateway.github("push", PUSH_BODY, delivery="d-3", secret=UNKNOWN_SECRET)
        assert rotated.status_code == 202


# --- HTTPIntake against a small real server -------------------------------------------------


class FakeOperatorIntake:
    """An operator intake endpoint: records requests, answers what the test says."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.status = 200
        self.body: bytes = b""
        self.redirect_followed = False
        self.hold = False
        self.release = asyncio.Event()

    async def intake(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        if self.hold:
            await self.release.wait()
        if self.status in (301, 302, 307, 308):
            return web.Response(status=self.status, headers={"Location": "/elsewhere"})
        if self.body:
            return web.Response(status=self.status, body=self.body, content_type="application/json")
        events = self.requests[-1][1]["events"]
        runs = ["run-" + e["hiphops"]["delivery"] for e in events]
        return web.json_response({"runs": runs, "duplicates": []}, status=self.status)

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.redirect_followed = True
        return web.json_response({"runs": [], "duplicates": []})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/intake", self.intake)
        app.router.add_route("*", "/elsewhere", self.elsewhere)
        return app


EVENT = {"ref": "main", "project_id": PROJECT, "hiphops": {"source": "github", "delivery": "d-1"}}


@asynccontextmanager
async def operator_intake() -> AsyncIterator[tuple[FakeOperatorIntake, HTTPIntake]]:
    operator = FakeOperatorIntake()
    async with serve(operator.app()) as url:
        intake = HTTPIntake(url + "/intake", INTAKE_TOKEN, timeout_s=5)
        try:
            yield operator, intake
        finally:
            operator.release.set()
            await intake.close()


@async_test
async def test_http_intake_posts_events_with_the_bearer_token() -> None:
    async with operator_intake() as (operator, intake):
        result = await intake.accept([EVENT])
        assert result == IntakeResult(runs=["run-d-1"], duplicates=[])
        [(headers, body)] = operator.requests
        assert headers["Authorization"] == f"Bearer {INTAKE_TOKEN}"
        assert headers["Content-Type"] == "application/json"
        assert body == {"events": [EVENT]}


@async_test
async def test_http_intake_parses_duplicates() -> None:
    async with operator_intake() as (operator, intake):
        operator.body = b'{"runs": [], "duplicates": ["run-d-1"], "more": 1}'
        operator.status = 201
        assert await intake.accept([EVENT]) == IntakeResult(runs=[], duplicates=["run-d-1"])


@pytest.mark.parametrize("status", [401, 403])
@async_test
async def test_http_intake_refused_token_is_unavailable_and_logged(
    caplog: pytest.LogCaptureFixture, status: int
) -> None:
    async with operator_intake() as (operator, intake):
        operator.status = status
        operator.body = b'{"error": "unauthorized"}'
        with pytest.raises(IntakeUnavailable, match="refused the gateway's token") as raised:
            await intake.accept([EVENT])
        assert INTAKE_TOKEN not in str(raised.value)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"(HTTP {status})" in r.getMessage() for r in errors)


@pytest.mark.parametrize(
    ("status", "body", "fragment"),
    [
        (500, b"", "answered HTTP 500"),
        (503, b'{"runs": []}', "answered HTTP 503"),
        (404, b"{}", "answered HTTP 404"),
        (307, b"", "answered HTTP 307"),
        (200, b"not json", "without runs and duplicates lists"),
        (200, b'{"runs": ["a"]}', "without runs and duplicates lists"),
        (200, b'{"runs": [1], "duplicates": []}', "without runs and duplicates lists"),
    ],
)
@async_test
async def test_http_intake_failures_are_unavailable(
    status: int, body: bytes, fragment: str
) -> None:
    async with operator_intake() as (operator, intake):
        operator.status = status
        operator.body = body
        with pytest.raises(IntakeUnavailable, match=fragment):
            await intake.accept([EVENT])
        assert not operator.redirect_followed


@async_test
async def test_http_intake_connection_refused_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    intake = HTTPIntake(f"http://127.0.0.1:{port}/intake?x=1", INTAKE_TOKEN)
    try:
        with pytest.raises(IntakeUnavailable, match="unreachable") as raised:
            await intake.accept([EVENT])
        assert str(raised.value).startswith(f"intake http://127.0.0.1:{port}/intake unreachable")
    finally:
        await intake.close()


@async_test
async def test_http_intake_timeout_is_unavailable() -> None:
    operator = FakeOperatorIntake()
    operator.hold = True
    async with serve(operator.app()) as url:
        intake = HTTPIntake(url + "/intake", INTAKE_TOKEN, timeout_s=0.2)
        try:
            with pytest.raises(IntakeUnavailable, match="timed out"):
                await intake.accept([EVENT])
        finally:
            operator.release.set()
            await intake.close()


@async_test
async def test_http_intake_can_be_used_again_after_close() -> None:
    async with operator_intake() as (operator, intake):
        await intake.accept([EVENT])
        await intake.close()
        await intake.accept([EVENT])
        assert len(operator.requests) == 2


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [
        ("ftp://operator/intake", INTAKE_TOKEN, "absolute http"),
        ("/intake", INTAKE_TOKEN, "absolute http"),
        ("http://operator/intake", "", "token is empty"),
        ("http://user:pw@operator/intake", INTAKE_TOKEN, "must not hold credentials"),
    ],
)
def test_http_intake_rejects_bad_configuration(url: str, token: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HTTPIntake(url, token)


@async_test
async def test_gateway_through_http_intake_end_to_end() -> None:
    operator = FakeOperatorIntake()
    async with serve(operator.app()) as operator_url:
        intake = HTTPIntake(operator_url + "/intake", INTAKE_TOKEN)
        try:
            async with running_gateway(intake) as gateway:
                response = await gateway.github("pull_request", PULL_REQUEST_BODY)
                assert response.status_code == 202
                assert response.json()["runs"] == [f"run-{DELIVERY}", f"run-{DELIVERY}:change"]
                operator.status = 500
                failed = await gateway.github("push", PUSH_BODY, delivery="d-2")
                assert_rejected(failed, 503, "retry later")
        finally:
            await intake.close()
    [first, *retries] = operator.requests
    assert [e["hiphops"]["event"] for e in first[1]["events"]] == ["pull_request", "change"]
    assert all(
        headers["Authorization"] == f"Bearer {INTAKE_TOKEN}" for headers, _ in operator.requests
    )
    assert len(retries) == GatewaySettings().intake_attempts
