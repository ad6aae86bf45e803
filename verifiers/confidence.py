"""`confidence`: training-free self-certainty from a candidate's own token log-probabilities.

Two measures, chosen by `metric`:
- `mean_logprob`: the geometric-mean probability of the chosen tokens, exp(mean logprob),
  in (0, 1].
- `lowest_group`: DeepConf's lowest group confidence (Fu et al., "Deep Think with Confidence",
  2025). A token's confidence is minus the mean of its top-k log-probabilities; a group's is
  the mean over a sliding window of tokens; the candidate's score is its least confident
  window, so one stretch of guessing marks the whole candidate. Higher is more confident.

It costs no model call: the generator returns the log-probabilities with the candidates.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from backends.base import Backend, TokenLogprob
from backends.vllm_client import HTTPClients
from verifiers.base import Candidate, CandidateScore, Scores, VerifierConfig, VerifierError

__all__ = [
    "ConfidenceConfig",
    "ConfidenceVerifier",
    "GroupConfidence",
    "lowest_group_confidence",
    "mean_probability",
    "token_confidence",
]


class ConfidenceConfig(VerifierConfig):
    """Settings of a `confidence` verifier."""

    kind: Literal["confidence"] = "confidence"
    metric: Literal["mean_logprob", "lowest_group"] = "mean_logprob"
    window: int = Field(default=16, ge=1, description="Tokens per group (lowest_group).")
    top_k: int = Field(default=5, ge=1, le=20, description="Alternatives per token (lowest_group).")
    timeout_s: float = Field(default=10.0, gt=0, description="One scoring call, at most.")


def mean_probability(logprobs: Sequence[TokenLogprob]) -> float:
    """exp of the mean chosen-token log-probability."""
    return math.exp(sum(t.logprob for t in logprobs) / len(logprobs))


def token_confidence(token: TokenLogprob) -> float:
    """DeepConf's token confidence: minus the mean log-probability of the top-k alternatives
    (of the chosen token alone when none came)."""
    return -sum(v for _, v in token.top) / len(token.top) if token.top else -token.logprob


class GroupConfidence:
    """A candidate's group confidence as its tokens arrive: the mean over the last `window`, and
    the lowest such mean so far (the mean of all tokens while fewer than a window came)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._recent: deque[float] = deque()
        self._count = 0
        self._total = 0.0
        self._lowest = math.inf

    def add(self, confidence: float) -> None:
        """One more token's confidence."""
        self._recent.append(confidence)
        self._count += 1
        self._total += confidence
        if len(self._recent) > self.window:
            self._recent.popleft()
        if len(self._recent) == self.window:
            # Summed afresh: a running sum would drift over a long candidate.
            self._lowest = min(self._lowest, sum(self._recent) / self.window)

    @property
    def full(self) -> bool:
        """Whether a whole window has arrived."""
        return self._count >= self.window

    @property
    def lowest(self) -> float:
        """The lowest group confidence so far (0 before any token)."""
        if self.full:
            return self._lowest
        return self._total / self._count if self._count else 0.0


def lowest_group_confidence(logprobs: Sequence[TokenLogprob], window: int) -> float:
    """The lowest mean token confidence over any `window` consecutive tokens (the mean of all
    of them when fewer; 0 for none): `GroupConfidence` fed the whole candidate."""
    group = GroupConfidence(window)
    for token in logprobs:
        group.add(token_confidence(token))
    return group.lowest


class ConfidenceVerifier:
    """Scores candidates by how sure the generator was while writing them."""

    config_model: ClassVar[type[VerifierConfig]] = ConfidenceConfig

    def __init__(self, config: ConfidenceConfig) -> None:
        self._config = config

    @classmethod
    def create(
        cls, config: ConfidenceConfig, backend: Backend, clients: HTTPClients
    ) -> ConfidenceVerifier:
        """It needs no model server: the candidates bring their log-probabilities."""
        return cls(config)

    @property
    def logprobs(self) -> int | None:
        return self._config.top_k if self._config.metric == "lowest_group" else 0

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        values = []
        for candidate in candidates:
            if not candidate.logprobs:
                raise VerifierError("the confidence verifier needs each candidate's logprobs")
            if self._config.metric == "mean_logprob":
                values.append(mean_probability(candidate.logprobs))
            else:
                values.append(lowest_group_confidence(candidate.logprobs, self._config.window))
        return Scores(tuple(CandidateScore(v) for v in values))
