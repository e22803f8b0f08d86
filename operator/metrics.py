"""The operator's Prometheus metrics, in one registry per operator instance.

Label values come from small sets: event sources and names (checked by the gateway), run and task
outcomes, and task names (those the installation's sensors use).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hiphops.matcher import Matcher, MatchResult

# Task handlers take from milliseconds (log, a REST call) to an hour (a Job at its timeout).
_TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Matching and recording runs: milliseconds when healthy; the top buckets show a slow API server.
#: hiphops.source values used as labels as they are; any other is counted as "other".
_SOURCES = frozenset({"github", "slack", "hiphops"})
_INTAKE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperatorMetrics:
    """Counters, gauges and histograms of one operator."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sensors_loaded = Gauge(
            "hiphops_operator_sensors_loaded", "Sensors in the matcher.", registry=r
        )
        self.sensors_invalid = Gauge(
            "hiphops_operator_sensors_invalid",
            "Sensors kept out of the matcher because they are invalid.",
            registry=r,
        )
        self.events_received = Counter(
            "hiphops_operator_events_received",
            "Events the intake received, by hiphops.source.",
            ["source"],
            registry=r,
        )
        self.events_matched = Counter(
            "hiphops_operator_events_matched",
            "Received events that matched at least one sensor, by hiphops.source.",
            ["source"],
            registry=r,
        )
        self.events_too_large = Counter(
            "hiphops_operator_events_too_large",
            "Events too large to record in a SensorRun (the run is recorded as FAILURE).",
            registry=r,
        )
        self.runs_created = Counter(
            "hiphops_operator_runs_created", "SensorRuns created by the intake.", registry=r
        )
        self.runs_finished = Counter(
            "hiphops_operator_runs_finished",
            "Runs that finished, by outcome (COMPLETE, FAILURE).",
            ["outcome"],
            registry=r,
        )
        self.task_seconds = Histogram(
            "hiphops_operator_task_seconds",
            "Task duration from RUNNING to its outcome, by task name and outcome.",
            ["task", "outcome"],
            buckets=_TASK_BUCKETS,
            registry=r,
        )
        self.intake_seconds = Histogram(
            "hiphops_operator_intake_seconds",
            "Intake requests: matching and recording the runs, by outcome (ok, unavailable).",
            ["outcome"],
            buckets=_INTAKE_BUCKETS,
            registry=r,
        )
        self.intake_rejections = Counter(
            "hiphops_operator_intake_rejections",
            "Intake requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.status_too_large = Counter(
            "hiphops_operator_status_too_large",
            "SensorRun status writes that would exceed the object size limit.",
            registry=r,
        )
        self.active = Gauge(
            "hiphops_operator_active",
            "1 when this replica is the active one (executes runs, serves the intake).",
            registry=r,
        )

    def watch_sensors(self, loaded: Callable[[], int], invalid: Callable[[], int]) -> None:
        """Report the sensor gauges from live counts at scrape time."""
        self.sensors_loaded.set_function(lambda: float(loaded()))
        self.sensors_invalid.set_function(lambda: float(invalid()))


class MeteredMatcher(Matcher):
    """The engine's matcher, counting the events it sees and those that match."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def match(self, event: Mapping[str, Any]) -> MatchResult:
        result = super().match(event)
        hiphops = event.get("hiphops")
        source = hiphops.get("source") if isinstance(hiphops, Mapping) else None
        source = source if source in _SOURCES else "other"
        self._metrics.events_received.labels(source).inc()
        if result.sensors:
            self._metrics.events_matched.labels(source).inc()
        return result
