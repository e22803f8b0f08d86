"""Random requests over real HTTP never make the gateway answer 5xx, nor 2xx for a dropped event.

The gateway runs in a thread with its own event loop for the whole module; hypothesis drives a
synchronous httpx client at it. Many generated requests are signed correctly, so that they get
past verification and exercise header checks, body parsing and normalization, not only the
signature check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integration.test_gateway import (
    GITHUB_PATH,
    GITHUB_SECRET,
    PROJECT,
    SLACK_PATH,
    SLACK_SECRET,
    RecordingIntake,
    github_signature,
    load_payloads,
    make_directory,
    serve,
    slack_form,
    slack_signature,
)
from webhook_gateway.app import GatewaySettings, create_app

MAX_BODY = 64 * 1024
# The oversized body example is shown in full when hypothesis reports; that is fine here.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    # caplog is meant to accumulate across the examples of a test (see check()).
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@dataclass
class RunningGateway:
    url: str
    intake: RecordingIntake


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    """The gateway served from a background thread until the module's tests are done."""
    intake = RecordingIntake()
    app = create_app(
        make_directory(),
        intake,
        GatewaySettings(max_body_bytes=MAX_BODY, intake_retry_delay_s=0),
    )
    started = threading.Event()
    urls: list[str] = []
    stop: list[asyncio.Event] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        stop.append(asyncio.Event())
        loops.append(asyncio.get_running_loop())
        async with serve(app) as url:
            urls.append(url)
            started.set()
            await stop[0].wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(timeout=30)
    try:
        yield RunningGateway(urls[0], intake)
    finally:
        loops[0].call_soon_threadsafe(stop[0].set)
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


# --- strategies -----------------------------------------------------------------------------

# Printable ASCII; HTTP strips a value's surrounding whitespace, and httpx refuses to send it.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(
    str.strip
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
GITHUB_EXAMPLES = load_payloads("pull_request") + load_payloads("push") + load_payloads("ping")


@st.composite
def github_like_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A real payload with some keys removed or replaced by random values."""
    payload = dict(draw(st.sampled_from(GITHUB_EXAMPLES)))
    for key in draw(st.lists(st.sampled_from(sorted(payload)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del payload[key]
        else:
            payload[key] = draw(JSON_VALUES)
    return payload


SLACK_FIELDS = st.dictionaries(
    st.sampled_from(
        ["command", "text", "team_id", "trigger_id", "ssl_check", "enterprise_id", "user_id"]
    )
    | st.text(max_size=8),
    st.text(max_size=40),
    max_size=8,
)


@st.composite
def slack_command_bodies(draw: st.DrawFn) -> bytes:
    """A slash command with random text, some fields dropped and some random ones added."""
    form = slack_form(draw(st.text(max_size=60)))
    for key in draw(st.lists(st.sampled_from(sorted(form)), max_size=2, unique=True)):
        del form[key]
    return urlencode({**form, **draw(SLACK_FIELDS)}).encode()


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


BODIES = st.one_of(
    st.binary(max_size=2048),
    JSON_VALUES.map(json_bytes),
    github_like_payloads().map(json_bytes),
    SLACK_FIELDS.map(lambda fields: urlencode(fields).encode()),
    slack_command_bodies(),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.just(b"x" * (MAX_BODY + 1)),
)
# Mostly near-valid bodies, so that most examples get past parsing into normalization.
GITHUB_BODIES = st.one_of(*[github_like_payloads().map(json_bytes)] * 4, BODIES)
SLACK_BODIES = st.one_of(*[slack_command_bodies()] * 4, BODIES)
SEGMENT = st.text(max_size=12).map(lambda text: quote(text, safe=""))
PATHS = st.one_of(
    st.sampled_from(
        [
            GITHUB_PATH,
            SLACK_PATH,
            f"/hooks/github/{PROJECT}/slack",
            f"/hooks/slack/{PROJECT}/github",
            f"/hooks/github/{PROJECT}/github-no-secret",
            "/healthz",
            "/readyz",
            "/metrics",
        ]
    ),
    st.builds(
        lambda source, project, name: f"/hooks/{source}/{project}/{name}",
        st.sampled_from(["github", "slack", "gitlab"]),
        SEGMENT,
        SEGMENT,
    ),
    st.lists(SEGMENT, max_size=5).map(lambda segments: "/" + "/".join(segments)),
)
METHODS = st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
GITHUB_EVENTS = st.sampled_from(["push", "pull_request", "ping", "issues", "release", ""])
HEADER_VALUES = {
    "X-GitHub-Event": GITHUB_EVENTS | HEADER_TEXT,
    "X-GitHub-Delivery": st.uuids().map(str) | HEADER_TEXT,
    "X-Hub-Signature-256": HEADER_TEXT
    | st.binary(min_size=32, max_size=32).map(lambda b: "sha256=" + b.hex()),
    "X-Slack-Request-Timestamp": HEADER_TEXT | st.integers(-(10**16), 10**16).map(str),
    "X-Slack-Signature": HEADER_TEXT,
    "Content-Type": st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
    )
    | HEADER_TEXT,
    "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "x-unknown"]),
}


def noise_headers(*names: str) -> st.SearchStrategy[dict[str, str]]:
    """Any subset of the named headers, with valid-looking or random values."""
    return st.fixed_dictionaries({}, optional={name: HEADER_VALUES[name] for name in names})


# A compressed body is refused (415) before anything else is looked at: keep it occasional.
RARE_ENCODING = st.sampled_from([None] * 6 + ["gzip", "br", "identity"])
# Signed correctly most of the time, so that examples reach what comes after verification.
SIGN = st.sampled_from([True, True, True, False])


def send(
    client: httpx.Client,
    gateway: RunningGateway,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    sign: bool,
) -> httpx.Response:
    headers = dict(headers)
    if sign and path.startswith("/hooks/github/"):
        headers["X-Hub-Signature-256"] = github_signature(GITHUB_SECRET, body)
    if sign and path.startswith("/hooks/slack/"):
        stamp = str(int(time.time()))
        headers["X-Slack-Request-Timestamp"] = stamp
        headers["X-Slack-Signature"] = slack_signature(SLACK_SECRET, stamp, body)
    return client.request(method, gateway.url + path, headers=headers, content=body)


def check(
    response: httpx.Response,
    gateway: RunningGateway,
    calls_before: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No 5xx and no error logged; an error answer is JSON; 2xx only when the intake took it."""
    # Neither the catch-all middleware nor aiohttp's own request error handling was reached.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    status = response.status_code
    # Shown by --hypothesis-show-statistics: how far the examples got.
    event(f"{status} {response.json().get('error', '')[:40] if status >= 400 else ''}")
    assert status < 500, response.text
    accepted = gateway.intake.calls - calls_before
    if status >= 400:
        assert accepted == 0
        assert isinstance(response.json()["error"], str)
    if status == 202:
        assert accepted == 1
        assert response.json()["delivery"] == response.request.headers["X-GitHub-Delivery"]
    if status == 200 and response.request.url.path.startswith("/hooks/slack/"):
        # Either an ssl_check (nothing recorded) or an acknowledged command (recorded).
        assert accepted == (1 if "response_type" in response.json() else 0)
    if accepted:
        # Whatever the body held, the project and the hiphops block come from the route.
        for recorded in gateway.intake.accepted[-1]:
            assert recorded["project_id"] == PROJECT
            assert recorded["hiphops"]["integration"] in ("github", "slack")
            assert recorded["hiphops"]["source"] in ("github", "slack", "hiphops")


