"""The gateway reads the intake token from its mounted Secret again when the file changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from webhook_gateway.intake_client import HTTPIntake, TokenFile


async def scenario(tmp_path: Path) -> list[str]:
    seen: list[str] = []

    async def intake(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response({"runs": [], "duplicates": []})

    app = web.Application()
    app.router.add_post("/intake", intake)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    client = HTTPIntake(f"http://127.0.0.1:{port}/intake", TokenFile(token_file))
    try:
        await client.accept([])
        token_file.write_text("the-rotated-token\n")  # kubelet updates the mounted Secret
        await client.accept([])
        token_file.unlink()  # mid-swap: the last token stays in use
        await client.accept([])
    finally:
        await client.close()
        await runner.cleanup()
    return seen


def test_a_rotated_token_is_used_without_a_restart(tmp_path: Path) -> None:
    assert asyncio.run(scenario(tmp_path)) == [
        "Bearer first-token",
        "Bearer the-rotated-token",
        "Bearer the-rotated-token",
    ]


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    try:
        TokenFile(empty)
    except ValueError as error:
        assert "is empty" in str(error)
    else:
        raise AssertionError("an empty token must be refused at start")
