"""Sensors in the cluster: compiled into the matcher, their status kept truthful.

Every version of a Sensor the operator sees is taken in as a whole (level-triggered): compiled
with `hiphops.sensor.compile_sensor` when its spec changed, then added to the matcher, replaced
there, or kept out of it. The status follows the kstatus conventions:

* `Ready` True, reason `Loaded`: compiled and in the matcher;
* `Ready` True, reason `Disabled`: valid, `enabled: false`, kept out of the matcher;
* `Ready` False, reason `Invalid`, with every problem in the message, plus `Stalled` True (the
  spec must change before anything else can happen): kept out of the matcher;
* `IntegrationsReady`: whether the namespace has a Ready Integration of every tool the tasks use
  (github, slack); False names what is missing or not Ready, Unknown while it is being checked.

`observedGeneration` is the generation the status describes. `lastMatched`, `lastRun` and
`counters` are written separately, at most every few seconds (`SensorStats`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hiphops.integrations import TYPES as INTEGRATION_TYPES
from hiphops.matcher import Matcher
from hiphops.problems import SensorInvalid
from hiphops.sensor import Sensor, compile_sensor

from . import conditions
from .conditions import Condition
from .events import EventPoster, Involved, involved
from .integrations import IntegrationBook
from .kube import SENSORS, ApiError, Kube, is_stale, object_state, patch_status

logger = logging.getLogger("hiphops.operator.sensors")

SensorKey = tuple[str, str]  # (namespace, name), the matcher's (project, name)


@dataclass
class SensorEntry:
    """One Sensor resource as the operator knows it."""

    namespace: str
    name: str
    about: Involved
    generation: int | None
    spec: dict[str, Any]
    sensor: Sensor | None  # None when invalid
    problems: tuple[str, ...]
    status: dict[str, Any]  # as last seen on the object or written
    loaded_at: float

    @property
    def key(self) -> SensorKey:
        return (self.namespace, self.name)

    @property
    def integration_types(self) -> list[str]:
        if self.sensor is None:
            return []
        used = {task.integration for task in self.sensor.tasks}
        return sorted(used & set(INTEGRATION_TYPES))


class SensorBook:
    """Every Sensor the operator serves, the matcher they are compiled into, and their status."""

    def __init__(
        self,
        matcher: Matcher,
        integrations: IntegrationBook,
        kube: Kube,
        *,
        events: EventPoster | None = None,
    ) -> None:
        self.matcher = matcher
        self._integrations = integrations
        self._kube = kube
        self._events = events
        self._entries: dict[SensorKey, SensorEntry] = {}

    def get(self, namespace: str, name: str) -> SensorEntry | None:
        return self._entries.get((namespace, name))

    def invalid_count(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.sensor is None)

    async def apply(self, body: Mapping[str, Any]) -> SensorEntry:
        """Take in a Sensor as the API shows it: compile it if its spec changed, update the
        matcher, write the status if it is not what it should be."""
        namespace, name, generation, spec = object_state(body)
        entry = self._entries.get((namespace, name))
        if entry is not None and is_stale(generation, entry.generation):
            return entry  # a stale copy (the list at activation saw a newer one)
        if entry is not None and entry.spec == spec:
            entry.generation = generation
            entry.status = dict(body.get("status") or {})
        else:
            entry = await self._compile(body, namespace, name, generation, spec)
            newer = self._entries.get(entry.key)
            if newer is not None and is_stale(generation, newer.generation):
                return newer  # a newer version was taken in while this one compiled
            self._entries[entry.key] = entry
            if entry.sensor is not None:
                self.matcher.add(entry.sensor)  # replaces; a disabled sensor is removed instead
                logger.info("sensor %s/%s loaded (%s)", namespace, name, _state(entry.sensor))
            else:
                self.matcher.remove(entry.key)
                logger.warning("sensor %s/%s invalid: %s", namespace, name, entry.problems)
                if self._events is not None:
                    self._events.post(
                        entry.about, "Invalid", "; ".join(entry.problems), warning=True
                    )
        await self.write_status(entry)
        return entry

    async def _compile(
        self,
        body: Mapping[str, Any],
        namespace: str,
        name: str,
        generation: Any,
        spec: dict[str, Any],
    ) -> SensorEntry:
        sensor: Sensor | None = None
        problems: tuple[str, ...] = ()
        try:
            # Off the loop: compiling JavaScript clauses can take a while.
            sensor = await asyncio.to_thread(compile_sensor, spec, name=name, project=namespace)
        except SensorInvalid as invalid:
            problems = tuple(str(problem) for problem in invalid.problems)
        return SensorEntry(
            namespace=namespace,
            name=name,
            about=involved(body),
            generation=generation,
            spec=spec,
            sensor=sensor,
            problems=problems,
            status=dict(body.get("status") or {}),
            loaded_at=time.monotonic(),
        )

    def forget(self, namespace: str, name: str) -> None:
        """The Sensor is gone: out of the matcher."""
        if self._entries.pop((namespace, name), None) is not None:
            self.matcher.remove((namespace, name))
            logger.info("sensor %s/%s removed", namespace, name)

    def prune(self, present: set[SensorKey], listed_at: float) -> None:
        """Forget sensors loaded before `listed_at` that the listing did not show (deleted while
        this replica was not watching)."""
        for key, entry in list(self._entries.items()):
            if key not in present and entry.loaded_at < listed_at:
                self.forget(*key)

    async def reconcile_namespace(self, namespace: str) -> None:
        """Rewrite the status of the namespace's sensors whose status changed (an Integration
        there changed readiness)."""
        for entry in [e for e in self._entries.values() if e.namespace == namespace]:
            await self.write_status(entry)

    def desired_status(self, entry: SensorEntry) -> dict[str, Any]:
        """observedGeneration, conditions and taskCount for the entry as it is now."""
        wanted = []
        if entry.sensor is None:
            count = len(entry.problems)
            message = f"{count} problem{'s' if count != 1 else ''}: " + "; ".join(entry.problems)
            wanted.append(Condition("Ready", False, "Invalid", message))
            wanted.append(Condition("Stalled", True, "Invalid", "the spec must be fixed"))
        elif not entry.sensor.enabled:
            wanted.append(Condition("Ready", True, "Disabled", "disabled: not matched"))
        else:
            tasks = len(entry.sensor.tasks)
            message = f"in the matcher with {tasks} task{'s' if tasks != 1 else ''}"
            wanted.append(Condition("Ready", True, "Loaded", message))
        if entry.sensor is not None:
            wanted.append(self._integrations_condition(entry))
        status: dict[str, Any] = {
            "observedGeneration": entry.generation,
            "conditions": conditions.render(
                wanted, entry.status.get("conditions"), entry.generation
            ),
        }
        if entry.sensor is not None:
            status["taskCount"] = len(entry.sensor.tasks)
        return status

    def _integrations_condition(self, entry: SensorEntry) -> Condition:
        missing, not_ready, unknown = [], [], []
        for kind in entry.integration_types:
            present, ready = self._integrations.readiness(entry.namespace, kind)
            if not present:
                missing.append(kind)
            elif ready is None:
                unknown.append(kind)
            elif not ready:
                not_ready.append(kind)
        if missing or not_ready:
            parts = []
            if missing:
                parts.append(
                    f"tasks use {', '.join(missing)} but namespace {entry.namespace} has no "
                    f"such Integration"
                )
            if not_ready:
                parts.append(f"no {', '.join(not_ready)} Integration is Ready")
            reason = "IntegrationMissing" if missing else "IntegrationNotReady"
            return Condition("IntegrationsReady", False, reason, "; ".join(parts))
        if unknown:
            return Condition(
                "IntegrationsReady", None, "Checking", f"checking {', '.join(unknown)}"
            )
        used = ", ".join(entry.integration_types) or "none needed"
        return Condition("IntegrationsReady", True, "Ready", f"integrations: {used}")

    async def write_status(self, entry: SensorEntry) -> None:
        """Patch the status when it differs from what the object shows."""
        desired = self.desired_status(entry)
        current = {key: entry.status.get(key) for key in desired}
        stale = [k for k in ("taskCount",) if k in entry.status and k not in desired]
        if current == desired and not stale:
            return
        patch: dict[str, Any] = dict(desired)
        for key in stale:
            patch[key] = None  # merge patch: remove
        if not await patch_status(self._kube, SENSORS, entry.namespace, entry.name, patch):
            return
        entry.status.update(desired)
        for key in stale:
            entry.status.pop(key, None)


def _state(sensor: Sensor) -> str:
    tasks = f"{len(sensor.tasks)} task{'s' if len(sensor.tasks) != 1 else ''}"
    return tasks if sensor.enabled else f"{tasks}, disabled"


@dataclass
class _Stats:
    matched: int
    complete: int
    failure: int
    last_matched: str | None = None
    last_run: str | None = None
    dirty: bool = True


@dataclass
class SensorStats:
    """`lastMatched`, `lastRun` and `counters` of each sensor, counted in memory and written at
    most every flush: a busy sensor costs one status write per interval, not one per event.
    Counting starts from the object's own counters, so a restart continues them."""

    kube: Kube
    book: SensorBook
    _stats: dict[SensorKey, _Stats] = field(default_factory=dict)

    def _of(self, key: SensorKey) -> _Stats:
        stats = self._stats.get(key)
        if stats is None:
            entry = self.book.get(*key)
            counters = (entry.status.get("counters") if entry is not None else None) or {}
            runs = counters.get("runs") or {}
            stats = _Stats(
                matched=int(counters.get("matched") or 0),
                complete=int(runs.get("complete") or 0),
                failure=int(runs.get("failure") or 0),
            )
            self._stats[key] = stats
        return stats

    def matched(self, key: SensorKey, run: str, when: str) -> None:
        stats = self._of(key)
        stats.matched += 1
        stats.last_matched, stats.last_run, stats.dirty = when, run, True

    def finished(self, key: SensorKey, complete: bool) -> None:
        stats = self._of(key)
        if complete:
            stats.complete += 1
        else:
            stats.failure += 1
        stats.dirty = True

    async def flush(self) -> None:
        """Write the statistics that changed since the last flush."""
        for key, stats in list(self._stats.items()):
            if not stats.dirty:
                continue
            if self.book.get(*key) is None:
                del self._stats[key]  # the sensor is gone
                continue
            status: dict[str, Any] = {
                "counters": {
                    "matched": stats.matched,
                    "runs": {"complete": stats.complete, "failure": stats.failure},
                }
            }
            if stats.last_matched is not None:
                status["lastMatched"] = _k8s_time(stats.last_matched)
                status["lastRun"] = stats.last_run
            stats.dirty = False
            try:
                await asyncio.to_thread(
                    self.kube.patch,
                    SENSORS,
                    key[0],
                    key[1],
                    {"status": status},
                    subresource="status",
                )
            except ApiError as error:
                stats.dirty = error.status != 404
                logger.warning("sensor %s/%s statistics: %s", key[0], key[1], error)


def _k8s_time(text: str) -> str:
    # Run times have milliseconds; a Kubernetes date-time column reads either, kept as whole
    # seconds like every other timestamp of the object.
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return conditions.now_text(moment)
