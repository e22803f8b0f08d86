"""The operator's state and its lifecycle: what kopf's startup handler builds and its handlers use.

One `OperatorRuntime` per operator process holds the matcher, the books of Sensors and
Integrations, the SensorRun store, the executor and the servers. It is active (executes runs,
serves the intake, writes statistics, deletes old runs) only while `Leadership` says this replica
is the one kopf's peering lets run. Becoming active:

1. list Sensors and Integrations and take them in (kopf replays them too after a pause, but
   only the listing shows what was deleted meanwhile, and it guarantees the matcher is complete
   before the first event is accepted);
2. start an executor and resume every unfinished SensorRun (the previous active replica's too);
3. only then accept events (`/readyz` turns 200).

Becoming passive stops accepting events, cancels the executor's tasks (their records stay
resumable) and stops the background loops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hiphops.executor import Executor
from hiphops.intake import Intake, IntakeResult, IntakeUnavailable, LocalIntake
from hiphops.tasks import Registry, default_registry
from hiphops.tasks.connections import Connections
from webhook_gateway.app import RUNNER_OPTIONS, GatewaySettings, create_app

from .events import EventPoster
from .intake import TokenFile, create_intake_app
from .integrations import IntegrationBook
from .jobs import TASK_NAME as JOB_TASK
from .jobs import JobRunner
from .kube import INTEGRATIONS, SENSORS, Kube, Resource
from .leadership import Leadership
from .metrics import MeteredMatcher, OperatorMetrics
from .reporter import RunReporter
from .runstore import KubeRunStore
from .sensors import SensorBook, SensorStats
from .settings import Settings

logger = logging.getLogger("hiphops.operator")

MEMO_SETTINGS = "hiphops_settings"
MEMO_RUNTIME = "hiphops_runtime"


def runtime_of(memo: Mapping[str, Any]) -> OperatorRuntime:
    """The runtime the startup handler put into kopf's memo."""
    runtime = memo.get(MEMO_RUNTIME)
    if not isinstance(runtime, OperatorRuntime):
        raise kopf.PermanentError("the hiphops operator runtime is not started")
    return runtime


def build_registry(kube: Kube, settings: Settings, connections: Connections) -> Registry:
    """The task handlers: the engine's built-ins, acting through the namespaces' Integrations,
    and `k8s.run_job`."""
    registry = default_registry(connections)
    registry.register(JOB_TASK, JobRunner(kube, settings))
    return registry


class _ActiveIntake:
    """An `Intake` for the in-process gateway: the active replica's, else unavailable."""

    def __init__(self, runtime: OperatorRuntime) -> None:
        self._runtime = runtime

    async def accept(self, events: Sequence[Mapping[str, Any]]) -> IntakeResult:
        current = self._runtime.intake()
        if current is None:
            raise IntakeUnavailable("this replica is not the active one")
        return await current.accept(events)


