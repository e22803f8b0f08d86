"""The `slack.*` task handlers against a fake Slack on loopback (tests/fakes/slack_server.py).

Every test goes over real HTTP through slack-sdk. Waits between retries go through the
`sleep` setting, which records the requested delays and returns at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web

from hiphops.integrations import Integration, ManifestSecrets, SecretRef
from hiphops.tasks.connections import StaticConnections
from hiphops.tasks.registry import Registry, TaskCall, TaskError
from hiphops.tasks.slack import SlackSettings, register
from tests.fakes.slack_server import (
    MAX_TEXT,
    RESPONSE_URL,
    FakeSlack,
    disconnect,
    rate_limited,
    server_error,
)

TOKEN = "xoxb-1111-2222-fakeBotTokenForTests"
ROTATED = "xoxb-3333-4444-rotatedBotTokenForTests"
WRONG = "xoxb-9999-0000-wrongBotTokenForTests"
PROJECT = "demo"
SEEN_ERRORS: list[str] = []


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no asyncio pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))

    return run


@pytest.fixture(autouse=True)
def no_token_anywhere(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No bot token in any task error nor any log line (slack-sdk's debug logs included)."""
    caplog.set_level(logging.DEBUG)
    first = len(SEEN_ERRORS)
    yield
    for text in [*SEEN_ERRORS[first:], caplog.text]:
        for token in (TOKEN, ROTATED, WRONG):
            assert token not in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Harness:
    fake: FakeSlack
    registry: Registry
    secrets: ManifestSecrets
    sleeps: list[float] = field(default_factory=list)

    async def run(self, name: str, task_input: dict[str, Any], project: str = PROJECT) -> Any:
        handler = self.registry.get(name)
        assert handler is not None
        event = {"project_id": project, "hiphops": {"source": "slack", "integration": "slack"}}
        return await handler(TaskCall("run-1", "t", name, task_input, event, project, 1))

    async def fail(self, name: str, task_input: dict[str, Any], project: str = PROJECT) -> str:
        with pytest.raises(TaskError) as raised:
            await self.run(name, task_input, project)
        SEEN_ERRORS.append(str(raised.value))
        return str(raised.value)

    def set_token(self, token: str) -> None:
        self.secrets.add_manifest(
            {"metadata": {"name": "slack"}, "stringData": {"bot-token": token}},
            default_project=PROJECT,
        )


@asynccontextmanager
async def slack(
    *, scopes: tuple[str, ...] = ("chat:write",), token: str = TOKEN, **settings: Any
) -> AsyncIterator[Harness]:
    async with FakeSlack(TOKEN, scopes=scopes) as fake:
        secrets = ManifestSecrets()
        integration = Integration(
            name="slack",
            project=PROJECT,
            type="slack",
            api_url=fake.api_url,
            token=SecretRef("slack", "bot-token"),
        )
        registry = Registry()
        harness = Harness(fake, registry, secrets)

        async def sleep(delay: float) -> None:
            harness.sleeps.append(delay)
            await asyncio.sleep(0)

        register(
            registry,
            StaticConnections([integration], secrets),
            settings=SlackSettings(sleep=sleep, **settings),
        )
        harness.set_token(token)
        yield harness


