"""Local mode (`hiphops serve`): the whole product in one process, no cluster.

Sensors, Integrations and Secrets are read from manifest files (secrets may come from
environment variables instead); the gateway serves the webhook routes, an in-process intake
matches and records runs in a SQLite store, and the executor runs their tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from hiphops.executor import Executor, TaskStartHook, utc_now
from hiphops.intake import LocalIntake
from hiphops.integrations import (
    ChainedSecrets,
    EnvSecrets,
    Integration,
    IntegrationInvalid,
    ManifestSecrets,
    SecretSource,
    env_var_name,
    parse_integration,
)
from hiphops.loader import API_VERSION, load
from hiphops.matcher import Matcher
from hiphops.sensor import Sensor
from hiphops.store import SQLiteRunStore
from hiphops.tasks import Registry, default_registry
from hiphops.tasks.connections import StaticConnections
from webhook_gateway.app import RUNNER_OPTIONS, GatewaySettings, create_app
from webhook_gateway.directory import IntegrationConfig, StaticDirectory

logger = logging.getLogger("hiphops.local")


@dataclass
class LocalSetup:
    """What the files describe: sensors, integrations with resolved secrets, and problems."""

    sensors: list[Sensor] = field(default_factory=list)
    integrations: list[Integration] = field(default_factory=list)
    configs: list[IntegrationConfig] = field(default_factory=list)
    secrets: SecretSource = field(default_factory=ManifestSecrets)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_local(
    paths: Sequence[str], *, project: str, environ: Mapping[str, str] | None = None
) -> LocalSetup:
    """Read sensors (both forms), Integration and Secret manifests from `paths`. Secrets are
    looked up in the environment first (see `env_var_name`), then in Secret manifests."""
    result = load(paths, default_project=project)
    setup = LocalSetup(sensors=[sensor for _, sensor in result.sensors])
    for problem in result.problems:
        (setup.errors if problem.is_error else setup.warnings).append(str(problem))
    manifest_secrets = ManifestSecrets()
    for manifest in result.manifests:
        body = manifest.body
        if manifest.kind == "Secret" and body.get("apiVersion") == "v1":
            for error in manifest_secrets.add_manifest(body, default_project=project):
                setup.errors.append(f"{manifest.location}: {error}")
        elif manifest.kind == "Integration" and body.get("apiVersion") == API_VERSION:
            try:
                setup.integrations.append(parse_integration(body, default_project=project))
            except IntegrationInvalid as invalid:
                setup.errors.extend(f"{manifest.location}: {p}" for p in invalid.problems)
        else:
            setup.warnings.append(
                f"{manifest.location}: {body.get('apiVersion')} {manifest.kind or '(no kind)'} "
                "is not used in local mode"
            )
    secrets = ChainedSecrets([EnvSecrets(environ), manifest_secrets])
    setup.secrets = secrets
    for integration in setup.integrations:
        values = []
        for ref in integration.webhook_secrets:
            value = secrets.get(integration.project, ref)
            if value is None:
                setup.warnings.append(
                    f"integration {integration.project}/{integration.name}: {ref} not found "
                    f"(add a Secret manifest or set {env_var_name(integration.project, ref)}); "
                    "its webhooks are rejected until it exists"
                )
            else:
                values.append(value)
        setup.configs.append(
            IntegrationConfig(
                project=integration.project,
                name=integration.name,
                type=integration.type,
                secrets=tuple(values),
            )
        )
    return setup


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = Path(".hiphops")
    dry_run: bool = False
    concurrency: int = 16
    retention: timedelta = timedelta(days=7)


async def _retention_loop(store: SQLiteRunStore, retention: timedelta) -> None:
    while True:
        removed = await asyncio.to_thread(store.delete_finished_before, utc_now() - retention)
        if removed:
            logger.info("deleted %d finished run(s) older than %s", removed, retention)
        await asyncio.sleep(3600)


async def serve(
    setup: LocalSetup,
    options: ServeOptions,
    *,
    registry: Registry | None = None,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    store: SQLiteRunStore | None = None,
    on_task_start: TaskStartHook | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set). Unfinished runs in the state directory
    resume first, so a restart continues where the last process stopped. A `store` given by
    the caller is used instead of the state directory's, and left open."""
    own_store = store is None
    if store is None:
        options.state_dir.mkdir(parents=True, exist_ok=True)
        store = SQLiteRunStore(options.state_dir / "runs.db")
    matcher = Matcher(setup.sensors)
    executor = Executor(
        store,
        registry or default_registry(StaticConnections(setup.integrations, setup.secrets)),
        concurrency=options.concurrency,
        dry_run=options.dry_run,
        sensors=matcher.get,
        on_task_start=on_task_start,
    )
    stop = stop or asyncio.Event()
    runner: web.AppRunner | None = None
    retention = asyncio.create_task(_retention_loop(store, options.retention))
    try:
        resumed = await executor.resume()
        if resumed:
            logger.info("resumed %d unfinished run(s)", resumed)
        app = create_app(
            StaticDirectory(setup.configs),
            LocalIntake(matcher, store, executor),
            GatewaySettings(),
        )
        runner = web.AppRunner(app, access_log=None, **RUNNER_OPTIONS)
        await runner.setup()
        await web.TCPSite(runner, options.host, options.port).start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        base = f"http://{options.host}:{options.port}"
        logger.info(
            "serving %d sensor(s) on %s%s; runs in %s",
            len(matcher),
            base,
            " (dry run: no task calls out)" if options.dry_run else "",
            options.state_dir,
        )
        for integration in setup.integrations:
            logger.info("  %s webhooks: %s%s", integration.type, base, integration.webhook_path)
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        retention.cancel()
        if runner is not None:
            await runner.cleanup()
        await executor.close()
        if own_store:
            store.close()
