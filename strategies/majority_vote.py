"""`majority_vote`: self-consistency.

After Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language Models"
(ICLR 2023):

1. Sample N candidates for the prompt, in one backend call.
2. Extract each candidate's final answer (`answer_format`).
3. Group equivalent answers (math-verify, else normalised text).
4. Answer with the first candidate of the largest group; among equal groups, the one whose
   first candidate came first. A request with `n` > 1 gets the first candidates of the `n`
   largest groups. Candidates with no extractable answer cast no vote; if none has one, the
   first candidate is the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel

from strategies.base import StrategyContext, StrategyRequest, StrategyResult
from strategies.candidates import CandidateParams, Sampled, rank_groups, result_of, sample

__all__ = ["MajorityVote", "MajorityVoteParams", "majority_vote"]


class MajorityVoteParams(CandidateParams):
    """Params of `majority_vote`."""


async def majority_vote(
    ctx: StrategyContext,
    request: StrategyRequest,
    candidates: Sequence[Sampled],
    fallback: str | None = None,
) -> StrategyResult:
    """Steps 3 and 4 over sampled candidates; also the fallback of the verified strategies."""
    votes = await rank_groups(candidates, weights=None)
    chosen = [vote.members[0] for vote in votes[: request.sampling.n]] or [0]
    return result_of(
        ctx, request, MajorityVote.name, candidates, chosen, votes=votes, fallback=fallback
    )


class MajorityVote:
    """The most frequent answer among N samples."""

    name: ClassVar[str] = "majority_vote"
    params_model: ClassVar[type[BaseModel]] = MajorityVoteParams

    async def run(
        self, request: StrategyRequest, params: MajorityVoteParams, ctx: StrategyContext
    ) -> StrategyResult:
        candidates = await sample(ctx, request, params)
        return await majority_vote(ctx, request, candidates)
