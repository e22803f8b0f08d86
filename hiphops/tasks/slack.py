"""The `slack.*` tasks (DESIGN §5): `post_message`, `update_message` and `send_response`.

Every call goes through slack-sdk: `AsyncWebClient` for the Web API (base URL = the
integration's `apiURL`, so Enterprise Grid proxies and test servers work) and
`AsyncWebhookClient` for a command's `response_url`.

Choices worth knowing:

* Channel names are passed to chat.postMessage as given (`general` or `#general`): Slack resolves
  the names of public channels itself. Nothing is looked up with conversations.list, which would
  need the `channels:read` scope, paging and a rate-limited call per message. A private channel
  must be given by id. chat.update only takes ids; `post_message` returns the id as `channel`.
* `send_response` only posts to `https://hooks.slack.com` (Slack's response URLs) or to the
  origin of the integration's `apiURL`. A sensor author chooses the URL; without this guard they
  could make the operator POST to any address it can reach (SSRF). `SlackSettings` can name other
  origins.
* Rate limits (HTTP 429), 5xx answers and connection errors are retried by slack-sdk's retry
  handlers, configured here: `Retry-After` is honoured, other waits back off exponentially with
  jitter, and the retries per request are bounded. A `Retry-After` longer than the task is willing
  to wait fails the task at once instead of blocking an executor slot.
* Slack has no idempotency key: a message whose request was retried after Slack had already
  processed it (a 5xx or a dropped connection after the post) can appear twice. A duplicate post
  is judged better than a lost one.
* Input keys are checked against what each task knows. Besides catching typos, this keeps a
  `token` key out of the request: slack-sdk would send it instead of the bot token.

The bot token never appears in an error or a log line: errors name the integration instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient
from yarl import URL

from hiphops.tasks.connections import Connections, SlackCredentials
from hiphops.tasks.registry import Registry, TaskCall, TaskError

logger = logging.getLogger("hiphops.tasks.slack")
# slack-sdk's webhook client logs the whole URL (and body) when its logger's own level is DEBUG or
# unset. A response_url is a capability: its logger gets a level, so those lines are skipped.
_webhook_logger = logging.getLogger("hiphops.tasks.slack.response_url")
_webhook_logger.setLevel(logging.INFO)

#: Waits for a number of seconds; `asyncio.sleep` unless a test wants to see the waits.
Sleep = Callable[[float], Awaitable[None]]

_RETRY_STATUSES: Final = frozenset({500, 502, 503, 504})
_CHANNEL_ID: Final = re.compile(r"[A-Z][A-Z0-9]{6,}")
_TS: Final = re.compile(r"[0-9]+\.[0-9]+")
_RESPONSE_TYPES: Final = ("ephemeral", "in_channel")
_BAD_TOKEN_ERRORS: Final = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)


@dataclass(frozen=True)
class SlackSettings:
    """How the Slack tasks talk to Slack. The defaults suit production; tests shorten the waits.

    `max_retries` bounds the retries of one request, whatever their cause. `backoff_s` is the
    first wait after a 5xx or connection error (doubling each time, capped at `max_backoff_s`,
    with jitter). A 429 waits its `Retry-After`, unless that exceeds `max_retry_after_s`: then the
    task fails at once. `response_url_origins` are the origins `send_response` may post to besides
    the integration's apiURL origin. `sleep` performs every wait.
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 60.0
    timeout_s: int = 30
    response_url_origins: tuple[str, ...] = ("https://hooks.slack.com",)
    fetch_permalink: bool = True
    max_clients: int = 32
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("waits must not be negative")
        if self.timeout_s <= 0 or self.max_clients < 1:
            raise ValueError("timeout_s and max_clients must be positive")
        for origin in self.response_url_origins:
            parsed = URL(origin)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ValueError(f"response_url origin {origin!r} is not an http(s) origin")


def register(
    registry: Registry, connections: Connections, *, settings: SlackSettings | None = None
) -> None:
    """Register `slack.post_message`, `slack.update_message` and `slack.send_response`, acting
    through the project's Slack integration as `connections` resolves it."""
    tasks = SlackTasks(connections, settings or SlackSettings())
    registry.register("slack.post_message", tasks.post_message)
    registry.register("slack.update_message", tasks.update_message)
    registry.register("slack.send_response", tasks.send_response)


# --- retries -------------------------------------------------------------------------------


