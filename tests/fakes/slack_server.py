"""A fake Slack on loopback: the Web API methods the `slack.*` tasks call, and response URLs.

It speaks the shapes slack-sdk sends and Slack answers: a bearer token (or a `token` field),
JSON, form or query bodies, HTTP 200 with `{"ok": false, "error": ...}` for API errors and 429
with `Retry-After` for rate limits. It keeps state: channels (some the bot is not in, one private,
one archived) and the messages posted, so `chat.update` and `chat.getPermalink` find them. Tests
queue failures per method (`fail`) and read every request received (`requests`, `calls`).

The response_url endpoint answers `{"ok": true}`, and 404 `{"ok": false, "error": "expired_url"}`
for a URL it never handed out; Slack's exact error bodies for response URLs are not documented.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

BOT_USER = "U0BOT00001"
BOT_ID = "B0BOT00001"
TEAM_ID = "T0FAKE0001"
#: Slack's documented limit for a message's text.
MAX_TEXT = 40_000
RESPONSE_URL = "response_url"


@dataclass
class Channel:
    id: str
    name: str
    is_member: bool = True
    is_private: bool = False
    is_archived: bool = False


def default_channels() -> list[Channel]:
    return [
        Channel("C0GENERAL1", "general"),
        Channel("C0RANDOM01", "random", is_member=False),
        Channel("G0SECRET01", "secret", is_private=True),
        Channel("C0ARCHIVE1", "old-news", is_archived=True),
    ]


@dataclass
class Failure:
    """One injected answer: `body` a dict (JSON), a str (text) or None (empty); or a dropped
    connection."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    disconnect: bool = False


def rate_limited(retry_after: int | str | None) -> Failure:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Failure(429, headers, {"ok": False, "error": "ratelimited"})


def server_error(status: int = 500) -> Failure:
    return Failure(status, {}, "<html>upstream trouble</html>")


def disconnect() -> Failure:
    return Failure(disconnect=True)


@dataclass
class Recorded:
    """A request as received: `target` is the API method (`chat.postMessage`) or
    `response_url`; `body` the JSON object, form fields or query parameters."""

    http_method: str
    path: str
    target: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes


