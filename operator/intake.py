"""The operator's intake endpoint: what the webhook gateway calls (webhook_gateway.intake_client).

    POST /intake   Authorization: Bearer <token>   {"events": [<normalized event>, ...]}
      200 {"runs": [...], "duplicates": [...]}   once every SensorRun exists
      400 the body is not that shape;  401 no or wrong token;  413 too large
      503 this replica is not the active one, or the runs could not be recorded (retry)
    GET /readyz    200 only on the active replica, once it has loaded sensors and resumed runs
                   (so that the intake Service sends events to the replica that can take them)
    GET /healthz   200 while the process serves

The token is read from a file (a mounted Secret key) and read again when the file changes, so
it can be rotated. It is compared in constant time. No token file, or an empty one, refuses
every request: the intake fails closed.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from hiphops.intake import Intake, IntakeUnavailable
from webhook_gateway.directory import IntegrationConfig, to_wire

from .metrics import OperatorMetrics

logger = logging.getLogger("hiphops.operator.intake")

#: GitHub sends up to 25 MiB; normalization adds a little (the change event).
MAX_BODY_BYTES: Final = 32 * 1024 * 1024


class TokenFile:
    """A bearer token kept in a file, re-read when the file's modification time changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._token: bytes = b""

    def current(self) -> bytes:
        """The token, or b"" when there is none (then nothing is accepted)."""
        if self._path is None:
            return b""
        try:
            stat = os.stat(self._path)
        except OSError:
            self._stamp, self._token = None, b""
            return b""
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                self._token = self._path.read_bytes().strip()
            except OSError:
                self._token = b""
            self._stamp = stamp
        return self._token

    def matches(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token (constant-time comparison)."""
        expected = self.current()
        if not expected or not header:
            return False
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), expected)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _valid_events(data: Any) -> list[dict[str, Any]] | None:
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return None
    events: list[dict[str, Any]] = data["events"]
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("project_id"), str):
            return None
        hiphops = event.get("hiphops")
        if not isinstance(hiphops, Mapping) or not isinstance(hiphops.get("delivery"), str):
            return None
        if not hiphops["delivery"]:
            return None
    return events


def create_intake_app(
    intake: Callable[[], Intake | None],
    token: TokenFile,
    metrics: OperatorMetrics,
    directory: Callable[[], Sequence[IntegrationConfig]] | None = None,
) -> web.Application:
    """The intake as an aiohttp application. `intake()` is the intake of the active replica,
    None while this replica is passive or not ready yet. `directory()` lists the integrations
    with their webhook secrets for the gateway (`GET /directory`, same token): the
    internet-facing gateway then needs no access to the Kubernetes API at all."""

    async def serve_directory(request: web.Request) -> web.Response:
        if not token.matches(request.headers.get("Authorization")):
            metrics.intake_rejections.labels("unauthorized").inc()
            logger.warning("directory: refused a request without the right token")
            return _error(401, "missing or wrong bearer token")
        if intake() is None or directory is None:
            return _error(503, "this replica is not the active one; retry")
        return web.json_response({"integrations": [to_wire(c) for c in directory()]})

    async def accept(request: web.Request) -> web.Response:
        if not token.matches(request.headers.get("Authorization")):
            metrics.intake_rejections.labels("unauthorized").inc()
            logger.warning("intake: refused a request without the right token")
            return _error(401, "missing or wrong bearer token")
        current = intake()
        if current is None:
            metrics.intake_rejections.labels("not_active").inc()
            return _error(503, "this replica is not the active one; retry")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.intake_rejections.labels("too_large").inc()
            return _error(413, f"body is larger than {MAX_BODY_BYTES} bytes")
        try:
            events = _valid_events(orjson.loads(body))
        except orjson.JSONDecodeError:
            events = None
        if events is None:
            metrics.intake_rejections.labels("invalid").inc()
            return _error(
                400, 'body must be {"events": [...]} with project_id and hiphops.delivery'
            )
        started = time.perf_counter()
        try:
            result = await current.accept(events)
        except IntakeUnavailable as error:
            metrics.intake_seconds.labels("unavailable").observe(time.perf_counter() - started)
            return _error(503, str(error))
        metrics.intake_seconds.labels("ok").observe(time.perf_counter() - started)
        return web.json_response({"runs": result.runs, "duplicates": result.duplicates})

    async def readyz(request: web.Request) -> web.Response:
        ready = intake() is not None
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/intake", accept)
    app.router.add_get("/directory", serve_directory)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    return app
