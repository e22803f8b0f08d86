"""The webhook gateway HTTP app: verify, normalize, hand over to the intake, answer the sender.

Routes::

    POST /hooks/github/{project}/{integration}   GitHub webhooks (202 once the intake accepted)
    POST /hooks/slack/{project}/{integration}    Slack slash commands (200, ephemeral reply)
    GET  /healthz   the process is alive
    GET  /readyz    the ``ready`` callable (e.g. the operator's directory is loaded)
    GET  /metrics   Prometheus text format

Order of checks on a hook: the integration exists and has a secret, the body is uncompressed
and fits the limit, the signature verifies, and only then is the body parsed. Every rejection
is a JSON ``{"error": ...}``, a ``hiphops_gateway_rejections_total`` sample and a log line;
neither the body nor any secret is ever logged. 2xx means the intake has recorded every run of
the events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from hiphops.events import (
    GITHUB,
    SLACK,
    Origin,
    normalize_github,
    normalize_slack_command,
    slack_delivery_id,
)
from hiphops.intake import Intake, IntakeResult, IntakeUnavailable
from webhook_gateway.directory import Directory, IntegrationConfig
from webhook_gateway.metrics import GatewayMetrics
from webhook_gateway.verify import SlackVerifier, VerificationError, verify_github_signature

log = logging.getLogger(__name__)

# GitHub event names are lower-case words joined by underscores (pull_request, projects_v2_item).
# Checking them keeps the events_accepted metric's label set small and logs clean.
_GITHUB_EVENT_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
# GitHub sends GUIDs. No ':' so that a delivery id cannot imitate a change event's
# "<delivery>:change" id; no whitespace or control characters, since it goes into logs.
_DELIVERY_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")
# A slash command has about a dozen fields; a form with many more is not one.
_MAX_FORM_FIELDS: Final = 100
_FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

# VerificationError reasons (webhook_gateway.verify) -> metric reason codes, first match wins.
# (Its "no signing secret" case is caught earlier, as no_secret, before the body is read.)
_VERIFICATION_REASON_CODES: Final = (
    ("replay", "replay"),
    ("outside the allowed window", "stale_timestamp"),
    ("missing X-Slack-Request-Timestamp", "missing_timestamp"),
    ("malformed X-Slack-Request-Timestamp", "malformed_timestamp"),
    ("missing", "missing_signature"),
    ("malformed", "malformed_signature"),
    ("does not match", "bad_signature"),
)

_HOOK_PATH_HELP: Final = "webhooks are POSTed to /hooks/<github|slack>/<project>/<integration>"

#: Keyword arguments for ``web.AppRunner`` / ``web.run_app`` when serving the gateway app.
#: GitHub and Slack never compress their requests, and signatures cover the bytes as sent: with
#: aiohttp's request decompression off, a compressed body is a clean JSON 415 from the app
#: instead of a decoding error inside aiohttp's parser (a plain-text 400 and an error log).
RUNNER_OPTIONS: Final[Mapping[str, Any]] = MappingProxyType({"auto_decompress": False})


@dataclass(frozen=True)
class GatewaySettings:
    """Limits and retry behaviour of the gateway."""

    max_body_bytes: int = 25 * 1024 * 1024  # GitHub's maximum payload size
    intake_attempts: int = 3  # brief retries before answering 503
    intake_retry_delay_s: float = 0.2
    slack_window_s: int = 300  # Slack timestamps further from now are rejected
    # Slack shows the user an error when a command is not answered within 3 seconds: give up on
    # the intake (503) before that, so that the answer at least arrives.
    slack_deadline_s: float = 2.5
    retry_after_s: int = 5  # the Retry-After of a 503

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if self.intake_attempts < 1:
            raise ValueError("intake_attempts must be at least 1")
        if self.intake_retry_delay_s < 0:
            raise ValueError("intake_retry_delay_s must not be negative")
        if self.slack_deadline_s <= 0:
            raise ValueError("slack_deadline_s must be positive")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must not be negative")


_DEFAULT_SETTINGS: Final = GatewaySettings()


class _Rejection(Exception):
    """Answer the request with an error: status, metric reason code and a message for the sender.

    The message is shown to the sender and logged, so it never holds a secret or body content.
    """

    def __init__(
        self, status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})


def _unauthorized(error: VerificationError) -> _Rejection:
    code = next(
        (code for text, code in _VERIFICATION_REASON_CODES if text in error.reason),
        "verification_failed",
    )
    return _Rejection(401, code, error.reason)


def _source_of(path: str) -> str:
    for source in (GITHUB, SLACK):
        if path.startswith(f"/hooks/{source}/"):
            return source
    return "other"


def _from_http_exception(error: web.HTTPException, request: web.Request) -> _Rejection:
    """The router's 404 and 405 (and any other aiohttp HTTP error) as a JSON rejection."""
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        return _Rejection(
            405,
            "method_not_allowed",
            f"method {request.method} is not allowed here; use {allowed}",
            {"Allow": allowed},
        )
    if isinstance(error, web.HTTPNotFound):
        return _Rejection(404, "unknown_route", f"no such route; {_HOOK_PATH_HELP}")
    return _Rejection(error.status, f"http_{error.status}", error.reason)


