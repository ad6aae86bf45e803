"""`majority_vote`: self-consistency.

After Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language Models"
(ICLR 2023):

1. Sample N candidates for the prompt, in one backend call; or, with `early_stop`, in waves
   (one call each) until the vote is settled (`strategies.early_stop`, after Aggarwal et al.,
   "Adaptive-Consistency", 2023).
2. Extract each candidate's final answer (`answer_format`).
3. Group equivalent answers (math-verify, else normalised text).
4. Answer with the first candidate of the largest group; among equal groups, the one whose
   first candidate came first. A request with `n` > 1 gets the first candidates of the `n`
   largest groups. Candidates with no extractable answer cast no vote; if none has one, the
   first candidate is the answer.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from strategies.base import StrategyRequest, StrategyResult
from strategies.candidates import CandidateParams, sample_until_settled, vote
from strategies.context import StrategyContext
from strategies.early_stop import EarlyStop

__all__ = ["MajorityVote", "MajorityVoteParams"]


class MajorityVoteParams(CandidateParams):
    """Params of `majority_vote`."""

    early_stop: EarlyStop | None = Field(
        default=None, description="Draw candidates in waves and stop once the vote is settled."
    )


class MajorityVote:
    """The most frequent answer among N samples."""

    name: ClassVar[str] = "majority_vote"
    params_model: ClassVar[type[BaseModel]] = MajorityVoteParams

    async def run(
        self, request: StrategyRequest, params: MajorityVoteParams, ctx: StrategyContext
    ) -> StrategyResult:
        # 1-2. Sample (in waves, until settled, with early_stop), and extract the answers.
        draws = await sample_until_settled(ctx, request, params, params.early_stop)
        # 3-4. Group and vote.
        return await vote(
            ctx,
            request,
            draws.drawn,
            self.name,
            stopped_early=draws.stopped,
            requested=draws.total,
        )
