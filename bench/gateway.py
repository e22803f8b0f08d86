"""Gateway benchmark: the webhook gateway with its in-process intake against a bare aiohttp handler.

Both servers receive the same signed ~28 KB GitHub pull_request `opened` webhook
(tests/fixtures/github/pull_request.opened.large.json) from the same load generator, `wrk`, in the
same run on the same machine, each server in a process of its own. Every request carries a unique
X-GitHub-Delivery, so every one is a new delivery that matches the example sensor "welcome new
pull requests" and records a run: the gateway answers 202 only once that run is durably in its
SQLite store (synchronous=FULL, as in production), and its tasks then execute in dry-run.

Printed: requests/s of both and their ratio (target >= 0.6); that every acknowledged delivery's run
was recorded and finished; and, at a fixed moderate rate, p50/p99 of the time from sending a
webhook to the start of its first task handler (send time on loopback is an upper bound of the
gateway's receipt time; CLOCK_MONOTONIC is shared between processes on Linux).

Run: `.venv/bin/python -m bench.gateway` (about a minute). Needs `wrk`:
`apt-get install -y wrk` (Debian/Ubuntu; other systems: https://github.com/wg/wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hiphops.integrations import env_var_name
from webhook_gateway.local import load_local

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests/fixtures/github/pull_request.opened.large.json"
SENSOR_PATHS = ("examples/sensors", "examples/local")
PROJECT = "demo"
INTEGRATION = "github"
HOOK_PATH = f"/hooks/github/{PROJECT}/{INTEGRATION}"
TARGET_RATIO = 0.6
WRK_MISSING = (
    "wrk, the load generator, is not installed. Install it with `apt-get install -y wrk` "
    "(Debian/Ubuntu, as root), or see https://github.com/wg/wrk."
)

# wrk runs this in every one of its threads. Each request gets its own delivery id (prefix, thread,
# counter); each 202's body names the runs recorded, which `done` writes out with the counts.
_LUA = r"""
local body = assert(io.open(%(body)s, "rb")):read("*a")
local headers = %(headers)s
local prefix = %(prefix)s
local counter = 0
statuses = {}
acked = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function request()
  counter = counter + 1
  headers["X-GitHub-Delivery"] = prefix .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", %(path)s, headers, body)
end

