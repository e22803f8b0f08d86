"""Helpers for integration tests that run `hiphops` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The console script, not `python -m` from the repository root: that would put the root first on
# sys.path, where operator/ shadows the standard library's `operator`.
HIPHOPS = [str(Path(sys.executable).with_name("hiphops"))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def hiphops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a subprocess, from the repository root."""
    return subprocess.run(
        [*HIPHOPS, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """Start a server command (argv with `{port}` placeholders) and stop it after the test."""
    servers: list[Server] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> Server:
        port = free_port()
        log = tmp_path / f"server-{len(servers)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [a.replace("{port}", str(port)) for a in argv],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        server = Server(process, port, log)
        servers.append(server)
        wait_ready(f"{server.url}/healthz", process)
        return server

    yield start
    for server in servers:
        server.stop()
