"""Prometheus metrics, created against an injected registry so every app gets its own.

Every series is labelled by strategy and model (a closed set each: registered strategies, the
served model), never by anything a client writes. The gateway runs as one process per
container, so one registry holds the truth; scale out with more containers, not workers.

Tokens and dollars are counted for every request that spent them, failed ones included: a
request that fails after sampling still cost the backend its tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.compute_metrics import ComputeMetrics
from server.settings import ModelPrice
from strategies.accounting import CallStats, Usage
from strategies.base import StrategyResult

__all__ = [
    "KEY_REJECTION_REASONS",
    "REJECTION_REASONS",
    "REQUEST_STATUSES",
    "RETRY_REASONS",
    "Metrics",
]

# The closed set of `status` label values.
REQUEST_STATUSES = ("ok", "client_error", "backend_error", "timeout", "cancelled", "server_error")
# The closed set of `reason` label values of requests turned away before they ran.
REJECTION_REASONS = ("queue_full", "queue_timeout", "shutting_down")
# The closed set of `reason` label values of a key's requests turned away with 429 (or 503).
KEY_REJECTION_REASONS = (
    "rpm",
    "tpm",
    "in_flight",
    "usd_per_day",
    "usd_per_month",
    "n",
    "strategy",
    "search_tokens",
    "store_unavailable",
)
# What became of requests when the keys' limit store could not be reached.
_STORE_OUTCOMES = ("admitted", "refused", "settle_failed")
# Why a call to a model server was sent again (`backends.vllm_client`).
RETRY_REASONS = ("connect", "reset", "503", "429")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600)
_CANDIDATE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_COST_BUCKETS = (1e-6, 1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1)

LABELS = ["strategy", "model"]


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, doc: str, *extra: str) -> Counter:
            return Counter(name, doc, [*LABELS, *extra], registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *extra: str) -> Histogram:
            return Histogram(name, doc, [*LABELS, *extra], buckets=buckets, registry=registry)

        self.requests = counter("ttc_requests", "Requests answered, by outcome.", "status")
        self.in_flight = Gauge(
            "ttc_requests_in_flight", "Requests being answered now.", LABELS, registry=registry
        )
        self.rejected = Counter(
            "ttc_rejected_requests",
            "Generation requests turned away with 503 before they ran, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        self.admitted = Gauge(
            "ttc_requests_admitted",
            "Generation requests holding an admission slot (parsing, running or streaming).",
            registry=registry,
        )
        self.queued = Gauge(
            "ttc_requests_queued", "Generation requests waiting for a slot.", registry=registry
        )
        self.shutting_down = Gauge(
            "ttc_shutting_down",
            "1 from the stop signal on: not ready, then draining (turning new requests away "
            "while those in flight finish); 0 while serving.",
            registry=registry,
        )
        self.request_duration = histogram(
            "ttc_request_duration_seconds", "End-to-end latency of a request.", _LATENCY_BUCKETS
        )
        self.time_to_first_token = histogram(
            "ttc_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first text.",
            _LATENCY_BUCKETS,
        )
        self.phase_duration = histogram(
            "ttc_phase_duration_seconds",
            "Time one request spent in each phase: waiting for the model (queue), generating, "
            "verifying.",
            _LATENCY_BUCKETS,
            "phase",
        )
        self.candidates = histogram(
            "ttc_request_candidates", "Completions sampled for one request.", _CANDIDATE_BUCKETS
        )
        self.prompt_tokens = counter("ttc_prompt_tokens", "Prompt tokens sent to the generator.")
        self.generated_tokens = counter("ttc_generated_tokens", "Tokens the generator sampled.")
        self.verifier_tokens = counter("ttc_verifier_tokens", "Tokens verifiers processed.")
        self.thinking_tokens = counter(
            "ttc_thinking_tokens",
            "Of the generated tokens, those a reasoning model spent thinking (candidates' thinking "
            "blocks).",
        )
        self.probe_tokens = counter(
            "ttc_thinking_probe_tokens",
            "Of the generated tokens, those written by probes asking whether thinking had settled.",
        )
        # Answer tokens, agreement, drawn against allowed, stops, verifier scores.
        self.compute = ComputeMetrics(registry)
        self.backend_calls = counter(
            "ttc_backend_calls", "Generation calls to the model server, by outcome.", "outcome"
        )
        # Apart from backend_calls, so that a call sent twice is still counted once there.
        self.backend_retries = Counter(
            "ttc_backend_retries",
            "Calls to a model server sent again because it did not process them, by reason: "
            "connect, reset, 503, 429.",
            ["reason"],
            registry=registry,
        )
        for reason in RETRY_REASONS:
            self.backend_retries.labels(reason)
        self.verifier_calls = Counter(
            "ttc_verifier_calls",
            "Verifier calls, by verifier and outcome.",
            ["strategy", "verifier", "outcome"],
            registry=registry,
        )
        self.early_stops = counter(
            "ttc_early_stops",
            "Requests answered before spending all they asked for: a settled vote, a budget, "
            "a search's iterations.",
        )
        self.tokens_saved = counter(
            "ttc_early_stop_saved_tokens",
            "Tokens the candidates not drawn would have cost (the requested N less those drawn, "
            "at the drawn ones' mean).",
        )
        self.fallbacks = counter(
            "ttc_verifier_fallbacks", "Requests answered by majority vote after a verifier failed."
        )
        self.cost = counter("ttc_cost_dollars", "Dollars spent, at the configured prices.")
        self.request_cost = histogram(
            "ttc_request_cost_dollars", "Dollars one request cost.", _COST_BUCKETS
        )
        # Per API key: the `key` label holds the key file's aliases, never a key.
        self.key_requests = Counter(
            "ttc_key_requests", "Requests a key was admitted for.", ["key"], registry=registry
        )
        self.key_tokens = Counter(
            "ttc_key_tokens",
            "Generated plus verifier tokens a key's requests spent.",
            ["key"],
            registry=registry,
        )
        self.key_cost = Counter(
            "ttc_key_cost_dollars",
            "Dollars a key's requests spent, at the configured prices.",
            ["key"],
            registry=registry,
        )
        self.key_rejected = Counter(
            "ttc_key_rejected_requests",
            "A key's requests turned away by its limits, by reason.",
            ["key", "reason"],
            registry=registry,
        )
        self.unauthorized = Counter(
            "ttc_unauthorized_requests",
            "Requests without a valid API key (401).",
            registry=registry,
        )
        self.limit_store_errors = Counter(
            "ttc_limit_store_errors",
            "Requests for which the keys' limit store (Redis) could not be reached, by what "
            "became of them: admitted unmetered, refused with 503, or not settled.",
            ["outcome"],
            registry=registry,
        )

    def plain(
        self, model: str, status: str, seconds: float, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Record one plain-model completion (echo, scoring, batches): no strategy ran."""
        assert status in REQUEST_STATUSES, status
        labels = ("none", model)
        self.requests.labels(*labels, status).inc()
        self.request_duration.labels(*labels).observe(seconds)
        self.prompt_tokens.labels(*labels).inc(prompt_tokens)
        self.generated_tokens.labels(*labels).inc(completion_tokens)

    def retried(self, reason: str) -> None:
        """A call to a model server is being sent again."""
        assert reason in RETRY_REASONS, reason
        self.backend_retries.labels(reason).inc()

    def watch_admission(
        self,
        admitted: Callable[[], float],
        queued: Callable[[], float],
        shutting_down: Callable[[], float],
    ) -> None:
        """Read the admission gauges from their owner at scrape time (nothing on the hot path)."""
        self.admitted.set_function(admitted)
        self.queued.set_function(queued)
        self.shutting_down.set_function(shutting_down)

    def reject(self, reason: str) -> None:
        """A generation request was turned away before it ran."""
        assert reason in REJECTION_REASONS, reason
        self.rejected.labels(reason).inc()

    def watch_keys(self, aliases: tuple[str, ...]) -> None:
        """Create every key's series at zero, so that rates exist before the first request."""
        for alias in aliases:
            self.key_requests.labels(alias)
            self.key_tokens.labels(alias)
            self.key_cost.labels(alias)
            for reason in KEY_REJECTION_REASONS:
                self.key_rejected.labels(alias, reason)
        for outcome in _STORE_OUTCOMES:
            self.limit_store_errors.labels(outcome)

    def key_admitted(self, alias: str) -> None:
        """A key's request passed its limits."""
        self.key_requests.labels(alias).inc()

    def key_spent(self, alias: str, tokens: int, dollars: float | None) -> None:
        """A key's request is over, having spent `tokens` and `dollars` (None: unpriced)."""
        self.key_tokens.labels(alias).inc(tokens)
        if dollars is not None:
            self.key_cost.labels(alias).inc(dollars)

    def key_rejected_for(self, alias: str, reason: str) -> None:
        """A key's request was turned away by its limits."""
        assert reason in KEY_REJECTION_REASONS, reason
        self.key_rejected.labels(alias, reason).inc()

    def limit_store_error(self, outcome: str) -> None:
        """The limit store could not be reached for a request."""
        assert outcome in _STORE_OUTCOMES, outcome
        self.limit_store_errors.labels(outcome).inc()

    def started(self, strategy: str, model: str) -> None:
        """A request began running."""
        self.in_flight.labels(strategy, model).inc()

    def first_token(self, strategy: str, model: str, seconds: float) -> None:
        """A streamed request sent its first text."""
        self.time_to_first_token.labels(strategy, model).observe(seconds)

    def observe(
        self,
        strategy: str,
        model: str,
        status: str,
        seconds: float,
        *,
        spent: tuple[Usage, CallStats] | None = None,
        price: ModelPrice | None = None,
        result: StrategyResult | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Record one finished request; `spent` is what it spent, if it got as far as running,
        and `result` what its strategy answered, if it did. `trace_id` (the request's trace, in
        hex) becomes the latency observation's exemplar, which /metrics shows to scrapers that
        ask for OpenMetrics."""
        assert status in REQUEST_STATUSES, status
        labels = (strategy, model)
        self.requests.labels(*labels, status).inc()
        exemplar = {"trace_id": trace_id} if trace_id else None
        self.request_duration.labels(*labels).observe(seconds, exemplar)
        if spent is None:
            return
        self.in_flight.labels(*labels).dec()
        usage, stats = spent
        self.prompt_tokens.labels(*labels).inc(usage.prompt_tokens)
        self.generated_tokens.labels(*labels).inc(usage.completion_tokens)
        self.verifier_tokens.labels(*labels).inc(usage.verifier_tokens)
        self.thinking_tokens.labels(*labels).inc(usage.thinking_tokens)
        self.probe_tokens.labels(*labels).inc(usage.probe_tokens)
        phases = {
            "queue": stats.queue_seconds,
            "generate": stats.generate_seconds,
            "verify": stats.verify_seconds,
        }
        for phase, phase_seconds in phases.items():
            self.phase_duration.labels(*labels, phase).observe(phase_seconds)
        self.candidates.labels(*labels).observe(stats.candidates)
        for outcome, calls in stats.backend_calls.items():
            self.backend_calls.labels(*labels, outcome).inc(calls)
        for (verifier, outcome), calls in stats.verifier_calls.items():
            self.verifier_calls.labels(strategy, verifier, outcome).inc(calls)
        self.compute.observe(labels, usage, stats, result)
        if result is not None:
            if result.stopped_early is not None:
                self.early_stops.labels(*labels).inc()
            if result.tokens_saved:
                self.tokens_saved.labels(*labels).inc(result.tokens_saved)
            if result.fallback is not None:
                self.fallbacks.labels(*labels).inc()
        if price is not None:
            dollars = price.cost(
                usage.prompt_tokens, usage.completion_tokens, usage.verifier_tokens
            )
            self.cost.labels(*labels).inc(dollars)
            self.request_cost.labels(*labels).observe(dollars)
