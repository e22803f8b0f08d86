"""Kubernetes Events on Sensors and SensorRuns (`kubectl describe` shows them).

Events are queued from any thread and posted in the background, one at a time: a slow API server
delays them, never a run. When the queue is full, further events are dropped with a log line —
an Event is a notification, the SensorRun status stays the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .conditions import now_text
from .kube import EVENTS, ApiError, Kube

logger = logging.getLogger("hiphops.operator.events")

COMPONENT: Final = "hiphops-operator"
_MAX_MESSAGE: Final = 1024
_QUEUE_SIZE: Final = 1000


@dataclass(frozen=True)
class Involved:
    """The object an Event is about."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None

    def reference(self) -> dict[str, Any]:
        reference = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }
        if self.uid:
            reference["uid"] = self.uid
        return reference


def involved(body: Mapping[str, Any]) -> Involved:
    """The Involved for an object's body."""
    metadata = body.get("metadata") or {}
    return Involved(
        api_version=str(body.get("apiVersion") or ""),
        kind=str(body.get("kind") or ""),
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=metadata.get("uid"),
    )


class EventPoster:
    """Posts Events in the background; `post` may be called from any thread."""

    def __init__(self, kube: Kube, identity: str) -> None:
        self._kube = kube
        self._identity = identity
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        self.posted = 0

    def start(self) -> None:
        """Start posting (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="hiphops event poster")

    async def stop(self) -> None:
        """Stop posting; events still queued are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def post(self, about: Involved, reason: str, message: str, *, warning: bool = False) -> None:
        """Queue an Event of `about` (Normal, or Warning)."""
        if self._loop is None or self._loop.is_closed():
            return
        now = now_text()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{about.name}.", "namespace": about.namespace},
            "involvedObject": about.reference(),
            "reason": reason,
            "message": message[:_MAX_MESSAGE],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": f"hiphops.io/{COMPONENT}",
            "reportingInstance": self._identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._enqueue(body)
        else:
            self._loop.call_soon_threadsafe(self._enqueue, body)

    def _enqueue(self, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            logger.warning("event queue full: dropped %s event", body["reason"])

    async def _run(self) -> None:
        while True:
            body = await self._queue.get()
            namespace = body["metadata"]["namespace"]
            try:
                await asyncio.to_thread(self._kube.create, EVENTS, namespace, body)
                self.posted += 1
            except ApiError as error:
                logger.warning("could not post %s event: %s", body["reason"], error)