def _retry_after(response: HttpResponse) -> float | None:
    """The response's Retry-After in seconds, or None when absent or not a number."""
    for name, values in response.headers.items():
        if name.lower() != "retry-after":
            continue
        value = values[0] if isinstance(values, list) and values else values
        try:
            return max(0.0, float(str(value)))
        except ValueError:
            return None
    return None


class _Pacing:
    """What the retry handlers of one client share: the settings, the waits, the log line."""

    def __init__(self, settings: SlackSettings, *, webhook: bool) -> None:
        self.settings = settings
        self._webhook = webhook

    def _label(self, request: HttpRequest) -> str:
        url = URL(request.url)
        # A response_url's path is a capability: only its host is worth logging.
        return f"response_url at {url.host}" if self._webhook else f"Slack {url.name}"

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of the capped delay."""
        cap = min(self.settings.max_backoff_s, self.settings.backoff_s * 2.0**attempt)
        return cap / 2 + random.uniform(0, cap / 2)

    async def pause(self, state: RetryState, request: HttpRequest, why: str, delay: float) -> None:
        """Wait `delay` seconds, then let slack-sdk send the request again."""
        state.next_attempt_requested = True
        logger.warning(
            "%s: %s; retry %d of %d in %.2fs",
            self._label(request),
            why,
            state.current_attempt + 1,
            self.settings.max_retries,
            delay,
        )
        await self.settings.sleep(delay)
        state.increment_current_attempt()


class _ConnectionRetry(AsyncConnectionErrorRetryHandler):
    def __init__(self, pacing: _Pacing) -> None:
        super().__init__(max_retry_count=pacing.settings.max_retries)
        self._pacing = pacing

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        delay = self._pacing.backoff(state.current_attempt)
        await self._pacing.pause(state, request, type(error).__name__, delay)


class _ServerErrorRetry(AsyncServerErrorRetryHandler):
    def __init__(self, pacing: _Pacing) -> None:
        super().__init__(max_retry_count=pacing.settings.max_retries)
        self._pacing = pacing

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        # slack-sdk retries only 500 and 503; gateways in front of Slack also answer 502 and 504.
        return response is not None and response.status_code in _RETRY_STATUSES

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        status = response.status_code if response is not None else "error"
        delay = self._pacing.backoff(state.current_attempt)
        await self._pacing.pause(state, request, f"HTTP {status}", delay)


class _RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    def __init__(self, pacing: _Pacing) -> None:
        super().__init__(max_retry_count=pacing.settings.max_retries)
        self._pacing = pacing

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response)
        return wait is None or wait <= self._pacing.settings.max_retry_after_s

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = _retry_after(response) if response is not None else None
        if wait is None:
            delay = self._pacing.backoff(state.current_attempt)
            why = "HTTP 429 without Retry-After"
        else:
            # A little jitter keeps tasks limited together from returning in lockstep.
            delay = wait + random.uniform(0, min(1.0, wait / 10))
            why = f"HTTP 429, Retry-After {wait:g}s"
        await self._pacing.pause(state, request, why, delay)


def _retry_handlers(settings: SlackSettings, *, webhook: bool) -> list[AsyncRetryHandler]:
    pacing = _Pacing(settings, webhook=webhook)
    return [_ConnectionRetry(pacing), _RateLimitRetry(pacing), _ServerErrorRetry(pacing)]


def _env_proxy(url: str) -> str | None:
    """The proxy for `url` from the environment, honouring NO_PROXY.

    slack-sdk reads HTTPS_PROXY/HTTP_PROXY by itself but ignores NO_PROXY, which would send
    requests for an internal apiURL through the proxy too.
    """
    proxies = urllib.request.getproxies_environment()
    parsed = URL(url)
    if not parsed.host or urllib.request.proxy_bypass(parsed.host):
        return None
    return proxies.get(parsed.scheme)


# --- input ---------------------------------------------------------------------------------


class _Input:
    """A task's input, checked key by key; every problem is a TaskError naming the key."""

    def __init__(self, raw: Mapping[str, Any], known: frozenset[str]) -> None:
        unknown = sorted(str(key) for key in raw if key not in known)
        if unknown:
            raise TaskError(
                f"unknown input {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})"
            )
        self._raw = raw

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self._raw.get(key)
        if value is None:
            if required:
                raise TaskError(f"input `{key}` is required")
            return None
        if not isinstance(value, str):
            raise TaskError(f"input `{key}` must be a string, not {_kind(value)}")
        if required and not value.strip():
            raise TaskError(f"input `{key}` must not be empty")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self._raw.get(key)
        if value is None or isinstance(value, bool):
            return value
        # `${...}` interpolation renders booleans as text.
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TaskError(f"input `{key}` must be true or false, not {_kind(value)}")

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(key)
        if value is not None and value not in choices:
            raise TaskError(f"input `{key}` must be one of {', '.join(choices)}, not {value!r}")
        return value

    def ts(self, key: str, *, required: bool = False) -> str | None:
        value = self._raw.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise TaskError(
                f"input `{key}` must be a string like '1712345678.123456': as a number it loses "
                "digits (quote it, or take it from a result such as tasks.<id>.result.ts)"
            )
        text = self.string(key, required=required)
        if text is not None and not _TS.fullmatch(text):
            raise TaskError(f"input `{key}` must be a Slack timestamp like '1712345678.123456'")
        return text

    def objects(self, key: str) -> list[dict[str, Any]] | None:
        """A list of JSON objects (`blocks`, `attachments`), also accepted as JSON text."""
        value = self._raw.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise TaskError(f"input `{key}` is a string but not JSON") from None
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            raise TaskError(f"input `{key}` must be a list of objects")
        return [dict(item) for item in value]

    def mapping(self, key: str) -> dict[str, Any] | None:
        value = self._raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise TaskError(f"input `{key}` must be an object, not {_kind(value)}")
        return dict(value)


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _channel(inputs: _Input) -> str:
    """`channel` (a name or an id) or `channel_id` (an id): exactly one of them."""
    name = inputs.string("channel")
    ident = inputs.string("channel_id")
    if name is not None and ident is not None:
        raise TaskError("give `channel` or `channel_id`, not both")
    if ident is not None:
        if not _CHANNEL_ID.fullmatch(ident):
            raise TaskError(
                f"input `channel_id` {ident!r} is not a channel id (like C0123ABCDE); "
                "use `channel` for a channel name"
            )
        return ident
    if name is None:
        raise TaskError(
            "input `channel` (a name like general, or an id) or `channel_id` is required"
        )
    if not name.strip() or any(ch.isspace() for ch in name):
        raise TaskError(f"input `channel` {name!r} is not a channel name or id")
    return name


