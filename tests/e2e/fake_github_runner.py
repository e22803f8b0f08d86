"""The stand-in GitHub of the kind e2e (tests/e2e/kind_e2e.sh), as a process of its own.

    python -m tests.e2e.fake_github_runner serve [--port 8080] [--public-url URL]
        Serve tests/fakes/github_server.FakeGitHub on every address (in a pod), seeded with the
        repository demo-org/backend and its Dependabot pull request #55. The token it accepts is
        read from $FAKE_GITHUB_TOKEN. Besides the fake's own routes it answers `GET /rate_limit`
        (the operator's credential check of a token) and `GET /_e2e/pulls/OWNER/REPO/NUMBER`
        (the pull request's state, for the script to check the merge).

    python -m tests.e2e.fake_github_runner payload
        Print the `pull_request` `opened` webhook payload of that pull request (a real payload
        from tests/fixtures, made into a Dependabot PR on demo-org/backend at the seeded head),
        for `hiphops send --event-type pull_request`.

The seeding is deterministic (the fake derives commit ids from their content), so the payload
printed on the host names the head the pod's fake holds.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from tests.fakes.github_server import FakeGitHub, PullRequest

ROOT: Final = Path(__file__).resolve().parents[2]
PAYLOAD: Final = ROOT / "tests" / "fixtures" / "github" / "pull_request.opened.large.json"
OWNER: Final = "demo-org"
REPO: Final = "backend"
NUMBER: Final = 55
HEAD_REF: Final = "dependabot/npm_and_yarn/lodash-4.17.21"
TITLE: Final = "Bump lodash from 4.17.20 to 4.17.21"


def seed(github: FakeGitHub) -> PullRequest:
    """The repository and the pull request the merge sensor acts on."""
    repo = github.add_repo(OWNER, REPO)
    return github.add_pull(repo, NUMBER, head_ref=HEAD_REF, title=TITLE)


def payload() -> dict[str, Any]:
    """The `opened` webhook of the seeded pull request, as GitHub would send it."""
    pull = seed(FakeGitHub())
    data: dict[str, Any] = copy.deepcopy(json.loads(PAYLOAD.read_text(encoding="utf-8")))
    data["number"] = NUMBER
    pr = data["pull_request"]
    pr.update(number=NUMBER, title=TITLE, labels=[])
    pr["user"] = {**pr["user"], "login": "dependabot[bot]"}
    pr["head"] = {**pr["head"], "ref": HEAD_REF, "sha": pull.head_sha}
    pr["base"] = {**pr["base"], "ref": "main"}
    repository = {**data["repository"], "name": REPO, "full_name": f"{OWNER}/{REPO}"}
    repository["owner"] = {**repository["owner"], "login": OWNER}
    data["repository"] = repository
    data.pop("installation", None)
    return data


def create_app(github: FakeGitHub) -> web.Application:
    """The fake's routes plus the two the e2e needs."""

    async def rate_limit(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in github.tokens:
            return web.json_response({"message": "Bad credentials"}, status=401)
        core = {"limit": 5000, "remaining": 4999, "reset": 0, "used": 1}
        return web.json_response({"resources": {"core": core}, "rate": core})

    async def pull_state(request: web.Request) -> web.Response:
        repo = github.repos.get((request.match_info["owner"].lower(), request.match_info["repo"]))
        pull = repo.pulls.get(int(request.match_info["number"])) if repo else None
        if pull is None:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(
            {"state": pull.state, "merged": pull.merged, "head_sha": pull.head_sha}
        )

    app = web.Application()
    app.router.add_get("/rate_limit", rate_limit)
    app.router.add_get("/_e2e/pulls/{owner}/{repo}/{number}", pull_state)
    # Everything else is the fake itself, which checks each request against GitHub's OpenAPI.
    app.router.add_route("*", "/{tail:.*}", github._handle)
    return app


async def serve(port: int, public_url: str, token: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    github = FakeGitHub(tokens=[token])
    seed(github)
    github.url = public_url.rstrip("/")  # the base of the `url` fields it answers with
    runner = web.AppRunner(create_app(github), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    print(f"fake GitHub on port {port} as {github.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    if github.schema_errors:
        print("requests that broke GitHub's OpenAPI description:", file=sys.stderr)
        for error in github.schema_errors:
            print(f"  {error}", file=sys.stderr)
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point: `serve` or `payload`."""
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.fake_github_runner")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve")
    serve_parser.add_argument("--port", type=int, default=8080)
    serve_parser.add_argument("--public-url", default="http://fake-github:8080")
    commands.add_parser("payload")
    args = parser.parse_args(argv)
    if args.command == "payload":
        json.dump(payload(), sys.stdout)
        return 0
    token = os.environ.get("FAKE_GITHUB_TOKEN", "")
    if not token:
        print("set FAKE_GITHUB_TOKEN: the token the fake accepts", file=sys.stderr)
        return 2
    asyncio.run(serve(args.port, args.public_url, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
