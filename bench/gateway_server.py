"""The server side of `bench.gateway`, one server per process (so that it has a GIL of its own).

    python bench/gateway_server.py bare --ready FILE
    python bench/gateway_server.py gateway --ready FILE --state-dir DIR --starts FILE --stats FILE
        --log FILE PATH...

`bare` is the baseline: an aiohttp handler on the hook route that reads the body and answers 200.
`gateway` is the product as `hiphops serve --dry-run` runs it (webhook_gateway.local.serve):
the gateway app, the in-process intake, the SQLite run store (synchronous=FULL) and the executor,
logging at INFO to a file as the CLI does to stderr. The only addition is the executor's
`on_task_start` hook, which notes (run, task, time.monotonic()) in memory; the notes are written
to the `--starts` file at shutdown so that writing them costs nothing under load.

Both listen on 127.0.0.1 on a port of their own choosing, write it to the `--ready` file once
serving, and stop on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from hiphops.store import SQLiteRunStore
from webhook_gateway.local import ServeOptions, load_local, serve

HOOK_ROUTE = "/hooks/github/{project}/{integration}"


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _write_ready(ready: Path, port: int) -> None:
    # Written whole and renamed, so the parent never reads half a port number.
    partial = ready.with_name(ready.name + ".partial")
    partial.write_text(str(port))
    partial.rename(ready)


async def _serve_until_signal(app: web.Application, ready: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = _listening_socket()
    try:
        await web.SockSite(runner, sock).start()
        _write_ready(ready, sock.getsockname()[1])
        await stop.wait()
    finally:
        await runner.cleanup()
        sock.close()


async def bare(ready: Path) -> None:
    """The baseline: read the body, answer 200."""

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post(HOOK_ROUTE, hook)
    await _serve_until_signal(app, ready)


async def gateway(args: argparse.Namespace) -> None:
    """The product in dry-run, as `hiphops serve --dry-run` runs it, plus the task start hook."""
    logging.basicConfig(
        filename=args.log,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    setup = load_local(args.paths, project=args.project)
    if setup.errors:
        raise SystemExit("\n".join(setup.errors))
    starts: list[tuple[str, str, float]] = []
    store = SQLiteRunStore(args.state_dir / "runs.db")
    with _listening_socket() as probe:
        port = probe.getsockname()[1]
    options = ServeOptions(port=port, state_dir=args.state_dir, dry_run=True)
    started = asyncio.Event()
    ready = asyncio.create_task(_announce(started, port, args.ready))
    try:
        await serve(
            setup,
            options,
            started=started,
            store=store,
            on_task_start=lambda run, task, at: starts.append((run, task, at)),
        )
    finally:
        ready.cancel()
        args.starts.write_text("".join(f"{run} {task} {at!r}\n" for run, task, at in starts))
        args.stats.write_text(json.dumps({"commits": store.commits, "writes": store.writes}))
        store.close()


async def _announce(started: asyncio.Event, port: int, ready: Path) -> None:
    await started.wait()
    _write_ready(ready, port)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one of the two servers until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python bench/gateway_server.py")
    parser.add_argument("kind", choices=("bare", "gateway"))
    parser.add_argument("--ready", type=Path, required=True, help="the port is written here")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--starts", type=Path, help="task starts: `run task monotonic` lines")
    parser.add_argument("--stats", type=Path, help="store counters, JSON")
    parser.add_argument("--log", type=Path)
    parser.add_argument("--project", default="demo")
    parser.add_argument("paths", nargs="*")
    args = parser.parse_intermixed_args(argv)
    if args.kind == "bare":
        asyncio.run(bare(args.ready))
        return 0
    missing = [o for o in ("state_dir", "starts", "stats", "log") if getattr(args, o) is None]
    if missing or not args.paths:
        parser.error("gateway needs --state-dir, --starts, --stats, --log and PATHs")
    asyncio.run(gateway(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
