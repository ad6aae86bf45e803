"""Early stopping for the strategies that vote: draw candidates in waves, stop once the vote is
settled.

After Aggarwal et al., "Let's Sample Step by Step: Adaptive-Consistency for Efficient
Reasoning and Coding with LLMs" (EMNLP 2023). After each wave a rule looks at the two leading
answers' vote totals `a` >= `b`:

- `beta`: the probability that the leader is the true majority, P(p_a > p_b) with
  (p_a, p_b) drawn from Beta(a + 1, b + 1) (the paper's Beta criterion), reaches `threshold`;
- `margin`: the leader cannot be overtaken by the samples left, each adding at most one vote
  (for weighted votes, at most the largest weight seen so far).

Weighted votes (`weighted_vote`) use the same rules on their weighted totals; for `beta` the
totals are rescaled to pseudo-counts that sum to the number of candidates that voted, so that
the Beta's confidence grows with the samples drawn, not with the scale of the scores.

`best_of_n` stops on a score instead (`ScoreStop`), and the votes may stop unconfident traces
while they are written instead (`DeepConf`, run by `strategies.deepconf`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DeepConf", "EarlyStop", "ScoreStop", "Waves", "leader_probability", "settled"]


class Waves(BaseModel):
    """How candidates are drawn when a rule may stop early: `wave` per backend call."""

    model_config = ConfigDict(extra="forbid")

    method: str
    min_samples: int = Field(default=4, ge=1, description="Never stop with fewer candidates.")
    wave: int = Field(default=4, ge=1, description="Candidates per backend call.")


class EarlyStop(Waves):
    """`reasoning_params.early_stop` of the votes: stop once the vote is settled."""

    method: Literal["beta", "margin"]
    threshold: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="beta: the leader's probability to stop at."
    )


class ScoreStop(Waves):
    """`reasoning_params.early_stop` of `best_of_n`: stop once a candidate scores `threshold`."""

    method: Literal["score"]
    threshold: float = Field(description="The verifier score that is good enough.")


# DeepConf-low and DeepConf-high: the percent of warm-up traces the threshold keeps.
KEEP = {"low": 10.0, "high": 90.0}


class DeepConf(BaseModel):
    """`reasoning_params.early_stop` with `method` `deepconf`: the online algorithm's knobs.

    The defaults suit a small model's short answers (tens of tokens, not the paper's thousands):
    a window of 8 tokens judges a trace several times before it ends, and 5 alternatives per
    token keep each streamed chunk small.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["deepconf"]
    warmup: int = Field(default=4, ge=1, description="Traces sampled first, to set the threshold.")
    keep: Literal["low", "high"] | float = Field(
        default="high",
        description="Percent of warm-up traces the threshold keeps: low = 10, high = 90.",
    )
    window: int = Field(default=8, ge=1, le=4096, description="Tokens per group.")
    top_logprobs: int = Field(
        default=5, ge=1, le=20, description="Alternatives per token in its confidence."
    )
    consensus: float | None = Field(
        default=None, gt=0.5, le=1.0, description="Stop once the leader holds this share."
    )
    parallel: int | None = Field(
        default=None, ge=1, description="Traces streamed at once after the warm-up (all)."
    )

    @field_validator("keep")
    @classmethod
    def _a_percentage(cls, keep: str | float) -> str | float:
        if not isinstance(keep, str) and not 0 < keep <= 100:
            raise ValueError("keep is 'low', 'high' or a percentage in (0, 100]")
        return keep

    @property
    def kept_percent(self) -> float:
        """`keep` as a percentage."""
        return KEEP[self.keep] if isinstance(self.keep, str) else float(self.keep)


def settled(
    rule: EarlyStop, totals: Sequence[float], voted: int, left: int, most: float = 1.0
) -> bool:
    """Whether the vote is settled: `totals` are the answer groups' vote totals, `voted` the
    candidates that cast a vote, `left` the candidates not drawn yet, `most` the largest vote
    one of them could add."""
    ranked = sorted(totals, reverse=True)
    if not ranked:
        return False
    a, b = ranked[0], ranked[1] if len(ranked) > 1 else 0.0
    if rule.method == "margin":
        return a - b > left * most
    total = sum(ranked)
    scale = voted / total if total > 0 else 0.0
    return leader_probability(a * scale, b * scale) >= rule.threshold


def leader_probability(a: float, b: float) -> float:
    """P(X > 1/2) for X ~ Beta(a + 1, b + 1): how sure `a` votes against `b` make the leader."""
    return 1.0 - _regularized_beta(0.5, a + 1.0, b + 1.0)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), by its continued fraction (Lentz's method), as in Numerical Recipes."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast for x below the mean; use the symmetry otherwise.
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _regularized_beta(1.0 - x, b, a)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= d * c
        if abs(d * c - 1.0) < 1e-12:
            break
    return front * fraction / a
