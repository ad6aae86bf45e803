"""The verifier contract: score a question's candidate answers, per answer and per step.

A verifier scores all candidates of one question in one call. Process reward models also
return one score per step; how step scores reduce to one number is the caller's named
`Aggregation`. Each verifier hides its own input format (step tags, prompts, templates), and
is configured by its own `VerifierConfig`.

Errors (below `backends.errors.GatewayError`)::

    VerifierError       a verifier call failed, timed out, or returned something unusable
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from backends.base import TokenLogprob
from backends.errors import GatewayError

__all__ = [
    "Aggregation",
    "Candidate",
    "CandidateScore",
    "Scores",
    "Verifier",
    "VerifierConfig",
    "VerifierError",
    "aggregate",
    "split_steps",
]


class VerifierError(GatewayError):
    """A verifier call failed, timed out, or returned something unusable."""


class VerifierConfig(BaseModel):
    """Settings every verifier takes; each kind's config adds its own and fixes `kind`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="Which verifier this configures.")
    timeout_s: float = Field(default=60.0, gt=0, description="One scoring call, at most.")


class Aggregation(StrEnum):
    """How a process reward model's step scores reduce to one score."""

    LAST = "last"
    MIN = "min"
    PROD = "prod"
    MEAN = "mean"


def aggregate(steps: Sequence[float], how: Aggregation) -> float:
    """One score from step scores."""
    if not steps:
        raise ValueError("no step scores to aggregate")
    match how:
        case Aggregation.LAST:
            return steps[-1]
        case Aggregation.MIN:
            return min(steps)
        case Aggregation.PROD:
            return math.prod(steps)
        case Aggregation.MEAN:
            return sum(steps) / len(steps)


def split_steps(text: str, separator: str) -> list[str]:
    """A solution's steps: the text between separators, empty pieces dropped."""
    steps = [step.strip() for step in text.split(separator)]
    return [step for step in steps if step] or [text.strip()]


@dataclass(frozen=True)
class Candidate:
    """A candidate answer as the generator produced it; `tokens`, where known, is how many
    tokens its text is."""

    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class CandidateScore:
    """A candidate's score, and its step scores when the verifier judges steps."""

    value: float
    steps: tuple[float, ...] | None = None

    def aggregated(self, how: Aggregation) -> float:
        """The step scores reduced by `how`, or the single score when there are none."""
        return aggregate(self.steps, how) if self.steps else self.value


@dataclass(frozen=True)
class Scores:
    """One score per candidate, in order, and the tokens the verifier's model processed."""

    candidates: tuple[CandidateScore, ...]
    tokens: int = 0


class Verifier(Protocol):
    """Something that judges candidate answers to a question."""

    @property
    def logprobs(self) -> int | None:
        """Top log-probabilities it needs from the generator per token (None: none)."""
        ...

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        """Score every candidate for `question` in one call."""
        ...