def _content(inputs: _Input, body: dict[str, Any]) -> bool:
    """Copy `text`, `blocks` and `attachments` into `body`; True when there is any content."""
    text = inputs.string("text")
    blocks = inputs.objects("blocks")
    attachments = inputs.objects("attachments")
    if text is not None:
        body["text"] = text
    if blocks is not None:
        body["blocks"] = blocks
    if attachments is not None:
        body["attachments"] = attachments
    return bool((text and text.strip()) or blocks or attachments)


def _copy(
    inputs: _Input, body: dict[str, Any], strings: tuple[str, ...], flags: tuple[str, ...]
) -> None:
    for key in strings:
        value = inputs.string(key)
        if value is not None:
            body[key] = value
    for key in flags:
        flag = inputs.boolean(key)
        if flag is not None:
            body[key] = flag


_POST_FLAGS: Final = ("reply_broadcast", "unfurl_links", "unfurl_media", "mrkdwn", "link_names")
_POST_STRINGS: Final = ("username", "icon_emoji", "icon_url")
_POST_KEYS: Final = frozenset(
    {"integration", "channel", "channel_id", "text", "blocks", "attachments", "thread_ts"}
    | {"parse", "metadata", *_POST_FLAGS, *_POST_STRINGS}
)
_UPDATE_FLAGS: Final = ("reply_broadcast", "link_names")
_UPDATE_KEYS: Final = frozenset(
    {"integration", "channel", "channel_id", "ts", "text", "blocks", "attachments"}
    | {"parse", "metadata", *_UPDATE_FLAGS}
)
_RESPONSE_FLAGS: Final = ("replace_original", "delete_original", "unfurl_links", "unfurl_media")
_RESPONSE_KEYS: Final = frozenset(
    {"integration", "response_url", "text", "blocks", "attachments", "response_type"}
    | set(_RESPONSE_FLAGS)
)


# --- errors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What an error message may mention: the integration and the message's address."""

    integration: str
    channel: str | None = None
    ts: str | None = None


