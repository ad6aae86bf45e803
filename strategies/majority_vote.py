"""`majority_vote`: self-consistency.

After Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language Models"
(ICLR 2023):

1. Sample N candidates for the prompt, in one backend call; or, with `early_stop`, in waves
   (one call each) until the vote is settled (`strategies.early_stop`, after Aggarwal et al.,
   "Adaptive-Consistency", 2023); or, with `early_stop.method` `deepconf`, a warm-up call and
   then one streamed call per candidate, unconfident ones stopped as they are written and left
   out of the vote (`strategies.deepconf`, after Fu et al., "Deep Think with Confidence", 2025).
2. Extract each candidate's final answer (`answer_format`).
3. Group equivalent answers (math-verify, else normalised text).
4. Answer with the first candidate of the largest group; among equal groups, the one whose
   first candidate came first. A request with `n` > 1 gets the first candidates of the `n`
   largest groups. Candidates with no extractable answer cast no vote; if none has one, the
   first candidate is the answer.
"""

from __future__ import annotations

from typing import ClassVar

from strategies.base import StrategyParams, StrategyRequest, StrategyResult
from strategies.candidate_params import CandidateParams, VoteStopParams
from strategies.context import StrategyContext
from strategies.deepconf import think
from strategies.early_stop import DeepConf
from strategies.voting import vote
from strategies.waves import sample_until_settled

__all__ = ["MajorityVote", "MajorityVoteParams"]


class MajorityVoteParams(VoteStopParams, CandidateParams):
    """Params of `majority_vote`: waves until the vote is settled, or DeepConf's traces."""


class MajorityVote:
    """The most frequent answer among N samples."""

    name: ClassVar[str] = "majority_vote"
    takes_tools: ClassVar[bool] = True
    takes_json: ClassVar[bool] = True
    takes_thinking: ClassVar[bool] = True
    params_model: ClassVar[type[StrategyParams]] = MajorityVoteParams

    async def run(
        self, request: StrategyRequest, params: MajorityVoteParams, ctx: StrategyContext
    ) -> StrategyResult:
        if isinstance(params.early_stop, DeepConf):
            # 1-2. DeepConf's traces; only those that reached its threshold vote.
            online = await think(ctx, request, params, params.early_stop)
            return online.annotate(await vote(ctx, request, online.voters, self.name))
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
            votes=draws.votes,
            stop=draws.stop,
        )