@asynccontextmanager
async def bystander() -> AsyncIterator[tuple[str, list[str]]]:
    """Another HTTP server on loopback standing for an internal service; records each path."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


# --- post_message --------------------------------------------------------------------------


def test_register_adds_the_three_tasks() -> None:
    registry = Registry()
    register(registry, StaticConnections([], ManifestSecrets()))
    assert registry.names() == ["slack.post_message", "slack.send_response", "slack.update_message"]


@async_test
async def test_post_message_by_name_returns_channel_id_ts_and_permalink() -> None:
    async with slack() as s:
        result = await s.run("slack.post_message", {"channel": "general", "text": "hello"})
        ts = result["ts"]
        assert result == {
            "ok": True,
            "channel": "C0GENERAL1",
            "ts": ts,
            "permalink": f"{s.fake.url}/archives/C0GENERAL1/p{ts.replace('.', '')}",
        }
        post, permalink = s.fake.requests
        assert (post.http_method, post.path) == ("POST", "/api/chat.postMessage")
        assert post.headers["Authorization"] == f"Bearer {TOKEN}"
        assert post.headers["Content-Type"].startswith("application/json")
        assert post.body == {"channel": "general", "text": "hello"}
        assert (permalink.http_method, permalink.target) == ("GET", "chat.getPermalink")
        assert permalink.body == {"channel": "C0GENERAL1", "message_ts": ts}
        assert s.fake.messages[("C0GENERAL1", ts)]["text"] == "hello"


@pytest.mark.parametrize(
    "address", [{"channel": "#general"}, {"channel": "C0GENERAL1"}, {"channel_id": "C0GENERAL1"}]
)
@async_test
async def test_post_message_channel_forms(address: dict[str, str]) -> None:
    async with slack(fetch_permalink=False) as s:
        result = await s.run("slack.post_message", {**address, "text": "hi"})
        assert result["channel"] == "C0GENERAL1"
        assert [r.target for r in s.fake.requests] == ["chat.postMessage"]


@async_test
async def test_post_message_in_a_thread_with_blocks_attachments_and_options() -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*deployed*"}}]
    async with slack(fetch_permalink=False) as s:
        parent = await s.run("slack.post_message", {"channel": "general", "text": "parent"})
        reply = await s.run(
            "slack.post_message",
            {
                "channel_id": parent["channel"],
                "thread_ts": parent["ts"],
                "blocks": blocks,
                # JSON text, as `${...}` interpolation renders an object
                "attachments": '[{"fallback": "f", "color": "#36a64f"}]',
                "unfurl_links": "false",
                "reply_broadcast": True,
                "username": "release bot",
                "metadata": {"event_type": "deploy", "event_payload": {"id": 7}},
            },
        )
        assert reply == {
            "ok": True,
            "channel": "C0GENERAL1",
            "ts": reply["ts"],
            "thread_ts": parent["ts"],
        }
        assert s.fake.requests[-1].body == {
            "channel": parent["channel"],
            "thread_ts": parent["ts"],
            "blocks": blocks,
            "attachments": [{"fallback": "f", "color": "#36a64f"}],
            "unfurl_links": False,
            "reply_broadcast": True,
            "username": "release bot",
            "metadata": {"event_type": "deploy", "event_payload": {"id": 7}},
        }


@pytest.mark.parametrize(
    ("task_input", "fragments"),
    [
        ({"channel": "nowhere"}, ["channel_not_found", "'nowhere'", "give the id"]),
        ({"channel": "secret"}, ["channel_not_found", "private channel needs its id"]),
        ({"channel": "random"}, ["not_in_channel", "'random'", "/invite", "chat:write.public"]),
        ({"channel": "old-news"}, ["is_archived", "'old-news'"]),
        ({"channel": "general", "text": "x" * (MAX_TEXT + 1)}, ["msg_too_long", "shorten"]),
        (
            {"channel": "general", "blocks": [{"text": "no type"}]},
            ["invalid_blocks", "missing required field: type [json-pointer:/blocks/0]"],
        ),
    ],
)
@async_test
async def test_post_message_slack_errors_are_explained(
    task_input: dict[str, Any], fragments: list[str]
) -> None:
    async with slack() as s:
        error = await s.fail("slack.post_message", {"text": "hi", **task_input})
        for fragment in fragments:
            assert fragment in error
        assert len(s.fake.calls("chat.postMessage")) == 1  # not retried
        assert s.fake.messages == {}


@async_test
async def test_public_scope_posts_without_joining() -> None:
    async with slack(scopes=("chat:write", "chat:write.public"), fetch_permalink=False) as s:
        result = await s.run("slack.post_message", {"channel": "random", "text": "hi"})
        assert result["channel"] == "C0RANDOM01"


@async_test
async def test_rejected_token_names_the_integration_not_the_token() -> None:
    async with slack(token=WRONG) as s:
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert "invalid_auth" in error and "'slack'" in error and "botTokenSecretRef" in error
        assert s.fake.requests[0].headers["Authorization"] == f"Bearer {WRONG}"


@async_test
async def test_missing_scope_names_the_scope() -> None:
    async with slack(scopes=("channels:read",)) as s:
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert "missing_scope" in error
        assert "needs the scope chat:write (it has: channels:read)" in error


@async_test
async def test_rotated_token_is_used_at_once() -> None:
    async with slack(fetch_permalink=False) as s:
        await s.run("slack.post_message", {"channel": "general", "text": "one"})
        s.fake.token = ROTATED
        s.set_token(ROTATED)
        await s.run("slack.post_message", {"channel": "general", "text": "two"})
        assert [r.headers["Authorization"] for r in s.fake.requests] == [
            f"Bearer {TOKEN}",
            f"Bearer {ROTATED}",
        ]


@pytest.mark.parametrize(
    ("task_input", "fragment"),
    [
        ({"text": "hi"}, "input `channel`"),
        ({"channel": "general", "channel_id": "C0GENERAL1", "text": "hi"}, "not both"),
        ({"channel_id": "general", "text": "hi"}, "is not a channel id"),
        ({"channel": "two words", "text": "hi"}, "not a channel name or id"),
        ({"channel": "general"}, "no content"),
        ({"channel": "general", "text": "  "}, "no content"),
        ({"channel": "general", "text": 42}, "`text` must be a string, not a number"),
        ({"channel": "general", "blocks": "not json"}, "`blocks` is a string but not JSON"),
        ({"channel": "general", "blocks": [1]}, "`blocks` must be a list of objects"),
        ({"channel": "general", "text": "hi", "thread_ts": 1712345678.123456}, "loses digits"),
        ({"channel": "general", "text": "hi", "thread_ts": "yesterday"}, "Slack timestamp"),
        ({"channel": "general", "text": "hi", "unfurl_links": "yes"}, "true or false"),
        ({"channel": "general", "text": "hi", "parse": "some"}, "one of none, full"),
        ({"channel": "general", "text": "hi", "token": "xoxb-other"}, "unknown input 'token'"),
        ({"channel": "general", "text": "hi", "metadata": "x"}, "`metadata` must be an object"),
    ],
)
@async_test
async def test_post_message_input_is_checked_before_anything_is_sent(
    task_input: dict[str, Any], fragment: str
) -> None:
    async with slack() as s:
        assert fragment in await s.fail("slack.post_message", task_input)
        assert s.fake.requests == []


@async_test
async def test_project_without_a_slack_integration() -> None:
    async with slack() as s:
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"}, "other")
        assert "project 'other' has no slack integration" in error


# --- retries -------------------------------------------------------------------------------


@async_test
async def test_rate_limit_waits_retry_after_then_posts_once() -> None:
    async with slack(fetch_permalink=False) as s:
        s.fake.fail("chat.postMessage", rate_limited(7), rate_limited(2))
        result = await s.run("slack.post_message", {"channel": "general", "text": "hi"})
        assert len(s.fake.calls("chat.postMessage")) == 3
        assert list(s.fake.messages) == [("C0GENERAL1", result["ts"])]
        assert len(s.sleeps) == 2
        assert 7 <= s.sleeps[0] <= 7.7 and 2 <= s.sleeps[1] <= 2.2


@async_test
async def test_rate_limit_longer_than_the_task_waits_fails_at_once() -> None:
    async with slack(max_retry_after_s=60) as s:
        s.fake.fail("chat.postMessage", rate_limited(120))
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert "asked to wait 120s, longer than the 60s a task waits" in error
        assert len(s.fake.calls("chat.postMessage")) == 1 and s.sleeps == []


@async_test
async def test_rate_limit_retries_are_bounded() -> None:
    async with slack(max_retries=3) as s:
        s.fake.fail("chat.postMessage", *[rate_limited(1)] * 5)
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert "rate-limited chat.postMessage and the retries ran out" in error
        assert len(s.fake.calls("chat.postMessage")) == 4 and len(s.sleeps) == 3


@async_test
async def test_rate_limit_without_retry_after_backs_off() -> None:
    async with slack(backoff_s=0.5, fetch_permalink=False) as s:
        s.fake.fail("chat.postMessage", rate_limited(None))
        await s.run("slack.post_message", {"channel": "general", "text": "hi"})
        assert len(s.sleeps) == 1 and 0.25 <= s.sleeps[0] <= 0.5


@async_test
async def test_server_errors_back_off_exponentially_then_succeed() -> None:
    async with slack(backoff_s=0.5, fetch_permalink=False) as s:
        s.fake.fail("chat.postMessage", server_error(500), server_error(502), server_error(504))
        await s.run("slack.post_message", {"channel": "general", "text": "hi"})
        assert len(s.fake.calls("chat.postMessage")) == 4 and len(s.fake.messages) == 1
        first, second, third = s.sleeps
        assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0 and 1.0 <= third <= 2.0


@async_test
async def test_backoff_is_capped() -> None:
    async with slack(backoff_s=10, max_backoff_s=12, fetch_permalink=False) as s:
        s.fake.fail("chat.postMessage", *[server_error(503)] * 3)
        await s.run("slack.post_message", {"channel": "general", "text": "hi"})
        first, *capped = s.sleeps
        # 10s, then 20s and 40s capped at 12s; each between half and all of that.
        assert 5 <= first <= 10 and len(capped) == 2 and all(6 <= d <= 12 for d in capped)


@async_test
async def test_persistent_server_error_fails_after_the_bounded_retries() -> None:
    async with slack(max_retries=2) as s:
        s.fake.fail("chat.postMessage", *[server_error(503)] * 5)
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert error == "Slack answered chat.postMessage with HTTP 503, also after 2 retries"
        assert len(s.fake.calls("chat.postMessage")) == 3


@async_test
async def test_client_errors_are_not_retried() -> None:
    async with slack() as s:
        s.fake.fail("chat.postMessage", server_error(400))
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert "HTTP 400" in error
        assert len(s.fake.calls("chat.postMessage")) == 1 and s.sleeps == []


@async_test
async def test_dropped_connection_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    async with slack(fetch_permalink=False) as s:
        s.fake.fail("chat.postMessage", disconnect())
        await s.run("slack.post_message", {"channel": "general", "text": "hi"})
        assert len(s.fake.calls("chat.postMessage")) == 2 and len(s.fake.messages) == 1
        assert "Slack chat.postMessage: ServerDisconnectedError; retry 1 of 3" in caplog.text


@async_test
async def test_unreachable_slack_fails_after_retrying() -> None:
    async with slack() as s:
        await s.fake.close()
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert error.startswith("could not reach Slack (chat.postMessage) at 127.0.0.1:")
        assert len(s.sleeps) == 3


@async_test
async def test_permalink_failure_still_completes_the_post() -> None:
    async with slack() as s:
        s.fake.fail("chat.getPermalink", server_error(400))
        result = await s.run("slack.post_message", {"channel": "general", "text": "hi"})
        assert result == {"ok": True, "channel": "C0GENERAL1", "ts": result["ts"]}
        assert len(s.fake.messages) == 1


@async_test
async def test_proxy_from_the_environment_honours_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    async with slack(fetch_permalink=False, max_retries=0) as s:
        error = await s.fail("slack.post_message", {"channel": "general", "text": "hi"})
        assert "could not reach Slack" in error and s.fake.requests == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with slack(fetch_permalink=False, max_retries=0) as s:
        await s.run("slack.post_message", {"channel": "general", "text": "hi"})
        assert len(s.fake.messages) == 1


# --- update_message ------------------------------------------------------------------------


@async_test
async def test_update_message_changes_the_posted_message() -> None:
    async with slack(fetch_permalink=False) as s:
        posted = await s.run("slack.post_message", {"channel": "general", "text": "deploying"})
        blocks = [{"type": "section", "text": {"type": "plain_text", "text": "deployed"}}]
        updated = await s.run(
            "slack.update_message",
            {
                "channel": posted["channel"],
                "ts": posted["ts"],
                "text": "deployed",
                "blocks": blocks,
            },
        )
        assert updated == {"ok": True, "channel": "C0GENERAL1", "ts": posted["ts"]}
        request = s.fake.requests[-1]
        assert (request.path, request.body) == (
            "/api/chat.update",
            {"channel": "C0GENERAL1", "ts": posted["ts"], "text": "deployed", "blocks": blocks},
        )
        message = s.fake.messages[("C0GENERAL1", posted["ts"])]
        assert message["text"] == "deployed" and message["blocks"] == blocks


@async_test
async def test_update_message_errors() -> None:
    async with slack(fetch_permalink=False) as s:
        posted = await s.run("slack.post_message", {"channel": "general", "text": "v1"})
        by_name = await s.fail(
            "slack.update_message", {"channel": "general", "ts": posted["ts"], "text": "v2"}
        )
        assert "channel_not_found" in by_name and "needs the channel id" in by_name
        unknown = await s.fail(
            "slack.update_message", {"channel_id": "C0GENERAL1", "ts": "1.000001", "text": "v2"}
        )
        assert "message_not_found" in unknown and "'1.000001'" in unknown
        s.fake.messages[("C0GENERAL1", "5.000005")] = {"user": "U0HUMAN001", "ts": "5.000005"}
        theirs = await s.fail(
            "slack.update_message", {"channel_id": "C0GENERAL1", "ts": "5.000005", "text": "v2"}
        )
        assert "cant_update_message" in theirs and "messages it posted itself" in theirs
        assert s.fake.messages[("C0GENERAL1", posted["ts"])]["text"] == "v1"


@pytest.mark.parametrize(
    ("task_input", "fragment"),
    [
        ({"channel_id": "C0GENERAL1", "text": "x"}, "input `ts` is required"),
        ({"channel_id": "C0GENERAL1", "ts": 1700000001.000001, "text": "x"}, "loses digits"),
        ({"channel_id": "C0GENERAL1", "ts": "1700000001.000001"}, "no content"),
        ({"channel_id": "C0GENERAL1", "ts": "1.1", "text": "x", "thread_ts": "1.1"}, "unknown"),
    ],
)
@async_test
async def test_update_message_input_is_checked(task_input: dict[str, Any], fragment: str) -> None:
    async with slack() as s:
        assert fragment in await s.fail("slack.update_message", task_input)
        assert s.fake.requests == []


# --- send_response -------------------------------------------------------------------------


@async_test
async def test_send_response_posts_ephemeral_json_without_the_bot_token() -> None:
    async with slack() as s:
        url = s.fake.response_url("cmd42")
        result = await s.run("slack.send_response", {"response_url": url, "text": "hello"})
        assert result == {"ok": True, "response_type": "ephemeral"}
        (request,) = s.fake.requests
        assert (request.http_method, request.path) == ("POST", "/response/cmd42")
        assert request.headers["Content-Type"].startswith("application/json")
        assert "Authorization" not in request.headers
        assert request.body == {"text": "hello", "response_type": "ephemeral"}


@async_test
async def test_send_response_in_channel_replace_and_delete() -> None:
    async with slack() as s:
        url = s.fake.response_url()
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}]
        shown = await s.run(
            "slack.send_response",
            {
                "response_url": url,
                "blocks": blocks,
                "response_type": "in_channel",
                "replace_original": True,
            },
        )
        deleted = await s.run("slack.send_response", {"response_url": url, "delete_original": True})
        assert shown == {"ok": True, "response_type": "in_channel"}
        assert deleted == {"ok": True, "deleted": True}
        assert [r.body for r in s.fake.calls(RESPONSE_URL)] == [
            {"blocks": blocks, "response_type": "in_channel", "replace_original": True},
            {"delete_original": True},
        ]


@pytest.mark.parametrize(
    ("task_input", "fragment"),
    [
        ({"text": "hi"}, "input `response_url` is required"),
        ({"response_url": "", "text": "hi"}, "must not be empty"),
        ({"response_url": "{url}"}, "no content"),
        ({"response_url": "{url}", "text": "hi", "response_type": "public"}, "one of ephemeral"),
        (
            {"response_url": "{url}", "text": "hi", "replace_original": True, "delete_original": 1},
            "true or false",
        ),
        (
            {"response_url": "{url}", "replace_original": True, "delete_original": True},
            "not both",
        ),
        ({"response_url": "{url}", "text": "hi", "channel": "general"}, "unknown input"),
    ],
)
@async_test
async def test_send_response_input_is_checked(task_input: dict[str, Any], fragment: str) -> None:
    async with slack() as s:
        url = s.fake.response_url()
        task_input = {
            k: v.format(url=url) if isinstance(v, str) else v for k, v in task_input.items()
        }
        assert fragment in await s.fail("slack.send_response", task_input)
        assert s.fake.requests == []


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("{internal}/admin/reset", "is not allowed: send_response only posts to"),
        ("http://169.254.169.254/latest/meta-data/", "on http://169.254.169.254:80 is not allowed"),
        ("https://hooks.slack.com.evil.example/commands/1", "is not allowed"),
        ("https://evil.example/https://hooks.slack.com/commands/1", "is not allowed"),
        ("http://hooks.slack.com/commands/1", "is not allowed"),
        ("https://hooks.slack.com:8443/commands/1", "is not allowed"),
        ("{fake_user}/response/resp0001", "must not hold a user name"),
        ("{fake_other_port}/response/resp0001", "is not allowed"),
        ("file:///etc/passwd", "absolute http(s) URL"),
        ("/response/resp0001", "absolute http(s) URL"),
    ],
)
@async_test
async def test_send_response_refuses_urls_outside_slack(target: str, fragment: str) -> None:
    async with slack() as s, bystander() as (internal, hits):
        s.fake.response_url()
        url = target.format(
            internal=internal,
            fake_user=s.fake.url.replace("http://", "http://user:pw@"),
            fake_other_port=f"http://127.0.0.1:{free_port()}",
        )
        error = await s.fail("slack.send_response", {"response_url": url, "text": "hi"})
        assert fragment in error
        assert (
            f"https://hooks.slack.com, {s.fake.url}" in error
            or "http(s) URL" in error
            or ("user name" in error)
        )
        assert hits == [] and s.fake.requests == []


@async_test
async def test_send_response_to_a_configured_origin_needs_no_integration() -> None:
    async with bystander() as (internal, hits), slack(response_url_origins=(internal,)) as s:
        result = await s.run(
            "slack.send_response", {"response_url": f"{internal}/r/1", "text": "hi"}, "other"
        )
        assert result["ok"] and hits == ["/r/1"]
        # Without the origin configured, the other project has no integration to vouch for it.
        error = await s.fail(
            "slack.send_response", {"response_url": f"{s.fake.url}/r/2", "text": "hi"}, "other"
        )
        assert "is not allowed" in error and "has no slack integration" in error


@async_test
async def test_send_response_errors_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    async with slack() as s:
        expired = await s.fail(
            "slack.send_response", {"response_url": f"{s.fake.url}/response/gone", "text": "hi"}
        )
        assert expired == (
            "Slack refused the response (HTTP 404: expired_url); a response_url takes at most "
            "5 responses within 30 minutes of the command"
        )
        url = s.fake.response_url("cmd7")
        s.fake.fail(RESPONSE_URL, server_error(500), rate_limited(2), disconnect())
        assert (await s.run("slack.send_response", {"response_url": url, "text": "hi"}))["ok"]
        assert len(s.fake.calls(RESPONSE_URL)) == 1 + 4
        assert len(s.sleeps) == 3 and 2 <= s.sleeps[1] <= 2.2
        assert "response_url at 127.0.0.1: HTTP 429, Retry-After 2s; retry 2 of 3" in caplog.text
        # The URL's path is a capability: it stays out of the logs, slack-sdk's included.
        assert "cmd7" not in caplog.text
        s.fake.fail(RESPONSE_URL, *[server_error(503)] * 4)
        error = await s.fail("slack.send_response", {"response_url": url, "text": "hi"})
        assert error == "the response_url answered HTTP 503, also after retrying"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="not an http"):
        SlackSettings(response_url_origins=("hooks.slack.com",))
    with pytest.raises(ValueError, match="negative"):
        replace(SlackSettings(), max_retries=-1)