class OperatorRuntime:
    """Everything one operator process runs besides kopf itself."""

    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        *,
        peering_name: str | None = None,
        peering_mandatory: bool = True,
        priority: int = 0,
    ) -> None:
        """`peering_name`, `peering_mandatory` and `priority` are kopf's peering settings as
        this replica runs with them (None = standalone); the leadership decision follows them."""
        self.settings = settings
        self.kube = kube
        self.metrics = OperatorMetrics()
        self.events = EventPoster(kube, settings.identity)
        self.matcher = MeteredMatcher(self.metrics)
        self.integrations = IntegrationBook(
            kube,
            check_interval=settings.credential_check_interval,
            events=self.events,
            on_readiness=self._integration_readiness,
        )
        self.sensors = SensorBook(self.matcher, self.integrations, kube, events=self.events)
        self.stats = SensorStats(kube, self.sensors)
        self.store = KubeRunStore(
            kube,
            namespaces=settings.namespaces,
            max_bytes=settings.max_run_bytes,
            metrics=self.metrics,
        )
        self.registry = build_registry(kube, settings, self.integrations.connections)
        self.priority = priority
        self.leadership = Leadership(
            kube,
            peering_name=peering_name,
            priority=priority,
            mandatory=peering_mandatory,
            namespaces=settings.namespaces,
            interval=settings.leadership_interval,
        )
        self.metrics.watch_sensors(lambda: len(self.matcher), self.sensors.invalid_count)
        self.executor: Executor | None = None
        self._intake: LocalIntake | None = None
        self._switch = asyncio.Lock()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._active_tasks: list[asyncio.Task[Any]] = []
        self.intake_port: int | None = None
        self.gateway_port: int | None = None
        self.metrics_port: int | None = None

    def intake(self) -> Intake | None:
        """The intake while active and ready, else None."""
        return self._intake

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the servers and the leadership watch (on the running loop)."""
        loop = asyncio.get_running_loop()
        self.store.listener = RunReporter(loop, self.metrics, self.events, self.sensors, self.stats)
        self.events.start()
        s = self.settings
        token = TokenFile(s.intake_token_file)
        if token.current() == b"":
            logger.error("no intake token (intake_token_file): every intake request is refused")
        intake_app = create_intake_app(
            self.intake, token, self.metrics, directory=self.integrations.directory.all
        )
        self.intake_port = await self._serve(intake_app, s.intake_host, s.intake_port)
        if s.metrics_port:
            self.metrics_port = await self._serve(
                self._metrics_app(), s.intake_host, s.metrics_port
            )
        if s.gateway_port:
            gateway = create_app(
                self.integrations.directory,
                _ActiveIntake(self),
                GatewaySettings(),
                registry=self.metrics.registry,
                ready=lambda: self._intake is not None,
            )
            self.gateway_port = await self._serve(gateway, s.intake_host, s.gateway_port)
        self._spawn(self._tasks, self.leadership.watch(self._leadership_changed), "leadership")
        logger.info(
            "operator started: intake on port %s, %s, priority %d",
            self.intake_port,
            "standalone" if self.leadership.standalone else "peering",
            self.priority,
        )

    async def stop(self) -> None:
        """Stop everything; unfinished runs stay resumable."""
        await _cancel(self._tasks)
        async with self._switch:
            await self._deactivate()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self.integrations.close()
        await self.events.stop()
        await asyncio.to_thread(self.store.close)
        await asyncio.to_thread(self.kube.close)

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, **RUNNER_OPTIONS)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        # The bound port (when 0 asked for any free one).
        return int(runner.addresses[0][1]) if runner.addresses else port

    def _metrics_app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app

    def _spawn(
        self, into: list[asyncio.Task[Any]], work: Coroutine[Any, Any, Any], name: str
    ) -> None:
        task = asyncio.get_running_loop().create_task(_logged(work, name), name=f"hiphops {name}")
        into.append(task)

    # --- leadership -------------------------------------------------------------------------

    async def _leadership_changed(self, active: bool) -> None:
        async with self._switch:
            if active:
                await self._activate()
            elif self.executor is not None:
                await self._deactivate()

    async def _activate(self) -> None:
        if self.executor is not None:
            return
        await self.resync()
        executor = Executor(
            self.store,
            self.registry,
            concurrency=self.settings.concurrency,
            sensors=self.matcher.get,
        )
        try:
            resumed = await executor.resume()
        except BaseException:
            await executor.close()  # the next leadership decision tries again
            raise
        self.executor = executor
        if resumed:
            logger.info("resumed %d unfinished run(s)", resumed)
        s = self.settings
        self._spawn(
            self._active_tasks,
            self._every(s.secret_refresh_interval, self.integrations.refresh_all),
            "integrations",
        )
        self._spawn(
            self._active_tasks, self._every(s.status_flush_interval, self.stats.flush), "statistics"
        )
        self._spawn(
            self._active_tasks, self._every(s.retention_interval, self._retention), "retention"
        )
        self._intake = LocalIntake(self.matcher, self.store, executor)
        self.metrics.active.set(1)
        logger.info("active: %d sensor(s) in the matcher", len(self.matcher))

    async def _deactivate(self) -> None:
        self._intake = None
        self.metrics.active.set(0)
        await _cancel(self._active_tasks)
        if self.executor is not None:
            executor, self.executor = self.executor, None
            await executor.close()
        await self.stats.flush()

    async def resync(self) -> None:
        """List Sensors and Integrations and take them in; forget what the listing no longer
        shows (deleted while this replica was not watching)."""
        listed_at = time.monotonic()
        integrations = await asyncio.to_thread(self._list, INTEGRATIONS)
        sensors = await asyncio.to_thread(self._list, SENSORS)
        for body in integrations:
            await self.integrations.apply(body, refresh=False)
        await self.integrations.prune(_keys(integrations), listed_at)
        for body in sensors:
            await self.sensors.apply(body)
        self.sensors.prune(_keys(sensors), listed_at)

    def _list(self, resource: Resource) -> list[dict[str, Any]]:
        if self.settings.clusterwide:
            return self.kube.list(resource)
        return [o for ns in self.settings.namespaces for o in self.kube.list(resource, ns)]

    async def _integration_readiness(self, namespace: str) -> None:
        await self.sensors.reconcile_namespace(namespace)

    async def _every(self, interval: float, work: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await work()
            except Exception:
                logger.exception("background work failed; trying again in %ss", interval)
            await asyncio.sleep(interval)

    async def _retention(self) -> None:
        cutoff = datetime.now(UTC) - self.settings.run_retention
        deleted = await asyncio.to_thread(self.store.delete_finished_before, cutoff)
        if deleted:
            logger.info("deleted %d SensorRun(s) finished before %s", deleted, cutoff)


def _keys(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (
            str((o.get("metadata") or {}).get("namespace")),
            str((o.get("metadata") or {}).get("name")),
        )
        for o in objects
    }


async def _logged(work: Coroutine[Any, Any, Any], name: str) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("%s stopped", name)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()