def _parse_json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    # orjson rather than json: about 4x faster on GitHub payloads (parsing is most of a
    # delivery's cost), and stricter where it matters downstream: no NaN or Infinity, no lone
    # surrogates (which break UTF-8 encoders later), nesting limited to 1024 levels.
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        # error.msg is the parser's fixed description; it quotes nothing from the body.
        raise _Rejection(
            400,
            "invalid_json",
            f"{what} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})",
        ) from None
    if not isinstance(value, dict):
        raise _Rejection(400, "not_an_object", f"{what} is not a JSON object")
    return value


def _parse_form(body: bytes) -> dict[str, str]:
    """A form-encoded body as a dict; a repeated field keeps its first value."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Rejection(400, "invalid_form", "body is not UTF-8 form data") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
    except ValueError:
        raise _Rejection(
            400, "invalid_form", f"form has more than {_MAX_FORM_FIELDS} fields"
        ) from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def _is_slack_ssl_check(body: bytes) -> bool:
    try:
        return _parse_form(body).get("ssl_check") == "1"
    except _Rejection:
        return False


def _slack_escape(text: str) -> str:
    # Slack's three control characters, so that a command cannot mention @channel; a backtick
    # would end the code span the command is shown in.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _slack_acknowledgement(event: Mapping[str, Any], result: IntakeResult) -> str:
    words = [str(event.get("slash_command", "")), str(event.get("command", ""))]
    invocation = _slack_escape(" ".join(word for word in words if word)) or "command"
    started, duplicates = len(result.runs), len(result.duplicates)
    if started and duplicates:
        return (
            f"`{invocation}`: started {_plural(started, 'run')} "
            f"({_plural(duplicates, 'run')} had already started)."
        )
    if started:
        return f"`{invocation}`: started {_plural(started, 'run')}."
    if duplicates:
        return f"`{invocation}` was already received: {_plural(duplicates, 'run')} started then."
    return f"`{invocation}`: no sensor matched this command, so nothing was started."


class _Gateway:
    """The request handlers and the state they share (directory, intake, verifier, metrics)."""

    def __init__(
        self,
        directory: Directory,
        intake: Intake,
        settings: GatewaySettings,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
    ) -> None:
        self._directory = directory
        self._intake = intake
        self._settings = settings
        self._ready = ready
        self._slack_verifier = SlackVerifier(window_s=settings.slack_window_s)
        self._metrics = GatewayMetrics(registry, lambda: self._slack_verifier.replay_cache_len)

    # --- cross-cutting ----------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn rejections and aiohttp's HTTP errors into JSON, anything else into a bare 500."""
        source = _source_of(request.path)
        try:
            response = await handler(request)
        except _Rejection as rejection:
            response = self._reject(request, source, rejection)
        except web.HTTPException as error:
            response = self._reject(request, source, _from_http_exception(error, request))
        except Exception:
            # A bug: the traceback goes to the log, never to the client.
            log.exception("internal error answering %s %r", request.method, request.path)
            self._metrics.rejections.labels(source, "internal_error").inc()
            response = web.json_response({"error": "internal error"}, status=500)
        self._metrics.requests.labels(source, str(response.status)).inc()
        return response

    def _reject(self, request: web.Request, source: str, rejection: _Rejection) -> web.Response:
        self._metrics.rejections.labels(source, rejection.reason).inc()
        # Scanners probe random paths all day; those are not worth a warning.
        level = logging.INFO if rejection.reason == "unknown_route" else logging.WARNING
        log.log(
            level,
            "rejected %s %r: %d %s: %s",
            request.method,
            request.path,
            rejection.status,
            rejection.reason,
            rejection.message,
        )
        return web.json_response(
            {"error": rejection.message}, status=rejection.status, headers=rejection.headers
        )

    def _integration(self, request: web.Request, kind: str) -> IntegrationConfig:
        project = request.match_info["project"]
        name = request.match_info["integration"]
        config = self._directory.get(project, name)
        if config is None:
            raise _Rejection(
                404,
                "unknown_integration",
                f"no integration {name!r} in project {project!r}",
            )
        if config.type != kind:
            raise _Rejection(
                404,
                "wrong_integration_type",
                f"integration {name!r} in project {project!r} is not a {kind} integration",
            )
        if not any(config.secrets):
            secret = "webhook" if kind == GITHUB else "signing"
            raise _Rejection(
                401, "no_secret", f"no {secret} secret configured for this integration"
            )
        return config

    async def _read_body(self, request: web.Request, source: str) -> bytes:
        """The body, or a 413 as soon as it is known to exceed the limit (415 if compressed).

        Content-Length is checked before reading; the running total is checked while reading,
        because a chunked body announces no length.
        """
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise _Rejection(
                415,
                "unsupported_content_encoding",
                "compressed bodies are not accepted (Content-Encoding must be identity)",
            )
        limit = self._settings.max_body_bytes
        too_large = _Rejection(413, "body_too_large", f"body is larger than {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        except (HttpProcessingError, ConnectionError) as error:
            # A malformed chunked encoding, or a sender that went away mid-body.
            raise _Rejection(
                400, "unreadable_body", f"body could not be read: {type(error).__name__}"
            ) from None
        self._metrics.body_bytes.labels(source).observe(size)
        return b"".join(chunks)

    async def _accept(
        self, source: str, events: Sequence[Mapping[str, Any]], deadline_s: float | None
    ) -> IntakeResult:
        """Hand the events to the intake, retrying briefly; 503 if it never accepts them."""
        unavailable = _Rejection(
            503,
            "intake_unavailable",
            "the events could not be recorded now; retry later",
            {"Retry-After": str(self._settings.retry_after_s)},
        )
        deadline = asyncio.timeout(deadline_s)
        try:
            async with deadline:
                result = await self._accept_with_retries(source, events)
        except TimeoutError:
            if not deadline.expired():
                raise  # the intake's own TimeoutError is a bug: the catch-all logs it
            log.warning("%s intake did not accept the events within %ss", source, deadline_s)
            raise unavailable from None
        if result is None:
            raise unavailable
        for event in events:
            block = event["hiphops"]
            self._metrics.events_accepted.labels(block["source"], block["event"]).inc()
        return result

    async def _accept_with_retries(
        self, source: str, events: Sequence[Mapping[str, Any]]
    ) -> IntakeResult | None:
        attempts = self._settings.intake_attempts
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                result = await self._intake.accept(events)
            except IntakeUnavailable as error:
                elapsed = time.perf_counter() - started
                self._metrics.intake_seconds.labels("unavailable").observe(elapsed)
                log.warning(
                    "%s intake unavailable (attempt %d of %d): %s", source, attempt, attempts, error
                )
                if attempt < attempts:
                    await asyncio.sleep(self._settings.intake_retry_delay_s)
                continue
            self._metrics.intake_seconds.labels("ok").observe(time.perf_counter() - started)
            return result
        return None

    # --- hooks ------------------------------------------------------------------------------

    async def github(self, request: web.Request) -> web.Response:
        """A GitHub webhook: 202 with the runs once the intake recorded them; ping -> 200."""
        config = self._integration(request, GITHUB)
        body = await self._read_body(request, GITHUB)
        try:
            verify_github_signature(
                body, request.headers.get("X-Hub-Signature-256"), config.secrets
            )
        except VerificationError as error:
            raise _unauthorized(error) from None
        event_name = self._required_header(request, "X-GitHub-Event", _GITHUB_EVENT_NAME, "event")
        delivery = self._required_header(request, "X-GitHub-Delivery", _DELIVERY_ID, "delivery")
        payload = self._github_payload(request, body)
        if event_name == "ping":
            log.info("answered GitHub ping for %s/%s", config.project, config.name)
            return web.json_response({"ok": True, "zen": payload.get("zen")})
        try:
            events = normalize_github(
                event_name, payload, Origin(config.project, config.name, delivery)
            )
        except ValueError as error:
            # normalize_github's messages are fixed texts, nothing from the payload.
            raise _Rejection(400, "invalid_payload", str(error)) from None
        result = await self._accept(GITHUB, events, None)
        log.info(
            "accepted GitHub %s delivery %s for %s/%s: %d runs, %d duplicates",
            event_name,
            delivery,
            config.project,
            config.name,
            len(result.runs),
            len(result.duplicates),
        )
        return web.json_response(
            {"delivery": delivery, "runs": result.runs, "duplicates": result.duplicates},
            status=202,
        )

    @staticmethod
    def _required_header(
        request: web.Request, name: str, pattern: re.Pattern[str], reason: str
    ) -> str:
        value = request.headers.get(name)
        if not value:
            raise _Rejection(400, f"missing_{reason}_header", f"missing {name} header")
        if not pattern.fullmatch(value):
            raise _Rejection(400, f"malformed_{reason}_header", f"malformed {name} header")
        return value

    @staticmethod
    def _github_payload(request: web.Request, body: bytes) -> dict[str, Any]:
        # A GitHub webhook may be configured to send a form with the JSON in `payload`.
        if request.content_type == _FORM_CONTENT_TYPE:
            payload = _parse_form(body).get("payload")
            if payload is None:
                raise _Rejection(400, "invalid_form", "form body has no payload field")
            return _parse_json_object(payload, "payload field")
        return _parse_json_object(body, "body")

    async def slack(self, request: web.Request) -> web.Response:
        """A Slack slash command: 200 with a short ephemeral reply once its runs are recorded."""
        config = self._integration(request, SLACK)
        body = await self._read_body(request, SLACK)
        try:
            self._slack_verifier.verify(
                body,
                request.headers.get("X-Slack-Request-Timestamp"),
                request.headers.get("X-Slack-Signature"),
                config.secrets,
            )
        except VerificationError as error:
            # Slack's certificate checks may come unsigned (Bolt skips verifying them too);
            # answering one triggers nothing.
            if _is_slack_ssl_check(body):
                return self._ssl_check(config)
            raise _unauthorized(error) from None
        form = _parse_form(body)
        if form.get("ssl_check") == "1":
            return self._ssl_check(config)
        for field in ("command", "text"):
            if field not in form:
                raise _Rejection(
                    400, f"missing_{field}", f"form has no {field} field: not a slash command"
                )
        try:
            delivery = slack_delivery_id(form)
        except ValueError as error:
            raise _Rejection(400, "missing_trigger", str(error)) from None
        event = normalize_slack_command(form, Origin(config.project, config.name, delivery))
        result = await self._accept(SLACK, [event], self._settings.slack_deadline_s)
        log.info(
            "accepted Slack command %r delivery %s for %s/%s: %d runs, %d duplicates",
            event["command"],
            delivery,
            config.project,
            config.name,
            len(result.runs),
            len(result.duplicates),
        )
        return web.json_response(
            {"response_type": "ephemeral", "text": _slack_acknowledgement(event, result)}
        )

    @staticmethod
    def _ssl_check(config: IntegrationConfig) -> web.Response:
        log.info("answered Slack ssl_check for %s/%s", config.project, config.name)
        return web.json_response({"ok": True})

    # --- probes -----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """The process is alive and serving."""
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the ``ready`` callable says so, else 503."""
        try:
            ready = bool(self._ready())
        except Exception:
            log.exception("readiness check failed")
            ready = False
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        """The registry in the format the scraper asked for (Prometheus text by default)."""
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(
            body=encoder(self._metrics.registry), headers={"Content-Type": content_type}
        )


def create_app(
    directory: Directory,
    intake: Intake,
    settings: GatewaySettings = _DEFAULT_SETTINGS,
    *,
    registry: CollectorRegistry | None = None,
    ready: Callable[[], bool] | None = None,
) -> web.Application:
    """The gateway as an aiohttp application.

    ``registry`` receives the metrics (a fresh registry per app when None, so that several apps
    in one process do not collide); ``ready`` backs ``/readyz`` (always ready when None). One
    Slack replay cache serves the whole app.
    """
    gateway = _Gateway(
        directory,
        intake,
        settings,
        registry if registry is not None else CollectorRegistry(),
        ready if ready is not None else (lambda: True),
    )
    # aiohttp's own body readers enforce the same limit as _read_body.
    app = web.Application(middlewares=[gateway.middleware], client_max_size=settings.max_body_bytes)
    app.router.add_post("/hooks/github/{project}/{integration}", gateway.github)
    app.router.add_post("/hooks/slack/{project}/{integration}", gateway.slack)
    app.router.add_get("/healthz", gateway.healthz)
    app.router.add_get("/readyz", gateway.readyz)
    app.router.add_get("/metrics", gateway.metrics)
    return app