def _explain(
    method: str, answer: AsyncSlackResponse, context: _Context, settings: SlackSettings
) -> str:
    """A task error for a failed Slack Web API call, with what to do about it."""
    status = int(answer.status_code)
    body = answer.data if isinstance(answer.data, Mapping) else {}
    error = str(body.get("error") or "")
    channel = context.channel
    head = f"Slack {method} failed with {error}" if error else f"Slack {method} failed"
    if status == 429 or error == "ratelimited":
        wait = _retry_after(HttpResponse(status_code=status, headers=dict(answer.headers)))
        if wait is not None and wait > settings.max_retry_after_s:
            return (
                f"Slack rate-limited {method} and asked to wait {wait:g}s, longer than the "
                f"{settings.max_retry_after_s:g}s a task waits; try again later"
            )
        return f"Slack rate-limited {method} and the retries ran out; try again later"
    if status in _RETRY_STATUSES:
        return (
            f"Slack answered {method} with HTTP {status}, also after {settings.max_retries} retries"
        )
    if error in _BAD_TOKEN_ERRORS:
        return (
            f"{head}: Slack rejected the bot token of integration {context.integration!r}; "
            "check the Secret its botTokenSecretRef names"
        )
    if error == "missing_scope":
        needed = body.get("needed") or "?"
        provided = body.get("provided") or "none"
        return (
            f"{head}: the bot token needs the scope {needed} (it has: {provided}); add it to the "
            "Slack app and reinstall the app to the workspace"
        )
    if error == "channel_not_found":
        hint = "check the name or give the id; a private channel needs its id and the bot invited"
        if method == "chat.update" and channel is not None and not _CHANNEL_ID.fullmatch(channel):
            hint = "chat.update needs the channel id (post_message returns it as `channel`)"
        return f"{head}: no channel {channel!r} the bot can see; {hint}"
    if error == "not_in_channel":
        return (
            f"{head}: the bot is not a member of {channel!r}; invite it (/invite @<the app>) or "
            "give the app the chat:write.public scope to post in public channels without joining"
        )
    if error == "is_archived":
        return f"{head}: channel {channel!r} is archived"
    if error == "msg_too_long":
        return f"{head}: the message text is longer than Slack accepts; shorten `text`"
    if error == "no_text":
        return f"{head}: the message has no content; give `text`, `blocks` or `attachments`"
    if error == "message_not_found":
        return f"{head}: no message with ts {context.ts!r} in channel {channel!r}"
    if error == "cant_update_message":
        return f"{head}: the bot can only update messages it posted itself"
    if error == "edit_window_closed":
        return f"{head}: the message is too old to be edited"
    details = _slack_details(body)
    if error:
        return head + (f": {details}" if details else "")
    return f"Slack answered {method} with HTTP {status} and no error code"


def _slack_details(body: Mapping[str, Any]) -> str:
    """Slack's own explanations (`response_metadata.messages`), e.g. which block is invalid."""
    metadata = body.get("response_metadata")
    messages = metadata.get("messages") if isinstance(metadata, Mapping) else None
    if isinstance(messages, list):
        return "; ".join(str(m) for m in messages[:5])
    return ""


def _unreachable(what: str, url: str, exc: BaseException) -> TaskError:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TaskError(f"could not reach {what} at {URL(url).host}: {detail}")


# --- the tasks -----------------------------------------------------------------------------


