"""The kopf handlers: import this module to register them (`kopf run -m hiphops_operator.handlers`).

* startup: settings (from kopf's memo when `main.run` passed them, else from `HIPHOPS_*`
  variables), then the `OperatorRuntime` (servers, leadership, books, store);
* cleanup: the runtime stops; unfinished runs stay resumable;
* login: the same connection the operator's own client uses (`kube.login`);
* Sensors and Integrations: every watch event, level-triggered. The body is taken in as a whole
  whatever happened (created, changed, seen again at start or after a pause, deleted), which
  keeps one path for all of them and needs no finalizer: deleting a Sensor never waits for the
  operator.

With `kopf run`, scope and peering come from kopf's own flags (`-A` or `-n`, `--standalone` or
`--peering`, `--priority`); keep `HIPHOPS_NAMESPACES` and `HIPHOPS_PEERING_NAME` in line with
them, since the operator's own calls (SensorRuns, leadership) follow those.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import kube as kube_module
from .kube import INTEGRATIONS, SENSORS, Kube
from .runtime import MEMO_RUNTIME, MEMO_SETTINGS, OperatorRuntime, runtime_of
from .settings import Settings

logger = logging.getLogger("hiphops.operator.handlers")


def _settings(memo: Any) -> Settings:
    settings = memo.get(MEMO_SETTINGS) if memo is not None else None
    if not isinstance(settings, Settings):
        settings = Settings.from_env()
        if memo is not None:
            memo[MEMO_SETTINGS] = settings
    return settings


@kopf.on.login()
def login(
    logger: Any, settings: kopf.OperatorSettings, memo: Any = None, **_: Any
) -> kopf.ConnectionInfo | None:
    """Connect kopf as the operator's own client connects."""
    return kube_module.login(_settings(memo), log=logger, kopf_settings=settings)


@kopf.on.startup()
async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    """Build and start the runtime."""
    ours = _settings(memo)
    # Our handlers log through their own loggers; kopf's per-object log lines at INFO would
    # otherwise become Kubernetes Events. Warnings (a failing handler) still do.
    settings.posting.level = logging.WARNING
    client = Kube(lambda: kube_module.login(ours))
    # Peering as kopf runs it (flags of `kopf run`, or what `main.run` passed): the leadership
    # decision reads the same peering objects with the same priority.
    peering = settings.peering
    runtime = OperatorRuntime(
        ours,
        client,
        peering_name=None if peering.standalone else peering.name,
        peering_mandatory=peering.mandatory,
        priority=peering.priority,
    )
    memo[MEMO_RUNTIME] = runtime
    await runtime.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the runtime."""
    runtime = memo.get(MEMO_RUNTIME)
    if isinstance(runtime, OperatorRuntime):
        await runtime.stop()


def _gone(event: Mapping[str, Any]) -> bool:
    body = event.get("object") or {}
    return event.get("type") == "DELETED" or bool(
        (body.get("metadata") or {}).get("deletionTimestamp")
    )


@kopf.on.event(SENSORS.group, SENSORS.version, SENSORS.plural)
async def sensor_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """A Sensor was created, changed, seen again or deleted: the matcher and status follow."""
    runtime = runtime_of(memo)
    body = event.get("object") or {}
    metadata = body.get("metadata") or {}
    if _gone(event):
        runtime.sensors.forget(str(metadata.get("namespace")), str(metadata.get("name")))
        return
    await runtime.sensors.apply(body)


@kopf.on.event(INTEGRATIONS.group, INTEGRATIONS.version, INTEGRATIONS.plural)
async def integration_event(event: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """An Integration was created, changed, seen again or deleted: secrets, checks and status
    follow, and so do the gateway's directory and the task handlers' connections."""
    runtime = runtime_of(memo)
    body = event.get("object") or {}
    metadata = body.get("metadata") or {}
    if _gone(event):
        await runtime.integrations.forget(str(metadata.get("namespace")), str(metadata.get("name")))
        return
    await runtime.integrations.apply(body)
