"""The gateway as its own Deployment: integrations fetched from the operator, events sent to it.

The internet-facing gateway holds no Kubernetes credentials. It asks the operator's intake
server for the integration directory (`GET /directory`, the intake token as bearer) every few
seconds, and hands events to `POST /intake` (HTTPIntake). It is ready once it has a directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web
from yarl import URL

from webhook_gateway.app import RUNNER_OPTIONS, GatewaySettings, create_app
from webhook_gateway.directory import IntegrationConfig, StaticDirectory, from_wire
from webhook_gateway.intake_client import HTTPIntake, TokenFile
from webhook_gateway.peers import ActivePeer, Resolver, resolve_all

logger = logging.getLogger("hiphops.gateway")


class RemoteDirectory(StaticDirectory):
    """A Directory refreshed from the operator; keeps the last good copy when a fetch fails."""

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        *,
        timeout_s: float = 10,
        resolver: Resolver = resolve_all,
    ) -> None:
        super().__init__()
        self._url = url
        self._peer = ActivePeer(URL(url), resolver)
        self._token = token if callable(token) else (lambda: token)
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self.loaded = False

    def __repr__(self) -> str:
        return f"RemoteDirectory({self._url!r}, token=<redacted>)"

    async def refresh(self) -> bool:
        """Fetch the directory once (from the active replica); True when it was replaced."""
        response = None
        for target in await self._peer.candidates():
            try:
                response = await self._client.get(
                    str(target), headers={"Authorization": f"Bearer {self._token()}"}
                )
            except httpx.HTTPError as exc:
                logger.warning("directory: cannot reach the operator: %s", type(exc).__name__)
                continue
            if response.status_code == 200:
                self._peer.worked(target)
                break
        if response is None or response.status_code != 200:
            status = "no answer" if response is None else f"HTTP {response.status_code}"
            logger.warning("directory: no active operator replica answered (%s)", status)
            return False
        try:
            configs: list[IntegrationConfig] = [
                from_wire(item) for item in response.json()["integrations"]
            ]
            self.replace(configs)
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("directory: unusable answer from the operator: %s", exc)
            return False
        if not self.loaded:
            logger.info("directory: %d integration(s) loaded", len(configs))
        self.loaded = True
        return True

    async def keep_fresh(self, interval_s: float) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s if self.loaded else min(interval_s, 1.0))

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True)
class GatewayOptions:
    intake_url: str
    token_file: Path
    host: str = "0.0.0.0"
    port: int = 8080
    refresh_s: float = 10.0
    settings: GatewaySettings = field(default_factory=GatewaySettings)


def directory_url(intake_url: str) -> str:
    """`http://operator:8081/intake` -> `http://operator:8081/directory`."""
    base, _, last = intake_url.rstrip("/").rpartition("/")
    return f"{base}/directory" if last == "intake" else f"{intake_url.rstrip('/')}/directory"


async def run_gateway(options: GatewayOptions, stop: asyncio.Event | None = None) -> None:
    """Serve the gateway until SIGINT/SIGTERM (or `stop`)."""
    token = TokenFile(options.token_file)
    directory = RemoteDirectory(directory_url(options.intake_url), token)
    intake = HTTPIntake(options.intake_url, token)
    stop = stop or asyncio.Event()
    refresher = asyncio.create_task(directory.keep_fresh(options.refresh_s))
    app = create_app(directory, intake, options.settings, ready=lambda: directory.loaded)
    runner = web.AppRunner(app, access_log=None, **RUNNER_OPTIONS)
    try:
        await runner.setup()
        await web.TCPSite(runner, options.host, options.port).start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        logger.info("gateway on %s:%d, intake %s", options.host, options.port, options.intake_url)
        await stop.wait()
    finally:
        refresher.cancel()
        await runner.cleanup()
        await intake.close()
        await directory.close()
