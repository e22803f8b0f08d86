"""The gateway's Prometheus metrics, registered in one registry per app.

Label values are drawn from small fixed sets (sources, status codes, reason codes, event names
checked against GitHub's naming), so that no sender can make the series count grow unbounded.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Payload sizes from a tiny Slack form to GitHub's 25 MiB maximum.
_BODY_BUCKETS = (
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    26214400.0,
)
# Recording runs takes milliseconds when healthy; the top buckets show an intake about to time out.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Counters and histograms of one gateway app."""

    def __init__(self, registry: CollectorRegistry, replay_cache_len: Callable[[], int]) -> None:
        self.registry = registry
        self.requests = Counter(
            "hiphops_gateway_requests",
            "HTTP requests answered, by source (github, slack, other) and status code.",
            ["source", "code"],
            registry=registry,
        )
        self.rejections = Counter(
            "hiphops_gateway_rejections",
            "Requests rejected with a 4xx or 5xx answer, by source and reason code.",
            ["source", "reason"],
            registry=registry,
        )
        self.events_accepted = Counter(
            "hiphops_gateway_events_accepted",
            "Events the intake accepted, by the event's hiphops.source and hiphops.event.",
            ["source", "event"],
            registry=registry,
        )
        self.intake_seconds = Histogram(
            "hiphops_gateway_intake_seconds",
            "Duration of each intake attempt, by outcome (ok, unavailable).",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.body_bytes = Histogram(
            "hiphops_gateway_body_bytes",
            "Size of the webhook bodies read, by source.",
            ["source"],
            buckets=_BODY_BUCKETS,
            registry=registry,
        )
        replay_cache = Gauge(
            "hiphops_gateway_slack_replay_cache_entries",
            "Slack signatures held in the replay cache.",
            registry=registry,
        )
        replay_cache.set_function(lambda: float(replay_cache_len()))
