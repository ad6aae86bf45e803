"""The verifier contract: score a question's candidate answers, per answer and per step.

Errors::

    VerifierError       a verifier call failed or returned something unusable
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Scores", "Verifier", "VerifierError"]


class VerifierError(Exception):
    """A verifier call failed or returned something unusable."""


@dataclass(frozen=True)
class Scores:
    """One score per candidate, per-step scores for process reward models, and tokens spent."""

    candidate: tuple[float, ...]
    steps: tuple[tuple[float, ...], ...] | None
    tokens: int


class Verifier(Protocol):
    """Something that judges candidate answers to a question."""

    name: str

    async def score(self, question: str, candidates: Sequence[str]) -> Scores:
        """Score every candidate for `question` in one call."""
        ...
