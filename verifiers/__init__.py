"""Verifiers: reward models and judges that score candidate answers."""

from verifiers.base import (
    Aggregation,
    Candidate,
    CandidateScore,
    Scores,
    Verifier,
    VerifierError,
    aggregate,
    split_steps,
)

__all__ = [
    "Aggregation",
    "Candidate",
    "CandidateScore",
    "Scores",
    "Verifier",
    "VerifierError",
    "aggregate",
    "split_steps",
]