class SlackTasks:
    """The Slack task handlers. One `AsyncWebClient` per (apiURL, bot token), reused; a rotated
    token gets a new client at its first use (the least recently used clients are dropped)."""

    def __init__(self, connections: Connections, settings: SlackSettings) -> None:
        self._connections = connections
        self._settings = settings
        self._clients: OrderedDict[tuple[str, str], AsyncWebClient] = OrderedDict()

    def _client(self, credentials: SlackCredentials) -> AsyncWebClient:
        key = (credentials.api_url, credentials.bot_token)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        client = AsyncWebClient(
            token=credentials.bot_token,
            base_url=credentials.api_url,
            timeout=self._settings.timeout_s,
            retry_handlers=_retry_handlers(self._settings, webhook=False),
        )
        client.proxy = _env_proxy(client.base_url)
        self._clients[key] = client
        while len(self._clients) > self._settings.max_clients:
            self._clients.popitem(last=False)
        return client

    def _credentials(self, call: TaskCall, inputs: _Input) -> SlackCredentials:
        return self._connections.slack(call.project, call.event, inputs.string("integration"))

    async def _api(
        self,
        credentials: SlackCredentials,
        method: str,
        context: _Context,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        client = self._client(credentials)
        try:
            if params is not None:
                response = await client.api_call(method, http_verb="GET", params=params)
            else:
                response = await client.api_call(method, json=json_body)
        except SlackApiError as exc:
            raise TaskError(_explain(method, exc.response, context, self._settings)) from exc
        except (aiohttp.ClientError, SlackClientError, TimeoutError) as exc:
            raise _unreachable(f"Slack ({method})", client.base_url, exc) from exc
        data = response.data
        if not isinstance(data, dict):
            raise TaskError(f"Slack {method} answered with something other than a JSON object")
        return data

    async def post_message(self, call: TaskCall) -> dict[str, Any]:
        """`slack.post_message`: chat.postMessage to `channel` (name or id) or `channel_id`, with
        `text`, `blocks` and/or `attachments`; optional `thread_ts`, `reply_broadcast`,
        `unfurl_links`, `unfurl_media`, `mrkdwn`, `link_names`, `parse`, `username`,
        `icon_emoji`, `icon_url`, `metadata`, `integration`. Returns `{ok, channel (the id), ts,
        thread_ts?, permalink?}`."""
        inputs = _Input(call.input, _POST_KEYS)
        channel = _channel(inputs)
        body: dict[str, Any] = {"channel": channel}
        if not _content(inputs, body):
            raise TaskError("the message has no content: give `text`, `blocks` or `attachments`")
        thread_ts = inputs.ts("thread_ts")
        if thread_ts is not None:
            body["thread_ts"] = thread_ts
        _copy(inputs, body, _POST_STRINGS, _POST_FLAGS)
        parse = inputs.choice("parse", ("none", "full"))
        if parse is not None:
            body["parse"] = parse
        metadata = inputs.mapping("metadata")
        if metadata is not None:
            body["metadata"] = metadata
        credentials = self._credentials(call, inputs)
        context = _Context(credentials.integration, channel=channel)
        data = await self._api(credentials, "chat.postMessage", context, json_body=body)
        posted_channel, ts = data.get("channel"), data.get("ts")
        if not isinstance(posted_channel, str) or not isinstance(ts, str):
            raise TaskError(
                "Slack chat.postMessage answered ok without the message's channel and ts"
            )
        result: dict[str, Any] = {"ok": True, "channel": posted_channel, "ts": ts}
        message = data.get("message")
        answered_thread = message.get("thread_ts") if isinstance(message, Mapping) else None
        if isinstance(answered_thread, str) or thread_ts is not None:
            result["thread_ts"] = answered_thread if isinstance(answered_thread, str) else thread_ts
        if self._settings.fetch_permalink:
            permalink = await self._permalink(credentials, posted_channel, ts)
            if permalink is not None:
                result["permalink"] = permalink
        return result

    async def _permalink(self, credentials: SlackCredentials, channel: str, ts: str) -> str | None:
        """The message's permalink, or None: the message is posted, so failing here would only
        make a retry post it twice."""
        context = _Context(credentials.integration, channel=channel, ts=ts)
        try:
            data = await self._api(
                credentials,
                "chat.getPermalink",
                context,
                params={"channel": channel, "message_ts": ts},
            )
        except TaskError as exc:
            logger.info("no permalink for message %s in %s: %s", ts, channel, exc)
            return None
        permalink = data.get("permalink")
        return permalink if isinstance(permalink, str) else None

    async def update_message(self, call: TaskCall) -> dict[str, Any]:
        """`slack.update_message`: chat.update of the message `ts` in `channel`/`channel_id` (an
        id) with new `text`, `blocks` and/or `attachments`; optional `parse`, `link_names`,
        `reply_broadcast`, `metadata`, `integration`. Returns `{ok, channel, ts}`."""
        inputs = _Input(call.input, _UPDATE_KEYS)
        channel = _channel(inputs)
        ts = inputs.ts("ts", required=True)
        assert ts is not None
        body: dict[str, Any] = {"channel": channel, "ts": ts}
        if not _content(inputs, body):
            raise TaskError("the update has no content: give `text`, `blocks` or `attachments`")
        _copy(inputs, body, (), _UPDATE_FLAGS)
        parse = inputs.choice("parse", ("none", "full"))
        if parse is not None:
            body["parse"] = parse
        metadata = inputs.mapping("metadata")
        if metadata is not None:
            body["metadata"] = metadata
        credentials = self._credentials(call, inputs)
        context = _Context(credentials.integration, channel=channel, ts=ts)
        data = await self._api(credentials, "chat.update", context, json_body=body)
        return {
            "ok": True,
            "channel": str(data.get("channel") or channel),
            "ts": str(data.get("ts") or ts),
        }

    def _check_response_url(self, call: TaskCall, inputs: _Input, url: str) -> None:
        """Refuse any response_url outside Slack's hooks origin, the configured origins and the
        origin of the integration's apiURL (SSRF guard)."""
        try:
            parsed = URL(url)
        except ValueError:
            raise TaskError("input `response_url` is not a URL") from None
        if not parsed.absolute or parsed.scheme not in ("http", "https") or not parsed.host:
            raise TaskError("input `response_url` must be an absolute http(s) URL")
        if parsed.user is not None or parsed.password is not None:
            raise TaskError("input `response_url` must not hold a user name or password")
        origin = (parsed.scheme, parsed.host.lower(), parsed.port)
        allowed = [URL(o) for o in self._settings.response_url_origins]
        if any(origin == (a.scheme, (a.host or "").lower(), a.port) for a in allowed):
            return
        # Only now the integration: a hooks.slack.com URL needs no credentials at all.
        reason = ""
        try:
            api = URL(self._credentials(call, inputs).api_url)
        except TaskError as exc:
            reason = f" ({exc})"
        else:
            if origin == (api.scheme, (api.host or "").lower(), api.port):
                return
            allowed.append(api.origin())
        names = ", ".join(str(a.origin()) for a in allowed)
        raise TaskError(
            f"response_url on {parsed.scheme}://{parsed.host}:{parsed.port} is not allowed: "
            f"send_response only posts to {names}{reason}"
        )

    async def send_response(self, call: TaskCall) -> dict[str, Any]:
        """`slack.send_response`: answer a command through its `response_url` (typically
        `(path)response_url: event.response_url`) with `text`, `blocks` and/or `attachments`;
        `response_type` ephemeral (default, only the user sees it) or in_channel;
        `replace_original`, `delete_original`, `unfurl_links`, `unfurl_media`, `integration`.
        Returns `{ok, response_type}` (or `{ok, deleted}`)."""
        inputs = _Input(call.input, _RESPONSE_KEYS)
        url = inputs.string("response_url", required=True)
        assert url is not None
        url = url.strip()
        body: dict[str, Any] = {}
        has_content = _content(inputs, body)
        response_type = inputs.choice("response_type", _RESPONSE_TYPES) or "ephemeral"
        _copy(inputs, body, (), _RESPONSE_FLAGS)
        deleting = body.get("delete_original") is True
        if deleting and body.get("replace_original") is True:
            raise TaskError("give `replace_original` or `delete_original`, not both")
        if not deleting:
            if not has_content:
                raise TaskError(
                    "the response has no content: give `text`, `blocks` or `attachments`"
                )
            body["response_type"] = response_type
        self._check_response_url(call, inputs, url)
        client = AsyncWebhookClient(
            url,
            timeout=self._settings.timeout_s,
            retry_handlers=_retry_handlers(self._settings, webhook=True),
            logger=_webhook_logger,
        )
        client.proxy = _env_proxy(url)
        try:
            response = await client.send_dict(body)
        except (aiohttp.ClientError, SlackClientError, TimeoutError) as exc:
            raise _unreachable("the response_url", url, exc) from exc
        error = _webhook_error(response.status_code, response.body)
        if error is not None:
            raise TaskError(error)
        if deleting:
            return {"ok": True, "deleted": True}
        return {"ok": True, "response_type": response_type}


def _webhook_error(status: int, body: str | None) -> str | None:
    """The task error for a response_url answer, or None when Slack took the message.

    Slack answers `ok` (text) or `{"ok": true}`; errors come as a short code in the body
    (text or `{"ok": false, "error": ...}`) with a 4xx status.
    """
    text = (body or "").strip()
    try:
        parsed = json.loads(text) if text.startswith("{") else None
    except ValueError:
        parsed = None
    code = text[:200]
    if isinstance(parsed, dict):
        if 200 <= status < 300 and parsed.get("ok") is not False:
            return None
        code = str(parsed.get("error") or code)
    elif 200 <= status < 300:
        return None
    if status == 429:
        return "Slack rate-limited the response_url and the retries ran out; try again later"
    if status in _RETRY_STATUSES:
        return f"the response_url answered HTTP {status}, also after retrying"
    hint = ""
    if status in (404, 410) or code in ("expired_url", "used_url"):
        hint = "; a response_url takes at most 5 responses within 30 minutes of the command"
    return f"Slack refused the response (HTTP {status}: {code or 'no body'}){hint}"
