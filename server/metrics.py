"""Prometheus metrics, created against an injected registry so every app gets its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["Metrics", "REQUEST_STATUSES"]

# The closed set of `status` label values.
REQUEST_STATUSES = ("ok", "client_error", "backend_error", "timeout", "cancelled", "server_error")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600)


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "ttc_requests",
            "Requests answered, by strategy, model and outcome.",
            ["strategy", "model", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "ttc_request_duration_seconds",
            "End-to-end latency of a request, by strategy and model.",
            ["strategy", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, strategy: str, model: str, status: str, seconds: float) -> None:
        """Record one finished request."""
        assert status in REQUEST_STATUSES, status
        self.requests.labels(strategy, model, status).inc()
        self.request_duration.labels(strategy, model).observe(seconds)