class FakeSlack:
    """`async with FakeSlack(token) as slack:` serves on 127.0.0.1 until the block ends."""

    def __init__(
        self,
        token: str,
        *,
        scopes: Iterable[str] = ("chat:write",),
        channels: Iterable[Channel] | None = None,
    ) -> None:
        self.token = token
        self.scopes = set(scopes)
        self.channels = list(default_channels() if channels is None else channels)
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self._failures: dict[str, deque[Failure]] = defaultdict(deque)
        self._response_keys: set[str] = set()
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What an Integration's `apiURL` is set to."""
        return f"{self.url}/api/"

    def response_url(self, key: str = "resp0001") -> str:
        """A response URL this server accepts (as Slack puts one into each command)."""
        self._response_keys.add(key)
        return f"{self.url}/response/{key}"

    def fail(self, target: str, *failures: Failure) -> None:
        """Answer the next requests to `target` (an API method or `response_url`) with these."""
        self._failures[target].extend(failures)

    def calls(self, target: str) -> list[Recorded]:
        return [r for r in self.requests if r.target == target]

    def channel(self, ident: str) -> Channel:
        return next(c for c in self.channels if c.id == ident)

    # --- plumbing ---------------------------------------------------------------------------

    async def _record(self, request: web.Request, target: str) -> Recorded:
        raw = await request.read()
        kind = request.content_type
        body: dict[str, Any]
        if kind == "application/json" and raw:
            loaded = json.loads(raw)
            body = loaded if isinstance(loaded, dict) else {"_": loaded}
        elif kind == "application/x-www-form-urlencoded":
            body = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        else:
            body = {}
        body = {**dict(request.query), **body}
        recorded = Recorded(request.method, request.path, target, dict(request.headers), body, raw)
        self.requests.append(recorded)
        return recorded

    async def _injected(self, request: web.Request, target: str) -> web.StreamResponse | None:
        queue = self._failures.get(target)
        if not queue:
            return None
        failure = queue.popleft()
        if failure.disconnect:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if isinstance(failure.body, dict):
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        text = "" if failure.body is None else str(failure.body)
        content_type = "text/html" if text.startswith("<") else "text/plain"
        return web.Response(
            text=text, status=failure.status, headers=failure.headers, content_type=content_type
        )

    # --- response URLs ----------------------------------------------------------------------

    async def _response(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, RESPONSE_URL)
        injected = await self._injected(request, RESPONSE_URL)
        if injected is not None:
            return injected
        if request.match_info["key"] not in self._response_keys:
            return web.json_response({"ok": False, "error": "expired_url"}, status=404)
        return web.json_response({"ok": True})

    # --- Web API ----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        recorded = await self._record(request, method)
        injected = await self._injected(request, method)
        if injected is not None:
            return injected
        body = recorded.body
        authorization = request.headers.get("Authorization", "")
        token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None
        token = token or body.get("token")
        if not token:
            return _error("not_authed")
        if token != self.token:
            return _error("invalid_auth")
        handlers = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.getPermalink": self._permalink,
        }
        handler = handlers.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        return handler(body)

    def _missing_scope(self, needed: str) -> web.Response | None:
        if needed in self.scopes:
            return None
        return _error("missing_scope", needed=needed, provided=",".join(sorted(self.scopes)))

    def _find(self, given: Any, *, names: bool) -> Channel | None:
        """A channel by id, or (where Slack resolves names) by the name of a public channel."""
        if not isinstance(given, str):
            return None
        for channel in self.channels:
            if channel.id == given:
                return channel
        if names:
            name = given.removeprefix("#")
            for channel in self.channels:
                if channel.name == name and not channel.is_private:
                    return channel
        return None

    def _auth_test(self, body: Mapping[str, Any]) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "url": f"{self.url}/",
                "team": "Fake Team",
                "user": "hiphops",
                "team_id": TEAM_ID,
                "user_id": BOT_USER,
                "bot_id": BOT_ID,
            }
        )

    def _content_problem(self, body: Mapping[str, Any]) -> web.Response | None:
        text, blocks, attachments = body.get("text"), body.get("blocks"), body.get("attachments")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not text and not blocks and not attachments:
            return _error("no_text")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            return _error("msg_too_long")
        for index, block in enumerate(blocks or []):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                message = f"[ERROR] missing required field: type [json-pointer:/blocks/{index}]"
                return _error("invalid_blocks", response_metadata={"messages": [message]})
        return None

    def _post_message(self, body: Mapping[str, Any]) -> web.Response:
        problem = self._missing_scope("chat:write")
        if problem is not None:
            return problem
        channel = self._find(body.get("channel"), names=True)
        if channel is None:
            return _error("channel_not_found")
        if channel.is_archived:
            return _error("is_archived")
        public_ok = not channel.is_private and "chat:write.public" in self.scopes
        if not channel.is_member and not public_ok:
            return _error("not_in_channel")
        problem = self._content_problem(body)
        if problem is not None:
            return problem
        number = next(self._ts)
        ts = f"{1_700_000_000 + number}.{number:06d}"
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "text": body.get("text", ""),
            "ts": ts,
        }
        for key in ("blocks", "attachments", "thread_ts", "metadata"):
            if key in body:
                message[key] = body[key]
        self.messages[(channel.id, ts)] = message
        return web.json_response({"ok": True, "channel": channel.id, "ts": ts, "message": message})

    def _update(self, body: Mapping[str, Any]) -> web.Response:
        problem = self._missing_scope("chat:write")
        if problem is not None:
            return problem
        # chat.update takes ids only.
        channel = self._find(body.get("channel"), names=False)
        if channel is None:
            return _error("channel_not_found")
        message = self.messages.get((channel.id, str(body.get("ts"))))
        if message is None:
            return _error("message_not_found")
        if message.get("user") != BOT_USER:
            return _error("cant_update_message")
        problem = self._content_problem(body)
        if problem is not None:
            return problem
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in body:
                message[key] = body[key]
        message["edited"] = {"user": BOT_USER}
        return web.json_response(
            {
                "ok": True,
                "channel": channel.id,
                "ts": message["ts"],
                "text": message["text"],
                "message": message,
            }
        )

    def _permalink(self, body: Mapping[str, Any]) -> web.Response:
        channel = self._find(body.get("channel"), names=False)
        if channel is None:
            return _error("channel_not_found")
        ts = str(body.get("message_ts"))
        if (channel.id, ts) not in self.messages:
            return _error("message_not_found")
        link = f"{self.url}/archives/{channel.id}/p{ts.replace('.', '')}"
        return web.json_response({"ok": True, "channel": channel.id, "permalink": link})


def _error(error: str, **extra: Any) -> web.Response:
    """Slack's API errors: HTTP 200 with ok false."""
    return web.json_response({"ok": False, "error": error, **extra})
