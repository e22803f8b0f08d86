"""The in-memory matcher: which sensors' `when` holds for an event.

Sensors are indexed on what they pin down exactly, so an event is checked only against the
candidates that could match:

1. the project (an event of project N only ever meets sensors of N);
2. `event.hiphops.source`, `.event` and `.action`, each either a set of exact values or "any";
3. within that bucket, one more exact clause of the sensor's (its first, in the sensor's own
   order: typically the repository or the command), or none.

Only the candidates' full `when` is evaluated. Sensors are added, replaced and removed one at a
time, as the operator sees watch events.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hiphops import js
from hiphops.conditions import Condition, value_texts
from hiphops.context import Context
from hiphops.paths import MISSING, Path, resolve
from hiphops.sensor import Sensor

SensorKey = tuple[str, str]

#: The event fields every sensor is indexed on, in order.
ROUTING_PATHS: Final[tuple[Path, ...]] = (
    ("event", "hiphops", "source"),
    ("event", "hiphops", "event"),
    ("event", "hiphops", "action"),
)

_ROUTING_FIELDS: Final = tuple(path[-1] for path in ROUTING_PATHS)
_ANY: Final = None
Route = tuple[str | None, str | None, str | None]


@dataclass
class _Bucket:
    """Sensors that share a route, split further by one exact clause each."""

    by_clause: dict[Path, dict[str, set[SensorKey]]] = field(default_factory=dict)
    rest: set[SensorKey] = field(default_factory=set)

    def add(self, key: SensorKey, clause: tuple[Path, frozenset[str]] | None) -> None:
        if clause is None:
            self.rest.add(key)
            return
        path, values = clause
        by_value = self.by_clause.setdefault(path, {})
        for value in values:
            by_value.setdefault(value, set()).add(key)

    def remove(self, key: SensorKey) -> None:
        self.rest.discard(key)
        for path, by_value in list(self.by_clause.items()):
            for value, keys in list(by_value.items()):
                keys.discard(key)
                if not keys:
                    del by_value[value]
            if not by_value:
                del self.by_clause[path]

    def empty(self) -> bool:
        return not self.rest and not self.by_clause

    def collect(self, data: Mapping[str, Any], into: set[SensorKey]) -> None:
        """Add the keys of the sensors that could match the event in `data`."""
        into.update(self.rest)
        for path, by_value in self.by_clause.items():
            for text in value_texts(resolve(data, path)):
                keys = by_value.get(text)
                if keys:
                    into.update(keys)


@dataclass(frozen=True)
class MatchError:
    """A sensor whose `when` could not be evaluated for an event (a JavaScript error)."""

    sensor: Sensor
    error: str


@dataclass(frozen=True)
class MatchResult:
    sensors: list[Sensor]
    errors: list[MatchError]


@dataclass(frozen=True)
class _Placement:
    """Where a sensor sits in the index, and what of its `when` the index does not already prove."""

    routes: tuple[Route, ...]
    clause: tuple[Path, frozenset[str]] | None
    residual: Condition | None


class Matcher:
    """Holds many sensors across many projects; `match` returns those whose `when` holds."""

    def __init__(self, sensors: Iterable[Sensor] = ()) -> None:
        self._sensors: dict[SensorKey, Sensor] = {}
        self._placements: dict[SensorKey, _Placement] = {}
        # project -> source -> event -> action -> bucket (None standing for "any")
        self._projects: dict[
            str, dict[str | None, dict[str | None, dict[str | None, _Bucket]]]
        ] = {}
        # `match` may run on a worker thread (JavaScript must not stall an event loop) while
        # sensors change on another: the index is read and written under this lock; conditions
        # are evaluated outside it, on immutable compiled sensors.
        self._lock = threading.Lock()
        for sensor in sensors:
            self.add(sensor)

    def __len__(self) -> int:
        return len(self._sensors)

    def get(self, key: SensorKey) -> Sensor | None:
        return self._sensors.get(key)

    def add(self, sensor: Sensor) -> None:
        """Add a sensor, or replace the one with the same (project, name). A disabled sensor is
        removed instead: it stays out of the matcher."""
        placement = _placement(sensor) if sensor.enabled else None
        with self._lock:
            self._remove(sensor.key)
            if placement is not None:
                self._add(sensor, placement)

    def _add(self, sensor: Sensor, placement: _Placement) -> None:
        routes = self._projects.setdefault(sensor.project, {})
        for source, kind, action in placement.routes:
            by_action = routes.setdefault(source, {}).setdefault(kind, {})
            by_action.setdefault(action, _Bucket()).add(sensor.key, placement.clause)
        self._sensors[sensor.key] = sensor
        self._placements[sensor.key] = placement

    def remove(self, key: SensorKey) -> Sensor | None:
        """Remove a sensor by (project, name); returns it, or None if it was not there."""
        with self._lock:
            return self._remove(key)

    def _remove(self, key: SensorKey) -> Sensor | None:
        sensor = self._sensors.pop(key, None)
        placement = self._placements.pop(key, None)
        if sensor is None or placement is None:
            return None
        routes = self._projects[key[0]]
        for source, kind, action in placement.routes:
            by_kind = routes[source]
            by_action = by_kind[kind]
            bucket = by_action[action]
            bucket.remove(key)
            if bucket.empty():
                del by_action[action]
            if not by_action:
                del by_kind[kind]
            if not by_kind:
                del routes[source]
        if not routes:
            del self._projects[key[0]]
        return sensor

    def candidates(self, event: Mapping[str, Any]) -> list[Sensor]:
        """The sensors the index cannot rule out for this event (a superset of the matches)."""
        found = self._candidates(Context.for_event(event).data, event)
        return sorted((sensor for sensor, _ in found), key=lambda s: s.key)

    def _candidates(
        self, data: Mapping[str, Any], event: Mapping[str, Any]
    ) -> list[tuple[Sensor, Condition | None]]:
        """The candidates with what of their `when` remains to be checked."""
        with self._lock:
            return self._candidates_locked(data, event)

    def _candidates_locked(
        self, data: Mapping[str, Any], event: Mapping[str, Any]
    ) -> list[tuple[Sensor, Condition | None]]:
        routes = self._projects.get(str(event.get("project_id", "")))
        if not routes:
            return []
        # ROUTING_PATHS read directly: this runs for every event, and resolve() is slower.
        hiphops = event.get("hiphops")
        block = hiphops if isinstance(hiphops, Mapping) else {}
        sources, kinds, actions = (
            (*value_texts(block.get(field, MISSING)), _ANY) for field in _ROUTING_FIELDS
        )
        keys: set[SensorKey] = set()
        for source in sources:
            by_kind = routes.get(source)
            if by_kind is None:
                continue
            for kind in kinds:
                by_action = by_kind.get(kind)
                if by_action is None:
                    continue
                for action in actions:
                    bucket = by_action.get(action)
                    if bucket is not None:
                        bucket.collect(data, keys)
        return [(self._sensors[k], self._placements[k].residual) for k in keys]

    def match(self, event: Mapping[str, Any]) -> MatchResult:
        """The sensors whose `when` holds for `event`, ordered by name; JavaScript failures are
        reported as errors (that sensor does not match), never raised."""
        context = Context.for_event(event)
        matched: list[Sensor] = []
        errors: list[MatchError] = []
        for sensor, residual in self._candidates(context.data, event):
            if residual is None:
                matched.append(sensor)
                continue
            context_for_sensor = Context.for_event(event, sensor.vars) if sensor.vars else context
            try:
                if residual.holds(context_for_sensor):
                    matched.append(sensor)
            except js.JSError as exc:
                errors.append(MatchError(sensor, f"when: {exc}"))
        matched.sort(key=lambda s: s.key)
        return MatchResult(matched, errors)


def _placement(sensor: Sensor) -> _Placement:
    if sensor.when is None:
        return _Placement(routes=((_ANY, _ANY, _ANY),), clause=None, residual=None)
    exact = sensor.when.literal_clauses()
    source, kind, action = (
        list(exact[path].literals() or ()) if path in exact else [_ANY] for path in ROUTING_PATHS
    )
    routes: tuple[Route, ...] = tuple(itertools.product(source, kind, action))
    secondary = next((c for path, c in exact.items() if path not in ROUTING_PATHS), None)
    clause = None if secondary is None else (secondary.path, secondary.literals() or frozenset())
    # A candidate found through the index already satisfies the exact clauses the index used
    # (every value looked up is one of the clause's values): only the rest is evaluated.
    proven = [exact[path] for path in ROUTING_PATHS if path in exact]
    if secondary is not None:
        proven.append(secondary)
    return _Placement(routes=routes, clause=clause, residual=sensor.when.without(proven))
