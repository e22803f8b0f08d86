"""Several operator replicas behind one name: the gateway finds and keeps to the active one.

Two real intake servers listen on 127.0.0.1 and 127.0.0.2 (same port); a resolver maps the
intake's host name to both, as a headless Service's DNS name does. The passive one answers 503.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web
from yarl import URL

from hiphops.intake import IntakeUnavailable
from webhook_gateway.intake_client import HTTPIntake
from webhook_gateway.peers import ActivePeer
from webhook_gateway.remote import RemoteDirectory

TOKEN = "peer-token"


class Replica:
    def __init__(self, address: str) -> None:
        self.address = address
        self.active = False
        self.requests = 0
        self.runner: web.AppRunner | None = None

    async def intake(self, request: web.Request) -> web.Response:
        self.requests += 1
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        if not self.active:
            return web.json_response({"error": "not the active one"}, status=503)
        return web.json_response({"runs": [f"run-from-{self.address}"], "duplicates": []})

    async def directory(self, request: web.Request) -> web.Response:
        if not self.active:
            return web.json_response({"error": "not the active one"}, status=503)
        item = {"project": "p", "name": self.address.replace(".", "-"), "type": "github"}
        return web.json_response({"integrations": [{**item, "secrets": []}]})

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/intake", self.intake)
        app.router.add_get("/directory", self.directory)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.address, port).start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def resolver(host: str, port: int) -> list[str]:
    assert host == "intake.hiphops.svc"
    return ["127.0.0.1", "127.0.0.2"]


async def scenario() -> None:
    port = free_port()
    first, second = Replica("127.0.0.1"), Replica("127.0.0.2")
    for replica in (first, second):
        await replica.start(port)
    url = f"http://intake.hiphops.svc:{port}/intake"
    intake = HTTPIntake(url, TOKEN, resolver=resolver)
    directory = RemoteDirectory(
        f"http://intake.hiphops.svc:{port}/directory", TOKEN, resolver=resolver
    )
    try:
        try:
            await intake.accept([{"project_id": "p"}])
            raise AssertionError("no replica is active: the intake must be unavailable")
        except IntakeUnavailable as unavailable:
            assert "503" in str(unavailable)
        assert not await directory.refresh()

        second.active = True
        result = await intake.accept([{"project_id": "p"}])
        assert result.runs == ["run-from-127.0.0.2"]
        assert await directory.refresh()
        assert directory.get("p", "127-0-0-2") is not None

        # It keeps to the replica that answered: the passive one is not asked again.
        asked = first.requests
        await intake.accept([{"project_id": "p"}])
        assert first.requests == asked

        # A handover: the other replica becomes active, and the gateway follows.
        second.active, first.active = False, True
        result = await intake.accept([{"project_id": "p"}])
        assert result.runs == ["run-from-127.0.0.1"]
        assert await directory.refresh()
        assert directory.get("p", "127-0-0-1") is not None
    finally:
        await intake.close()
        await directory.close()
        for replica in (first, second):
            assert replica.runner is not None
            await replica.runner.cleanup()


def test_the_gateway_finds_and_follows_the_active_replica() -> None:
    asyncio.run(scenario())


def test_an_ip_address_is_used_as_it_is() -> None:
    async def never(host: str, port: int) -> Any:
        raise AssertionError("an IP address needs no resolving")

    async def check() -> None:

        peer = ActivePeer(URL("http://10.0.0.7:8081/intake"), never)
        assert [str(u) for u in await peer.candidates()] == ["http://10.0.0.7:8081/intake"]

    asyncio.run(check())
