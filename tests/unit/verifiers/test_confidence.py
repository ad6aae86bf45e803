"""Self-certainty scores from token log-probabilities."""

from __future__ import annotations

import math

import pytest

from backends.base import TokenLogprob
from verifiers.base import Aggregation, Candidate, CandidateScore, VerifierError, aggregate
from verifiers.confidence import (
    ConfidenceConfig,
    ConfidenceVerifier,
    lowest_group_confidence,
    mean_probability,
)


def tokens(*values: float, top: int = 0) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob("t", v, tuple(("t", v - j) for j in range(top))) for v in values)


def test_mean_probability_is_the_geometric_mean() -> None:
    assert mean_probability(tokens(math.log(0.5), math.log(0.125))) == pytest.approx(0.25)


def test_lowest_group_is_the_least_confident_window() -> None:
    # Token confidence = -mean(top-2 logprobs) = -(v + v - 1) / 2 = 0.5 - v.
    logprobs = tokens(-0.1, -0.1, -3.0, -0.1, top=2)
    confidences = [0.6, 0.6, 3.5, 0.6]
    assert lowest_group_confidence(logprobs, window=2) == pytest.approx(
        min(sum(confidences[i : i + 2]) / 2 for i in range(3))
    )
    # A window longer than the text is the whole text.
    assert lowest_group_confidence(logprobs, window=10) == pytest.approx(sum(confidences) / 4)


async def test_verifier_scores_and_asks_for_the_logprobs_it_needs() -> None:
    mean = ConfidenceVerifier(ConfidenceConfig())
    group = ConfidenceVerifier(ConfidenceConfig(metric="lowest_group", top_k=3))
    assert (mean.logprobs, group.logprobs) == (0, 3)
    sure, unsure = Candidate("a", tokens(-0.01, -0.02)), Candidate("b", tokens(-2.0, -1.0))
    scores = await mean.score("q", [sure, unsure])
    assert scores.candidates[0].value > scores.candidates[1].value
    assert scores.tokens == 0
    with pytest.raises(VerifierError, match="logprobs"):
        await mean.score("q", [Candidate("no logprobs")])


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (Aggregation.LAST, 0.5),
        (Aggregation.MIN, 0.25),
        (Aggregation.PROD, 0.0625),
        (Aggregation.MEAN, 0.5),
    ],
)
def test_aggregations(how: Aggregation, expected: float) -> None:
    assert aggregate([0.75, 0.25, 0.5], how) == pytest.approx(
        {"last": 0.5, "min": 0.25, "prod": 0.09375, "mean": 0.5}[how.value]
    )
    assert CandidateScore(0.9, None).aggregated(how) == 0.9
    del expected
