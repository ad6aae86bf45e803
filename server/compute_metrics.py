"""The metrics of test-time compute: what a request's candidates and verifiers made of the
compute it spent, read from the strategy's result (`StrategyResult`) and the request's
`CallStats`, never from a strategy's internals.

Each strategy and model's children are created on its first request and kept, so that
observing a request looks each label set up once (the gateway's hot path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

from strategies.accounting import CallStats, Usage
from strategies.base import StrategyResult
from strategies.stops import STOP_KINDS, StopKind

__all__ = ["SCORE_BUCKETS", "SHARE_BUCKETS", "STOP_KINDS", "ComputeMetrics"]

# A share of the candidates: le="1.0" counts every run, le="0.99" all but the unanimous ones.
SHARE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)
# Verifier scores: probabilities (PRMs, ORMs, judges, mean token probability) up to 1, and
# DeepConf's group confidence (minus a mean log-probability) above it.
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1, 2, 5, 10, 20)

_LABELS = ("strategy", "model")


@dataclass
class _Children:
    """One strategy and model's children."""

    answer_tokens: Counter
    agreement: Histogram
    drawn: Counter
    allowed: Counter
    stops: dict[StopKind, Counter] = field(default_factory=dict)


class ComputeMetrics:
    """Answer tokens, agreement, candidates drawn against allowed, why runs stopped, and the
    verifiers' scores."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.answer_tokens = Counter(
            "ttc_answer_tokens",
            "Of the generated tokens, the candidates' answers: all but their thinking and the "
            "probes' tokens.",
            _LABELS,
            registry=registry,
        )
        self.agreement = Histogram(
            "ttc_answer_agreement",
            "Share of the candidates drawn that back the chosen answer (its answer group), per "
            "request that voted on answers.",
            _LABELS,
            buckets=SHARE_BUCKETS,
            registry=registry,
        )
        self.drawn = Counter(
            "ttc_candidates_drawn",
            "Candidates drawn (a search's sampled steps) by requests whose params bound them.",
            _LABELS,
            registry=registry,
        )
        self.allowed = Counter(
            "ttc_candidates_allowed",
            "Candidates (a search's steps) the same requests' params allowed them to draw.",
            _LABELS,
            registry=registry,
        )
        self.stops = Counter(
            "ttc_stops",
            "Why a vote or search stopped drawing: all_drawn, settled, budget, deadline, "
            "verifier_reading, all_finished, max_steps.",
            [*_LABELS, "reason"],
            registry=registry,
        )
        self.verifier_scores = Histogram(
            "ttc_verifier_scores",
            "Scores verifiers gave candidates (a PRM's: the last step's), by verifier.",
            ["strategy", "verifier"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str], _Children] = {}
        self._scores: dict[tuple[str, str], Histogram] = {}

    def observe(
        self,
        labels: tuple[str, str],
        usage: Usage,
        stats: CallStats,
        result: StrategyResult | None,
    ) -> None:
        """Record what one request that ran spent; `result` is its strategy's, if it answered."""
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = _Children(
                self.answer_tokens.labels(*labels),
                self.agreement.labels(*labels),
                self.drawn.labels(*labels),
                self.allowed.labels(*labels),
            )
        children.answer_tokens.inc(
            max(0, usage.completion_tokens - usage.thinking_tokens - usage.probe_tokens)
        )
        for verifier, scores in stats.scores:
            child = self._scores.get((labels[0], verifier))
            if child is None:
                child = self._scores[labels[0], verifier] = self.verifier_scores.labels(
                    labels[0], verifier
                )
            for score in scores:
                child.observe(score.value)
        if result is None:
            return
        if result.agreement is not None:
            children.agreement.observe(result.agreement)
        if result.allowed:
            children.drawn.inc(result.drawn)
            children.allowed.inc(result.allowed)
        if result.stop is not None:
            stop = children.stops.get(result.stop)
            if stop is None:
                assert result.stop in STOP_KINDS, result.stop
                stop = children.stops[result.stop] = self.stops.labels(*labels, result.stop)
            stop.inc()
