"""Verifiers: reward models and judges that score candidate answers."""

from verifiers.base import Scores, Verifier, VerifierError

__all__ = ["Scores", "Verifier", "VerifierError"]