function response(status, response_headers, response_body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then
    local runs = response_body:match('"runs":%%s*%%[(.-)%%]') or ""
    for name in runs:gmatch('"([^"]+)"') do
      acked[#acked + 1] = name
    end
  end
end

function done(summary, latency, requests)
  local out = assert(io.open(%(out)s, "w"))
  local e = summary.errors
  out:write(string.format("duration_us %%d\n", summary.duration))
  out:write(string.format("errors %%d %%d %%d %%d\n", e.connect, e.read, e.write, e.timeout))
  out:write(string.format("latency_us %%d %%d\n", latency:percentile(50), latency:percentile(99)))
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      out:write(string.format("status %%d %%d\n", status, count))
    end
    for _, name in ipairs(thread:get("acked")) do
      out:write("run " .. name .. "\n")
    end
  end
  out:close()
end
"""


def _lua_string(text: str) -> str:
    # Paths, header values and the delivery prefix hold no control characters, and for the rest
    # a JSON string (quote and backslash escaped, UTF-8 as is) is a valid Lua string literal.
    return json.dumps(text, ensure_ascii=False)


@dataclass
class Load:
    """What one wrk run measured."""

    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    acked_runs: list[str] = field(default_factory=list)

    def per_second(self, status: int) -> float:
        """Responses with this status per second."""
        return self.statuses.get(status, 0) / self.seconds

    def others(self, status: int) -> int:
        """Responses with any other status, plus socket errors."""
        return sum(n for s, n in self.statuses.items() if s != status) + self.socket_errors


@dataclass(frozen=True)
class Options:
    duration: int
    rounds: int
    warmup: int
    connections: int
    threads: int
    rate: int
    latency_seconds: int


class Webhook:
    """The signed request both servers receive; only the delivery id differs between requests."""

    def __init__(self, workdir: Path, secret: str) -> None:
        self.body = FIXTURE.read_bytes()
        self.path = workdir / "body.json"
        self.path.write_bytes(self.body)
        digest = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/bench",
            "X-GitHub-Event": "pull_request",
            "X-Hub-Signature-256": f"sha256={digest}",
        }

    def lua(self, out: Path, prefix: str) -> str:
        """The wrk script for one run, writing its results to `out`."""
        headers = (
            "{"
            + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in self.headers.items())
            + "}"
        )
        return _LUA % {
            "body": _lua_string(str(self.path)),
            "headers": headers,
            "prefix": _lua_string(prefix),
            "path": _lua_string(HOOK_PATH),
            "out": _lua_string(str(out)),
        }


SERVER_SCRIPT = REPO / "bench/gateway_server.py"


class Server:
    """A `bench.gateway_server` child process, serving once `start` returns."""

    def __init__(
        self, kind: str, workdir: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> None:
        self.kind = kind
        self.ready = workdir / f"{kind}.port"
        self.process = subprocess.Popen(
            # A script path, not `-m` from the repository root, where operator/ would shadow
            # the standard library's `operator`.
            [sys.executable, str(SERVER_SCRIPT), kind, "--ready", str(self.ready), *args],
            cwd=REPO,
            env={**os.environ, **env},
        )
        self.port = 0

    def start(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.kind} server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.kind} server did not start within {timeout} s")
            time.sleep(0.05)
        self.port = int(self.ready.read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    def stop(self) -> None:
        """SIGTERM, then wait for the server's orderly shutdown (it writes its files then)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def check_exit(self) -> None:
        if self.process.returncode != 0:
            raise RuntimeError(f"the {self.kind} server exited with {self.process.returncode}")


def run_wrk(
    wrk: str, url: str, webhook: Webhook, workdir: Path, name: str, seconds: int, opts: Options
) -> Load:
    """One wrk run against `url`; deliveries are prefixed with `name` and a random tag."""
    out = workdir / f"wrk-{name}.out"
    script = workdir / f"wrk-{name}.lua"
    script.write_text(webhook.lua(out, f"bench-{name}-{secrets.token_hex(4)}"))
    subprocess.run(
        [
            wrk,
            f"--threads={opts.threads}",
            f"--connections={opts.connections}",
            f"--duration={seconds}s",
            "--timeout=10s",
            f"--script={script}",
            url,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    load = Load(seconds=0.0)
    for line in out.read_text().splitlines():
        key, *values = line.split()
        if key == "duration_us":
            load.seconds = int(values[0]) / 1e6
        elif key == "errors":
            load.socket_errors = sum(int(v) for v in values)
        elif key == "latency_us":
            load.latency_p50_ms, load.latency_p99_ms = (int(v) / 1000 for v in values)
        elif key == "status":
            status, count = int(values[0]), int(values[1])
            load.statuses[status] = load.statuses.get(status, 0) + count
        elif key == "run":
            load.acked_runs.append(values[0])
    return load


def wait_drained(db: Path, timeout: float = 120) -> float:
    """Wait until the store holds no RUNNING run; returns the seconds waited."""
    started = time.monotonic()
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        while conn.execute("SELECT count(*) FROM runs WHERE state = 'RUNNING'").fetchone()[0]:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"runs still RUNNING after {timeout} s")
            time.sleep(0.1)
    return time.monotonic() - started


def stored_runs(db: Path) -> dict[str, str]:
    """Every run in the store: name -> state."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT name, state FROM runs").fetchall())


async def gateway_202s(port: int) -> int:
    """The gateway's own count of 202 answers (its /metrics), whether or not wrk read them."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for family in text_string_to_metric_families(text):
        if family.name == "hiphops_gateway_requests":
            return int(
                sum(
                    s.value
                    for s in family.samples
                    if s.name.endswith("_total") and s.labels.get("code") == "202"
                )
            )
    return 0


@dataclass
class Sent:
    """One webhook of the fixed-rate phase."""

    sent_at: float  # time.monotonic() just before the request was handed to the client
    status: int = 0
    runs: list[str] = field(default_factory=list)


async def send_at_fixed_rate(url: str, webhook: Webhook, rate: int, seconds: int) -> list[Sent]:
    """Open-loop load: request i leaves at start + i / rate whatever earlier answers do."""
    tag = secrets.token_hex(4)
    sent: list[Sent] = []

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        headers = {**webhook.headers, "X-GitHub-Delivery": f"bench-latency-{tag}-{i}"}
        record = Sent(sent_at=time.monotonic())
        sent.append(record)
        async with session.post(url, data=webhook.body, headers=headers) as response:
            record.status = response.status
            if response.status == 202:
                record.runs = list((await response.json())["runs"])

    async with aiohttp.ClientSession() as session:
        start = time.monotonic()
        jobs = []
        for i in range(rate * seconds):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            jobs.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*jobs)
    return sent


def read_starts(path: Path) -> dict[str, float]:
    """Run name -> the earliest task handler start of that run (monotonic seconds)."""
    first: dict[str, float] = {}
    for line in path.read_text().splitlines():
        run, _task, at = line.split()
        first[run] = min(float(at), first.get(run, float("inf")))
    return first


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Results:
    """Everything measured, for the summary."""

    body_bytes: int
    bare: list[Load] = field(default_factory=list)
    gateway: list[Load] = field(default_factory=list)
    sent_202: list[int] = field(default_factory=list)  # by the gateway, per round (its /metrics)
    drain_s: list[float] = field(default_factory=list)  # load end -> every run finished
    read_202: int = 0  # 202s the clients read (wrk stops without reading the last answers)
    acked: list[str] = field(default_factory=list)  # runs named by the 202s the clients read
    runs: dict[str, str] = field(default_factory=dict)  # the store at the end: name -> state
    total_202: int = 0
    sent: list[Sent] = field(default_factory=list)  # the fixed-rate phase
    first_start: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    log_problems: list[str] = field(default_factory=list)


def measure(wrk: str, opts: Options) -> Results:
    """Start both servers, load them in alternating rounds, then measure latency at a fixed
    rate; the gateway's store and files are read after it stopped."""
    setup = load_local(list(SENSOR_PATHS), project=PROJECT)
    integration = next(i for i in setup.integrations if i.name == INTEGRATION)
    secret = secrets.token_hex(16)
    # The bench's own secret, through the environment (which local mode reads before manifests).
    env = {env_var_name(PROJECT, ref): secret for ref in integration.webhook_secrets}

    with tempfile.TemporaryDirectory(prefix="hiphops-bench-") as tmp:
        workdir = Path(tmp)
        webhook = Webhook(workdir, secret)
        results = Results(body_bytes=len(webhook.body))
        state = workdir / "state"
        state.mkdir()
        db = state / "runs.db"
        starts, stats, log = workdir / "starts.txt", workdir / "stats.json", workdir / "gw.log"
        bare = Server("bare", workdir, [], env)
        gateway = Server(
            "gateway",
            workdir,
            [
                *("--state-dir", str(state), "--starts", str(starts), "--stats", str(stats)),
                *("--log", str(log), "--project", PROJECT, *SENSOR_PATHS),
            ],
            env,
        )
        try:
            bare.start()
            gateway.start()
            run_wrk(wrk, bare.url, webhook, workdir, "bare-warmup", opts.warmup, opts)
            warm = run_wrk(wrk, gateway.url, webhook, workdir, "gw-warmup", opts.warmup, opts)
            results.acked += warm.acked_runs
            results.read_202 += warm.statuses.get(202, 0)
            wait_drained(db)
            # Alternating rounds spread both servers over the same stretch of time, so that
            # whatever else the machine does weighs on both alike.
            for i in range(1, opts.rounds + 1):
                results.bare.append(
                    run_wrk(wrk, bare.url, webhook, workdir, f"bare-{i}", opts.duration, opts)
                )
                before = asyncio.run(gateway_202s(gateway.port))
                load = run_wrk(wrk, gateway.url, webhook, workdir, f"gw-{i}", opts.duration, opts)
                results.drain_s.append(wait_drained(db))
                results.sent_202.append(asyncio.run(gateway_202s(gateway.port)) - before)
                results.gateway.append(load)
                results.acked += load.acked_runs
                results.read_202 += load.statuses.get(202, 0)
            results.sent = asyncio.run(
                send_at_fixed_rate(gateway.url, webhook, opts.rate, opts.latency_seconds)
            )
            results.acked += [run for s in results.sent for run in s.runs]
            results.read_202 += sum(1 for s in results.sent if s.status == 202)
            wait_drained(db)
            results.total_202 = asyncio.run(gateway_202s(gateway.port))
        finally:
            bare.stop()
            gateway.stop()
        bare.check_exit()
        gateway.check_exit()
        results.runs = stored_runs(db)
        results.first_start = read_starts(starts)
        results.counters = json.loads(stats.read_text())
        results.log_problems = [
            line
            for line in log.read_text().splitlines()
            if " WARNING " in line or " ERROR " in line
        ]
    return results


def report(results: Results, opts: Options) -> bool:
    """Print the summary block; True if every acknowledged delivery's run was recorded and
    finished, and the store holds exactly as many runs as the gateway sent 202s (one each)."""
    bare_seconds = sum(load.seconds for load in results.bare)
    gw_seconds = sum(load.seconds for load in results.gateway)
    bare_rps = sum(load.statuses.get(200, 0) for load in results.bare) / bare_seconds
    gw_rps = sum(load.statuses.get(202, 0) for load in results.gateway) / gw_seconds
    ratio = gw_rps / bare_rps if bare_rps else 0.0
    runs = results.runs
    missing = [name for name in results.acked if name not in runs]
    unfinished = [name for name in results.acked if runs.get(name) != "COMPLETE"]
    sustained = sum(results.sent_202) / (gw_seconds + sum(results.drain_s))
    latencies_ms = [
        (results.first_start[run] - s.sent_at) * 1000
        for s in results.sent
        for run in s.runs
        if run in results.first_start
    ]
    never_started = sum(len(s.runs) for s in results.sent) - len(latencies_ms)
    not_202 = sum(1 for s in results.sent if s.status != 202)
    writes, commits = results.counters["writes"], results.counters["commits"]
    # Each of these 202s names at least the run of "welcome new pull requests": fewer names
    # than 202s would mean the answers were not read right, and the checks above saw nothing.
    read_right = len(results.acked) >= results.read_202 > 0
    intact = read_right and not missing and not unfinished and len(runs) == results.total_202

    width = 78
    print()
    print("=" * width)
    print(
        f"Gateway benchmark: {FIXTURE.name} ({results.body_bytes / 1024:.1f} KB, "
        "HMAC-SHA256 signed), unique X-GitHub-Delivery per request"
    )
    print(
        f"wrk {opts.threads} thread(s), {opts.connections} connections; {opts.rounds} "
        f"alternating rounds of {opts.duration} s per server; {os.cpu_count()} CPUs"
    )
    print("-" * width)
    print(f"{'':36}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'not ok':>10}")
    for i, (bare, gateway) in enumerate(zip(results.bare, results.gateway, strict=True), 1):
        for label, load, status in (
            (f"round {i}  bare aiohttp handler (200)", bare, 200),
            (f"round {i}  hiphops gateway (202)", gateway, 202),
        ):
            print(
                f"{label:36}{load.per_second(status):10.0f}{load.latency_p50_ms:10.1f}"
                f"{load.latency_p99_ms:10.1f}{load.others(status):10d}"
            )
    print(f"{'bare aiohttp handler, all rounds':36}{bare_rps:10.0f}")
    print(f"{'hiphops gateway, all rounds':36}{gw_rps:10.0f}")
    verdict = "meets" if ratio >= TARGET_RATIO else "is BELOW"
    print(f"RATIO gateway / bare: {ratio:.3f} ({verdict} the target of >= {TARGET_RATIO})")
    print("-" * width)
    print(
        f"runs recorded: {len(runs)}; 202s the gateway sent: {results.total_202} "
        f"({'equal' if len(runs) == results.total_202 else 'NOT EQUAL'})"
    )
    print(
        f"202s the clients read: {results.read_202}, naming {len(results.acked)} runs: "
        f"missing from the store {len(missing)}, not COMPLETE {len(unfinished)}"
    )
    print(
        "every run finished "
        + ", ".join(f"{d:.1f}" for d in results.drain_s)
        + f" s after each round's load ended: {sustained:.0f} runs/s recorded and executed "
        "(load + drain)"
    )
    print(
        f"run store: {writes} writes in {commits} commits "
        f"({writes / max(1, commits):.1f} writes per fsync'd commit)"
    )
    if results.log_problems:
        print(f"gateway log: {len(results.log_problems)} warnings/errors, first:")
        print(f"  {results.log_problems[0]}")
    print("-" * width)
    print(
        f"webhook sent -> first task handler start, {opts.rate} req/s for "
        f"{opts.latency_seconds} s (open loop: request i leaves at i / rate)"
    )
    print("(send time on loopback: an upper bound of the gateway's receipt)")
    if latencies_ms:
        print(
            f"p50 {percentile(latencies_ms, 50):.2f} ms   p99 {percentile(latencies_ms, 99):.2f} "
            f"ms   max {max(latencies_ms):.2f} ms   (n={len(latencies_ms)}, not 202: {not_202}, "
            f"never started: {never_started})"
        )
    else:
        print("no task started")
    print("=" * width)
    return intact


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the summary; exit 1 if an acknowledged run went missing."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rate", type=int, default=50, help="req/s of the latency phase")
    parser.add_argument("--latency-seconds", type=int, default=10)
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    opts = Options(
        duration=args.duration,
        rounds=args.rounds,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
    )
    return 0 if report(measure(wrk, opts), opts) else 1


if __name__ == "__main__":
    sys.exit(main())
