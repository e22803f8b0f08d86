"""Status conditions in the Kubernetes (kstatus) conventions, so that kubectl, Argo CD and Flux can
judge health: `type`, `status` ("True" | "False" | "Unknown"), `reason` (CamelCase), `message`,
`observedGeneration` and `lastTransitionTime`, the time `status` last changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class Condition:
    """One wanted condition, before it is stamped with generation and transition time."""

    type: str
    status: bool | None  # None = Unknown
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def now_text(moment: datetime | None = None) -> str:
    """A Kubernetes timestamp: RFC 3339 in UTC, whole seconds."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(
    wanted: Sequence[Condition],
    previous: Iterable[Mapping[str, Any]] | None,
    generation: int | None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The conditions list to write. A condition whose status did not change keeps its
    `lastTransitionTime`, so rendering the same state twice gives the same list (and no write).
    Conditions not wanted any more are dropped (kstatus: abnormal conditions are removed when
    they no longer hold)."""
    before = {str(c.get("type")): c for c in previous or () if isinstance(c, Mapping)}
    stamp = now_text(now)
    result = []
    for condition in wanted:
        old = before.get(condition.type)
        transition = stamp
        if old is not None and old.get("status") == condition.status_text:
            transition = str(old.get("lastTransitionTime") or stamp)
        item: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status_text,
            "reason": condition.reason,
            "message": condition.message[:_MAX_MESSAGE],
            "lastTransitionTime": transition,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        result.append(item)
    return result


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, or None."""
    for condition in conditions or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None