@FUZZ_SETTINGS
@given(
    method=METHODS,
    path=PATHS,
    headers=noise_headers(*HEADER_VALUES),
    body=BODIES,
    sign=SIGN,
)
def test_random_requests_never_get_a_5xx(
    client: httpx.Client,
    gateway: RunningGateway,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    sign: bool,
) -> None:
    calls_before = gateway.intake.calls
    response = send(client, gateway, method, path, headers, body, sign)
    check(response, gateway, calls_before, caplog)


@FUZZ_SETTINGS
@given(
    event_name=GITHUB_EVENTS | HEADER_TEXT,
    delivery=st.uuids().map(str) | HEADER_TEXT,
    headers=noise_headers("Content-Type", "X-Hub-Signature-256"),
    encoding=RARE_ENCODING,
    body=GITHUB_BODIES,
    sign=SIGN,
)
def test_random_github_deliveries_never_get_a_5xx(
    client: httpx.Client,
    gateway: RunningGateway,
    caplog: pytest.LogCaptureFixture,
    event_name: str,
    delivery: str,
    headers: dict[str, str],
    encoding: str | None,
    body: bytes,
    sign: bool,
) -> None:
    headers = {"X-GitHub-Event": event_name, "X-GitHub-Delivery": delivery, **headers}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    calls_before = gateway.intake.calls
    response = send(client, gateway, "POST", GITHUB_PATH, headers, body, sign)
    check(response, gateway, calls_before, caplog)


@FUZZ_SETTINGS
@given(
    headers=noise_headers("Content-Type", "X-Slack-Request-Timestamp", "X-Slack-Signature"),
    encoding=RARE_ENCODING,
    body=SLACK_BODIES,
    sign=SIGN,
)
def test_random_slack_commands_never_get_a_5xx(
    client: httpx.Client,
    gateway: RunningGateway,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    encoding: str | None,
    body: bytes,
    sign: bool,
) -> None:
    if encoding is not None:
        headers = {**headers, "Content-Encoding": encoding}
    calls_before = gateway.intake.calls
    response = send(client, gateway, "POST", SLACK_PATH, headers, body, sign)
    check(response, gateway, calls_before, caplog)
