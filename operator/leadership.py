"""Which replica is active: the one kopf's peering lets run (several replicas, one at work).

kopf peering: every replica writes a keep-alive (`priority`, `lifetime`, `lastseen`) into a
ClusterKopfPeering (cluster-wide) or a KopfPeering per namespace, and pauses its watches while a
live peer has a higher priority, or another has the same one (then all of them pause). The
operator's own work outside kopf's handlers (the intake, the run executor, retention, statistics)
must follow the same rule, so it reads the same peering objects and applies the same decision:
active when no live peer outranks this replica and none ties with it. Standalone = always active.

The decision is re-read every `interval`, so for up to one interval after a higher-priority
replica appears both may execute; tasks are written to be safe to run again (DESIGN §5).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .kube import CLUSTER_PEERINGS, PEERINGS, ApiError, Kube

logger = logging.getLogger("hiphops.operator.leadership")


def _parse_time(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_active(peers: Mapping[str, Any], priority: int, now: datetime) -> bool:
    """kopf's rule over a peering object's `status` (peer id -> {priority, lifetime, lastseen}):
    False if a live peer has a higher priority or more than one live peer has ours."""
    same = 0
    for info in peers.values():
        if not isinstance(info, Mapping):
            continue
        seen = _parse_time(info.get("lastseen"))
        lifetime = int(info.get("lifetime") or 60)
        if seen is None or seen + timedelta(seconds=lifetime) <= now:
            continue  # dead
        peer_priority = int(info.get("priority") or 0)
        if peer_priority > priority:
            return False
        if peer_priority == priority:
            same += 1
    return same <= 1


class Leadership:
    """Decides, and keeps deciding, whether this replica is active."""

    def __init__(
        self,
        kube: Kube | None,
        *,
        peering_name: str | None,
        priority: int,
        mandatory: bool = True,
        namespaces: Sequence[str] = (),
        interval: float = 5.0,
    ) -> None:
        """`peering_name` None (or no `kube`) = standalone: always active. `mandatory` as in
        kopf: whether a missing peering resource pauses (True) or means standalone (False)."""
        self._kube = kube
        self._name = peering_name
        self._mandatory = mandatory
        self._priority = priority
        self._namespaces = tuple(namespaces)
        self._interval = interval
        self.active = False

    @property
    def standalone(self) -> bool:
        return self._name is None or self._kube is None

    def decide(self) -> bool:
        """Read the peering object(s) and decide (blocking: API calls). Raises ApiError when the
        API cannot answer (the caller keeps its current state)."""
        if self._name is None or self._kube is None:
            return True
        now = datetime.now(UTC)
        places: list[tuple[Any, str | None]] = (
            [(CLUSTER_PEERINGS, None)]
            if not self._namespaces
            else [(PEERINGS, ns) for ns in self._namespaces]
        )
        for resource, namespace in places:
            try:
                objects = self._kube.list(resource, namespace)
            except ApiError as error:
                if error.status != 404:
                    raise
                # No peering resource at all: kopf pauses when peering is required, else it
                # runs standalone; so do we.
                if self._mandatory:
                    logger.warning("peering %s: %s; not active", self._name, error)
                return not self._mandatory
            found = next(
                (o for o in objects if (o.get("metadata") or {}).get("name") == self._name), None
            )
            # A missing peering object: kopf finds no peers there and runs; so do we.
            if found is not None and not is_active(found.get("status") or {}, self._priority, now):
                return False
        return True

    async def watch(self, on_decision: Callable[[bool], Awaitable[None]]) -> None:
        """Decide now and every interval, and await `on_decision(active)` each time (so that a
        failed switch is tried again). Runs until cancelled."""
        while True:
            try:
                active = await asyncio.to_thread(self.decide)
            except ApiError as error:
                logger.warning("leadership check failed: %s; keeping the current state", error)
                active = self.active
            if active != self.active:
                logger.info("this replica is now %s", "active" if active else "passive")
            self.active = active
            try:
                await on_decision(active)
            except Exception:
                logger.exception(
                    "could not become %s; trying again", "active" if active else "passive"
                )
            await asyncio.sleep(self._interval)
